"""Decision thresholds: the convention, the paper's values, tuned thresholds and their guard.

**A label is predicted when ``prob > threshold`` (strict)**, as the GoEmotions authors'
``calculate_metrics.py`` does. Every part of goemo turns probabilities into decisions through
`binarize`, so training, evaluation, prediction and serving never disagree about a
probability that sits exactly on a threshold. This module needs numpy only, so the serving
path can decide without scikit-learn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from goemo.core.errors import ConfigError, EvaluationError, MetricsInputError, ThresholdLeakError

PAPER_THRESHOLDS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""The thresholds of the paper's per-threshold evaluation (``--eval_thresholds`` in its code)."""

PAPER_THRESHOLD = 0.3
"""The single threshold behind the paper's reported test results (``calculate_metrics.py``)."""

DEFAULT_THRESHOLD = 0.5
"""Used when nothing better is known: the point where a sigmoid output is undecided."""

DEFAULT_GRID: np.ndarray = np.arange(1, 100) / 100.0
"""0.01 .. 0.99 in steps of 0.01; ``i / 100`` so that 0.3 is the float literal 0.3."""

THRESHOLD_CONVENTION = "predicted when prob > threshold"

Thresholds = Union[float, np.floating[Any], Sequence[float], np.ndarray, "TunedThresholds"]


@dataclass(frozen=True, eq=False)
class TunedThresholds:
    """Thresholds chosen on a labelled split, with where they came from.

    Behaves as the ``(L,)`` array of thresholds (``np.asarray(t)``, ``binarize(p, t)``), and
    carries its provenance so that a model folder or report can say which split the
    thresholds were tuned on, and whether tuning on the test split was forced.

    >>> t = TunedThresholds(np.array([0.3, 0.5]), ("joy", "anger"), "per_label", "dev")
    >>> np.asarray(t).tolist(), t.by_label()["anger"], t.forced
    ([0.3, 0.5], 0.5, False)
    """

    values: np.ndarray
    label_names: tuple[str, ...]
    kind: str  # "per_label" (each label's F1) or "global" (one threshold, macro F1)
    split: str
    forced: bool = False
    score: float | None = None  # macro F1 over defined labels on the tuning split
    scores: tuple[float | None, ...] = ()  # each label's F1 there; None when undefined
    fallback: float = DEFAULT_THRESHOLD
    fallback_labels: tuple[str, ...] = ()
    grid: tuple[float, float, int] = (0.01, 0.99, 99)
    shrink: float = 0.0  # how far per-label values were pulled to the best global one

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.array(self.values, dtype=dtype, copy=True)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def global_value(self) -> float | None:
        """The single threshold when ``kind == "global"``, else None."""
        return float(self.values[0]) if self.kind == "global" and len(self.values) else None

    def by_label(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.label_names, self.values)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record, e.g. for ``goemo.json`` (`from_dict` reads it back)."""
        return {
            "kind": self.kind,
            "convention": THRESHOLD_CONVENTION,
            "split": self.split,
            "forced": self.forced,
            "global": self.global_value,
            "per_label": self.by_label(),
            "score": json_float(self.score),
            "scores": [json_float(s) for s in self.scores],
            "fallback": float(self.fallback),
            "fallback_labels": list(self.fallback_labels),
            "grid": list(self.grid),
            "shrink": float(self.shrink),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunedThresholds:
        per_label = data["per_label"]
        return cls(
            values=np.array(list(per_label.values()), dtype=np.float64),
            label_names=tuple(per_label),
            kind=data["kind"],
            split=data["split"],
            forced=bool(data.get("forced", False)),
            score=data.get("score"),
            scores=tuple(data.get("scores", ())),
            fallback=float(data.get("fallback", DEFAULT_THRESHOLD)),
            fallback_labels=tuple(data.get("fallback_labels", ())),
            grid=tuple(data.get("grid", (0.01, 0.99, 99))),
            shrink=float(data.get("shrink", 0.0)),
        )


def binarize(probs: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """0/1 decisions: label j of example i is on when ``probs[i, j] > thresholds[j]`` (strict).

    ``thresholds`` is one float for all labels or one per label (an array or
    `TunedThresholds`). Every part of goemo binarizes through here, so a probability that
    equals its threshold is treated the same everywhere: *not* predicted.

    >>> binarize(np.array([[0.3, 0.31], [0.9, 0.2]]), 0.3).tolist()
    [[0, 1], [1, 0]]
    >>> binarize(np.array([[0.3, 0.31]]), [0.2, 0.5]).tolist()
    [[1, 0]]
    """
    p = as_probs(probs)
    t = as_thresholds(thresholds, p.shape[1])
    return (p > t).astype(np.uint8)


def is_test_split(split_name: str) -> bool:
    """Whether a split name designates test data: "test", "test.tsv", "goemotions-test", ...

    Any word of the name equal to "test" counts, so renamed or sampled test files are caught;
    "latest" or "contest" are not.

    >>> is_test_split("test"), is_test_split("data/test.tsv"), is_test_split("dev")
    (True, True, False)
    """
    words = re.split(r"[^a-z0-9]+", Path(str(split_name)).name.lower())
    return "test" in words


def as_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise MetricsInputError(f"probs must be a 2-D (examples, labels) matrix, got shape {p.shape}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        finite = p[np.isfinite(p)]  # the range of the numbers there are; all-NaN input has none
        found = f"{finite.min():.3g}..{finite.max():.3g}" if finite.size else "no finite value"
        raise MetricsInputError(
            f"probs must be probabilities in [0, 1] (range found: {found}"
            f"{', with NaN/inf' if finite.size < p.size else ''}); logits need a sigmoid first"
        )
    return p


def as_thresholds(thresholds: Thresholds, n_labels: int) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(n_labels, float(t))
    if t.shape != (n_labels,):
        raise MetricsInputError(f"expected one threshold or {n_labels} (one per label), got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise MetricsInputError("thresholds must be finite numbers")
    return t


def json_float(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, in float64, without overflow warnings for large negative logits.

    float64 because float32 rounds probabilities near 0 or 1 into ties, which shifts ROC-AUC;
    the predictor hands out float32 copies. The one sigmoid of goemo's numpy code.

    >>> sigmoid(np.array([0.0, 800.0, -800.0])).tolist()
    [0.5, 1.0, 0.0]
    """
    x = np.asarray(logits, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision thresholds one evaluation used, and a sentence that says so."""

    mode: str  # "fixed" (one global threshold) or "tuned" (per label, from goemo.json)
    value: float | TunedThresholds
    description: str
    tuned_on: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "description": self.description,
            "tuned_on": self.tuned_on,
            "convention": THRESHOLD_CONVENTION,
        }
        if isinstance(self.value, TunedThresholds):
            out["per_label"] = self.value.by_label()
        else:
            out["global"] = float(self.value)
        return out


ThresholdSpec = Union[None, float, str]


def choose_thresholds(
    spec: ThresholdSpec,
    *,
    global_threshold: float,
    tuned: TunedThresholds | None,
    label_names: Sequence[str],
    split_name: str | None = None,
    split_checksum: str | None = None,
    tuned_split_checksum: str | None = None,
) -> ThresholdChoice:
    """Turn ``None`` / a float / ``"fixed"`` / ``"tuned"`` into the thresholds to apply.

    ``None`` and ``"fixed"`` use the model's global threshold; a float is used as given;
    ``"tuned"`` takes the dev-tuned per-label thresholds and raises `ThresholdLeakError` when
    the split being scored is the one they were tuned on (same name, or the same data by
    checksum). `goemo.core.folder.ModelFolder.choose_thresholds` fills in the model's part.

    >>> choose_thresholds(0.5, global_threshold=0.3, tuned=None, label_names=["joy"]).description
    'global threshold 0.5 (prob > 0.5)'
    """
    if spec is None or spec == "fixed":
        value = float(global_threshold)
        origin = "the paper's" if value == PAPER_THRESHOLD else "the model's"
        return ThresholdChoice("fixed", value, f"global threshold {value:g} (prob > {value:g}; {origin})")
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value = float(spec)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {value}")
        return ThresholdChoice("fixed", value, f"global threshold {value:g} (prob > {value:g})")
    if spec != "tuned":
        raise ConfigError(f"thresholds must be a number, 'fixed' or 'tuned', got {spec!r}")
    if tuned is None:
        raise EvaluationError(
            "the model folder has no tuned per-label thresholds (goemo.json thresholds.tuning); "
            "it was saved before training finished, or by another tool: use a fixed threshold"
        )
    if list(tuned.label_names) != list(label_names):
        raise EvaluationError(
            f"goemo.json thresholds are for labels {list(tuned.label_names)[:3]}…, not the model's "
            f"{list(label_names)[:3]}…"
        )
    same = split_name is not None and split_name == tuned.split
    same = same or (split_checksum is not None and tuned_split_checksum == split_checksum)
    if same:
        raise ThresholdLeakError(
            f"the tuned thresholds were tuned on {tuned.split!r}, the split being evaluated: its scores "
            f"would be optimistic; evaluate another split (e.g. test) or use a fixed threshold"
        )
    forced = " (FORCED on a test split: scores are optimistic)" if tuned.forced else ""
    lo, hi = float(np.min(tuned.values)), float(np.max(tuned.values))
    rule = "each label's F1-maximising value"
    if tuned.shrink:
        rule += f", shrunk {tuned.shrink:g} of the way to the best global threshold"
    return ThresholdChoice(
        "tuned",
        tuned,
        f"per-label thresholds tuned on {tuned.split} ({lo:g}–{hi:g}, {rule}){forced}",
        tuned_on=tuned.split,
    )
