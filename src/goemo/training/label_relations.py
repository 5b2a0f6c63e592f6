"""The GoEmotions authors' label-relation regularisers, as extra loss terms.

The official training script (google-research ``goemotions/bert_classifier.py``, flags
``--sentiment`` and ``--correlation``) adds to the sigmoid cross-entropy

    λ · mean over (text, i, j) of R[i, j] · (p_i - p_j)²

for two relation matrices R: **sentiment** (+1 when emotions i and j share a sentiment group of
``sentiment_dict.json``, -1 when they do not, 0 when either is outside the groups, as neutral
is) and **correlation** (the Pearson correlation of labels i and j over the training labels,
0 for neutral). A positive R pulls the probabilities of related emotions together, a negative
one pushes them apart, so the model is nudged towards label sets that occur together. Kept
as a separate module because it is the one part of the loss that needs to know the labels'
relations rather than only their values.
"""

from __future__ import annotations

import numpy as np
import torch

from goemo.core.errors import ConfigError
from goemo.data.taxonomy import NEUTRAL, Taxonomy, load_taxonomy


def sentiment_relations(label_names: list[str] | tuple[str, ...], sentiment: Taxonomy | None = None) -> np.ndarray:
    """``(L, L)``: +1 same sentiment group, -1 different groups, 0 when a label is in none.

    The groups come from ``sentiment`` (default: the built-in grouping; training passes the
    data folder's own ``sentiment_dict.json``); labels outside every group, ``neutral`` among
    them, relate to nothing, as in the official script.
    """
    groups = (sentiment or load_taxonomy("sentiment")).groups or {}
    group_of = {member: group for group, members in groups.items() if group != NEUTRAL for member in members}
    if sum(name in group_of for name in label_names) < 2:
        raise ConfigError(
            "sentiment_reg: fewer than two of the labels are in the sentiment grouping "
            "(sentiment_dict.json); it only applies to GoEmotions' emotion labels"
        )
    size = len(label_names)
    rel = np.zeros((size, size), dtype=np.float32)
    for i, a in enumerate(label_names):
        for j, b in enumerate(label_names):
            if i != j and a in group_of and b in group_of:
                rel[i, j] = 1.0 if group_of[a] == group_of[b] else -1.0
    return rel


def correlation_relations(train_labels: np.ndarray, label_names: list[str] | tuple[str, ...]) -> np.ndarray:
    """``(L, L)`` Pearson correlations between the label columns of the training data.

    The diagonal and ``neutral``'s row and column are 0 (neutral is defined by the absence of
    the others, so its negative correlation with everything would only push it away from all).
    A label that never (or always) occurs has no correlation and gets 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant column's correlation is NaN
        corr = np.atleast_2d(np.corrcoef(np.asarray(train_labels, dtype=np.float64), rowvar=False))
    corr = np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(corr, 0.0)
    for i, name in enumerate(label_names):
        if name == NEUTRAL:
            corr[i, :] = 0.0
            corr[:, i] = 0.0
    return corr.astype(np.float32)


def relation_penalty(probs: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
    """``mean over (text, i, j) of R[i, j] · (p_i - p_j)²`` for a ``(B, L)`` batch of probabilities."""
    gaps = (probs.unsqueeze(2) - probs.unsqueeze(1)).pow(2)
    return (gaps * relations).mean()
