"""What training logs about the weights and their gradients: the ``grad_norms`` event and ``--watch``.

Vanishing gradients in the lower layers or an exploding head show up here before the loss shows
them. ``--watch`` adds what ``wandb.watch`` logs (docs/training.md, "Watching gradients and
weights"). The cost is bounded: each tensor is reduced where it lives, one at a time, to five
numbers and 64 counts, which alone go to the CPU (no copy of the model); ``--watch all`` on
BERT-base costs about one CPU training step per logged step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from goemo.models.modeling import layer_index

Watch = Literal["gradients", "parameters", "all"]
HISTOGRAM_BINS = 64  # as wandb.watch
_KINDS: dict[str | None, tuple[str, ...]] = {
    None: (),
    "gradients": ("gradients",),
    "parameters": ("parameters",),
    "all": ("gradients", "parameters"),
}


@dataclass(frozen=True)
class Histogram:
    """One tensor's finite values in equal bins (``edges``: one more than ``counts``), as TensorBoard's raw histogram."""

    counts: np.ndarray
    edges: np.ndarray
    min: float
    max: float
    num: int
    sum: float
    sum_squares: float


@dataclass
class WatchStats:
    """One logging moment: the numbers of the ``grad_norms`` event and the histograms per tensor."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


def layer_groups(model: nn.Module) -> dict[str, str]:
    """The layer group of each named parameter: ``embeddings``, ``layer_<i>``, ``encoder_top`` or ``head``.

    As layer-wise learning rates group them; anything outside the base model, and its pooler, is the head.

    >>> layer_groups(nn.Linear(2, 1))
    {'weight': 'head', 'bias': 'head'}
    """
    base = getattr(model, "base_model_prefix", "") + "."
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None) or 0
    deepest = num_layers or 10**6
    groups: dict[str, str] = {}
    for name, _ in model.named_parameters():
        if name.startswith(base) and ".pooler." not in name:
            depth = layer_index(name[len(base) :], deepest)
            groups[name] = "embeddings" if depth == 0 else f"layer_{depth - 1}" if depth <= deepest else "encoder_top"
        else:
            groups[name] = "head"
    return groups


def grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradients per layer group (``grad_norm/embeddings``, ``grad_norm/layer_i``, ``grad_norm/head``).

    >>> import torch
    >>> head = nn.Linear(2, 1)
    >>> head(torch.ones(1, 2)).sum().backward()
    >>> grad_norms(head)  # weight gradient (1, 1), bias gradient 1
    {'grad_norm/head': 1.7320508075688772}
    """
    groups = layer_groups(model)
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        key = groups[name]
        sums[key] = sums.get(key, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {f"grad_norm/{k}": v**0.5 for k, v in sums.items()}


@dataclass
class _Reduced:
    """Count, sum, sum of squares, min and max of one tensor or, summed with `add`, of a layer group."""

    n: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, r: _Reduced) -> None:
        self.n += r.n
        self.sum += r.sum
        self.sum_squares += r.sum_squares
        self.min = r.min if math.isnan(r.min) else min(self.min, r.min)
        self.max = r.max if math.isnan(r.max) else max(self.max, r.max)

    def stats(self) -> dict[str, float]:
        mean = self.sum / self.n
        std = max(self.sum_squares / self.n - mean * mean, 0.0) ** 0.5
        return {"min": self.min, "max": self.max, "mean": mean, "std": std}


def _reduce(values: torch.Tensor) -> _Reduced:
    """Five numbers of a flat float32 tensor, reduced where it lives (pairwise float32 sums: exact enough, fast)."""
    lo, hi = torch.aminmax(values)
    return _Reduced(values.numel(), float(values.sum()), float(values.square().sum()), float(lo), float(hi))


def histogram(values: torch.Tensor, bins: int = HISTOGRAM_BINS, reduced: _Reduced | None = None) -> Histogram | None:
    """`Histogram` of a tensor's finite values (counted where it lives; one value ``v`` spans ``v ± 0.5``), or None.

    >>> h = histogram(torch.tensor([0.0, 1.0, 1.0, float("nan")]), bins=2)
    >>> h.counts.tolist(), h.edges.tolist(), h.num, h.sum_squares
    ([1, 2], [0.0, 0.5, 1.0], 3, 2.0)
    >>> histogram(torch.tensor([1.0, 1.0 + 2**-23]), bins=64).counts.sum()  # a spread too narrow for 64 bins
    np.int64(2)
    """
    flat = values.detach().reshape(-1).float()
    r = reduced or _reduce(flat)
    if not (math.isfinite(r.min) and math.isfinite(r.max)):  # rare (an overflow): bin the finite values only
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            return None
        r = _reduce(flat)
    lo, hi = (r.min, r.max) if r.min < r.max else (r.min - 0.5, r.max + 0.5)
    if (hi - lo) / bins <= 4 * np.finfo(np.float32).eps * max(abs(lo), abs(hi)):
        # a spread float32 cannot split into `bins` distinct edges (e.g. all but equal weights): widen it
        lo, hi = lo - 0.5, hi + 0.5
    if flat.device.type == "cpu":  # numpy's equal-bins path: single-threaded, yet faster than histc on a CPU
        counts = np.histogram(flat.numpy().astype(np.float64), bins=bins, range=(lo, hi))[0]
    else:  # counted on the accelerator: only the counts are copied
        counts = torch.histc(flat, bins=bins, min=lo, max=hi).cpu().numpy().astype(np.int64)
    return Histogram(
        counts=counts,
        edges=np.linspace(lo, hi, bins + 1),
        min=r.min,
        max=r.max,
        num=r.n,
        sum=r.sum,
        sum_squares=r.sum_squares,
    )


def watch_stats(model: nn.Module, watch: Watch | None, histograms: bool = True) -> WatchStats:
    """What ``--watch`` adds at one logging moment: per layer group ``grad_stats/…``, ``param_norm/…`` and
    ``param_stats/…``, and with ``histograms`` one `Histogram` per tensor (only when a tracker draws them).

    >>> head = nn.Linear(2, 1)
    >>> with torch.no_grad():
    ...     _ = head.weight.copy_(torch.tensor([[3.0, 4.0]])), head.bias.fill_(0.0)
    >>> out = watch_stats(head, "parameters")
    >>> out.scalars["param_norm/head"], out.scalars["param_stats/head/max"], sorted(out.histograms)
    (5.0, 4.0, ['parameters/bias', 'parameters/weight'])
    """
    out = WatchStats()
    kinds = _KINDS[watch]
    if not kinds:
        return out
    groups = layer_groups(model)
    for kind in kinds:
        totals: dict[str, _Reduced] = {}
        for name, p in model.named_parameters():
            tensor = p.grad if kind == "gradients" else p
            if tensor is None or tensor.numel() == 0:
                continue
            values = tensor.detach().reshape(-1).float()  # a copy only for bf16/fp16 weights
            reduced = _reduce(values)
            totals.setdefault(groups[name], _Reduced()).add(reduced)
            if histograms and (h := histogram(values, reduced=reduced)) is not None:
                out.histograms[f"{kind}/{name}"] = h
        prefix = "grad_stats" if kind == "gradients" else "param_stats"
        for group, t in totals.items():
            out.scalars.update({f"{prefix}/{group}/{k}": v for k, v in t.stats().items()})
            if kind == "parameters":
                out.scalars[f"param_norm/{group}"] = t.sum_squares**0.5
    return out
