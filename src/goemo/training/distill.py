"""Distillation: training towards the mean probabilities of teacher models (``--teacher``).

An ensemble's averaged probabilities carry what 0/1 labels do not (how likely "annoyance" is
beside "anger"); a student keeps part of its gain for the cost of one model. A teacher predicts
texts it trained on too confidently, so teachers trained with ``--holdout-fold`` each give only
their held-out fold (`cross_fitted_probabilities`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.core.folder import ModelFolder
from goemo.data.folds import fold_of
from goemo.data.split import Split
from goemo.predict.cache import predict_split


def soft_targets(config: TrainConfig, train_split: Split) -> torch.Tensor | None:
    """`teacher_probabilities` as a tensor to index batches with, or None without teachers."""
    soft = teacher_probabilities(config, train_split)
    return None if soft is None else torch.from_numpy(soft)


def batch_targets(batch: dict[str, np.ndarray], soft: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """The targets of one batch: its 0/1 labels mixed with the teachers' probabilities (BCE is linear in its target).

    >>> batch = {"labels": np.array([[1.0, 0.0]], dtype=np.float32), "index": np.array([0])}
    >>> batch_targets(batch, torch.tensor([[0.5, 0.5]]), 0.5)
    tensor([[0.7500, 0.2500]])
    """
    targets = torch.from_numpy(batch["labels"])
    if soft is None:
        return targets
    return (1 - alpha) * targets + alpha * soft[torch.from_numpy(batch["index"])]


def teacher_probabilities(config: TrainConfig, train_split: Split) -> np.ndarray | None:
    """The mean probability of ``config.teachers`` on every training text (cached in each teacher), or None."""
    if not config.teachers:
        return None
    wanted = list(train_split.label_names)
    folders = {teacher: ModelFolder.open(teacher) for teacher in config.teachers}
    for teacher, folder in folders.items():  # every teacher is checked before any of them runs
        names = folder.label_names
        if names != wanted:
            raise ConfigError(
                f"teacher {teacher}: its {len(names)} labels ({', '.join(names[:3])}, …) are not the "
                f"{len(wanted)} of the training data ({', '.join(wanted[:3])}, …)"
            )
    folds = {t: holdout(folder.training_config) for t, folder in folders.items()}
    if any(f is not None for f in folds.values()):
        return cross_fitted_probabilities(config, train_split, folds)
    total: np.ndarray | None = None
    for teacher in config.teachers:
        preds = predict_split(teacher, train_split, config.scoring_settings(), token_cache_dir=config.cache_dir)
        probs = preds.probs.astype(np.float32)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(config.teachers)


def holdout(saved: dict[str, Any]) -> tuple[int, int] | None:
    """(fold, num_folds) a teacher left out of its training texts, from its training config, or None.

    >>> holdout({"holdout_fold": 2, "num_folds": 5}), holdout({"holdout_fold": None})
    ((2, 5), None)
    """
    fold = saved.get("holdout_fold")
    return None if fold is None else (int(fold), int(saved.get("num_folds", TrainConfig.num_folds)))


def cross_fitted_probabilities(
    config: TrainConfig, train_split: Split, folds: dict[str, tuple[int, int] | None]
) -> np.ndarray:
    """Each training text's mean probability over the teachers that never saw it (every fold needs one)."""
    full = sorted(t for t, f in folds.items() if f is None)
    if full:
        raise ConfigError(
            f"teachers {', '.join(full)} trained on every fold; mix cross-fitted teachers "
            f"(--holdout-fold) only with other cross-fitted ones"
        )
    counts = {f[1] for f in folds.values() if f is not None}
    if len(counts) != 1:
        raise ConfigError(f"the teachers held out folds of different splittings (num_folds {sorted(counts)})")
    num_folds = counts.pop()
    text_fold = fold_of(train_split.ids, num_folds)
    total = np.zeros(train_split.labels.shape, dtype=np.float32)
    count = np.zeros(len(train_split), dtype=np.float32)
    for teacher, (fold, _) in folds.items():  # type: ignore[misc]
        rows = np.flatnonzero(text_fold == fold)
        if rows.size:
            part = train_split.subset(rows, name=f"{train_split.name}-fold{fold}of{num_folds}")
            preds = predict_split(teacher, part, config.scoring_settings(), token_cache_dir=config.cache_dir)
            total[rows] += preds.probs.astype(np.float32)
            count[rows] += 1
    missing = sorted({int(f) for f in text_fold[count == 0]})
    if missing:
        raise ConfigError(
            f"no teacher held out fold(s) {', '.join(map(str, missing))} of {num_folds}: "
            f"those training texts have no out-of-sample prediction"
        )
    return total / count[:, None]
