"""What a run cost (time, peak memory, hardware), in ``summary.json``: cluster users size job requests from it."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import transformers


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def gpu_memory() -> list[dict[str, Any]]:
    """Peak allocated and reserved memory (MiB) per visible CUDA device since the last reset."""
    if not torch.cuda.is_available():
        return []
    return [
        {
            "device": i,
            "name": torch.cuda.get_device_name(i),
            "peak_allocated_mb": round(torch.cuda.max_memory_allocated(i) / 2**20, 1),
            "peak_reserved_mb": round(torch.cuda.max_memory_reserved(i) / 2**20, 1),
        }
        for i in range(torch.cuda.device_count())
    ]


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), for figures that name their machine."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """CPU, GPUs and library versions, so a figure can be compared with another machine's."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "transformers": transformers.__version__,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


class Stopwatch:
    """Named wall-clock totals: ``with sw("save"): ...`` adds to ``sw.totals["save"]``."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
