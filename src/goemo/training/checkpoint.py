"""Checkpoints: ``best/`` (the weights that were evaluated) and ``last/`` (everything needed to resume).

What is saved and what is restored must stay a matched pair, because resuming replays exactly
what an uninterrupted run would have done and the tests demand bit-identical weights: ``last/``
holds the raw weights, the optimizer and scheduler, the RNG state of every process, the weight
average and its count, and the loop's position (``trainer_state.json``). Both folders are model
folders (``goemo.json`` from `model_meta`), written atomically: a kill leaves the previous one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import load_file
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights
from torch import nn

from goemo import __version__
from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.core.fileio import atomic_directory, atomic_write_json
from goemo.core.folder import write_meta
from goemo.core.run_folder import STATE_FILE
from goemo.data.split import Split
from goemo.models.modeling import save_model
from goemo.predict.cache import store_predictions
from goemo.training.ema import EMA_FILE

TRAINER_STATE_FILE = "trainer_state.json"  # in last/: the loop's position (goemo.training.loop.TrainState)


def model_meta(
    config: TrainConfig,
    label_names: list[str],
    data_checksums: dict[str, str],
    metrics: dict,
    tuned: dict[str, Any] | None = None,
) -> dict:
    """``goemo.json``: what prediction, evaluation and reports need beside the weights.

    ``thresholds.global`` is the fixed threshold (the paper's 0.3 by default);
    ``thresholds.per_label`` are tuned on ``thresholds.tuned_on`` (always a dev split) and
    ``thresholds.tuning`` keeps the provenance (`goemo.scoring.metrics.TunedThresholds.to_dict`).

    >>> model_meta(TrainConfig(), ["joy"], {}, {})["thresholds"]
    {'global': 0.3, 'per_label': None, 'tuned_on': None, 'tuning': None}
    """
    return {
        "goemo_version": __version__,
        "label_names": label_names,
        "taxonomy": config.taxonomy,
        "max_length": config.max_length,
        "pooling": config.pooling,
        "thresholds": {
            "global": config.threshold,
            "per_label": tuned["per_label"] if tuned else None,
            "tuned_on": tuned["split"] if tuned else None,
            "tuning": tuned,
        },
        "training_config": config.to_dict(),
        "data_checksums": data_checksums,
        "metrics": metrics,
    }


def rng_state() -> dict[str, Any]:
    """This process's torch RNG state (CPU, and every CUDA device)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer,
    meta: dict[str, Any],
    training: dict[str, Any] | None,
) -> None:
    """Write a model folder atomically; with ``training`` (``optimizer``, ``scheduler``, ``state``,
    ``ema``), also optimizer/scheduler/RNG state and the loop's position (and the weight average,
    when one is kept, so a resumed run averages on where it stopped).

    Every process must call this (RNG states are gathered); only the main one writes.
    """
    rng = rng_state()
    rngs = gather_object([rng]) if accelerator.num_processes > 1 else [rng]
    if accelerator.is_main_process:
        with atomic_directory(folder) as tmp:
            save_model(accelerator.unwrap_model(model), tokenizer, tmp, meta)
            if training is not None:
                blob = {
                    "optimizer": training["optimizer"].state_dict(),
                    "scheduler": training["scheduler"].state_dict(),
                    "rng": rngs,
                }
                ema = training.get("ema")
                if ema is not None:
                    save_weights(ema.module, str(tmp / EMA_FILE))
                    blob["ema_n_averaged"] = int(ema.n_averaged)
                torch.save(blob, tmp / STATE_FILE)
                atomic_write_json(tmp / TRAINER_STATE_FILE, vars(training["state"]))
    accelerator.wait_for_everyone()


def load_checkpoint(folder: Path, accelerator: Accelerator, model, optimizer, scheduler, ema=None) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote into ``last/`` (safe loaders only); return the
    loop's saved position (the fields of `goemo.training.loop.TrainState`)."""
    weights = load_file(str(folder / "model.safetensors"))
    accelerator.unwrap_model(model).load_state_dict(weights, strict=True)
    blob = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if ema is not None:
        if not (folder / EMA_FILE).is_file():
            raise ConfigError(f"{folder}: no {EMA_FILE} to resume the weight average from (was ema_decay added?)")
        load_weights(ema.module, str(folder / EMA_FILE), strict=True, device=str(accelerator.device))
        ema.n_averaged.fill_(blob["ema_n_averaged"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rngs = blob["rng"]
    set_rng_state(rngs[accelerator.process_index % len(rngs)])
    return json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def load_best_weights(best_dir: Path, accelerator: Accelerator, model: nn.Module) -> None:
    """Put the weights of ``best/`` back into the training model, for the final evaluation."""
    accelerator.unwrap_model(model).load_state_dict(load_file(str(best_dir / "model.safetensors")))


def finish_best(
    best_dir: Path, meta: dict[str, Any], settings: dict[str, Any], predictions: Sequence[tuple[Split, np.ndarray]]
) -> None:
    """Give ``best/`` its final ``goemo.json`` (headline numbers, tuned thresholds, the predictor
    ``settings``) and cache the probabilities those numbers came from, keyed by ``settings``, so
    `goemo evaluate` / `ensemble` / `report` score these very numbers."""
    write_meta(best_dir, {**meta, "prediction": settings})
    store_predictions(best_dir, settings, predictions)
