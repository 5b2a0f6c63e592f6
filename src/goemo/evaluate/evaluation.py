"""Evaluate a saved model folder on a labelled split, with cached predictions.

The expensive part of evaluation is running the model; everything after it (metrics at any
threshold, taxonomy projection, plots) is cheap numpy. So probabilities are computed once per
(model weights, split content) and cached as a plain ``.npz`` (no pickle) under the run's
``predictions/`` folder; ``goemo evaluate`` and ``goemo report`` read them back instead of
running the model again. The cache key is the sha256 of the weights and config plus the
split's checksum and the max length, so retraining the model or changing one text
invalidates it by construction.

Thresholds are never tuned here. ``thresholds="tuned"`` reads the per-label thresholds that
training tuned on the dev split (``goemo.json``), and evaluation refuses to report them on
the very split they were tuned on, which would overstate every score.

Taxonomy: a 28-label model can be scored on the Ekman or sentiment grouping (a group's
probability is the max of its members'; decisions are made per fine label and projected),
which is how the paper's Table 5 is compared without retraining. A model trained on a
grouped taxonomy is scored natively on that grouping.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from goemo.data.split import Split
from goemo.core.errors import ConfigError, GoemoError, ModelError
from goemo.core.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from goemo.scoring.metrics import (
    PAPER_THRESHOLD,
    PAPER_THRESHOLDS,
    THRESHOLD_CONVENTION,
    MetricsReport,
    TunedThresholds,
    compute_metrics,
)

log = logging.getLogger(__name__)

PREDICTIONS_VERSION = "1"
PREDICTIONS_DIR = "predictions"
DEFAULT_DATA_DIR = "data/goemotions"
DEFAULT_MAX_LENGTH = 128

ThresholdSpec = Union[None, float, str]


class EvaluationError(GoemoError):
    """A model, split and option combination that cannot be evaluated as asked."""


class ThresholdLeakError(EvaluationError):
    """Tuned thresholds were about to be scored on the split they were tuned on."""


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """Sigmoid probabilities of one model on one split, in the model's label order.

    ``from_cache`` tells whether the model ran; ``cache_path`` is where they are stored
    (None when caching was off).
    """

    probs: np.ndarray
    label_names: tuple[str, ...]
    split_checksum: str
    model_fingerprint: str
    cache_path: Path | None = None
    from_cache: bool = False


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the folder's weights (every ``*.safetensors``) and ``config.json``.

    Content, not mtime: copying a run folder keeps its cache valid, and retraining into the
    same folder (new weights) never reuses stale predictions.

    >>> model_fingerprint("runs/tiny/best")[:12]  # doctest: +SKIP
    '3f1c0a9e27b4'
    """
    folder = Path(model_dir)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:  # a TF-IDF baseline keeps its weights as plain arrays (goemo.train.tfidf)
        from goemo.train.tfidf import weight_files

        weights = weight_files(folder)
    if not weights:
        raise ModelError(f"{folder}: no *.safetensors weights; expected a model folder written by `goemo train`")
    h = hashlib.sha256(f"goemo-predictions-{PREDICTIONS_VERSION}".encode())
    for path in [*weights, folder / "config.json"]:
        if not path.is_file():
            continue
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def default_predictions_dir(model_dir: str | Path) -> Path:
    """``RUN/predictions`` when the model sits in a run folder (``RUN/best``), else beside it.

    A run folder is recognised by its ``config.yaml``, ``summary.json`` or ``metrics.jsonl``.
    """
    folder = Path(model_dir).resolve()
    run = folder.parent
    if any((run / name).is_file() for name in ("config.yaml", "summary.json", "metrics.jsonl")):
        return run / PREDICTIONS_DIR
    return folder.parent / f"{folder.name}-{PREDICTIONS_DIR}"


def _model_max_length(meta: dict[str, Any]) -> int:
    value = meta.get("max_length") or meta.get("training_config", {}).get("max_length")
    return int(value) if value else DEFAULT_MAX_LENGTH


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(name)).name)[:60] or "split"


def predict_split(
    model_dir: str | Path,
    split: Split,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 128,
    device: str = "auto",
    token_cache_dir: str | Path | None = None,
) -> Predictions:
    """Probabilities of the model in ``model_dir`` for every text of ``split`` (cached).

    On a cache hit the model is not even loaded. On a miss the model runs through
    `goemo.train.loop.predict_logits` on `goemo.data.batching.encode_split` (length-sorted
    batches, dynamic padding, the token cache), and the result is stored atomically.

    >>> from goemo.data.io import load_goemotions
    >>> test = load_goemotions("data/goemotions", splits=["test"])["test"]  # doctest: +SKIP
    >>> predict_split("runs/tiny/best", test).probs.shape  # doctest: +SKIP
    (5427, 28)
    """
    model_dir, meta = open_model_folder(model_dir)
    max_length = _model_max_length(meta)
    fingerprint = model_fingerprint(model_dir)
    checksum = split.checksum()
    folder = Path(cache_dir) if cache_dir is not None else default_predictions_dir(model_dir)
    path = _cache_path(folder, split.name, checksum, fingerprint, max_length)
    if use_cache:
        cached = _read_cache(path, len(split), fingerprint, checksum)
        if cached is not None:
            probs, names = cached
            log.info("predictions for %s (%d texts) read from %s", split.name, len(split), path)
            return Predictions(probs, names, checksum, fingerprint, path, True)
    probs, names = _run_model(model_dir, split, max_length, batch_size, device, token_cache_dir)
    if use_cache:
        path = _write_cache(path, probs, names, fingerprint, checksum)
    return Predictions(probs, names, checksum, fingerprint, path if use_cache else None, False)


def _cache_path(folder: Path, split_name: str, checksum: str, fingerprint: str, max_length: int) -> Path:
    key = hashlib.sha256(f"{fingerprint}|{checksum}|{max_length}".encode()).hexdigest()[:20]
    return folder / f"{_safe_name(split_name)}-{key}.npz"


def _write_cache(
    path: Path, probs: np.ndarray, names: Sequence[str], fingerprint: str, checksum: str
) -> Path | None:
    buf = io.BytesIO()
    np.savez(
        buf,
        probs=probs,
        label_names=np.array(names, dtype=str),
        model_fingerprint=np.array(fingerprint),
        split_checksum=np.array(checksum),
    )
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only run folder must not stop evaluation
        log.warning("cannot write predictions cache %s: %s", path, e)
        return None
    return path


def store_predictions(model_dir: str | Path, predictions: Sequence[tuple[Split, np.ndarray]]) -> None:
    """Cache each ``(split, probs)`` as ``model_dir``'s predictions on it, as `predict_split` would.

    Training calls this with the dev and test probabilities its report and per-label
    thresholds come from. Later evaluations then read those very numbers instead of running
    the model again in another precision: per-label thresholds re-tuned on dev by `goemo
    ensemble` moved by up to 0.007 of test macro-F1 between dev probabilities computed under
    bf16 autocast (training) and in fp32 (evaluation on a CPU), so without this one model had
    two scores depending on the command that asked.
    """
    model_dir, meta = open_model_folder(model_dir)
    fingerprint = model_fingerprint(model_dir)
    folder, max_length = default_predictions_dir(model_dir), _model_max_length(meta)
    for split, probs in predictions:
        names = tuple(split.label_names)
        if probs.shape != (len(split), len(names)):
            raise ValueError(f"probabilities of shape {probs.shape} for {len(split)} texts and {len(names)} labels")
        checksum = split.checksum()
        path = _cache_path(folder, split.name, checksum, fingerprint, max_length)
        _write_cache(path, np.asarray(probs, dtype=np.float64), names, fingerprint, checksum)


def _read_cache(path: Path, n: int, fingerprint: str, checksum: str) -> tuple[np.ndarray, tuple[str, ...]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            probs = z["probs"]
            names = tuple(str(s) for s in z["label_names"])
            same = str(z["model_fingerprint"]) == fingerprint and str(z["split_checksum"]) == checksum
    except (OSError, ValueError, KeyError) as e:
        log.warning("predictions cache %s unreadable (%s); running the model again", path, e)
        return None
    if not same or probs.ndim != 2 or probs.shape != (n, len(names)):
        log.warning("predictions cache %s does not match this model and split; running the model again", path)
        return None
    return probs, names


def _run_model(
    model_dir: Path,
    split: Split,
    max_length: int,
    batch_size: int,
    device: str,
    token_cache_dir: str | Path | None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Load the model and return sigmoid probabilities (the only place the model runs)."""
    from goemo.train import tfidf as baseline

    if baseline.is_tfidf_folder(model_dir):
        return baseline.predict_split_proba(model_dir, split)
    import torch

    from goemo.train import loop as training
    from goemo.data.batching import encode_split
    from goemo.models.modeling import load_model

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(model_dir, device=device)
    names = tuple(loaded.label_names)
    if list(names) != list(split.label_names):
        raise EvaluationError(
            f"{model_dir} predicts {len(names)} labels ({', '.join(names[:3])}, …) but split "
            f"{split.name!r} has {len(split.label_names)} ({', '.join(split.label_names[:3])}, …); "
            f"evaluate it on data of the model's taxonomy"
        )
    encoded = encode_split(split, loaded.tokenizer, max_length, token_cache_dir)
    log.info("running %s on %s (%d texts, %s)", model_dir, split.name, len(split), device)
    logits = training.predict_logits(loaded.model, encoded, batch_size)
    # float64: float32 would round probabilities near 0 or 1 into ties and shift ROC-AUC.
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64))), names


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision thresholds one evaluation used, and a sentence that says so."""

    mode: str  # "fixed" (one global threshold) or "tuned" (per label, from goemo.json)
    value: float | TunedThresholds
    description: str
    tuned_on: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "description": self.description, "tuned_on": self.tuned_on,
                               "convention": THRESHOLD_CONVENTION}
        if isinstance(self.value, TunedThresholds):
            out["per_label"] = self.value.by_label()
        else:
            out["global"] = float(self.value)
        return out


def resolve_thresholds(
    spec: ThresholdSpec, meta: dict[str, Any], label_names: Sequence[str], split: Split | str | None = None
) -> ThresholdChoice:
    """Turn ``None`` / a float / ``"fixed"`` / ``"tuned"`` into the thresholds to apply.

    ``None`` and ``"fixed"`` use the model's global threshold (``goemo.json``; the paper's
    0.3 when absent); a float is used as given; ``"tuned"`` reads the dev-tuned per-label
    thresholds and raises `ThresholdLeakError` when ``split`` is the split they were tuned on
    (same name, or the same data by checksum).

    >>> resolve_thresholds(0.5, {}, ["joy"]).description
    'global threshold 0.5 (prob > 0.5)'
    """
    if spec is None or spec == "fixed":
        value = float((meta.get("thresholds") or {}).get("global") or PAPER_THRESHOLD)
        origin = "the paper's" if value == PAPER_THRESHOLD else "the model's"
        return ThresholdChoice("fixed", value, f"global threshold {value:g} (prob > {value:g}; {origin})")
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value = float(spec)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {value}")
        return ThresholdChoice("fixed", value, f"global threshold {value:g} (prob > {value:g})")
    if spec != "tuned":
        raise ConfigError(f"thresholds must be a number, 'fixed' or 'tuned', got {spec!r}")
    info = meta.get("thresholds") or {}
    tuning = info.get("tuning")
    if not tuning or not tuning.get("per_label"):
        raise EvaluationError(
            "the model folder has no tuned per-label thresholds (goemo.json thresholds.tuning); "
            "it was saved before training finished, or by another tool: use a fixed threshold"
        )
    tuned = TunedThresholds.from_dict(tuning)
    if list(tuned.label_names) != list(label_names):
        raise EvaluationError(
            f"goemo.json thresholds are for labels {list(tuned.label_names)[:3]}…, not the model's "
            f"{list(label_names)[:3]}…"
        )
    if split is not None:
        _guard_tuning_split(tuned.split, split, meta)
    forced = " (FORCED on a test split: scores are optimistic)" if tuned.forced else ""
    lo, hi = float(np.min(tuned.values)), float(np.max(tuned.values))
    rule = "each label's F1-maximising value"
    if tuned.shrink:
        rule += f", shrunk {tuned.shrink:g} of the way to the best global threshold"
    return ThresholdChoice(
        "tuned", tuned,
        f"per-label thresholds tuned on {tuned.split} ({lo:g}–{hi:g}, {rule}){forced}",
        tuned_on=tuned.split,
    )


def _guard_tuning_split(tuned_on: str, split: Split | str, meta: dict[str, Any]) -> None:
    name = split if isinstance(split, str) else split.name
    same = name == tuned_on
    if not same and isinstance(split, Split):
        known = (meta.get("data_checksums") or {}).get(tuned_on)
        same = known is not None and known == split.checksum()
    if same:
        raise ThresholdLeakError(
            f"the tuned thresholds were tuned on {tuned_on!r}, the split being evaluated: its scores "
            f"would be optimistic; evaluate another split (e.g. test) or use a fixed threshold"
        )


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvaluationResult:
    """Metrics of one model on one split, with what produced them (model, thresholds, cache)."""

    report: MetricsReport
    model_dir: Path
    split: str
    taxonomy: str
    model_taxonomy: str
    thresholds: ThresholdChoice
    predictions: Predictions
    labels: np.ndarray = field(repr=False)
    texts: list[str] = field(repr=False, default_factory=list)

    @property
    def projected(self) -> bool:
        """True when a fine-label model was scored on a coarser grouping."""
        return self.taxonomy != self.model_taxonomy

    def headline(self) -> str:
        """One line: what was evaluated and with which thresholds."""
        r = self.report
        how = f"{self.taxonomy} (projected from {self.model_taxonomy})" if self.projected else self.taxonomy
        return (
            f"{self.model_dir} on {self.split} ({r.n_examples:,} texts), taxonomy {how}; "
            f"{self.thresholds.description}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model_dir),
            "split": self.split,
            "taxonomy": self.taxonomy,
            "model_taxonomy": self.model_taxonomy,
            "projected": self.projected,
            "thresholds": self.thresholds.to_dict(),
            "predictions": {
                "cache": str(self.predictions.cache_path) if self.predictions.cache_path else None,
                "from_cache": self.predictions.from_cache,
                "model_fingerprint": self.predictions.model_fingerprint,
                "split_checksum": self.predictions.split_checksum,
            },
            "metrics": self.report.to_dict(),
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """`MetricsReport.to_rows` plus the threshold each row was decided with."""
        thr = self.thresholds.value
        by_label = thr.by_label() if isinstance(thr, TunedThresholds) else {}
        rows = []
        for row in self.report.to_rows():
            if isinstance(thr, TunedThresholds):
                t: Any = by_label.get(row["label"], f"per-label ({self.thresholds.tuned_on})")
                if self.projected:
                    t = f"per-label ({self.thresholds.tuned_on}), before projection"
            else:
                t = float(thr)
            rows.append({**row, "threshold": t})
        return rows

    def to_markdown(self, digits: int = 3) -> str:
        return f"**{self.headline()}**\n\n" + self.report.to_markdown(digits)


def load_eval_split(
    split: str | Path | Split,
    data_dir: str | Path | None,
    taxonomy: str = "goemotions",
    label_names: Sequence[str] | None = None,
) -> Split:
    """A split to evaluate: a `Split`, an official split name in ``data_dir``, or a data file.

    Files (.tsv/.csv/.jsonl) are read with `goemo.data.io.load_split`; label names default to
    the model's, so a CSV with a label-list column needs no extra options.
    """
    if isinstance(split, Split):
        return split
    from goemo.data.io import OFFICIAL_SPLITS, load_goemotions, load_split

    name = str(split)
    if name in OFFICIAL_SPLITS:
        folder = Path(data_dir) if data_dir is not None else Path(DEFAULT_DATA_DIR)
        return load_goemotions(folder, taxonomy=taxonomy, splits=[name])[name]
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"split must be one of {', '.join(OFFICIAL_SPLITS)} or a data file; {name!r} is neither")
    if path.suffix.lower() == ".tsv":
        loaded = load_split(path)
        if taxonomy != "goemotions":
            from goemo.data.taxonomy import load_taxonomy, project_labels

            tax = load_taxonomy(taxonomy)
            loaded = Split(loaded.texts, loaded.ids, project_labels(loaded.labels, loaded.label_names, tax),
                           list(tax.labels), loaded.name, loaded.source)
        return loaded
    return load_split(path, label_names=label_names)


def evaluate(
    model: str | Path,
    split: str | Path | Split = "test",
    *,
    data_dir: str | Path | None = None,
    thresholds: ThresholdSpec = None,
    taxonomy: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    sweep: Sequence[float] | None = PAPER_THRESHOLDS,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 128,
    device: str = "auto",
    token_cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> EvaluationResult:
    """Score a model folder on a split: per-label and averaged metrics, plus the threshold sweep.

    ``split`` is "train"/"dev"/"test" (read from ``data_dir``, by default the one the model
    was trained on), a data file, or a `Split`. ``thresholds``: None/"fixed" (goemo.json's
    global, the paper's 0.3), a float, or "tuned" (goemo.json's dev-tuned per-label values).
    ``taxonomy``: "ekman"/"sentiment" projects a 28-label model's probabilities (max over each
    group's members); None evaluates in the model's own taxonomy. ``max_samples`` scores a
    seeded random subset (quick checks). ``out_dir`` also writes ``evaluation.json``,
    ``evaluation.csv`` and ``evaluation.md`` there.

    >>> result = evaluate("runs/tiny/best", "test", thresholds="tuned", taxonomy="ekman")  # doctest: +SKIP
    >>> result.report.macro.f1, result.thresholds.description  # doctest: +SKIP
    """
    model_dir, meta = open_model_folder(model)
    target = check_taxonomy(meta, taxonomy, model_dir)
    data = load_eval_split(split, resolve_data_dir(meta, data_dir), model_taxonomy(meta), meta.get("label_names"))
    if max_samples:
        data = data.sample(max_samples, seed=seed)
    choice = resolve_thresholds(thresholds, meta, meta.get("label_names") or data.label_names, data)
    preds = predict_split(model_dir, data, cache_dir=cache_dir, use_cache=cache, batch_size=batch_size,
                          device=device, token_cache_dir=token_cache_dir)
    result = score_predictions(preds, data, meta, model_dir, thresholds=choice, taxonomy=target, sweep=sweep)
    if out_dir is not None:
        write_evaluation(result, out_dir)
    return result


def score_predictions(
    preds: Predictions,
    data: Split,
    meta: dict[str, Any],
    model_dir: str | Path,
    *,
    thresholds: ThresholdSpec | ThresholdChoice = None,
    taxonomy: str | None = None,
    sweep: Sequence[float] | None = PAPER_THRESHOLDS,
) -> EvaluationResult:
    """Metrics of already computed predictions: what `evaluate` does once the model has run.

    Lets a report score one set of probabilities at several thresholds and taxonomies
    without reading the data or hashing the weights again.
    """
    model_dir = Path(model_dir)
    if list(preds.label_names) != list(data.label_names):
        raise EvaluationError(
            f"{model_dir} predicts labels {list(preds.label_names)[:3]}…, the split has {data.label_names[:3]}…"
        )
    if preds.probs.shape[0] != len(data) or preds.split_checksum != data.checksum():
        raise EvaluationError(f"predictions were made for other data than split {data.name!r}")
    native = model_taxonomy(meta)
    target = check_taxonomy(meta, taxonomy, model_dir)
    choice = (thresholds if isinstance(thresholds, ThresholdChoice)
              else resolve_thresholds(thresholds, meta, preds.label_names, data))
    report = compute_metrics(
        data.labels, preds.probs, preds.label_names, thresholds=choice.value,
        taxonomy=None if target == native else target, sweep=sweep, split=data.name,
    )
    return EvaluationResult(report, model_dir, data.name, target, native, choice, preds, data.labels, list(data.texts))


def open_model_folder(model: str | Path) -> tuple[Path, dict[str, Any]]:
    """The folder as a Path and its ``goemo.json`` ({} for a plain transformers folder).

    Read here rather than with `goemo.models.modeling.read_meta`, whose module imports torch and
    transformers: a cache hit should cost milliseconds, not seconds of imports.
    """
    import json

    model_dir = Path(model)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no such model folder (expected e.g. runs/NAME/best)")
    path = model_dir / "goemo.json"
    if not path.is_file():
        return model_dir, {}
    try:
        return model_dir, json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def model_taxonomy(meta: dict[str, Any]) -> str:
    """The taxonomy the model was trained on (goemo.json), "goemotions" when unknown."""
    return str(meta.get("taxonomy") or "goemotions")


def check_taxonomy(meta: dict[str, Any], taxonomy: str | None, model_dir: Path | str = "model") -> str:
    """The taxonomy to score in; only a fine-label (goemotions) model can be projected."""
    native = model_taxonomy(meta)
    target = str(taxonomy or native)
    if target != native and native != "goemotions":
        raise EvaluationError(
            f"{model_dir} was trained on the {native!r} taxonomy; it can be evaluated on {native!r} only "
            f"(projection goes from the 28 fine labels to groups, not between groupings)"
        )
    return target


def resolve_data_dir(meta: dict[str, Any], data_dir: str | Path | None) -> Path:
    """``data_dir`` if given, else the one the model was trained on (if it still exists), else data/goemotions."""
    if data_dir is not None:
        return Path(data_dir)
    trained_on = (meta.get("training_config") or {}).get("data_dir")
    return Path(trained_on) if trained_on and Path(trained_on).is_dir() else Path(DEFAULT_DATA_DIR)


def write_evaluation(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``evaluation.json``, ``evaluation.csv`` and ``evaluation.md`` into ``out_dir``."""
    out = Path(out_dir)
    return {
        "json": atomic_write_json(out / "evaluation.json", result.to_dict()),
        "csv": atomic_write_text(out / "evaluation.csv", rows_to_csv(result.to_rows())),
        "md": atomic_write_text(out / "evaluation.md", result.to_markdown()),
    }


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of `EvaluationResult.to_rows` (None becomes an empty cell)."""
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()
