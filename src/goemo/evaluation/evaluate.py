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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.errors import EvaluationError
from goemo.core.fileio import atomic_write_json, atomic_write_text
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.core.thresholds import PAPER_THRESHOLDS, ThresholdChoice, ThresholdSpec, TunedThresholds
from goemo.data.source import DataSource, read_split
from goemo.data.split import Split
from goemo.data.taxonomy import OWN_LABELS
from goemo.predict.cache import Predictions, predict_split
from goemo.scoring.bootstrap import DEFAULT_RESAMPLES, BootstrapScores, Resampling, bootstrap_scores
from goemo.scoring.calibration import DEFAULT_BINS, CalibrationReport, calibration_report
from goemo.scoring.metrics import MetricsReport, compute_metrics

log = logging.getLogger(__name__)


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
    intervals: BootstrapScores | None = None  # `add_intervals`
    calibration: CalibrationReport | None = None  # `add_calibration`

    def add_intervals(self, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> BootstrapScores | None:
        """95% bootstrap intervals of macro-F1, macro ROC-AUC and each label's F1 at these thresholds
        (`goemo.scoring.bootstrap`: the texts resampled ``n_resamples`` times, seeded), kept in
        ``intervals`` and written by `to_dict`, `to_rows` and `to_markdown`.

        Not computed by `evaluate` itself: a few seconds of work that callers scoring many threshold
        choices do not all want. None for a projected taxonomy (its decisions are made before the
        projection) and for ``n_resamples`` 0.
        """
        if self.projected or n_resamples < 1:
            return None
        names = list(self.predictions.label_names)
        resampling = Resampling(n_resamples=n_resamples, seed=seed)
        self.intervals = bootstrap_scores(self.labels, self.predictions.probs, self.thresholds.value, names, resampling)
        return self.intervals

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
            "intervals": None if self.intervals is None else self.intervals.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
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
            rows.append({**row, "threshold": t} | self._f1_interval(row["label"]))
        return rows

    def add_calibration(self, bins: int = DEFAULT_BINS) -> CalibrationReport | None:
        """ECE (``bins`` equal-width bins), log-loss and reliability data per label of the scores, and
        of the raw model's scores where the folder is calibrated (its maps undone,
        `Calibration.uncalibrate_probs`; NaN for a label with an isotonic map, which cannot be
        undone, and the macro "before" figures average the other labels). Without a calibration the
        "before" side is the same scores (methods ``none``). Kept in ``calibration`` and written by
        `to_dict`; None for a projected taxonomy."""
        if self.projected:
            return None
        after = np.asarray(self.predictions.probs, dtype=np.float64)
        cal = ModelFolder.open(self.model_dir).calibration
        raw = after if cal is None else cal.uncalibrate_probs(after)
        lost = np.isnan(raw).any(axis=0)
        report = calibration_report(
            self.labels,
            np.where(lost, after, raw),
            after,
            list(self.predictions.label_names),
            ["none"] * after.shape[1] if cal is None else cal.methods,
            split=self.split,
            bins=bins,
        )
        if lost.any():
            report = replace(
                report,
                ece_before=np.where(lost, np.nan, report.ece_before),
                log_loss_before=np.where(lost, np.nan, report.log_loss_before),
            )
        self.calibration = report
        return report

    def _f1_interval(self, label: str) -> dict[str, float | None]:
        """``f1_low`` / ``f1_high`` of a label's (or the macro average's) F1, when intervals were computed."""
        if self.intervals is None:
            return {}
        i = self.intervals.f1_macro if label == "macro" else self.intervals.f1_per_label.get(label)
        return {"f1_low": None if i is None else i.low, "f1_high": None if i is None else i.high}

    def interval_text(self) -> str | None:
        """One line: macro-F1 and macro ROC-AUC with their intervals, and how they were drawn."""
        b = self.intervals
        if b is None:
            return None
        return (
            f"macro F1 {b.f1_macro}, macro ROC-AUC {b.auc_macro}: {b.confidence:.0%} bootstrap intervals "
            f"({b.n_resamples:,} resamples of the {b.texts:,} texts, seed {b.seed})"
        )

    def to_markdown(self, digits: int = 3) -> str:
        text = f"**{self.headline()}**\n\n" + self.report.to_markdown(digits)
        if self.intervals is None:
            return text
        rows = [f"| {name} | {i} |" for name, i in self.intervals.f1_per_label.items()]
        table = "\n".join(["| label | F1 (95% interval) |", "|---|---:|", *rows])
        return f"{text}\n{self.interval_text()}\n\n{table}\n"


def evaluate(
    model: str | Path,
    split: str | Path | Split = "test",
    *,
    source: DataSource | None = None,
    settings: RunSettings | None = None,
    thresholds: ThresholdSpec = None,
    taxonomy: str | None = None,
    max_samples: int | None = None,
    cache: bool | str | Path = True,
) -> EvaluationResult:
    """Score a model folder on a split: per-label and averaged metrics, plus the threshold sweep.

    ``split`` is a split name of ``source`` ("train"/"dev"/"test"), a data file, or a `Split`;
    ``source`` (a `goemo.data.source.DataSource`) defaults to the data the model was trained on
    (`goemo.data.source.resolve_source`). ``thresholds``: None/"fixed" (goemo.json's global, the
    paper's 0.3), a float, or "tuned" (goemo.json's dev-tuned per-label values). ``taxonomy``:
    "ekman"/"sentiment" projects a 28-label model's probabilities (max over each group's
    members); None evaluates in the model's own taxonomy. ``max_samples`` scores a seeded random
    subset (quick checks). The model runs through `goemo.predict.cache.predict_split` with
    ``settings`` (default: the probabilities training cached, in its own settings); ``cache``
    False runs the model and stores nothing, a path caches there instead of the run's
    ``predictions/``. `write_evaluation` writes the result's files.

    Eight parameters: the model, the texts (split, source, max_samples), how it runs
    (settings, cache) and how it is scored (thresholds, taxonomy) are all a user's choices.

        result = evaluate("runs/tiny/best", "test", thresholds="tuned", taxonomy="ekman")
        result.report.macro.f1, result.thresholds.description
    """
    folder = ModelFolder.open(model)
    target = check_taxonomy(folder, taxonomy)
    data = split if isinstance(split, Split) else read_split(folder, split, source)
    if max_samples:
        data = data.sample(max_samples, seed=0)
    choice = folder.choose_thresholds(thresholds, data.name, data.checksum())
    cache_dir = None if isinstance(cache, bool) else cache
    preds = predict_split(folder, data, settings, cache=cache is not False, cache_dir=cache_dir)
    return score_predictions(preds, data, folder, thresholds=choice, taxonomy=target)


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
        if native == OWN_LABELS:
            raise EvaluationError(
                f"{folder.path} was trained on labels of its own, not GoEmotions': it is evaluated on them "
                f"(--taxonomy groups the 28 GoEmotions labels)"
            )
        raise EvaluationError(
            f"{folder.path} was trained on the {native!r} taxonomy; it can be evaluated on {native!r} only "
            f"(projection goes from the 28 fine labels to groups, not between groupings)"
        )
    return target


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
