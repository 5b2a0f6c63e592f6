"""What a sweep trial is worth: the sweep metric at the epoch the trial kept.

A sweep separates two choices that a single training run makes with one metric: *selection*,
inside a trial (which epoch becomes ``best/``: by the trial's ``select_metric``; the W&B report
keeps the lowest validation loss), and *optimisation*, across trials (which hyperparameters win:
by the sweep's ``metric``; the W&B report maximises ``auc_score``). So the number Optuna compares
is the score of the model the trial hands over. These functions work on plain epoch records
(``metrics.jsonl``), so they need neither Optuna nor training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# A metric that epoch records written before it existed lack, and the record key holding the
# same number in them: ``auc_score`` is macro ROC-AUC, so older run folders (and a training
# loop that does not write it yet) still give the sweep and the report its value.
METRIC_FALLBACKS = {"auc_score": "auc_macro"}
LOWER_IS_BETTER = frozenset({"val_loss"})


def metric_value(record: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` in one epoch record as a finite float, or None (missing, null, NaN).

    >>> metric_value({"auc_macro": 0.7}, "auc_score"), metric_value({"val_loss": float("nan")}, "val_loss")
    (0.7, None)
    """
    value = record.get(metric)
    if value is None and metric in METRIC_FALLBACKS:
        value = record.get(METRIC_FALLBACKS[metric])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best_epoch_by(epochs: Sequence[Mapping[str, Any]], metric: str, maximize: bool | None = None) -> int | None:
    """The epoch where ``metric`` is best (the first of ties, as training's selection); None if never finite.

    ``maximize`` defaults to the metric's own sense: lower is better for losses only.

    >>> best_epoch_by([{"epoch": 1, "val_loss": 0.3}, {"epoch": 2, "val_loss": 0.2}], "val_loss")
    2
    """
    if maximize is None:
        maximize = metric not in LOWER_IS_BETTER
    scored = [(v, int(r["epoch"])) for r in epochs if "epoch" in r and (v := metric_value(r, metric)) is not None]
    best = (max if maximize else min)(scored, key=lambda pair: pair[0], default=None)  # the first of ties
    return None if best is None else best[1]


def kept_value(epochs: Sequence[Mapping[str, Any]], metric: str, kept_epoch: int | None) -> float | None:
    """The sweep ``metric`` at ``kept_epoch`` (the epoch the trial's ``select_metric`` kept): its objective.

    None when that epoch has no record or no finite value of the metric; the sweep then
    records the trial as failed with that reason rather than rank it on another epoch.

    >>> records = [{"epoch": 1, "val_loss": 0.3, "auc_score": 0.6}, {"epoch": 2, "val_loss": 0.4, "auc_score": 0.7}]
    >>> kept_value(records, "auc_score", best_epoch_by(records, "val_loss"))  # kept by val_loss: epoch 1
    0.6
    """
    if kept_epoch is None:
        return None
    for record in reversed(epochs):  # a resumed run may log an epoch twice: the last one was kept
        if record.get("epoch") == kept_epoch:
            return metric_value(record, metric)
    return None
