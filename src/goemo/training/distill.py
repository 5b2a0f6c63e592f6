"""Distillation: training towards the mean probabilities of teacher models (``--teacher``).

A seed ensemble scores better than any of its members, and its averaged probabilities carry
what the members agree on (how likely "annoyance" is beside "anger") that the 0/1 labels, a
few raters' picks, do not. A student trained towards them keeps part of the ensemble's gain at
the cost of one model.

Cross-fitting: a teacher that trained on a text predicts it in-sample, too confidently. A teacher
trained with ``--holdout-fold k`` never saw fold k, so each training text can get its
probability from the teachers that held its fold out (`cross_fitted_probabilities`).
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
    """The targets of one batch: its 0/1 labels, mixed ``alpha`` : 1 - ``alpha`` with the teachers' probabilities.

    BCE is linear in its target, so one loss on the mixed target is the weighted sum of the loss
    on the labels and the loss on the teachers' probabilities (with focal loss nearly so: the
    modulating factor is computed from the same mixed target).

    >>> batch = {"labels": np.array([[1.0, 0.0]], dtype=np.float32), "index": np.array([0])}
    >>> batch_targets(batch, torch.tensor([[0.5, 0.5]]), 0.5)
    tensor([[0.7500, 0.2500]])
    """
    targets = torch.from_numpy(batch["labels"])
    if soft is None:
        return targets
    return (1 - alpha) * targets + alpha * soft[torch.from_numpy(batch["index"])]


def teacher_probabilities(config: TrainConfig, train_split: Split) -> np.ndarray | None:
    """The mean probability of ``config.teachers`` on every training text, or None without teachers.

    The teachers' predictions go through `goemo.predict.cache.predict_split`, so they are cached
    in each teacher's folder and a resumed or repeated run does not recompute them. Only the
    train split is ever predicted.

        soft = teacher_probabilities(TrainConfig(teachers=["runs/a/best", "runs/b/best"]), train)
        soft.shape
        # -> (43410, 28)
    """
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
    """Each training text's mean probability over the teachers that never saw it.

    Mixing in a teacher that trained on every text would bring back the in-sample predictions
    cross-fitting is there to avoid, so either every teacher held a fold out or none did, and
    every fold needs at least one teacher. Each teacher predicts only its own fold.
    """
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
