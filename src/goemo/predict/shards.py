"""Scale-out: one input cut into contiguous shards for an array job, and the shards merged back.

Shards are cut at chunk boundaries (`shard_range`), so their chunks are those of an unsharded
run and the merged file (`merge_predictions`) equals the unsharded output.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goemo.core.errors import ConfigError, RunFolderError
from goemo.core.fileio import atomic_open, atomic_write_json
from goemo.predict.prediction_writer import output_format
from goemo.predict.progress import (
    count_records,
    job_difference,
    progress_doc,
    progress_path,
    read_progress,
    whole_records,
)
from goemo.predict.stream import DEFAULT_CHUNK

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def shard_path(output: Path, k: int, n: int) -> Path:
    """Where shard ``k`` of ``n`` of ``output`` is written (``goemo predict --shard K/N``) and read
    (``goemo merge-predictions --shards N``): part of the cluster contract.

    >>> shard_path(Path("out/labels.jsonl"), 3, 8).as_posix()
    'out/labels.shard-3-of-8.jsonl'
    """
    _check_shard(k, n)
    output = Path(output)
    return output.with_name(f"{output.stem}.shard-{k}-of-{n}{output.suffix}")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"3/8"`` -> ``(3, 8)``: shard K of N, 1-based like ``$SGE_TASK_ID`` and Slurm arrays ``1-N``.

    >>> parse_shard("3/8")
    (3, 8)
    """
    m = _SHARD.match(spec)
    if m is None:
        raise ConfigError(f"--shard {spec!r}: expected K/N, e.g. 3/8 (shard K of N, 1 <= K <= N)")
    k, n = int(m[1]), int(m[2])
    _check_shard(k, n)
    return k, n


def _check_shard(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {k}/{n}: expected K/N with 1 <= K <= N")


def shard_range(total: int, k: int, n: int, chunk_size: int = DEFAULT_CHUNK) -> tuple[int, int]:
    """Records ``[start, end)`` (0-based) of shard ``k`` of ``n``: whole chunks, as even as chunks allow.

    >>> [shard_range(10, k, 3, chunk_size=2) for k in (1, 2, 3)]
    [(0, 2), (2, 6), (6, 10)]
    """
    _check_shard(k, n)
    chunks = -(-total // chunk_size)
    return min((k - 1) * chunks // n * chunk_size, total), min(k * chunks // n * chunk_size, total)


def shard_difference(saved: dict[str, Any] | None, shard: tuple[int, int] | None) -> str | None:
    """How the shard of a saved job differs from this one's, in words (None: the same)."""
    was = None if saved is None else (saved.get("k"), saved.get("n"))
    if was == shard:
        return None

    def words(s: tuple[Any, Any] | None) -> str:
        return "the whole input" if s is None else f"shard {s[0]}/{s[1]}"

    return f"it was {words(was)}, now {words(shard)}"


@dataclass(frozen=True)
class MergeResult:
    """What `merge_predictions` did."""

    output: Path
    shards: int
    records: int
    already_merged: bool = False
    removed: int = 0  # shard files removed (with their progress files)


def merge_predictions(
    output: str | Path, shards: int, *, remove_shards: bool = False, overwrite: bool = False
) -> MergeResult:
    """Join the ``shards`` shard files of ``output`` (`shard_path`) in input order, atomically.

    Every shard must be complete, unchanged since, of the same job, and the ranges must tile
    the input, else one line names the first shard at fault. ``output`` gets a progress file
    like an unsharded run's. Shards are removed only with ``remove_shards``, after the merge;
    a second run after a merge does nothing (or removes the shards).

        merge_predictions("labels.jsonl", 8).records
        # -> 1000000
    """
    output = Path(output)
    fmt = output_format(output)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"--shards {shards}: expected an integer >= 1")
    parts = [shard_path(output, k, shards) for k in range(1, shards + 1)]
    existing = [p for p in parts if p.exists()]
    merged = None if overwrite else read_progress(progress_path(output)) if output.exists() else None
    if merged is not None and merged.get("merged_from") == shards and merged.get("complete"):
        if output.stat().st_size == merged.get("bytes"):
            removed = _remove_shards(existing) if remove_shards else 0
            return MergeResult(output, shards, merged["records"], already_merged=True, removed=removed)
    if output.exists() and output.stat().st_size > 0 and not overwrite:
        raise RunFolderError(f"{output} exists; --overwrite to replace it with the merged shards")
    docs: list[dict[str, Any]] = []
    for k, part in enumerate(parts, start=1):
        where = f"shard {k} of {shards} ({part})"
        doc = read_progress(progress_path(part)) if part.exists() else None
        if doc is None:
            raise RunFolderError(f"{where} is missing: run array task {k} (goemo predict --shard {k}/{shards})")
        info = doc.get("shard") or {}
        if (info.get("k"), info.get("n")) != (k, shards):
            raise RunFolderError(f"{where}: its progress file is not that of shard {k}/{shards}")
        if not doc.get("complete"):
            done = count_records(part, fmt)
            raise RunFolderError(
                f"{where} is incomplete ({done:,} of {info.get('end', 0) - info.get('start', 0):,} records): "
                f"run array task {k} again, it resumes"
            )
        if part.stat().st_size != doc.get("bytes"):
            raise RunFolderError(f"{where} changed since its job completed; run array task {k} again with --overwrite")
        if docs:
            difference = job_difference(docs[0]["job"], doc["job"])
            if difference:
                raise RunFolderError(f"{where} is not from the job of shard 1 ({difference})")
            if info.get("start") != docs[-1]["shard"]["end"] or info.get("total") != docs[0]["shard"]["total"]:
                raise RunFolderError(f"{where}: its records do not follow those of shard {k - 1}")
        elif info.get("start") != 0:
            raise RunFolderError(f"{where}: does not start at the first record")
        docs.append(doc)
    if docs[-1]["shard"]["end"] != docs[-1]["shard"]["total"]:
        raise RunFolderError(f"shard {shards} of {shards}: does not end at the last record")
    header = _first_record(parts[0]) if fmt == "csv" else b""
    for k, part in enumerate(parts[1:], start=2):
        if fmt == "csv" and _first_record(part) != header:
            raise RunFolderError(f"shard {k} of {shards} ({part}): its header differs from shard 1's")
    size = sum(p.stat().st_size for p in parts) - len(header) * (shards - 1)
    total = docs[0]["shard"]["total"]
    atomic_write_json(
        progress_path(output),
        progress_doc(
            docs[0]["job"],
            None,
            complete=True,
            records=total,
            bytes=size,
            merged_from=shards,
            started=docs[0].get("started"),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ),
    )
    with atomic_open(output, "wb") as f:
        for k, part in enumerate(parts):
            with open(part, "rb") as src:
                if k > 0:
                    src.seek(len(header))
                shutil.copyfileobj(src, f, 1 << 20)
    removed = _remove_shards(parts) if remove_shards else 0
    return MergeResult(output, shards, total, removed=removed)


def _first_record(path: Path) -> bytes:
    """The first CSV record of a file, bytes as written (the header)."""
    with open(path, "rb") as f:
        return next(whole_records(f), b"")


def _remove_shards(parts: Sequence[Path]) -> int:
    for part in parts:
        progress_path(part).unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    return len(parts)
