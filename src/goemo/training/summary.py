"""``summary.json``: a run's headline numbers and what they cost; the CLI, sweeps and reports read it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from goemo.core.config import TrainConfig
from goemo.training.epoch_metrics import FinalScores
from goemo.training.resources import Stopwatch, gpu_memory, hardware, peak_rss_mb

EPOCH_KEYS = ("epoch", "train_loss", "val_loss", "f1_macro", "auc_macro", "auc_score", "epoch_time_s", "examples_per_s")


def run_summary(
    config: TrainConfig,
    run_dir: Path,
    best_epoch: int | None,
    best_metric: float | None,
    history: Sequence[dict[str, Any]],
    final: FinalScores,
    resources: dict[str, Any],
) -> dict[str, Any]:
    """The selection, the best weights' scores per split, the calibration's ECE before and after (when
    one was fitted), a line per epoch, and `resources_used`."""
    return {
        "run_dir": str(run_dir),
        "model": config.model,
        "best_epoch": best_epoch,
        "select_metric": config.select_metric,
        "best_metric": best_metric,
        "threshold": config.threshold,
        **final.metrics,
        **({"calibration": calibration} if (calibration := final.calibration_summary()) else {}),
        "epochs": [{k: r[k] for k in EPOCH_KEYS} for r in history],
        "resources": resources,
    }


def resources_used(
    started: float, epoch_times: Sequence[float], watch: Stopwatch, precision: str, num_processes: int
) -> dict[str, Any]:
    """Wall time since ``started`` (a `time.perf_counter` value), time per epoch, saving and
    evaluating (``watch``), peak memory, and the hardware: what users size cluster jobs from."""
    return {
        "wall_time_s": round(time.perf_counter() - started, 2),
        "epoch_time_s": [round(t, 2) for t in epoch_times],
        "time_to_save_s": round(watch.totals.get("save", 0.0), 3),
        "eval_time_s": round(watch.totals.get("eval", 0.0), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "gpu_memory": gpu_memory(),
        "precision": precision,
        "num_processes": num_processes,
        "hardware": hardware(),
    }
