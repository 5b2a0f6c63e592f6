"""The weight average (EMA): with ``ema_decay`` set it is what gets evaluated, selected and saved as best/.

Often better than the weights at any one step, for one copy of the model. The raw weights keep
training and are still scored (``raw_*`` metrics), so one run shows what the average adds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

EMA_FILE = "ema.safetensors"  # in last/, beside the raw weights


def weight_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An average of ``model``'s parameters with the ramped ``decay``, or None without a decay.

    Buffers are not averaged: BERT's are integer position ids.

    >>> weight_average(nn.Linear(2, 2), None) is None
    True
    >>> weight_average(nn.Linear(2, 2), 0.999).training
    False
    """
    if not decay:
        return None
    ema = AveragedModel(model, multi_avg_fn=ema_update(decay))
    ema.eval()
    return ema


def ema_update(decay: float) -> Callable:
    """An exponential moving average whose decay ramps up as (1 + n) / (10 + n) to ``decay`` (as TensorFlow's).

    Without the ramp, a 0.999 average after one epoch still weighs the random head's first step a quarter.

    >>> update = ema_update(0.99)
    >>> average = [torch.zeros(2)]
    >>> update(average, [torch.ones(2)], torch.tensor(0))  # the first step moves 90% of the way
    >>> average[0]
    tensor([0.9000, 0.9000])
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, weight)

    return update
