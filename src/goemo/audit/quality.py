"""Label-quality scores from out-of-fold probabilities, in the manner of confident learning.

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021), per label as in cleanlab's
multi-label mode (formulas: docs/audit.md): ``t_j`` and ``a_j`` are the mean out-of-fold
probability of label j over the texts that carry it and those that do not. A pair is flagged
**missing** when j is not given and ``p_ij >= t_j``, **spurious** when given and ``p_ij <= a_j``.
The thresholds decide what is flagged; the normalized margin ``p(other value) - p(given
value)`` decides the order (a threshold-adjusted score ranked planted errors worse: it
discards how rare a label is, docs/benchmarks.md). The joint noise estimate and pruning are
left out: a person gets the ranked pairs.

>>> import numpy as np
>>> given = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.uint8)
>>> probs = np.array([[0.9, 0.1], [0.02, 0.1], [0.1, 0.8], [0.95, 0.1]], dtype=np.float32)
>>> q = label_quality(given, probs, ["joy", "anger"])
>>> [(q.label_names[j], q.kind(i, j)) for i, j in q.ranking()]
[('joy', 'spurious'), ('joy', 'missing')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("missing", "spurious")


@dataclass(frozen=True)
class LabelQuality:
    """Per-(text, label) scores of one audited split: ``present_mean`` is ``t_j``, ``absent_mean`` ``a_j``."""

    label_names: list[str]
    given: np.ndarray
    probs: np.ndarray
    present_mean: np.ndarray
    absent_mean: np.ndarray
    score: np.ndarray
    flagged: np.ndarray

    def kind(self, i: int, j: int) -> str:
        """``missing`` (j not given: the model says it applies) or ``spurious`` (given: the model says not)."""
        return "spurious" if self.given[i, j] else "missing"

    def ranking(self) -> list[tuple[int, int]]:
        """The flagged pairs (text, label), surest first (score descending; ties by text, then label)."""
        rows, cols = np.nonzero(self.flagged)
        order = np.lexsort((cols, rows, -self.score[rows, cols]))
        return [(int(rows[k]), int(cols[k])) for k in order]

    def summary(self) -> list[dict[str, Any]]:
        """One row per label: counts, thresholds, flagged pairs per kind, and rates (missing per text without it)."""
        n = len(self.given)
        carried = self.given.sum(axis=0).astype(int)
        missing = (self.flagged & (self.given == 0)).sum(axis=0).astype(int)
        spurious = (self.flagged & (self.given == 1)).sum(axis=0).astype(int)
        rows = []
        for j, name in enumerate(self.label_names):
            without = n - int(carried[j])
            rows.append(
                {
                    "label": name,
                    "texts": n,
                    "given": int(carried[j]),
                    "mean_prob_given": _round(self.present_mean[j]),
                    "mean_prob_absent": _round(self.absent_mean[j]),
                    "missing": int(missing[j]),
                    "spurious": int(spurious[j]),
                    "suspected": int(missing[j] + spurious[j]),
                    "suspected_rate": _round((missing[j] + spurious[j]) / n if n else float("nan")),
                    "missing_rate": _round(missing[j] / without if without else float("nan")),
                    "spurious_rate": _round(spurious[j] / carried[j] if carried[j] else float("nan")),
                }
            )
        return rows


def label_quality(given: np.ndarray, probs: np.ndarray, label_names: Sequence[str]) -> LabelQuality:
    """Score every (text, label) pair of ``given`` against out-of-sample ``probs`` (in-sample ones echo the labels)."""
    given = np.asarray(given, dtype=np.uint8)
    probs = np.asarray(probs, dtype=np.float32)
    if given.shape != probs.shape or given.ndim != 2:
        raise ValueError(f"labels {given.shape} and probabilities {probs.shape} must be the same (n, L) shape")
    if given.shape[1] != len(label_names):
        raise ValueError(f"{given.shape[1]} label columns but {len(label_names)} label names")
    present = given == 1
    count = present.sum(axis=0)
    absent_count = len(given) - count
    with np.errstate(invalid="ignore", divide="ignore"):
        present_mean = np.where(count > 0, (probs * present).sum(axis=0) / np.maximum(count, 1), np.nan)
        absent_mean = np.where(absent_count > 0, (probs * ~present).sum(axis=0) / np.maximum(absent_count, 1), np.nan)
    with np.errstate(invalid="ignore"):  # a label no text carries (or every text does): NaN, nothing flagged
        missing = probs >= present_mean[None, :]
        spurious = probs <= absent_mean[None, :]
    flagged = np.where(present, spurious, missing)
    score = np.where(present, 1 - 2 * probs, 2 * probs - 1).astype(np.float32)
    return LabelQuality(
        label_names=list(label_names),
        given=given,
        probs=probs,
        present_mean=present_mean.astype(np.float32),
        absent_mean=absent_mean.astype(np.float32),
        score=score,
        flagged=flagged,
    )


def _round(value: Any, digits: int = 6) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else round(value, digits)
