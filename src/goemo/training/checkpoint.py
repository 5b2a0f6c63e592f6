"""Checkpoints: ``best/`` (the weights that were evaluated) and ``last/`` (everything needed to resume).

Saving and restoring must stay a matched pair: resuming is bit-identical to an uninterrupted run.
``last/`` holds Accelerate's state (optimizer, scheduler, scaler, every process's RNG), the raw
weights, the weight average in safetensors (not ``register_for_checkpointing``, which pickles)
and the loop's position. Both are model folders, written atomically.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import OPTIMIZER_NAME, RNG_STATE_NAME, SCALER_NAME, SCHEDULER_NAME, broadcast_object_list
from accelerate.utils import load as load_weights_only
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights
from torch import nn

from goemo import __version__
from goemo.core.calibration import Calibration
from goemo.core.config import TrainConfig
from goemo.core.errors import ModelError
from goemo.core.fileio import atomic_directory, atomic_write_json
from goemo.core.folder import ModelFolder, write_meta
from goemo.core.run_folder import (
    CHECKPOINT_FIX,
    STATE_FILE,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    corrupt_checkpoint,
    read_trainer_state,
)
from goemo.data.source import DataSource
from goemo.data.split import Split
from goemo.evaluation.calibration import write_calibrated_folder
from goemo.models.card import CardFacts, build_model_card, write_model_card
from goemo.models.modeling import save_model, write_config_thresholds
from goemo.predict.cache import store_predictions
from goemo.training.ema import EMA_FILE

# What a damaged file raises when read: torch.load (a torn zip, EOF, a pickle it refuses with
# weights_only), safetensors (a short header or data), and the file system.
_UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError, OSError, ValueError)
_NOT_A_CHECKPOINT = "truncated or not a goemo checkpoint"

log = logging.getLogger(__name__)


def model_meta(
    config: TrainConfig,
    label_names: list[str],
    data_checksums: dict[str, str],
    metrics: dict,
    tuned: dict[str, Any] | None = None,
    cleaning: dict[str, Any] | None = None,
    *,
    pooling: str | None = None,
    init_from: dict[str, Any] | None = None,
) -> dict:
    """``goemo.json``: what prediction, evaluation and reports need beside the weights.

    >>> model_meta(TrainConfig(), ["joy"], {}, {})["thresholds"]
    {'global': 0.3, 'per_label': None, 'tuned_on': None, 'tuning': None}
    """
    return {
        "goemo_version": __version__,
        "label_names": label_names,
        "taxonomy": DataSource.from_config(config.to_dict()).model_taxonomy(label_names),
        "max_length": config.max_length,
        "pooling": pooling or config.pooling,
        "thresholds": {
            "global": config.threshold,
            "per_label": tuned["per_label"] if tuned else None,
            "tuned_on": tuned["split"] if tuned else None,
            "tuning": tuned,
        },
        "training_config": config.to_dict(),
        "data_source": DataSource.from_config(config.to_dict()).to_record(),  # found from any working directory
        "data_checksums": data_checksums,
        "cleaning": cleaning,
        "metrics": metrics,
        **({"init_from": init_from} if init_from is not None else {}),
    }


def init_record(folder: str | Path, labels_kept: bool) -> dict[str, Any]:
    """``goemo.json`` ``init_from``: the folder a run started from, whether its head was kept, and its encoder.

    >>> init_record("/runs/source/best", False)
    {'path': '/runs/source/best', 'labels_kept': False, 'model': None}
    """
    path = Path(folder).resolve()
    model = None
    if path.is_dir():
        source = ModelFolder.open(path)
        model = (source.init_from or {}).get("model") or source.training_config.get("model")
    return {"path": str(path), "labels_kept": bool(labels_kept), "model": model}


def save_checkpoint(
    folder: Path,
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer,
    meta: dict[str, Any],
    training: dict[str, Any] | None,
) -> None:
    """Write a model folder atomically; with ``training`` (``state``, ``ema``), also what resuming needs.

    Every process must call this: each writes its own RNG state into the main process's folder.
    """
    main = accelerator.is_main_process
    with atomic_directory(folder) if main else nullcontext() as made:
        tmp: Path = broadcast_object_list([made])[0]  # the main process's temporary folder: all write there
        if training is not None:
            with _accelerate_state(accelerator):
                accelerator.save_state(tmp)
        if main:
            save_model(accelerator.unwrap_model(model), tokenizer, tmp, meta)
            if training is not None:
                ema = training["ema"]
                if ema is not None:
                    save_weights(ema.module, str(tmp / EMA_FILE))
                torch.save({"ema_n_averaged": None if ema is None else int(ema.n_averaged)}, tmp / STATE_FILE)
                atomic_write_json(tmp / TRAINER_STATE_FILE, vars(training["state"]))
        accelerator.wait_for_everyone()  # every process's files are in before the folder is swapped into place
    accelerator.wait_for_everyone()


def load_checkpoint(folder: Path, accelerator: Accelerator, model: nn.Module, ema=None) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote into ``last/`` (safe loaders only); return the loop's position.

    A damaged file raises a one-line `RunFolderError` naming it; weights that do not fit, `ModelError`.
    """
    position = read_trainer_state(folder)
    weights_path = folder / WEIGHTS_FILE
    weights = _read(weights_path, lambda: load_file(str(weights_path)))
    _fit(weights_path, lambda: accelerator.unwrap_model(model).load_state_dict(weights, strict=True))
    state_path = folder / STATE_FILE
    blob = _read(state_path, lambda: torch.load(state_path, map_location="cpu", weights_only=True))
    if isinstance(blob, dict) and "rng" in blob:
        raise corrupt_checkpoint(state_path, "written by an older goemo (state inside), which this one cannot resume")
    if not isinstance(blob, dict) or set(blob) != {"ema_n_averaged"}:
        raise corrupt_checkpoint(state_path, _NOT_A_CHECKPOINT)
    if ema is not None:
        ema_path = folder / EMA_FILE
        if not ema_path.is_file() or blob["ema_n_averaged"] is None:
            raise corrupt_checkpoint(
                ema_path, "missing, so the weight average cannot resume (a run from before ema_decay existed?)"
            )
        _read(ema_path, lambda: load_weights(ema.module, str(ema_path), strict=True))  # via the CPU: not to "cpu:0"
        ema.n_averaged.fill_(blob["ema_n_averaged"])
    # Accelerate's files, each read once first: a damaged one is named, and an unreadable RNG state
    # (which load_state skips in silence, resuming a different run) stops the resume.
    names = [f"{OPTIMIZER_NAME}.bin", f"{SCHEDULER_NAME}.bin", f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl"]
    for path in [folder / name for name in [*names, *([SCALER_NAME] if accelerator.scaler else [])]]:
        _read(path, partial(load_weights_only, path))
    with _accelerate_state(accelerator):
        _fit(folder, lambda: accelerator.load_state(str(folder)))
    return position


def _read(path: Path, load: Callable[[], Any]) -> Any:
    """``load()``, with a damaged file turned into the one-line `RunFolderError` naming it."""
    if not path.is_file():
        raise corrupt_checkpoint(path, "missing")
    try:
        return load()
    except RuntimeError as e:
        if "size mismatch" in str(e) or "Missing key" in str(e) or "Unexpected key" in str(e):
            raise ModelError(
                f"{path}: weights do not fit the model ({str(e).splitlines()[0]}); {CHECKPOINT_FIX}"
            ) from None
        raise corrupt_checkpoint(path, _NOT_A_CHECKPOINT) from None
    except _UNREADABLE:
        raise corrupt_checkpoint(path, _NOT_A_CHECKPOINT) from None


def _fit(path: Path, restore: Callable[[], Any]) -> None:
    """``restore()`` of state read from ``path``, with a mismatch turned into a one-line error."""
    try:
        restore()
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"{path}: does not fit this run's model or optimizer ({first[:200]}); {CHECKPOINT_FIX}"
        ) from None


@contextmanager
def _accelerate_state(accelerator: Accelerator) -> Iterator[None]:
    """Accelerate's save_state/load_state without the weights (goemo writes them under the plain model's names)
    and without a log line per file."""
    handles = [
        accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear()),
        accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear()),
    ]
    quiet, level = logging.getLogger("accelerate"), logging.getLogger("accelerate").level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        quiet.setLevel(level)
        for handle in handles:
            handle.remove()


def load_best_weights(best_dir: Path, accelerator: Accelerator, model: nn.Module) -> None:
    """Put the weights of ``best/`` back into the training model, for the final evaluation."""
    accelerator.unwrap_model(model).load_state_dict(load_file(str(best_dir / "model.safetensors")))


def finish_best(
    best_dir: Path,
    meta: dict[str, Any],
    settings: dict[str, Any],
    predictions: Sequence[tuple[Split, np.ndarray]],
    facts: CardFacts | None = None,
    summary: dict[str, Any] | None = None,
    *,
    calibration: Calibration | None = None,
) -> None:
    """Give ``best/`` its final ``goemo.json``, thresholds in ``config.json``, its calibration and model card,
    and cache the probabilities keyed by ``settings``, so `goemo evaluate` scores these very numbers."""
    final = {**meta, "prediction": settings}
    if facts is not None:
        final["card"] = facts.to_dict()
    write_meta(best_dir, final)
    write_config_thresholds(best_dir)  # before the cache: config.json is part of the weights' fingerprint
    if calibration is not None:  # (a finish cut short after calibrating scores the calibrated weights without one)
        write_calibrated_folder(best_dir, calibration, reexpress=False, fold=calibration.folded)
    write_model_card(best_dir, build_model_card(best_dir, summary, facts, model_ref=str(best_dir)))
    store_predictions(best_dir, settings, predictions)
