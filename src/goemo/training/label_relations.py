"""The GoEmotions authors' label-relation regularisers, as extra loss terms.

The official script (``goemotions/bert_classifier.py``, ``--sentiment``, ``--correlation``) adds
``λ · mean over (text, i, j) of R[i, j] · (p_i - p_j)²`` to the loss, for R the sentiment
relation or the training labels' correlation: a positive R pulls related emotions together,
a negative one pushes them apart.
"""

from __future__ import annotations

import numpy as np
import torch

from goemo.core.errors import ConfigError
from goemo.data.taxonomy import NEUTRAL, Taxonomy, load_taxonomy


def sentiment_relations(label_names: list[str] | tuple[str, ...], sentiment: Taxonomy | None = None) -> np.ndarray:
    """``(L, L)``: +1 same sentiment group, -1 different groups, 0 when a label is in none (``neutral``)."""
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
    """``(L, L)`` Pearson correlations between the training label columns; 0 on the diagonal, for
    ``neutral`` (the absence of the others: it would only be pushed from all) and constant labels."""
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
