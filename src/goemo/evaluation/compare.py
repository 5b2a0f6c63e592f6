"""Compare two models on the same texts: is A better than B, by how much, and how sure is that?

`compare_models` scores both model folders on one split through `goemo.evaluation.evaluate.evaluate`
(their cached predictions, each at its own thresholds), then runs a paired bootstrap over the texts
(`goemo.scoring.bootstrap.paired_bootstrap`): the difference in macro-F1 and macro ROC-AUC, its
95% interval and a two-sided p-value, and each model's own intervals. This is what ``goemo compare``
prints.

    c = compare_models("runs/minilm", "runs/tfidf", "test")
    c.paired["f1_macro"].verdict("minilm", "tfidf")
    # -> 'minilm beats tfidf on macro-F1 by 0.1043 (95% CI +0.0921 to +0.1170; p < 0.002)'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goemo.core.errors import EvaluationError
from goemo.core.folder import META_FILE
from goemo.core.thresholds import ThresholdSpec
from goemo.data.source import DataSource
from goemo.evaluation.evaluate import EvaluationResult, evaluate
from goemo.scoring.bootstrap import (
    BootstrapScores,
    PairedComparison,
    Resampling,
    bootstrap_scores,
    paired_bootstrap,
)


@dataclass
class Comparison:
    """Two models scored on the same texts: each one's evaluation and intervals, and the paired test."""

    a: EvaluationResult
    b: EvaluationResult
    scores_a: BootstrapScores
    scores_b: BootstrapScores
    paired: dict[str, PairedComparison]
    n_resamples: int
    seed: int

    def headline(self) -> str:
        return (
            f"A = {self.a.model_dir}, B = {self.b.model_dir} on {self.a.split} ({len(self.a.labels):,} texts); "
            f"A: {self.a.thresholds.description}; B: {self.b.thresholds.description}; paired bootstrap over "
            f"the texts, {self.n_resamples:,} resamples, seed {self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": str(self.a.model_dir),
            "b": str(self.b.model_dir),
            "split": self.a.split,
            "texts": len(self.a.labels),
            "thresholds": {"a": self.a.thresholds.to_dict(), "b": self.b.thresholds.to_dict()},
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "p_value": "two-sided: 2 x the share of resampled differences of the other sign or 0, capped at 1",
            "paired": {name: c.to_dict() for name, c in self.paired.items()},
            "scores_a": self.scores_a.to_dict(),
            "scores_b": self.scores_b.to_dict(),
        }


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder's ``best/`` (a run folder holds no ``goemo.json`` of its own), else ``path`` itself.

    resolve_model_dir("runs/minilm")
    # -> PosixPath('runs/minilm/best')
    """
    folder = Path(path)
    if not (folder / META_FILE).is_file() and (folder / "best" / META_FILE).is_file():
        return folder / "best"
    return folder


def compare_models(
    model_a: str | Path,
    model_b: str | Path,
    split: str = "test",
    *,
    source: DataSource | None = None,
    thresholds: ThresholdSpec = "tuned",
    resampling: Resampling | None = None,
    max_samples: int | None = None,
) -> Comparison:
    """Score ``model_a`` and ``model_b`` (model or run folders) on ``split`` and compare them.

    ``thresholds`` applies to both: ``"tuned"`` (each model's own dev-tuned per-label thresholds,
    the default), ``"fixed"`` (each one's global threshold) or a number. Both must have been
    scored on exactly the same texts, with the same labels. ``resampling`` (default: 1,000
    resamples, seed 0, 95% intervals) is drawn once: the paired test and both models' own
    intervals use the same resamples.
    """
    resampling = resampling or Resampling()
    n_resamples, seed = resampling.n_resamples, resampling.seed
    if resampling.indices is None and n_resamples < 1:
        raise EvaluationError(f"n_resamples={n_resamples}: expected at least 1 (1,000 or more for a real answer)")
    a, b = (
        evaluate(resolve_model_dir(m), split, source=source, thresholds=thresholds, max_samples=max_samples)
        for m in (model_a, model_b)
    )
    if a.predictions.split_checksum != b.predictions.split_checksum:
        raise EvaluationError(
            f"{a.model_dir} and {b.model_dir} were scored on different texts for {split!r} (each reads its own "
            f"training data by default): give --data-dir or --dataset so both read the same split"
        )
    if list(a.predictions.label_names) != list(b.predictions.label_names):
        raise EvaluationError(f"{a.model_dir} and {b.model_dir} predict different labels: they cannot be compared")
    shared = resampling.fixed(len(a.labels))
    names = list(a.predictions.label_names)
    ta, tb = a.thresholds.value, b.thresholds.value  # a number or per-label TunedThresholds: both read as arrays
    paired = paired_bootstrap(a.labels, a.predictions.probs, b.predictions.probs, ta, tb, resampling=shared)
    scores = [bootstrap_scores(r.labels, r.predictions.probs, t, names, shared) for r, t in ((a, ta), (b, tb))]
    return Comparison(a, b, scores[0], scores[1], paired, scores[0].n_resamples, seed)
