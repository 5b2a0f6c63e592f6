"""The Accelerator of one training run (one process may train many times), and the model without its wrappers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.tracking import GeneralTracker
from torch import nn

from goemo.core.config import TrainConfig
from goemo.predict.device import resolve_device, resolve_precision


def make_accelerator(config: TrainConfig, log_with: Sequence[GeneralTracker] = ()) -> Accelerator:
    """An Accelerator for the config's device and precision, with a clear error when the device is not there.

    >>> accelerator = make_accelerator(TrainConfig(device="cpu", precision="fp32"))
    >>> accelerator.device.type, accelerator.mixed_precision
    ('cpu', 'no')
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, training=True)
    # Accelerate refuses a second Accelerator with another precision or device in one process (a
    # sweep, a notebook, the tests); clear the per-run state, keeping the process group. No public
    # way exists in Accelerate 1.15 (its own tests call this): check it when upgrading.
    AcceleratorState._reset_state()
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=1,  # accumulation is done by hand in the loop, with no_sync
        step_scheduler_with_optimizer=False,  # the prepared schedule steps once per step, not once per process
        log_with=list(log_with) or None,
    )


def plain_model(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The module whose parameters train: two unwraps, as a compiled model inside DDP keeps its compile wrapper."""
    return accelerator.unwrap_model(accelerator.unwrap_model(model), keep_torch_compile=False)


def mean_over_processes(accelerator: Accelerator, value: float) -> float:
    """The mean of ``value`` over the training processes (itself with one process)."""
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor(value, device=accelerator.device), "mean"))
