"""Checkpoints: ``best/`` (the weights that were evaluated) and ``last/`` (everything needed to resume).

What is saved and what is restored must stay a matched pair, because resuming replays exactly
what an uninterrupted run would have done and the tests demand bit-identical weights. ``last/``
holds Accelerate's state (`Accelerator.save_state`: optimizer, scheduler, gradient scaler, the RNG
state of every process), the raw weights, the weight average (``ema.safetensors``) and its count
(``training_state.pt``), and the loop's position (``trainer_state.json``). Both folders are model
folders (``goemo.json`` from `model_meta`), written atomically: a kill leaves the previous one.

The weight average is not handed to ``register_for_checkpointing``: Accelerate pickles such objects
and loads them with ``weights_only=False``; goemo keeps its tensors in safetensors.
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

    ``cleaning`` is what ``--exclude`` / ``--corrections`` did to the training split
    (`goemo.training.data.Cleaning.to_record`), or None.

    ``thresholds.global`` is the fixed threshold (the paper's 0.3 by default);
    ``thresholds.per_label`` are tuned on ``thresholds.tuned_on`` (always a dev split) and
    ``thresholds.tuning`` keeps the provenance (`goemo.scoring.metrics.TunedThresholds.to_dict`).
    ``pooling`` is the head's as built (default ``config.pooling``); ``init_from`` (`init_record`)
    says which trained folder the weights started from, when one did.

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
    """``goemo.json`` ``init_from``: the trained folder a run started from (absolute), whether its
    head was kept (the same labels) and the encoder it was itself trained from (None when unknown).

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
    """Write a model folder atomically; with ``training`` (``state``, ``ema``), also what resuming needs:
    Accelerate's state (`Accelerator.save_state`: the prepared optimizer, scheduler and gradient scaler,
    each process's RNG state), the weight average and its count, and the loop's position.

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
    """Restore everything `save_checkpoint` wrote into ``last/`` (safe loaders only); return the
    loop's saved position (the fields of `goemo.training.loop.TrainState`).

    A missing, truncated or foreign file raises `RunFolderError` naming it (one line, saying how to
    start again), never a loader's traceback; weights that do not fit the model raise `ModelError`.
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
    """Accelerate's save_state/load_state without the model's weights (``last/`` is a model folder:
    goemo writes and reads its ``model.safetensors``, with the plain model's names rather than those of
    its DDP or compile wrappers), and without a log line for each file."""
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
    """Give ``best/`` its final ``goemo.json`` (headline numbers, tuned thresholds, the predictor
    ``settings``, the card's ``facts``), the same thresholds in ``config.json``, its calibration
    (folded into the weights as it was into the model that scored ``predictions``, recorded in
    ``config.json``; ``meta``'s thresholds are already on its scale), its model card (``README.md``), and cache the probabilities those numbers came from,
    keyed by ``settings``, so `goemo evaluate` / `ensemble` / `report` score these very numbers."""
    final = {**meta, "prediction": settings}
    if facts is not None:
        final["card"] = facts.to_dict()
    write_meta(best_dir, final)
    write_config_thresholds(best_dir)  # before the cache: config.json is part of the weights' fingerprint
    if calibration is not None:  # (a finish cut short after calibrating scores the calibrated weights without one)
        write_calibrated_folder(best_dir, calibration, reexpress=False, fold=calibration.folded)
    write_model_card(best_dir, build_model_card(best_dir, summary, facts, model_ref=str(best_dir)))
    store_predictions(best_dir, settings, predictions)
