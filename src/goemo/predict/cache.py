"""Probabilities of a model on a labelled split, computed by the predictor once and cached on disk.

Running the model is the expensive part of evaluation; everything after it is cheap numpy. So
probabilities are stored as a plain ``.npz`` (no pickle) under the run's ``predictions/`` folder,
keyed by the sha256 of the weights and config, the split's checksum and the predictor's settings
(backend, device type, precision, batch size, max length, long-text mode): stale numbers can
never come back, and the same settings always give the same numbers.

Training stores the dev and test probabilities its summary and thresholds come from, with its
settings in ``goemo.json`` (``prediction``); a call with default settings reads those first, so
``evaluate``, ``report`` and ``ensemble`` score exactly what training reported. Training scores
truncated token ids: recorded as ``long_text: pieces`` when no text it scored was too long (the
same numbers), else ``truncate``; a record without ``long_text`` (older) means ``truncate``.

    preds = predict_split("runs/tiny/best", test_split)
    preds.probs.shape, preds.from_cache, preds.settings["precision"]
    # -> ((5427, 28), True, 'bf16')
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.errors import EvaluationError, one_line
from goemo.core.fileio import atomic_write_bytes
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.data.split import Split
from goemo.predict.classifier import EmotionClassifier

log = logging.getLogger(__name__)

PREDICTIONS_VERSION = "2"  # 2: the predictor's settings are part of the key
PREDICTIONS_DIR = "predictions"


@dataclass(frozen=True)
class Predictions:
    """Probabilities (float64) of one model on one split, in the model's label order; ``cache_path``
    None when caching was off; ``settings`` the predictor settings that made them."""

    probs: np.ndarray
    label_names: tuple[str, ...]
    split_checksum: str
    model_fingerprint: str
    cache_path: Path | None = None
    from_cache: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the folder's weights and ``config.json`` (`goemo.core.folder.ModelFolder.fingerprint`)."""
    return ModelFolder.open(model_dir).fingerprint


def default_predictions_dir(model_dir: str | Path) -> Path:
    """``RUN/predictions`` when the model sits in a run folder (``RUN/best``: a ``config.yaml``,
    ``summary.json`` or ``metrics.jsonl`` beside it), else beside the model."""
    folder = Path(model_dir).resolve()
    run = folder.parent
    if any((run / name).is_file() for name in ("config.yaml", "summary.json", "metrics.jsonl")):
        return run / PREDICTIONS_DIR
    return folder.parent / f"{folder.name}-{PREDICTIONS_DIR}"


def predict_split(
    model: str | Path | ModelFolder | EmotionClassifier,
    split: Split,
    settings: RunSettings | None = None,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    token_cache_dir: str | Path | None = None,
) -> Predictions:
    """Probabilities of ``model`` for every text of ``split``, through `EmotionClassifier` (cached).

    Default ``settings`` (`RunSettings.is_default`) mean the predictions training cached, when
    there are some; else the folder's own backend (``auto``: scores never depend on the machine),
    ``auto`` precision, training's batch size (else 128) and long-text mode. Other settings score
    long texts in pieces unless ``long_text="truncate"``. A loaded `EmotionClassifier` is used as
    it is. ``cache=False`` runs the model and stores nothing.

        predict_split("runs/tiny/best", test, RunSettings(precision="fp32"), cache=False).from_cache
        # -> False
    """
    clf = model if isinstance(model, EmotionClassifier) else None
    if isinstance(model, EmotionClassifier):
        folder = model.folder
    else:
        folder = model if isinstance(model, ModelFolder) else ModelFolder.open(model)
    if folder is None:
        raise EvaluationError("predict_split needs a classifier loaded from a model folder")
    _ = folder.max_length  # a malformed goemo.json fails whether or not the predictions are cached
    run = settings or RunSettings()
    checksum = split.checksum()
    where = Path(cache_dir) if cache_dir is not None else default_predictions_dir(folder.path)
    recorded = folder.prediction_settings
    tried: set[Path] = set()  # a damaged file is reported once, then replaced
    if clf is None and cache and recorded and run.is_default:
        first = _cache_path(where, split.name, checksum, folder.fingerprint, recorded)  # the key as recorded
        cached = _read_cache(first, split, folder, checksum, {"long_text": "truncate", **recorded})
        if cached is not None:
            return cached
        tried.add(first)
    if clf is None:
        batch_size = run.batch_size or int(recorded.get("batch_size") or 128)
        long_text = run.long_text
        if long_text is None and recorded and run.is_default:  # as training scored, so the cache finds it again
            long_text = str(recorded.get("long_text", "truncate"))
        changes = {"backend": run.backend or "auto", "batch_size": batch_size, "long_text": long_text}
        clf = EmotionClassifier.load(folder, run.replace(**changes))
    used = clf.settings
    path = _cache_path(where, split.name, checksum, folder.fingerprint, used)
    if cache and path not in tried:
        cached = _read_cache(path, split, folder, checksum, used)
        if cached is not None:
            return cached
    if list(clf.label_names) != list(split.label_names):
        raise EvaluationError(
            f"{folder.path} predicts {clf.num_labels} labels ({', '.join(clf.label_names[:3])}, …) but split "
            f"{split.name!r} has {len(split.label_names)} ({', '.join(split.label_names[:3])}, …); "
            f"evaluate it on data of the model's taxonomy"
        )
    log.info("running %s on %s (%d texts, %s)", folder.path, split.name, len(split), clf)
    probs = clf.probabilities(clf.split_logits(split, token_cache_dir))
    written = _write_cache(path, probs, clf.label_names, folder.fingerprint, checksum, used) if cache else None
    return Predictions(probs, tuple(clf.label_names), checksum, folder.fingerprint, written, False, used)


def store_predictions(
    model_dir: str | Path, settings: dict[str, Any], predictions: Sequence[tuple[Split, np.ndarray]]
) -> None:
    """Cache each ``(split, probs)`` as ``model_dir``'s predictions made with ``settings``.

    Training's dev and test probabilities, so later evaluations read those very numbers: thresholds
    re-tuned on fp32 dev probabilities moved test macro-F1 by up to 0.007 from training's bf16 ones.
    """
    folder = ModelFolder.open(model_dir)
    where = default_predictions_dir(folder.path)
    for split, probs in predictions:
        names = tuple(split.label_names)
        if probs.shape != (len(split), len(names)):
            raise ValueError(f"probabilities of shape {probs.shape} for {len(split)} texts and {len(names)} labels")
        checksum = split.checksum()
        path = _cache_path(where, split.name, checksum, folder.fingerprint, settings)
        _write_cache(path, np.asarray(probs, dtype=np.float64), names, folder.fingerprint, checksum, settings)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(name)).name)[:60] or "split"


def _cache_path(folder: Path, split_name: str, checksum: str, fingerprint: str, settings: dict[str, Any]) -> Path:
    key_text = f"{PREDICTIONS_VERSION}|{fingerprint}|{checksum}|{json.dumps(settings, sort_keys=True)}"
    return folder / f"{_safe_name(split_name)}-{hashlib.sha256(key_text.encode()).hexdigest()[:20]}.npz"


def _write_cache(
    path: Path, probs: np.ndarray, names: Sequence[str], fingerprint: str, checksum: str, settings: dict[str, Any]
) -> Path | None:
    buf = io.BytesIO()
    np.savez(
        buf,
        probs=probs,
        label_names=np.array(names, dtype=str),
        model_fingerprint=np.array(fingerprint),
        split_checksum=np.array(checksum),
        settings=np.array(json.dumps(settings, sort_keys=True)),
    )
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only run folder must not stop evaluation
        log.warning("cannot write predictions cache %s: %s", path, e)
        return None
    return path


def _read_cache(
    path: Path, split: Split, folder: ModelFolder, checksum: str, settings: dict[str, Any]
) -> Predictions | None:
    """The cached predictions at ``path``, or None when absent, damaged (one warning; the model's run
    replaces it) or not this model's and split's."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            probs = z["probs"]
            names = tuple(str(s) for s in z["label_names"])
            same = str(z["model_fingerprint"]) == folder.fingerprint and str(z["split_checksum"]) == checksum
    except FileNotFoundError:  # removed since is_file()
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        reason = one_line(str(e)) or type(e).__name__
        log.warning("predictions cache %s unreadable (%s); running the model again", path, reason)
        return None
    if not same or probs.ndim != 2 or probs.shape != (len(split), len(names)):
        log.warning("predictions cache %s does not match this model and split; running the model again", path)
        return None
    if probs.dtype.kind != "f" or not np.all((probs >= 0) & (probs <= 1)):  # NaN fails too
        log.warning("predictions cache %s holds values that are not probabilities; running the model again", path)
        return None
    log.info("predictions for %s (%d texts) read from %s", split.name, len(split), path)
    return Predictions(probs, names, checksum, folder.fingerprint, path, True, dict(settings))
