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

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.errors import ConfigError, EvaluationError
from goemo.core.fileio import atomic_write_json, atomic_write_text
from goemo.core.folder import ModelFolder
from goemo.core.thresholds import PAPER_THRESHOLDS, ThresholdChoice, ThresholdSpec, TunedThresholds
from goemo.data.hf_datasets import SPLIT_NAMES, load_hf_split
from goemo.data.io import OFFICIAL_SPLITS, load_goemotions, load_split
from goemo.data.split import Split
from goemo.data.taxonomy import load_taxonomy, project_labels
from goemo.predict.cache import Predictions, predict_split
from goemo.predict.classifier import Backend, Precision
from goemo.scoring.metrics import MetricsReport, compute_metrics

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "data/goemotions"


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
            f"{self.model_dir} on {self.split} ({r.n_examples:,} texts), taxonomy {how}; {self.thresholds.description}"
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
                "settings": self.predictions.settings,
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
    *,
    dataset: str | None = None,
    dataset_config: str | None = None,
    text_column: str = "text",
    label_column: str | None = None,
) -> Split:
    """A split to evaluate: a `Split`, a split of a Hugging Face ``dataset``, an official split
    name in ``data_dir``, or a data file.

    Files (.tsv/.csv/.jsonl) are read with `goemo.data.io.load_split`; label names default to
    the model's, so a CSV with a label-list column needs no extra options. With ``dataset``
    (a Hub id or local dataset, see `goemo.data.hf_datasets`), ``split`` names one of its
    splits (``dev`` is its ``validation``); its labels are projected to ``taxonomy`` as a
    GoEmotions folder's are.

    >>> test = load_eval_split("test", None, dataset="go_emotions", dataset_config="simplified")  # doctest: +SKIP
    >>> test.source  # doctest: +SKIP
    'dataset go_emotions/simplified:test'
    """
    if isinstance(split, Split):
        return split
    name = str(split)
    if dataset:
        return load_hf_split(
            dataset,
            name,
            dataset_config,
            text_column=text_column,
            label_column=label_column,
            label_names=label_names if taxonomy == "goemotions" else None,  # a grouping's names are not the data's
            taxonomy=taxonomy,
        )
    if name in OFFICIAL_SPLITS:
        folder = Path(data_dir) if data_dir is not None else Path(DEFAULT_DATA_DIR)
        return load_goemotions(folder, taxonomy=taxonomy, splits=[name])[name]
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"split must be one of {', '.join(OFFICIAL_SPLITS)} or a data file; {name!r} is neither")
    if path.suffix.lower() == ".tsv":
        loaded = load_split(path)
        if taxonomy != "goemotions":
            tax = load_taxonomy(taxonomy)
            loaded = Split(
                loaded.texts,
                loaded.ids,
                project_labels(loaded.labels, loaded.label_names, tax),
                list(tax.labels),
                loaded.name,
                loaded.source,
            )
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
    batch_size: int | None = None,
    device: str = "auto",
    precision: Precision | None = None,
    backend: Backend = "auto",
    token_cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> EvaluationResult:
    """Score a model folder on a split: per-label and averaged metrics, plus the threshold sweep.

    ``split`` is "train"/"dev"/"test" (read from ``data_dir``, by default the one the model
    was trained on), a data file, or a `Split`. ``thresholds``: None/"fixed" (goemo.json's
    global, the paper's 0.3), a float, or "tuned" (goemo.json's dev-tuned per-label values).
    ``taxonomy``: "ekman"/"sentiment" projects a 28-label model's probabilities (max over each
    group's members); None evaluates in the model's own taxonomy. ``max_samples`` scores a
    seeded random subset (quick checks). The model runs through `goemo.predict.cache.predict_split`
    (the predictor, cached): ``precision`` / ``batch_size`` left at None score the probabilities
    training cached, in its own settings; give them to score in other settings (an ONNX export
    folder, int8 included, is evaluated through its own backend). ``out_dir`` also writes ``evaluation.json``,
    ``evaluation.csv`` and ``evaluation.md`` there. ``dataset`` (with ``dataset_config``,
    ``text_column``, ``label_column``) reads the split from a Hugging Face dataset instead of
    ``data_dir``; a model trained on one is evaluated on it by default (`resolve_dataset`).

    >>> result = evaluate("runs/tiny/best", "test", thresholds="tuned", taxonomy="ekman")  # doctest: +SKIP
    >>> result.report.macro.f1, result.thresholds.description  # doctest: +SKIP
    >>> hub = evaluate("runs/hub/best", "test", dataset="go_emotions", dataset_config="simplified")  # doctest: +SKIP
    """
    folder = ModelFolder.open(model)
    target = check_taxonomy(folder, taxonomy)
    source = resolve_dataset(folder, split, data_dir, dataset, dataset_config, text_column, label_column)
    data = load_eval_split(split, resolve_data_dir(folder, data_dir), folder.taxonomy, folder.label_names, **source)
    if max_samples:
        data = data.sample(max_samples, seed=seed)
    choice = folder.choose_thresholds(thresholds, data.name, data.checksum())
    preds = predict_split(
        folder,
        data,
        cache_dir=cache_dir,
        use_cache=cache,
        batch_size=batch_size,
        device=device,
        precision=precision,
        backend=backend,
        token_cache_dir=token_cache_dir,
    )
    result = score_predictions(preds, data, folder, thresholds=choice, taxonomy=target, sweep=sweep)
    if out_dir is not None:
        write_evaluation(result, out_dir)
    return result


def score_predictions(
    preds: Predictions,
    data: Split,
    folder: ModelFolder,
    *,
    thresholds: ThresholdSpec | ThresholdChoice = None,
    taxonomy: str | None = None,
    sweep: Sequence[float] | None = PAPER_THRESHOLDS,
) -> EvaluationResult:
    """Metrics of already computed predictions: what `evaluate` does once the model has run.

    Lets a report score one set of probabilities at several thresholds and taxonomies
    without reading the data or hashing the weights again.
    """
    model_dir = folder.path
    if list(preds.label_names) != list(data.label_names):
        raise EvaluationError(
            f"{model_dir} predicts labels {list(preds.label_names)[:3]}…, the split has {data.label_names[:3]}…"
        )
    if preds.probs.shape[0] != len(data) or preds.split_checksum != data.checksum():
        raise EvaluationError(f"predictions were made for other data than split {data.name!r}")
    native = folder.taxonomy
    target = check_taxonomy(folder, taxonomy)
    choice = (
        thresholds
        if isinstance(thresholds, ThresholdChoice)
        else folder.choose_thresholds(thresholds, data.name, data.checksum())
    )
    report = compute_metrics(
        data.labels,
        preds.probs,
        preds.label_names,
        thresholds=choice.value,
        taxonomy=None if target == native else target,
        sweep=sweep,
        split=data.name,
    )
    return EvaluationResult(report, model_dir, data.name, target, native, choice, preds, data.labels, list(data.texts))


def check_taxonomy(folder: ModelFolder, taxonomy: str | None) -> str:
    """The taxonomy to score in; only a fine-label (goemotions) model can be projected."""
    native = folder.taxonomy
    target = str(taxonomy or native)
    if target != native and native != "goemotions":
        raise EvaluationError(
            f"{folder.path} was trained on the {native!r} taxonomy; it can be evaluated on {native!r} only "
            f"(projection goes from the 28 fine labels to groups, not between groupings)"
        )
    return target


def resolve_data_dir(folder: ModelFolder, data_dir: str | Path | None) -> Path:
    """``data_dir`` if given, else the one the model was trained on (if it still exists), else data/goemotions."""
    if data_dir is not None:
        return Path(data_dir)
    trained_on = folder.training_config.get("data_dir")
    return Path(trained_on) if trained_on and Path(trained_on).is_dir() else Path(DEFAULT_DATA_DIR)


def resolve_dataset(
    folder: ModelFolder,
    split: str | Path | Split,
    data_dir: str | Path | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict[str, Any]:
    """The Hugging Face dataset options of `load_eval_split`: ``dataset`` if given, else (for a
    split name, without ``data_dir``) the dataset the model was trained on, else none (``{}``).

    A dataset taken from the training config keeps its configuration and columns too.

    >>> resolve_dataset(ModelFolder.open("runs/hub/best"), "test")  # doctest: +SKIP
    {'dataset': 'go_emotions', 'dataset_config': 'simplified', 'text_column': 'text', 'label_column': None}
    """
    if not dataset:
        trained = folder.training_config
        named = isinstance(split, str) and (split in OFFICIAL_SPLITS or split in SPLIT_NAMES)
        if data_dir is not None or not named or not trained.get("dataset"):
            return {}
        dataset, dataset_config = str(trained["dataset"]), dataset_config or trained.get("dataset_config")
        text_column = text_column or trained.get("text_column")
        label_column = label_column or trained.get("label_column")
    return {
        "dataset": dataset,
        "dataset_config": dataset_config,
        "text_column": text_column or "text",
        "label_column": label_column,
    }


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
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()
