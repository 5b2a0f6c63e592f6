"""Calibrate a model folder on dev: fit, fold into the weights, record, re-express the thresholds.

`calibrate_model` is what ``goemo calibrate`` runs and `write_calibrated_folder` what training
does at its end (``TrainConfig.calibrate``). They fit the maps on dev
(`goemo.scoring.calibration.fit_calibration`), fold the affine ones into the weights where they
can (`goemo.core.calibration` says when, `goemo.models.folding` how), write the record into
``config.json`` (`goemo.core.folder.write_calibration`) and re-express the thresholds of
``goemo.json`` and ``config.json`` on the calibrated scale, so no decision changes
(`goemo.core.calibration.Calibration.anchored`). The prediction cache is keyed by the weights, so
the next ``goemo evaluate`` runs the new weights once (training, which calibrates its model in
memory first, caches the calibrated model's own).

All of it happens in a copy of the folder that replaces it in one rename
(`goemo.core.fileio.atomic_directory`): a folder is calibrated or not, never half. The copy
leaves out the CPU export ``.onnx-cpu/`` (`goemo.predict.fastest`), made from the old weights: the
next ``goemo predict`` or ``serve`` makes it again (its fingerprint would not match anyway).
A folder that is already calibrated is left as it is (`CalibrationOutcome.already`): the maps
are never applied twice.

    outcome = calibrate_model("runs/x/best", source=DataSource.folder("data/goemotions"))
    outcome.reports["dev"].macro_ece_before, outcome.reports["dev"].macro_ece_after
    # -> (0.0213, 0.0064)
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.calibration import Calibration, logit
from goemo.core.errors import EvaluationError, ModelError, one_line
from goemo.core.fileio import atomic_directory
from goemo.core.folder import CONFIG_FILE, ModelFolder, write_calibration, write_meta
from goemo.data.source import DataSource, read_split
from goemo.models.folding import fold_logit_affine
from goemo.models.modeling import write_config_thresholds
from goemo.predict.cache import predict_split
from goemo.predict.fastest import EXPORT_DIR
from goemo.scoring.calibration import (
    CalibrationFit,
    CalibrationReport,
    CalibrationSettings,
    calibration_report,
    fit_calibration,
)

log = logging.getLogger(__name__)


@dataclass
class CalibrationOutcome:
    """What `calibrate_model` did: the calibration, how each label's map was chosen, ECE per split."""

    folder: Path
    calibration: Calibration
    fit: CalibrationFit | None  # None: the folder was already calibrated
    reports: dict[str, CalibrationReport] = field(default_factory=dict)
    already: bool = False
    written: bool = False  # False for a dry run and an already calibrated folder

    @property
    def folded(self) -> bool:
        return self.calibration.folded


def calibrate_model(
    model: str | Path,
    *,
    splits: Sequence[str] = (),
    source: DataSource | None = None,
    settings: CalibrationSettings | None = None,
    dry_run: bool = False,
) -> CalibrationOutcome:
    """Calibrate ``model`` on its own dev split (see the module's docstring): what ``goemo calibrate`` runs.

    The splits are read as ``goemo evaluate`` reads them (the model's training data, or ``source``),
    with their cached predictions (else the model runs once). ``splits`` (e.g. ``["test"]``) are
    scored before and after too (the after by the maps, in numpy). ``settings`` says how the maps
    are chosen and fitted (`goemo.scoring.calibration.CalibrationSettings`; default: per label, by
    cross-validated log-loss). ``dry_run`` fits and scores without writing anything. A folder that
    is already calibrated is not touched: the outcome says ``already`` and holds its recorded maps.

        calibrate_model("runs/x/best", splits=["test"]).reports["test"].macro_ece_after
        # -> 0.0071
    """
    folder = ModelFolder.open(model)
    if folder.calibration is not None:
        return CalibrationOutcome(folder.path, folder.calibration, None, already=True)
    if "dev" in splits:
        raise EvaluationError("the calibration is fitted on dev and always scored there: leave dev out of splits")
    loaded = [
        (split, predict_split(folder, split)) for split in (read_split(folder, s, source) for s in ["dev", *splits])
    ]
    dev, predictions = loaded[0]
    fit = fit_calibration(
        dev.labels,
        logit(predictions.probs),
        folder.label_names,
        settings=settings,
        split_name=dev.name,
        split_checksum=dev.checksum(),
    )
    calibration = fit.calibration.anchored(folder.thresholds(np.float64))[0]
    reports = {
        split.name: calibration_report(
            split.labels,
            preds.probs,
            calibration.calibrate_probs(preds.probs),
            folder.label_names,
            calibration.methods,
            split=split.name,
        )
        for split, preds in loaded
    }
    calibration = replace(calibration, info={**calibration.info, "dev": reports[dev.name].summary()})
    outcome = CalibrationOutcome(folder.path, calibration, fit, reports)
    if not dry_run:
        outcome.calibration = write_calibrated_folder(folder.path, calibration, reexpress=True)
        outcome.written = True
    return outcome


def write_calibrated_folder(
    folder: str | Path, calibration: Calibration, *, reexpress: bool, fold: bool | None = None
) -> Calibration:
    """Apply a fitted, anchored ``calibration`` to ``folder`` in one atomic swap; returns it with ``folded`` set.

    The affine maps go into the weights when they can (float32 PyTorch weights; ``fold=None``),
    else the record says ``folded: false`` and the predictor applies them; ``fold=True`` or
    ``False`` decides (training folds the folder exactly when it folded its model in memory).
    ``reexpress``: map the thresholds of ``goemo.json`` onto the calibrated scale (False when they
    already are, as at the end of training, which tunes them on the raw scale and maps them itself).
    """
    opened = ModelFolder.open(folder)
    if opened.calibration is not None:
        raise ModelError(f"{opened.path} is already calibrated ({CONFIG_FILE} calibration): not applying another")
    if list(calibration.label_names) != opened.label_names:
        raise ModelError(f"{opened.path}: the calibration's labels are not the model's")
    try:
        with atomic_directory(opened.path) as tmp:
            _link_contents(opened.path, tmp)
            folded = False
            if opened.kind == "transformer" and fold is not False:
                try:
                    if calibration.scaled_labels:  # else nothing affine to fold: the weights are already right
                        fold_logit_affine(tmp, calibration.scale, calibration.shift)
                    folded = True
                except ModelError as e:
                    if fold:
                        raise
                    log.warning("%s: the affine maps stay outside the weights (%s)", opened.path, one_line(str(e)))
            calibration = replace(calibration, folded=folded)
            if reexpress:
                write_meta(tmp, reexpressed_meta(opened, calibration))
            write_calibration(tmp, calibration)
            write_config_thresholds(tmp)
    except OSError as e:
        raise ModelError(f"cannot rewrite {opened.path}: {e.strerror or e}") from None
    log.info(
        "%s calibrated (%s); affine maps %s",
        opened.path,
        ", ".join(f"{k} {v}" for k, v in calibration.method_counts().items()),
        "folded into the classifier's last layer" if folded else "applied by the predictor",
    )
    return calibration


def reexpressed_meta(folder: ModelFolder, calibration: Calibration) -> dict[str, Any]:
    """``goemo.json`` with the decision thresholds on the calibrated scale: ``thresholds.per_label``
    (every label: what the predictor decides by) and ``thresholds.tuning.per_label``; the global
    threshold, a convention such as the paper's 0.3, stays as it is."""
    meta = dict(folder.meta)
    meta.setdefault("label_names", folder.label_names)
    entry = dict(meta.get("thresholds") or {})
    names = folder.label_names
    entry["per_label"] = dict(zip(names, (float(v) for v in calibration.map_thresholds(folder.thresholds(np.float64)))))
    tuned = folder.tuned
    if tuned is not None:
        tuning = dict(entry["tuning"])
        tuning["per_label"] = dict(zip(tuned.label_names, (float(v) for v in calibration.map_thresholds(tuned.values))))
        entry["tuning"] = tuning
    meta["thresholds"] = entry
    return meta


def _link_contents(source: Path, target: Path) -> None:
    """Hard-link (or copy) everything in ``source`` into ``target`` but the stale CPU export; links stay links."""
    skip = {EXPORT_DIR, f"{EXPORT_DIR}.lock"}
    shutil.copytree(
        source,
        target,
        symlinks=True,
        ignore=lambda folder, names: skip if Path(folder) == source else set(),
        copy_function=_link_or_copy,
        dirs_exist_ok=True,
    )


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link where the file system allows (the weights are not copied), else a copy.

    Every file goemo then changes is replaced by a new one (atomic writes rename), so the link
    never lets a change reach the old folder.
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
