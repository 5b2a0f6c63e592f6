"""Which labels a multi-label model predicts *instead of* the right ones.

A single-label confusion matrix has one true and one predicted class per text; with several
labels per text there is no such pairing. The question a reader asks is still well defined:
"when a text carries label i and the model misses it, what does it say instead?" So, for
every text and every true label i the model missed, each label j the model predicted that
is *not* among the text's true labels counts one (i -> j) confusion; when it predicted no
wrong label at all, the miss counts under "nothing". Rows are divided by the number of texts
that carry i, so a cell reads "share of i-texts where i was missed and j predicted instead".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NOTHING = "(nothing)"


@dataclass(frozen=True)
class LabelConfusion:
    """Counts ``(L, L + 1)``: row = missed true label, column = wrong label predicted (last: nothing)."""

    counts: np.ndarray
    support: np.ndarray
    label_names: tuple[str, ...]

    @property
    def rates(self) -> np.ndarray:
        """Row-normalised by each true label's support (rows of absent labels are 0)."""
        return self.counts / np.maximum(self.support, 1)[:, None]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.label_names, NOTHING)

    def top_pairs(self, k: int = 10) -> list[tuple[str, str, int, float]]:
        """The ``k`` most frequent (true, predicted instead, count, rate) pairs; "nothing" excluded."""
        L = len(self.label_names)
        c, rates, names = self.counts[:, :L], self.rates, self.label_names
        top = [divmod(int(flat), L) for flat in np.argsort(-c, axis=None, kind="stable")[: max(k, 0)]]
        return [(names[i], names[j], int(c[i, j]), float(rates[i, j])) for i, j in top if c[i, j]]


def label_confusion(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> LabelConfusion:
    """Count (missed true label -> wrongly predicted label) pairs over all texts.

    >>> y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    >>> p = np.array([[0, 1, 1], [0, 0, 0], [0, 1, 0]])
    >>> label_confusion(y, p, ["a", "b", "c"]).counts[0].tolist()  # a missed: b+c once, nothing once
    [0, 1, 1, 1]
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    missed = y & ~p  # (n, L) true labels the model did not predict
    wrong = p & ~y  # (n, L) predicted labels that are not true
    counts = np.zeros((y.shape[1], y.shape[1] + 1), dtype=np.int64)
    counts[:, :-1] = missed.T.astype(np.int64) @ wrong.astype(np.int64)
    counts[:, -1] = (missed & ~wrong.any(axis=1, keepdims=True)).sum(axis=0)
    return LabelConfusion(counts, y.sum(axis=0), tuple(str(n) for n in label_names))


def pair_examples(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    true_label: int,
    predicted_label: int,
    k: int = 3,
    probs: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of up to ``k`` texts where ``true_label`` was missed and ``predicted_label`` said instead.

    With ``probs``, the most confident wrong predictions come first (the clearest examples);
    otherwise file order.
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    rows = np.flatnonzero(y[:, true_label] & ~p[:, true_label] & p[:, predicted_label] & ~y[:, predicted_label])
    if probs is not None and rows.size:
        rows = rows[np.argsort(-np.asarray(probs)[rows, predicted_label], kind="stable")]
    return rows[:k]
