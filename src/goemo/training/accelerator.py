"""The Accelerator of one training run, and the model it trains without its wrappers.

Accelerate chooses the device, the mixed precision and the processes, so the same loop runs on a
CPU, one GPU and many. This module asks it for what the config names (with goemo's clear error
when a device is missing) and lets one Python process train many times with different settings:
a sweep, a notebook and the test suite all do.
"""

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

    ``log_with`` are the run's trackers (`goemo.training.tracking.make_trackers`); the loop starts
    them with ``accelerator.init_trackers`` once the run folder is ready.

    >>> accelerator = make_accelerator(TrainConfig(device="cpu", precision="fp32"))
    >>> accelerator.device.type, accelerator.mixed_precision
    ('cpu', 'no')
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, training=True)
    _forget_the_previous_run()
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=1,  # accumulation is done by hand in the loop, with no_sync
        step_scheduler_with_optimizer=False,  # the prepared schedule steps once per step, not once per process
        log_with=list(log_with) or None,
    )


def _forget_the_previous_run() -> None:
    """Let this run use its own mixed precision and device, whatever a run before it in this process used.

    Accelerate keeps one AcceleratorState per process and refuses a second ``Accelerator`` with
    another ``mixed_precision`` (or ``cpu=True`` after a GPU run): "AcceleratorState has already
    been initialized and cannot be changed, restart your runtime". A sweep, a notebook or the test
    suite trains many times in one process, so the per-run part of that state is cleared first;
    the distributed part (PartialState: the process group) stays as it is.

    Accelerate (1.15) has no public way to do this: ``AcceleratorState._reset_state`` is private
    (Accelerate's own tests call it between runs). It is kept in this one place; check it when
    upgrading Accelerate.
    """
    AcceleratorState._reset_state()


def plain_model(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The module whose parameters train, without the DDP and torch.compile wrappers.

    Two unwraps: a compiled model inside DDP keeps its compile wrapper through the first.
    """
    return accelerator.unwrap_model(accelerator.unwrap_model(model), keep_torch_compile=False)


def mean_over_processes(accelerator: Accelerator, value: float) -> float:
    """The mean of ``value`` over the training processes (itself with one process)."""
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor(value, device=accelerator.device), "mean"))
