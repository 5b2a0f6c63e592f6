"""The training loop: one readable Accelerate loop for CPU, one GPU and many.

Read top to bottom: prepare the run folder, load and tokenise the data, build the model,
then for each epoch train, evaluate on dev, and checkpoint (``best/`` by the selection
metric, ``last/`` with everything needed to resume). Finally evaluate the best weights on
dev and test and write ``summary.json``.

Resuming replays exactly what an uninterrupted run would have done: batch order is a
function of (seed, epoch), and ``last/`` holds the optimizer, scheduler, RNG and position.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from goemo.core.config import TrainConfig, save_config
from goemo.data.batching import EncodedSplit, LengthBucketBatches, collate, encode_split, eval_batches
from goemo.data.split import Split
from goemo.core.errors import ConfigError, ModelError
from goemo.core.fileio import append_jsonl, atomic_directory, atomic_write_json
from goemo.train.label_relations import correlation_relations, relation_penalty, sentiment_relations
from goemo.models.modeling import build_model, load_tokenizer, parameter_groups, save_model
from goemo.train.resources import Stopwatch, gpu_memory, hardware, peak_rss_mb
from goemo.core.run_folder import RunFolder

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
EMA_FILE = "ema.safetensors"
Callback = Callable[[dict[str, Any]], None]
_LOWER_IS_BETTER = {"val_loss"}


@dataclass
class TrainState:
    """Where training stands; saved in ``last/trainer_state.json``."""

    epoch: int = 0  # epochs fully done
    batch_in_epoch: int = 0  # this process's batches done in the current epoch
    global_step: int = 0  # optimiser steps
    best_metric: float | None = None
    best_epoch: int | None = None
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What `train` hands back: where things are and the headline numbers."""

    run_dir: Path
    best_dir: Path
    summary: dict[str, Any]
    is_main_process: bool = True


# ---------------------------------------------------------------- set-up helpers


def _resolve_precision(config: TrainConfig, device: str) -> str:
    """'no' | 'bf16' | 'fp16' for Accelerate: bf16 where the hardware has it, fp16 on older GPUs."""
    if config.precision == "fp32":
        return "no"
    if config.precision in ("bf16", "fp16"):
        return config.precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu":
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
        except (AttributeError, RuntimeError):
            return "no"
    return "no"


def make_accelerator(config: TrainConfig):
    """An Accelerator for the asked device, with a clear error when it is not there."""
    from accelerate import Accelerator

    device = config.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available (CPU-only PyTorch build or no GPU)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("--device mps asked for, but the MPS backend is not available")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and config.precision == "fp16":
        raise ConfigError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    # Accelerate keeps one AcceleratorState per process; a second run in the same process
    # (a sweep, a notebook, the test suite) may ask for another precision or device, so the
    # per-run part is reset. The distributed part (PartialState) stays as it is.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision=_resolve_precision(config, device),
        gradient_accumulation_steps=1,  # accumulation is done by hand below, with no_sync
    )


def load_training_data(config: TrainConfig) -> dict[str, Split]:
    """The splits named by the config: a GoEmotions folder, or explicit files."""
    from goemo.data.io import load_goemotions, load_split, read_label_names

    if config.train_file:
        names = read_label_names(config.labels_file) if config.labels_file else None
        out: dict[str, Split] = {}
        for key, path in (("train", config.train_file), ("dev", config.dev_file), ("test", config.test_file)):
            if path:
                out[key] = load_split(
                    path, label_names=names, text_column=config.text_column, label_column=config.label_column
                )
                names = names or out[key].label_names
        if "dev" not in out:
            raise ConfigError("--dev FILE is needed with --train (model selection uses the dev split)")
        return out
    if not config.data_dir:
        raise ConfigError("no data: give --data-dir or --train/--dev files")
    return load_goemotions(config.data_dir, taxonomy=config.taxonomy)


def _loss_function(
    config: TrainConfig, train_labels: np.ndarray, label_names: Sequence[str], device: torch.device
) -> Callable:
    """BCE on logits, optionally with per-label positive weights, focal modulation, smoothing,
    and the paper's label-relation regularisers (goemo.train.label_relations)."""
    relations = []
    if config.sentiment_reg:
        rel = sentiment_relations(list(label_names), config.data_dir)
        relations.append((config.sentiment_reg, torch.from_numpy(rel).to(device)))
    if config.correlation_reg:
        rel = correlation_relations(train_labels, list(label_names))
        relations.append((config.correlation_reg, torch.from_numpy(rel).to(device)))
    pos_weight = None
    if config.pos_weight == "auto":
        pos = train_labels.sum(axis=0).clip(min=1)
        neg = len(train_labels) - pos
        # sqrt of the imbalance ratio: rare labels count more without exploding the loss.
        pos_weight = torch.tensor(np.sqrt(neg / pos), dtype=torch.float32, device=device)
    eps = config.label_smoothing

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if eps:
            targets = targets * (1 - eps) + eps / 2
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
        probs = torch.sigmoid(logits) if config.loss == "focal" or relations else None
        if config.loss == "focal":
            p_t = probs * targets + (1 - probs) * (1 - targets)
            loss = loss * (1 - p_t).pow(config.focal_gamma)
        total = loss.mean()
        if relations:
            for weight, rel in relations:
                total = total + weight * relation_penalty(probs, rel)
        return total

    return loss_fn


def teacher_probabilities(config: TrainConfig, train_split: Split) -> np.ndarray | None:
    """The mean probability of ``config.teachers`` on every training text, or None without teachers.

    Distillation: a seed ensemble scores better than any of its members, and its averaged
    probabilities carry what the members agree on (how likely "annoyance" is beside "anger")
    that the 0/1 labels, a few raters' picks, do not. A student trained towards them
    keeps part of the ensemble's gain at the cost of one model. The teachers' predictions go
    through `goemo.evaluate.evaluation.predict_split`, so they are cached in each teacher's folder and a
    resumed or repeated run does not recompute them. Only the train split is ever predicted.
    """
    if not config.teachers:
        return None
    from goemo.evaluate.evaluation import open_model_folder, predict_split

    wanted = list(train_split.label_names)
    metas = {teacher: open_model_folder(teacher)[1] for teacher in config.teachers}
    for teacher, meta in metas.items():  # every teacher is checked before any of them runs
        names = meta.get("label_names")
        if names is not None and list(names) != wanted:
            raise ConfigError(
                f"teacher {teacher}: its {len(names)} labels ({', '.join(names[:3])}, …) are not the "
                f"{len(wanted)} of the training data ({', '.join(wanted[:3])}, …)"
            )
    folds = {t: _holdout(meta) for t, meta in metas.items()}
    if any(f is not None for f in folds.values()):
        return _cross_fitted_probabilities(config, train_split, folds)
    total: np.ndarray | None = None
    for teacher in config.teachers:
        probs = predict_split(
            teacher, train_split, batch_size=config.eval_batch_size, device=config.device,
            token_cache_dir=config.cache_dir,
        ).probs.astype(np.float32)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(config.teachers)


def _holdout(meta: dict[str, Any]) -> tuple[int, int] | None:
    """(fold, num_folds) a teacher left out of its training texts, from its goemo.json, or None."""
    saved = meta.get("training_config") or {}
    fold = saved.get("holdout_fold")
    return None if fold is None else (int(fold), int(saved.get("num_folds", TrainConfig.num_folds)))


def _cross_fitted_probabilities(
    config: TrainConfig, train_split: Split, folds: dict[str, tuple[int, int] | None]
) -> np.ndarray:
    """Each training text's mean probability over the teachers that never saw it.

    Mixing in a teacher that trained on every text would bring back the in-sample predictions
    cross-fitting is there to avoid, so either every teacher held a fold out or none did, and
    every fold needs at least one teacher. Each teacher predicts only its own fold.
    """
    from goemo.data.folds import fold_of
    from goemo.evaluate.evaluation import predict_split

    full = sorted(t for t, f in folds.items() if f is None)
    if full:
        raise ConfigError(f"teachers {', '.join(full)} trained on every fold; mix cross-fitted teachers "
                          f"(--holdout-fold) only with other cross-fitted ones")
    counts = {f[1] for f in folds.values() if f is not None}
    if len(counts) != 1:
        raise ConfigError(f"the teachers held out folds of different splittings (num_folds {sorted(counts)})")
    num_folds = counts.pop()
    text_fold = fold_of(train_split.ids, num_folds)
    total = np.zeros(train_split.labels.shape, dtype=np.float32)
    count = np.zeros(len(train_split), dtype=np.float32)
    for teacher, (fold, _) in folds.items():  # type: ignore[misc]
        rows = np.flatnonzero(text_fold == fold)
        if rows.size:
            part = train_split.subset(rows, name=f"{train_split.name}-fold{fold}of{num_folds}")
            total[rows] += predict_split(
                teacher, part, batch_size=config.eval_batch_size, device=config.device,
                token_cache_dir=config.cache_dir,
            ).probs.astype(np.float32)
            count[rows] += 1
    missing = sorted({int(f) for f in text_fold[count == 0]})
    if missing:
        raise ConfigError(f"no teacher held out fold(s) {', '.join(map(str, missing))} of {num_folds}: "
                          f"those training texts have no out-of-sample prediction")
    return total / count[:, None]


def _adamw(groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel where PyTorch has it (CPU and CUDA): on a 2-core CPU the
    unfused update of MiniLM's 22M parameters costs as much as a third of a training step."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # older builds or devices without the fused kernel
        return torch.optim.AdamW(groups, lr=lr)


def _plain(accelerator, model: nn.Module) -> nn.Module:
    """The model without DDP or torch.compile wrappers: the module whose parameters train."""
    model = accelerator.unwrap_model(model)
    return getattr(model, "_orig_mod", model)


def _ema_update(decay: float) -> Callable:
    """An exponential moving average whose decay ramps up as (1 + n) / (10 + n) to ``decay``.

    Without the ramp (torch's own `get_ema_multi_avg_fn`), a 0.999 average after one epoch of
    1,357 steps still gives a quarter of its weight to the first step: the pretrained encoder
    with a random head. The ramp is TensorFlow's ExponentialMovingAverage(num_updates).
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, weight)

    return update


def _better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric in _LOWER_IS_BETTER else value > best


def grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradients per layer group (embeddings, layer_i, head), as wandb.watch logs.

    Vanishing gradients in the lower layers or an exploding head show up here first.
    """
    from goemo.models.modeling import _layer_index

    base = getattr(model, "base_model_prefix", "") + "."
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None) or 0
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if name.startswith(base) and ".pooler." not in name:
            depth = _layer_index(name[len(base):], num_layers or 10**6)
            key = "embeddings" if depth == 0 else f"layer_{depth - 1}" if depth <= (num_layers or 10**6) else "encoder_top"
        else:
            key = "head"
        sums[key] = sums.get(key, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {f"grad_norm/{k}": v**0.5 for k, v in sums.items()}


# ---------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict_logits(model: nn.Module, encoded: EncodedSplit, batch_size: int, accelerator=None) -> np.ndarray:
    """Logits for every example, in input order, gathered from all processes.

    Each process runs a disjoint share of length-sorted batches; (index, logits) pairs are
    gathered and scattered back by index, so no example is duplicated or dropped.
    """
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    device = accelerator.device if accelerator else next(model.parameters()).device
    was_training = model.training
    model.eval()
    autocast = accelerator.autocast() if accelerator else nullcontext()
    idx_parts, out_parts = [], []
    with autocast:
        for batch_idx in eval_batches(encoded.lengths, batch_size, rank, world):
            batch = collate(encoded, batch_idx)
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            idx_parts.append(batch_idx)
            out_parts.append(logits.float().cpu().numpy())
    model.train(was_training)
    num_labels = encoded.labels.shape[1]
    mine = (
        np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64),
        np.concatenate(out_parts) if out_parts else np.zeros((0, num_labels), np.float32),
    )
    parts = [mine]
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object([mine])
    logits = np.zeros((len(encoded), num_labels), dtype=np.float32)
    seen = np.zeros(len(encoded), dtype=bool)
    for idx, out in parts:
        logits[idx] = out
        seen[idx] = True
    if not seen.all():  # a sharding bug would silently bias every metric
        raise RuntimeError(f"{int((~seen).sum())} examples were not evaluated")
    return logits


def evaluate_logits(
    logits: np.ndarray, labels: np.ndarray, threshold: float, split: str = "dev", shrink: float = 0.0
) -> dict[str, float]:
    """Loss and the per-epoch headline metrics from logits (cheap: no threshold sweep).

    The cross-tuned F1 tunes thresholds on part of ``split`` (with ``shrink``, as the final
    tuning will), so it is left out for a test split.
    """
    from goemo.scoring.metrics import cross_tuned_f1_macro, is_test_split, summary

    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    loss = float(
        nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    )
    values = summary(labels, probs, threshold)
    # What dev-tuned per-label thresholds will give on unseen text, estimated on dev alone
    # (tuned on one half, scored on the other): the number the `fast` recipe is chosen by.
    if not is_test_split(split):
        values["f1_macro_xtuned"] = cross_tuned_f1_macro(labels, probs, split_name=split, shrink=shrink)
    # An undefined average (no label with positives in a tiny sample) becomes NaN, never a number.
    return {"val_loss": loss, **{k: float("nan") if v is None else v for k, v in values.items()}}


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_meta(
    config: TrainConfig,
    label_names: list[str],
    data_checksums: dict[str, str],
    metrics: dict,
    tuned: dict[str, Any] | None = None,
) -> dict:
    """``goemo.json``: what prediction, evaluation and reports need beside the weights.

    ``thresholds.global`` is the fixed threshold (the paper's 0.3 by default);
    ``thresholds.per_label`` are tuned on ``thresholds.tuned_on`` (always a dev split) and
    ``thresholds.tuning`` keeps the provenance (`goemo.scoring.metrics.TunedThresholds.to_dict`).
    """
    return {
        "goemo_version": __import__("goemo").__version__,
        "label_names": label_names,
        "taxonomy": config.taxonomy,
        "max_length": config.max_length,
        "pooling": config.pooling,
        "thresholds": {
            "global": config.threshold,
            "per_label": tuned["per_label"] if tuned else None,
            "tuned_on": tuned["split"] if tuned else None,
            "tuning": tuned,
        },
        "training_config": config.to_dict(),
        "data_checksums": data_checksums,
        "metrics": metrics,
    }


def _save_checkpoint(
    folder: Path,
    accelerator,
    model: nn.Module,
    tokenizer,
    meta: dict[str, Any],
    training: dict[str, Any] | None,
) -> None:
    """Write a model folder atomically; with ``training``, also optimizer/scheduler/RNG state
    (and the weight average, when one is kept, so a resumed run averages on where it stopped).

    Every process must call this (RNG states are gathered); only the main one writes.
    """
    rng = _rng_state()
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rngs = gather_object([rng])
    else:
        rngs = [rng]
    if accelerator.is_main_process:
        with atomic_directory(folder) as tmp:
            save_model(accelerator.unwrap_model(model), tokenizer, tmp, meta)
            if training is not None:
                blob = {
                    "optimizer": training["optimizer"].state_dict(),
                    "scheduler": training["scheduler"].state_dict(),
                    "rng": rngs,
                }
                ema = training.get("ema")
                if ema is not None:
                    from safetensors.torch import save_model as save_weights

                    save_weights(ema.module, str(tmp / EMA_FILE))
                    blob["ema_n_averaged"] = int(ema.n_averaged)
                torch.save(blob, tmp / STATE_FILE)
                atomic_write_json(tmp / "trainer_state.json", training["state"].__dict__)
    accelerator.wait_for_everyone()


def _load_checkpoint(folder: Path, accelerator, model, optimizer, scheduler, ema=None) -> TrainState:
    """Restore everything `_save_checkpoint` wrote into ``last/`` (safe loaders only)."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import load_model as load_weights

    weights = load_file(str(folder / "model.safetensors"))
    accelerator.unwrap_model(model).load_state_dict(weights, strict=True)
    blob = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if ema is not None:
        if not (folder / EMA_FILE).is_file():
            raise ConfigError(f"{folder}: no {EMA_FILE} to resume the weight average from (was ema_decay added?)")
        load_weights(ema.module, str(folder / EMA_FILE), strict=True, device=str(accelerator.device))
        ema.n_averaged.fill_(blob["ema_n_averaged"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rngs = blob["rng"]
    _set_rng_state(rngs[accelerator.process_index % len(rngs)])
    state = TrainState(**json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")))
    return state


# ---------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    splits: dict[str, Split] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Fine-tune ``config.model`` on the config's data and write a run folder.

    ``splits`` (``{"train": …, "dev": …, "test"?: …}``) replaces reading files, for use from
    Python. ``callbacks`` get every per-epoch record (trackers, sweep pruning); an exception
    raised by one ends training.

    >>> from goemo import TrainConfig, train
    >>> result = train(TrainConfig(data_dir="data/goemotions", epochs=1, output="runs/try"))  # doctest: +SKIP
    >>> result.summary["test"]["f1_macro"]  # doctest: +SKIP
    """
    started = time.perf_counter()
    watch = Stopwatch()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    if [t for t in config.trackers if t != "jsonl"]:
        from goemo.train.tracking import check_trackers

        check_trackers(config.trackers)  # a typo or missing package fails before the run folder is touched
    run = RunFolder(config.output)
    resume_from = run.prepare(config, is_main=main)
    accelerator.wait_for_everyone()
    if main:
        save_config(config, run.config_path)

    # ---- data
    if splits is None:
        splits = load_training_data(config)
    if "train" not in splits or "dev" not in splits:
        raise ConfigError("training needs a 'train' and a 'dev' split")
    if config.holdout_fold is not None:  # a cross-fitted teacher: its predictions on this fold are out of sample
        from goemo.data.folds import fold_of

        keep = np.flatnonzero(fold_of(splits["train"].ids, config.num_folds) != config.holdout_fold)
        splits["train"] = splits["train"].subset(keep)
    if config.max_train_samples:
        splits["train"] = splits["train"].sample(config.max_train_samples, seed=config.seed)
    if config.max_eval_samples:
        for key in ("dev", "test"):
            if key in splits:
                splits[key] = splits[key].sample(config.max_eval_samples, seed=config.seed)
    label_names = splits["train"].label_names
    for key, split in splits.items():
        if split.label_names != label_names:
            raise ConfigError(f"split {key!r} has labels {split.label_names[:3]}…, not those of train")
    checksums = {k: s.checksum() for k, s in splits.items()}
    with accelerator.main_process_first():  # one process predicts, the others read its cache
        soft = teacher_probabilities(config, splits["train"])
    # BCE is linear in its target, so one loss on the mixed target is the weighted sum of the
    # loss on the labels and the loss on the teachers' probabilities (with focal loss nearly so:
    # the modulating factor is computed from the same mixed target).
    soft_targets = None if soft is None else torch.from_numpy(soft)

    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    with accelerator.main_process_first():  # one process fills the token cache, the others read it
        encoded = {k: encode_split(s, tokenizer, config.max_length, config.cache_dir) for k, s in splits.items()}

    # ---- model and optimiser
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(config.seed)
    model = build_model(config.model, label_names, config.pooling, config.dropout, config.trust_remote_code)
    if model.config.num_labels != len(label_names):
        raise ModelError(f"model has {model.config.num_labels} labels but the data has {len(label_names)}")
    groups = parameter_groups(model, config.lr, config.head_lr, config.layer_decay, config.weight_decay)
    optimizer = _adamw(groups, config.lr, accelerator.device)
    sampler = LengthBucketBatches(
        encoded["train"].lengths,
        config.batch_size,
        seed=config.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    batches_per_epoch = len(sampler)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_batches = math.ceil(config.epochs * batches_per_epoch)
    total_steps = math.ceil(total_batches / config.grad_accum)
    num_epochs = math.ceil(total_batches / batches_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    if config.compile:
        model = torch.compile(model, dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = _loss_function(config, splits["train"].labels, label_names, accelerator.device)
    # The weight average (EMA) is what gets evaluated, selected and saved as best/; the raw
    # weights keep training and are still scored each epoch (raw_* metrics), so one run shows
    # what the average adds. Buffers are not averaged: BERT's are integer position ids.
    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(_plain(accelerator, model), multi_avg_fn=_ema_update(config.ema_decay))
        ema.eval()

    trackers = []
    if main and [t for t in config.trackers if t != "jsonl"]:
        from goemo.train.tracking import build_trackers

        trackers = build_trackers(config.trackers, run.path, config.to_dict())

    def emit(record: dict[str, Any]) -> None:
        """One event to metrics.jsonl, the trackers and the callbacks (main process only)."""
        if not main:
            return
        append_jsonl(run.metrics_path, record)
        for tracker in trackers:
            tracker.log(record)
        for cb in callbacks:
            cb(record)

    def checkpoint(folder: Path, with_state: bool, metrics: dict[str, Any]) -> None:
        """``last/`` (with state) holds the raw weights training continues from; ``best/`` the
        weights that were evaluated: the average when one is kept."""
        meta = _model_meta(config, label_names, checksums, metrics)
        training = {"optimizer": optimizer, "scheduler": scheduler, "state": state, "ema": ema} if with_state else None
        weights = model if with_state or ema is None else ema.module
        with watch("save"):
            _save_checkpoint(folder, accelerator, weights, tokenizer, meta, training)

    state = TrainState()
    if resume_from is not None:
        state = _load_checkpoint(resume_from, accelerator, model, optimizer, scheduler, ema)
        log.info("resuming %s at epoch %d, batch %d (step %d)", run.path, state.epoch + 1, state.batch_in_epoch, state.global_step)
        emit({"event": "resume", "epoch": state.epoch, "global_step": state.global_step})

    if main:
        log.info(
            "training %s on %d texts (%d labels): %d epochs x %d steps, %s, precision %s, %d process(es)",
            config.model, len(splits["train"]), len(label_names), num_epochs, steps_per_epoch,
            accelerator.device, accelerator.mixed_precision, accelerator.num_processes,
        )

    try:
        # ---- epochs
        from tqdm.auto import tqdm

        model.train()
        epoch_times: list[float] = []
        for epoch in range(state.epoch, num_epochs):
            epoch_batches = min(batches_per_epoch, total_batches - epoch * batches_per_epoch)
            sampler.set_epoch(epoch, start=state.batch_in_epoch)
            if state.batch_in_epoch == 0:
                state.loss_sum, state.loss_count = 0.0, 0
            bar = tqdm(
                total=epoch_batches, initial=state.batch_in_epoch, desc=f"epoch {epoch + 1}/{num_epochs}",
                disable=not accelerator.is_local_main_process, dynamic_ncols=True, leave=False,
            )
            t0 = time.perf_counter()
            seen = 0
            for batch_idx in sampler:
                if state.batch_in_epoch >= epoch_batches:
                    break
                batch = collate(encoded["train"], batch_idx)
                state.batch_in_epoch += 1
                sync = state.batch_in_epoch % config.grad_accum == 0 or state.batch_in_epoch == epoch_batches
                with nullcontext() if sync else accelerator.no_sync(model):
                    logits = model(
                        input_ids=batch["input_ids"].to(accelerator.device),
                        attention_mask=batch["attention_mask"].to(accelerator.device),
                    ).logits
                    targets = batch["labels"]
                    if soft_targets is not None:
                        mix = config.distill_alpha
                        targets = (1 - mix) * targets + mix * soft_targets[batch["index"]]
                    loss = loss_fn(logits, targets.to(accelerator.device))
                    accelerator.backward(loss / config.grad_accum)
                state.loss_sum += float(loss.detach())
                state.loss_count += 1
                seen += len(batch_idx)
                bar.update(1)
                if not sync:
                    continue
                if main and (state.global_step + 1) % config.log_every == 0:
                    emit({"event": "grad_norms", "epoch": epoch + 1, "global_step": state.global_step + 1,
                          **grad_norms(accelerator.unwrap_model(model))})
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update_parameters(_plain(accelerator, model))
                state.global_step += 1
                if state.global_step % config.log_every == 0:
                    running = state.loss_sum / state.loss_count
                    bar.set_postfix(loss=f"{running:.4f}")
                    emit({"event": "step", "epoch": epoch + 1, "global_step": state.global_step,
                          "train_loss": running, "lr": scheduler.get_last_lr()[0]})
                if config.save_every and state.global_step % config.save_every == 0 and state.batch_in_epoch < epoch_batches:
                    checkpoint(run.last_dir, True, {})
            bar.close()
            epoch_time = time.perf_counter() - t0
            epoch_times.append(epoch_time)

            # ---- evaluate on dev, select, checkpoint
            with watch("eval"):
                dev_logits = predict_logits(
                    model if ema is None else ema.module, encoded["dev"], config.eval_batch_size, accelerator
                )
                raw: dict[str, float] = {}
                if ema is not None:
                    raw_logits = predict_logits(model, encoded["dev"], config.eval_batch_size, accelerator)
                    raw_metrics = evaluate_logits(
                        raw_logits, encoded["dev"].labels, config.threshold, shrink=config.threshold_shrink
                    )
                    raw = {f"raw_{k}": raw_metrics[k] for k in ("val_loss", "f1_macro", "f1_macro_xtuned", "auc_macro")}
            metrics = evaluate_logits(
                dev_logits, encoded["dev"].labels, config.threshold, shrink=config.threshold_shrink
            )
            train_loss = state.loss_sum / max(1, state.loss_count)
            if accelerator.num_processes > 1:
                train_loss = float(accelerator.reduce(torch.tensor(train_loss, device=accelerator.device), "mean"))
            record = {
                "event": "epoch", "epoch": epoch + 1, "global_step": state.global_step, "train_loss": train_loss,
                **metrics, **raw, "lr": scheduler.get_last_lr()[0], "epoch_time_s": round(epoch_time, 3),
                "examples_per_s": round(seen * accelerator.num_processes / max(epoch_time, 1e-9), 2),
            }
            improved = _better(config.select_metric, metrics[config.select_metric], state.best_metric)
            if improved:
                state.best_metric, state.best_epoch = metrics[config.select_metric], epoch + 1
            record["best"] = improved
            state.history.append(record)
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            if main:
                log.info(
                    "epoch %d: train_loss %.4f val_loss %.4f f1_macro %.4f f1_macro_xtuned %.4f auc_macro %.4f (%.0fs)%s",
                    epoch + 1, train_loss, metrics["val_loss"], metrics["f1_macro"], metrics["f1_macro_xtuned"],
                    metrics["auc_macro"],
                    epoch_time, " *" if improved else "",
                )
                if raw:
                    log.info("epoch %d, raw weights (not the average): f1_macro %.4f f1_macro_xtuned %.4f",
                             epoch + 1, raw["raw_f1_macro"], raw["raw_f1_macro_xtuned"])
            if improved:
                checkpoint(run.best_dir, False, {"dev": metrics, "epoch": epoch + 1})
            checkpoint(run.last_dir, True, {"dev": metrics, "epoch": epoch + 1})
            emit(record)  # after the checkpoints: a callback that stops the run (pruning) loses nothing

        # ---- final evaluation of the best weights
        from safetensors.torch import load_file

        accelerator.unwrap_model(model).load_state_dict(load_file(str(run.best_dir / "model.safetensors")))
        from goemo.scoring.metrics import summary as metric_summary
        from goemo.scoring.metrics import tune_thresholds

        final: dict[str, Any] = {}
        final_probs: dict[str, np.ndarray] = {}
        tuned = None
        for key in ("dev", "test"):
            if key in encoded and (key == "dev" or config.eval_test):
                logits = predict_logits(model, encoded[key], config.eval_batch_size, accelerator)
                final[key] = evaluate_logits(
                    logits, encoded[key].labels, config.threshold, split=key, shrink=config.threshold_shrink
                )
                probs = final_probs[key] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
                if key == "dev":  # per-label thresholds come from dev only, never from test
                    tuned = tune_thresholds(
                        encoded["dev"].labels, probs, split_name="dev", label_names=label_names,
                        shrink=config.threshold_shrink,
                    )
                final[key]["f1_macro_tuned"] = metric_summary(encoded[key].labels, probs, tuned)["f1_macro"]
        summary = {
            "run_dir": str(run.path),
            "model": config.model,
            "best_epoch": state.best_epoch,
            "select_metric": config.select_metric,
            "best_metric": state.best_metric,
            "threshold": config.threshold,
            **final,
            "epochs": [
                {k: r[k] for k in ("epoch", "train_loss", "val_loss", "f1_macro", "auc_macro", "epoch_time_s", "examples_per_s")}
                for r in state.history
            ],
            "resources": {
                "wall_time_s": round(time.perf_counter() - started, 2),
                "epoch_time_s": [round(t, 2) for t in epoch_times],
                "time_to_save_s": round(watch.totals.get("save", 0.0), 3),
                "eval_time_s": round(watch.totals.get("eval", 0.0), 3),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "gpu_memory": gpu_memory(),
                "precision": accelerator.mixed_precision,
                "num_processes": accelerator.num_processes,
                "hardware": hardware(),
            },
        }
        if main:
            atomic_write_json(run.summary_path, summary)
            # best/goemo.json gets the final headline numbers for `goemo predict` and the report.
            meta = _model_meta(
                config, label_names, checksums, {"best_epoch": state.best_epoch, **final},
                tuned.to_dict() if tuned is not None else None,
            )
            atomic_write_json(run.best_dir / "goemo.json", meta)
            # The probabilities the report and the thresholds come from become the cached
            # predictions, so `goemo evaluate` / `ensemble` / `report` score these very numbers.
            from goemo.evaluate.evaluation import store_predictions

            store_predictions(run.best_dir, [(splits[key], probs) for key, probs in final_probs.items()])
            for tracker in trackers:
                tracker.log({"event": "summary", **{f"{k}/{m}": v for k, d in final.items() for m, v in d.items()}})
    except BaseException:
        if trackers:
            from goemo.train.tracking import close_trackers

            close_trackers(trackers, failed=True)
        raise
    if trackers:
        from goemo.train.tracking import close_trackers

        close_trackers(trackers)
    accelerator.wait_for_everyone()
    return TrainResult(run.path, run.best_dir, summary, main)
