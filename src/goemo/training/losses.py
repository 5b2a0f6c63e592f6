"""The training loss: BCE on logits and every option the config adds, in one place, testable without training."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from goemo.core.config import TrainConfig
from goemo.data.taxonomy import load_taxonomy
from goemo.training.label_relations import correlation_relations, relation_penalty, sentiment_relations


def loss_function(
    config: TrainConfig, train_labels: np.ndarray, label_names: Sequence[str]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """BCE on logits, with positive weights, focal modulation, smoothing and label-relation terms when set.

    >>> loss = loss_function(TrainConfig(), np.zeros((4, 2), dtype=np.uint8), ["a", "b"])
    >>> round(float(loss(torch.zeros(1, 2), torch.zeros(1, 2))), 4)  # log 2
    0.6931
    """
    relations = []
    if config.sentiment_reg:
        rel = sentiment_relations(list(label_names), load_taxonomy("sentiment", config.data_dir))
        relations.append((config.sentiment_reg, torch.from_numpy(rel)))
    if config.correlation_reg:
        rel = correlation_relations(train_labels, list(label_names))
        relations.append((config.correlation_reg, torch.from_numpy(rel)))
    pos_weight = None
    if config.pos_weight == "auto":
        pos = train_labels.sum(axis=0).clip(min=1)
        neg = len(train_labels) - pos
        # sqrt of the imbalance ratio: rare labels count more without exploding the loss.
        pos_weight = torch.tensor(np.sqrt(neg / pos), dtype=torch.float32)
    eps = config.label_smoothing

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nonlocal pos_weight, relations
        if pos_weight is not None and pos_weight.device != logits.device:
            pos_weight = pos_weight.to(logits.device)
        if relations and relations[0][1].device != logits.device:
            relations = [(weight, rel.to(logits.device)) for weight, rel in relations]
        logits = logits.float()
        if eps:
            targets = targets * (1 - eps) + eps / 2
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
        if config.loss != "focal" and not relations:
            return loss.mean()
        probs = torch.sigmoid(logits)
        if config.loss == "focal":
            p_t = probs * targets + (1 - probs) * (1 - targets)
            loss = loss * (1 - p_t).pow(config.focal_gamma)
        total = loss.mean()
        for weight, rel in relations:
            total = total + weight * relation_penalty(probs, rel)
        return total

    return loss_fn
