"""Bootstrap intervals for a model's scores, and a paired bootstrap that compares two models.

A test split of 5,427 texts gives each score a sampling error: a rare label's F1 rests on a few
dozen positives, and two models 0.005 of macro-F1 apart may be no different at all. The
bootstrap measures that error by scoring the model on resamples of the texts.

**Intervals** (`bootstrap_scores`): the texts are resampled with replacement, ``n_resamples``
times (1,000 by default, seeded), with no stratification by label; macro-F1, macro ROC-AUC and
each label's F1 are computed on every resample at the given thresholds, and the 95% interval is
the 2.5th to 97.5th percentile of those values (the *percentile* bootstrap). A label with no
positive text in a resample is left out of that resample's macro averages, as
`goemo.scoring.metrics` leaves it out of the full split's. The work is vectorised: each
resample is a row of per-text counts, so a label's confusion counts for all resamples are one
matrix product, and its ROC-AUC for all resamples comes from one sort.

**Paired comparison** (`paired_bootstrap`): both models are scored on the *same* resamples of
the same texts, so what the texts share (an easy resample is easy for both) cancels out. The
difference ``A - B`` is reported on the full split, with the percentile interval of the
resampled differences, and a two-sided p-value: twice the fraction of resamples whose
difference does not have the observed sign (``<= 0`` when A scored higher, ``>= 0`` when lower),
capped at 1 (the "sign flip" paired bootstrap test; with 1,000 resamples the smallest value it
can give is 0, reported as ``p < 0.002``).

How the texts are resampled is one value, `Resampling` (how many resamples, the seed, the
interval's confidence, or the resamples themselves as ``indices``, as the tests give them), so
the scores compared with each other (`goemo.evaluation.compare`) come from the same resamples.

>>> y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
>>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.1, 0.2], [0.45, 0.4], [0.4, 0.7]])
>>> r = bootstrap_scores(y, p, 0.5, ["joy", "anger"], Resampling(n_resamples=200))
>>> r.f1_macro.estimate, r.auc_macro.estimate
(0.9, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from goemo.core.errors import MetricsInputError
from goemo.core.thresholds import Thresholds, as_probs, as_thresholds, binarize, json_float
from goemo.scoring.metrics import check_scores, defined_mean

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
METRICS = ("f1_macro", "auc_macro")
_CHUNK = 250  # resamples scored at once: bounds memory to a few (chunk x texts) float64 arrays


@dataclass(frozen=True)
class Interval:
    """A score on the full split and its bootstrap percentile interval (None where undefined)."""

    estimate: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"estimate": json_float(self.estimate), "low": json_float(self.low), "high": json_float(self.high)}

    def __str__(self) -> str:
        if self.estimate is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.estimate:.3f}"
        return f"{self.estimate:.3f} ({self.low:.3f} to {self.high:.3f})"


@dataclass(frozen=True)
class BootstrapScores:
    """Macro-F1, macro ROC-AUC and each label's F1 with their bootstrap intervals."""

    f1_macro: Interval
    auc_macro: Interval
    f1_per_label: dict[str, Interval]
    texts: int
    n_resamples: int
    seed: int | None
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "percentile bootstrap over texts",
            "texts": self.texts,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "f1_macro": self.f1_macro.to_dict(),
            "auc_macro": self.auc_macro.to_dict(),
            "f1_per_label": {name: i.to_dict() for name, i in self.f1_per_label.items()},
        }


@dataclass(frozen=True)
class PairedComparison:
    """One metric of model A against model B on the same texts: the scores, ``A - B`` with its
    paired-bootstrap interval, and the two-sided p-value (see the module's docstring)."""

    metric: str
    a: float | None
    b: float | None
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n_resamples: int  # resamples where the metric was defined for both models
    confidence: float = CONFIDENCE

    @property
    def significant(self) -> bool:
        """Whether the interval of ``A - B`` leaves out 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def p_text(self) -> str:
        """The p-value as printed: ``p = 0.034``, or ``p < 0.002`` when no resample disagreed."""
        if self.p_value is None:
            return "p n/a"
        if self.p_value == 0:
            return f"p < {2 / max(self.n_resamples, 1):.2g}"
        return f"p = {self.p_value:.3g}"

    def verdict(self, name_a: str = "A", name_b: str = "B") -> str:
        """One sentence: who beats whom, by how much, with the interval and the p-value."""
        label = {"f1_macro": "macro-F1", "auc_macro": "macro ROC-AUC"}.get(self.metric, self.metric)
        if self.difference is None or self.low is None or self.high is None:
            return f"{label}: undefined for one of the models on these texts"
        ci = f"{self.confidence:.0%} CI {self.low:+.4f} to {self.high:+.4f}; {self.p_text()}"
        if self.significant:
            winner, loser = (name_a, name_b) if self.difference > 0 else (name_b, name_a)
            return f"{winner} beats {loser} on {label} by {abs(self.difference):.4f} ({ci})"
        return f"no clear difference in {label}: {name_a} - {name_b} = {self.difference:+.4f} ({ci})"

    def to_dict(self) -> dict[str, Any]:
        floats = ("a", "b", "difference", "low", "high", "p_value")
        plain = {k: json_float(v) if k in floats else v for k, v in asdict(self).items()}
        return plain | {"significant": self.significant}


def resample_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(n_resamples, n)`` indices of texts drawn with replacement, from one seeded generator.

    >>> resample_indices(4, 2, seed=0).shape
    (2, 4)
    """
    if n < 1 or n_resamples < 1:
        raise MetricsInputError(f"a bootstrap needs at least one text and one resample, got {n} and {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Resampling:
    """How the texts are resampled: ``n_resamples`` draws with replacement from a generator seeded
    with ``seed`` (`resample_indices`), or exactly the rows of ``indices`` (``(resamples, texts)``
    row numbers; ``n_resamples`` and ``seed`` are then unused), and the ``confidence`` of the
    percentile intervals. `bootstrap_scores` and `paired_bootstrap` take it; `fixed` draws the
    resamples once, so that several scores share them.

    >>> Resampling(n_resamples=3, seed=1).fixed(5).indices.shape
    (3, 5)
    """

    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    confidence: float = CONFIDENCE
    indices: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise MetricsInputError(f"confidence={self.confidence}: expected a share between 0 and 1, e.g. 0.95")

    def draw(self, n: int) -> np.ndarray:
        """The ``(resamples, n)`` row numbers of the resampled texts: ``indices`` (checked), else a seeded draw."""
        if self.indices is None:
            return resample_indices(n, self.n_resamples, self.seed)
        idx = np.asarray(self.indices, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] != n or idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise MetricsInputError(f"indices must be (resamples, {n}) row numbers of the texts")
        return idx

    def fixed(self, n: int) -> Resampling:
        """The same resampling with its resamples of ``n`` texts drawn, to score several models on them."""
        return replace(self, indices=self.draw(n))

    @property
    def recorded_seed(self) -> int | None:
        """The seed the resamples came from; None when they were given as ``indices``."""
        return None if self.indices is not None else self.seed


def bootstrap_scores(
    y_true: np.ndarray,
    probs: np.ndarray,
    thresholds: Thresholds,
    label_names: Sequence[str],
    resampling: Resampling | None = None,
) -> BootstrapScores:
    """Macro-F1, macro ROC-AUC and per-label F1 at ``thresholds``, each with its bootstrap interval.

    ``resampling`` (default: 1,000 resamples, seed 0, 95%) says how the texts are resampled.
    """
    resampling = resampling or Resampling()
    confidence = resampling.confidence
    y, p, idx = _inputs(y_true, probs, resampling, label_names)
    decisions = binarize(p, as_thresholds(thresholds, y.shape[1]))
    full = _scores(np.ones((1, len(y))), y, p, decisions)
    resampled = _resampled_scores(idx, y, p, decisions)
    f1 = {name: _interval(full["f1"][0, j], resampled["f1"][:, j], confidence) for j, name in enumerate(label_names)}
    return BootstrapScores(
        _interval(full["f1_macro"][0], resampled["f1_macro"], confidence),
        _interval(full["auc_macro"][0], resampled["auc_macro"], confidence),
        f1,
        len(y),
        len(idx),
        resampling.recorded_seed,
        confidence,
    )


def paired_bootstrap(
    y_true: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    thresholds_a: Thresholds,
    thresholds_b: Thresholds,
    *,
    metrics: Sequence[str] = METRICS,
    resampling: Resampling | None = None,
) -> dict[str, PairedComparison]:
    """Model A against model B on the same texts, for each of ``metrics`` (``f1_macro``, ``auc_macro``).

    Both are scored on the same resamples, drawn as ``resampling`` says (default: 1,000, seed 0, 95%).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise MetricsInputError(f"unknown metrics {unknown}: expected some of {', '.join(METRICS)}")
    resampling = resampling or Resampling()
    confidence = resampling.confidence
    y, pa, idx = _inputs(y_true, probs_a, resampling)
    pb = as_probs(probs_b)
    if pb.shape != pa.shape:
        raise MetricsInputError(f"the two models' probabilities differ in shape: {pa.shape} and {pb.shape}")
    da = binarize(pa, as_thresholds(thresholds_a, y.shape[1]))
    db = binarize(pb, as_thresholds(thresholds_b, y.shape[1]))
    ones = np.ones((1, len(y)))
    full_a, full_b = _scores(ones, y, pa, da), _scores(ones, y, pb, db)
    res_a, res_b = _resampled_scores(idx, y, pa, da), _resampled_scores(idx, y, pb, db)
    out = {}
    for metric in metrics:
        a, b = float(full_a[metric][0]), float(full_b[metric][0])
        diffs = res_a[metric] - res_b[metric]
        diffs = diffs[np.isfinite(diffs)]
        if math.isnan(a) or math.isnan(b) or not len(diffs):
            out[metric] = PairedComparison(metric, _none(a), _none(b), None, None, None, None, len(diffs), confidence)
            continue
        observed = a - b
        low, high = _percentiles(diffs, confidence)
        out[metric] = PairedComparison(
            metric, a, b, observed, low, high, sign_flip_p_value(observed, diffs), len(diffs), confidence
        )
    return out


def sign_flip_p_value(observed: float, diffs: np.ndarray) -> float:
    """Two-sided p-value of a paired bootstrap: ``2 * (share of resampled differences that are 0 or of
    the sign opposite to ``observed``)``, capped at 1; 1 when ``observed`` is 0.

    >>> sign_flip_p_value(0.01, np.array([0.02, 0.01, -0.01, 0.03]))
    0.5
    """
    d = np.asarray(diffs, dtype=np.float64)
    if observed == 0 or not len(d):
        return 1.0
    against = np.count_nonzero(d <= 0) if observed > 0 else np.count_nonzero(d >= 0)
    return float(min(1.0, 2.0 * against / len(d)))


# ---------------------------------------------------------------------------- the vectorised scores


def _inputs(
    y_true: np.ndarray, probs: np.ndarray, resampling: Resampling, label_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, p = check_scores(y_true, probs, label_names)
    return (y > 0).astype(np.float64), p, resampling.draw(len(y))


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each text is drawn in each resample: ``(resamples, n)`` float64."""
    rows = len(indices)
    flat = (indices + np.arange(rows)[:, None] * n).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _resampled_scores(
    indices: np.ndarray, y: np.ndarray, p: np.ndarray, decisions: np.ndarray
) -> dict[str, np.ndarray]:
    parts = [_scores(_counts(indices[i : i + _CHUNK], len(y)), y, p, decisions) for i in range(0, len(indices), _CHUNK)]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _scores(weights: np.ndarray, y: np.ndarray, p: np.ndarray, decisions: np.ndarray) -> dict[str, np.ndarray]:
    """Per resample (a row of per-text ``weights``): each label's F1 (NaN without positives), macro-F1
    over the labels that have positives, each label's ROC-AUC and the macro ROC-AUC (NaN where undefined)."""
    d = decisions.astype(np.float64)
    tp = weights @ (y * d)
    fp = weights @ ((1.0 - y) * d)
    fn = weights @ (y * (1.0 - d))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp + fn > 0, 2.0 * tp / (2.0 * tp + fp + fn), np.nan)
    auc = np.column_stack([_weighted_auc(weights, y[:, j], p[:, j]) for j in range(y.shape[1])])
    return {"f1": f1, "f1_macro": defined_mean(f1, axis=1), "auc": auc, "auc_macro": defined_mean(auc, axis=1)}


def _weighted_auc(weights: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ROC-AUC of one label per resample, texts counted as often as drawn; ties count one half
    (the Mann-Whitney statistic, what scikit-learn's ``roc_auc_score`` computes)."""
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_s)) + 1])  # groups of tied scores
    w = weights[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _interval(estimate: float, resampled: np.ndarray, confidence: float) -> Interval:
    values = resampled[np.isfinite(resampled)]
    if math.isnan(estimate):
        return Interval(None, None, None)
    return Interval(float(estimate), *(_percentiles(values, confidence) if len(values) else (None, None)))


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value
