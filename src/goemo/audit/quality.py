"""Label-quality scores from out-of-fold probabilities, in the manner of confident learning.

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021) finds label errors by comparing a
model's out-of-sample confidence with a per-class threshold learnt from the same predictions:
the threshold of class j is the mean predicted probability of j over the examples labelled j,
and an example whose confidence in another class reaches that class's threshold is counted as
probably mislabelled. goemo's data is multi-label, so each label is its own two-class problem
(the label applies, or it does not), as in cleanlab's multi-label mode:

* ``t_j`` = mean out-of-fold probability of label j over the texts that carry it;
* ``a_j`` = mean out-of-fold probability of label j over the texts that do not (so
  ``1 - a_j`` is the threshold of the class "j does not apply").

A pair (text i, label j) is flagged

* **missing** when j is not given and ``p_ij >= t_j`` (the model is as sure j applies as it is,
  on average, for texts that do carry j);
* **spurious** when j is given and ``1 - p_ij >= 1 - a_j``, that is ``p_ij <= a_j`` (the model
  is as sure j does not apply as it is, on average, for texts without j).

**The score** ranks the pairs by how sure the model is that the given value is wrong: the
normalized margin of confident learning, ``p(other value) - p(given value)``, that is

* ``2 p_ij - 1`` when j is not given (the model's case for adding it);
* ``1 - 2 p_ij`` when j is given (its case for removing it).

It runs from -1 (the model agrees with the label, certainly) to 1 (it is certain the label is
wrong); ranking by it is ranking by self-confidence, ``p(given value)``, lowest first, which is
cleanlab's default order for the issues it finds. The thresholds decide what is flagged, the
score the order. A threshold-adjusted score (the log-odds past ``t_j`` or ``a_j``) was measured
and ranked planted errors worse: it discards how rare a label is, and a rare label given to a
text is more often wrong (docs/benchmarks.md, "Label audit: planted errors").

A label no text carries has no ``t_j``: nothing is flagged missing for it (and likewise for a
label every text carries). This is the per-example part of confident learning; the estimate of
the joint noise distribution and pruning by it are left out, as goemo hands the ranked pairs to
a person rather than dropping them itself.

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
    """Per-(text, label) scores of one audited split; see the module docstring for the formulas.

    ``given`` (n, L) 0/1 labels, ``probs`` (n, L) out-of-fold probabilities, ``present_mean``
    (``t_j``) and ``absent_mean`` (``a_j``) per label, ``score`` (n, L) the normalized margin,
    ``flagged`` (n, L) the pairs past their label's threshold.
    """

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
        """One row per label: its counts, thresholds, how many pairs are flagged of each kind, and rates.

        ``suspected_rate`` is flagged pairs / texts; ``missing_rate`` is per text without the
        label and ``spurious_rate`` per text with it.
        """
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
    """Score every (text, label) pair of ``given`` against out-of-fold ``probs`` (same shape).

    ``probs`` must be out of sample (each text predicted by a model that never trained on it):
    in-sample probabilities echo the labels and hide their errors.
    """
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
