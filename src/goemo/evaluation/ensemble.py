"""Score several trained models alone and as an average: the seed spread and the seed ensemble.

A single fine-tuning run of a small model on GoEmotions moves from one seed to the next,
mostly on the rare labels (the `fast` preset: test macro-F1 0.528-0.536 over three seeds), so
one number says little about a recipe. This module answers the two questions that follow: how wide is the spread over
seeds (each member scored alone, with its own thresholds tuned on dev), and how much does
averaging the members' probabilities gain (one set of per-label thresholds tuned on the
averaged dev probabilities). Every probability comes from `goemo.predict.cache.predict_split`,
so members already evaluated are read from their prediction caches, not run again.

Thresholds are tuned on ``tune_split`` (dev) and never on ``eval_split``: the same leakage
guard as everywhere else (`goemo.scoring.metrics.tune_thresholds` refuses a test split). They are
shrunk towards the best global threshold as the members were trained to (``threshold_shrink``
in their ``goemo.json``), unless ``shrink`` says otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.errors import ConfigError
from goemo.core.fileio import atomic_write_json, atomic_write_text
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.core.thresholds import PAPER_THRESHOLD, binarize
from goemo.data.source import DataSource, read_split
from goemo.data.taxonomy import load_taxonomy, project_labels
from goemo.predict.cache import predict_split
from goemo.scoring.bootstrap import bootstrap_scores
from goemo.scoring.metrics import project_to_taxonomy, summary, tune_thresholds

PROJECTIONS = ("ekman", "sentiment")


@dataclass
class EnsembleResult:
    """Per-member and ensemble scores on ``eval_split`` (macro-F1 at the paper's threshold and
    with dev-tuned per-label thresholds, macro ROC-AUC, projected Ekman/sentiment macro-F1)."""

    members: list[dict[str, Any]]
    ensemble: dict[str, Any]
    tune_split: str
    eval_split: str
    threshold: float
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    shrink: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tune_split": self.tune_split,
            "eval_split": self.eval_split,
            "threshold": self.threshold,
            "shrink": self.shrink,
            "members": self.members,
            "spread": self.spread,
            "ensemble": self.ensemble,
        }

    def to_markdown(self) -> str:
        cols = (
            "f1_macro",
            "f1_macro_tuned",
            "auc_macro",
            "ekman_f1_macro",
            "ekman_f1_macro_tuned",
            "sentiment_f1_macro",
            "sentiment_f1_macro_tuned",
        )
        at, tuned = f"@{self.threshold:g}", f"{self.tune_split}-tuned"
        how = f"tuned on {self.tune_split}" + (f", shrunk {self.shrink:g} to global" if self.shrink else "")
        head = (
            f"| model | {self.eval_split} macro-F1 {at} | with thresholds {how} | macro ROC-AUC "
            f"| Ekman F1 {at} | Ekman F1 {tuned} | sentiment F1 {at} | sentiment F1 {tuned} |"
        )
        lines = [head, "|---|" + "---:|" * len(cols)]

        def row(name: str, values: dict[str, Any]) -> str:
            bands = values.get("intervals") or {}
            return f"| {name} | " + " | ".join(_fmt(values.get(c), bands.get(c)) for c in cols) + " |"

        for m in self.members:
            lines.append(row(m["model"], m))
        if self.spread:
            lines.append(
                "| members: mean ± sd | "
                + " | ".join(
                    f"{self.spread[c]['mean']:.4f} ± {self.spread[c]['sd']:.4f}" if c in self.spread else ""
                    for c in cols
                )
                + " |"
            )
        lines.append(row(f"**ensemble of {len(self.members)}** (mean probability)", self.ensemble))
        lines.append(
            "\nIn brackets: 95% intervals of a percentile bootstrap, 1,000 resamples of the "
            f"{self.eval_split} texts (seed 0), at the tuned thresholds."
        )
        return "\n".join(lines) + "\n"


def _fmt(value: Any, band: Sequence[float | None] | None = None) -> str:
    """A score with 4 digits, and its interval (``0.5300 (0.5050–0.5560)``) where there is one."""
    if value is None:
        return ""
    if band is None or band[0] is None or band[1] is None:
        return f"{value:.4f}"
    return f"{value:.4f} ({band[0]:.4f}–{band[1]:.4f})"


@dataclass(frozen=True)
class _Scoring:
    """How every member and the ensemble are scored: the same labels, splits, threshold and shrink."""

    label_names: list[str]
    tune_split: str
    threshold: float
    project: bool  # also Ekman and sentiment (a fine-label model)
    shrink: float


def _scores(
    y_dev: np.ndarray, p_dev: np.ndarray, y_eval: np.ndarray, p_eval: np.ndarray, how: _Scoring
) -> dict[str, Any]:
    label_names, threshold = how.label_names, how.threshold
    tuned = tune_thresholds(y_dev, p_dev, split_name=how.tune_split, label_names=label_names, shrink=how.shrink)
    fixed = summary(y_eval, p_eval, threshold)
    out: dict[str, Any] = {
        "f1_macro": fixed["f1_macro"],
        "f1_macro_tuned": summary(y_eval, p_eval, tuned.values)["f1_macro"],
        "f1_micro": fixed["f1_micro"],
        "auc_macro": fixed["auc_macro"],
    }
    b = bootstrap_scores(y_eval, p_eval, tuned.values, label_names)  # 95%, 1,000 seeded resamples of the texts
    out["intervals"] = {
        "f1_macro_tuned": [b.f1_macro.low, b.f1_macro.high],
        "auc_macro": [b.auc_macro.low, b.auc_macro.high],
    }
    if how.project:
        decided = binarize(p_eval, tuned.values)  # per fine label, then projected: as `goemo evaluate` does
        for name in PROJECTIONS:
            tax = load_taxonomy(name)
            y_t, p_t, _ = project_to_taxonomy(y_eval, p_eval, label_names, tax)
            out[f"{name}_f1_macro"] = summary(y_t, p_t, threshold)["f1_macro"]
            out[f"{name}_f1_macro_tuned"] = summary(y_t, project_labels(decided, label_names, tax), 0.5)["f1_macro"]
    return out


def evaluate_ensemble(
    model_dirs: Sequence[str | Path],
    *,
    source: DataSource | None = None,
    settings: RunSettings | None = None,
    tune_split: str = "dev",
    eval_split: str = "test",
    threshold: float = PAPER_THRESHOLD,
    shrink: float | None = None,
) -> EnsembleResult:
    """Score each model folder alone and the average of their probabilities.

    The splits come from ``source``, by default the first model's training data
    (`goemo.data.source.resolve_source`); each member runs with ``settings`` (default: its
    cached training predictions).

    ``shrink`` (see `goemo.scoring.metrics.tune_thresholds`) defaults to the first member's training
    ``threshold_shrink``, so a member scores here as it did at the end of its training.

        result = evaluate_ensemble(["runs/s1/best", "runs/s2/best", "runs/s3/best"])
        result.ensemble["f1_macro_tuned"], result.spread["f1_macro_tuned"]["sd"]
    """
    if len(model_dirs) < 1:
        raise ConfigError("an ensemble needs at least one model folder")
    if tune_split == eval_split:
        raise ConfigError(f"thresholds are tuned on {tune_split!r}: evaluate on another split")
    folders = [ModelFolder.open(m) for m in model_dirs]
    names = [tuple(f.label_names) for f in folders]
    if len(set(names)) != 1 or not names[0]:
        raise ConfigError("the models do not share one label set (goemo.json label_names): they cannot be averaged")
    label_names = list(names[0])
    first = folders[0]
    splits = {s: read_split(first, s, source) for s in (tune_split, eval_split)}
    if shrink is None:
        shrink = float(first.training_config.get("threshold_shrink") or 0.0)
    how = _Scoring(label_names, tune_split, threshold, first.taxonomy == "goemotions", shrink)

    members: list[dict[str, Any]] = []
    sums = {s: np.zeros(splits[s].labels.shape, dtype=np.float64) for s in splits}
    for folder in folders:
        probs = {}
        for s, split in splits.items():
            preds = predict_split(folder, split, settings)
            if list(preds.label_names) != label_names:
                raise ConfigError(f"{folder.path}: predictions are in another label order than goemo.json's")
            probs[s] = preds.probs.astype(np.float64)
            sums[s] += probs[s]
        scores = _scores(
            splits[tune_split].labels, probs[tune_split], splits[eval_split].labels, probs[eval_split], how
        )
        members.append({"model": str(folder.path), **scores})
    n = len(folders)
    dev_mean, eval_mean = sums[tune_split] / n, sums[eval_split] / n
    ensemble = _scores(splits[tune_split].labels, dev_mean, splits[eval_split].labels, eval_mean, how)
    spread: dict[str, dict[str, float]] = {}
    if n > 1:
        for key in members[0]:
            values = [m[key] for m in members if isinstance(m.get(key), float)]
            if key != "model" and len(values) == n:
                spread[key] = {
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values),
                    "min": min(values),
                    "max": max(values),
                }
    return EnsembleResult(members, ensemble, tune_split, eval_split, threshold, spread, shrink)


def write_ensemble(result: EnsembleResult, out_dir: str | Path) -> dict[str, Path]:
    """``ensemble.json`` and ``ensemble.md`` in ``out_dir``, written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "ensemble.json", "markdown": out / "ensemble.md"}
    atomic_write_json(paths["json"], result.to_dict())
    atomic_write_text(paths["markdown"], result.to_markdown())
    return paths
