"""Shared by the benchmark scripts: the machine a figure was measured on, the data, a free port, memory.

Every figure in docs/benchmarks.md names its machine, and the memory targets are read the
same way for every benchmark, so these live in one place.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

from goemo.training.resources import cpu_model

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def machine() -> str:
    """``"<CPU model>, 2 cores, Python 3.11.7"``: the line a figure is recorded with."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def find_data(data_dir: str | Path | None = None) -> Path:
    """The GoEmotions folder: ``data_dir``, else $GOEMO_SHARED_DATA, ../shared/goemotions, data/goemotions."""
    for d in [
        data_dir,
        os.environ.get("GOEMO_SHARED_DATA"),
        REPO.parent / "shared" / "goemotions",
        REPO / "data" / "goemotions",
    ]:
        if d and (Path(d) / "train.tsv").is_file():
            return Path(d)
    sys.exit("GoEmotions data not found: give --data-dir (a folder with train.tsv)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int, children: bool = False) -> float:
    """Resident memory (VmRSS) of ``pid``, with its direct children's (a server's workers), in MiB.

    NaN once the process is gone: a sampler racing the end of a job must not fail.
    """
    pids = [pid]
    if children:
        try:
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    total, found = 0, False
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    found = True
        except OSError:
            continue
    return total / 2**20 if found else float("nan")
