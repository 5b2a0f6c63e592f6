"""Bulk labelling: a file of texts (or stdin) through `EmotionClassifier` into JSON Lines or CSV.

`predict_file` is what ``goemo predict --input`` runs: it names the job, resumes its output
where it ends (`goemo.predict.progress`), labels one shard of it for an array job
(`goemo.predict.shards`) and streams the records through the model (`goemo.predict.stream`).
Texts with no input file to resume by are written atomically instead (`write_predictions`).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from goemo.core.errors import ConfigError, DataError, RunFolderError
from goemo.core.fileio import atomic_open, atomic_write_json, remove_stale_temps
from goemo.data.records import Record, count_lines, read_records
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.prediction_writer import Labelling, output_format
from goemo.predict.progress import (
    AppendFile,
    job_difference,
    job_identity,
    progress_doc,
    progress_path,
    read_progress,
    resume_point,
)
from goemo.predict.shards import shard_difference, shard_path, shard_range
from goemo.predict.stream import DEFAULT_CHUNK, predict_records

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkResult:
    """What a `predict_file` call did."""

    output: Path | None  # the file written (a shard's own file with ``shard``); None: stdout
    labelled: int  # texts labelled by this call
    resumed_at: int  # records already in the output when this call began (0: a fresh start)
    records: int  # records in the output now
    already_complete: bool = False  # the output was the complete output of this job: nothing done


@dataclass(frozen=True)
class BulkOptions:
    """How `predict_file` reads and writes: the input's (text, id) ``columns`` (id None: row numbers),
    the ``chunk_size`` labelled at a time (both part of the job's identity), an array job's
    ``shard=(k, n)`` (into `shard_path`) and ``overwrite`` (replace an output that is not this job's)."""

    columns: tuple[str, str | None] = ("text", None)
    chunk_size: int = DEFAULT_CHUNK
    shard: tuple[int, int] | None = None
    overwrite: bool = False


def predict_file(
    clf: EmotionClassifier,
    input_path: str | Path | None,
    output_path: str | Path | None = None,
    labelling: Labelling | None = None,
    options: BulkOptions | None = None,
    *,
    streams: tuple[TextIO | None, TextIO | None] = (None, None),
    notify: Callable[[str], None] | None = None,
) -> BulkResult:
    """Label every text of a file (or stdin) into JSON Lines or CSV on ``output_path`` (or stdout).

    An output file is written in place and resumed when the same job runs again
    (`goemo.predict.progress`); another job's output, or a file goemo did not write, is refused
    unless ``options.overwrite``. From stdin (nothing to resume by) it is written atomically.
    ``notify`` gets one-line news (resuming, complete); ``streams`` replace (stdin, stdout).

        predict_file(clf, "comments.csv", "labels.jsonl", options=BulkOptions(columns=("body", "id"))).records
        # -> 10000
    """
    say = notify or log.info
    labelling = labelling or Labelling()
    options = options or BulkOptions()
    chunk_size, shard, overwrite = options.chunk_size, options.shard, options.overwrite
    text_column, id_column = options.columns
    stdin, stdout = streams
    fmt = output_format(output_path)
    names = clf.label_names_for(labelling.taxonomy)
    if shard is not None and (input_path is None or output_path is None):
        raise ConfigError("--shard needs --input FILE and --output FILE")
    if output_path is None:  # stdout: streamed as it comes
        stream = read_records(input_path, text_column, id_column, stream=stdin)
        writer = labelling.writer(stdout or sys.stdout, fmt, names)
        show = input_path is not None and sys.stderr.isatty()
        with _bar(show, lambda: count_lines(Path(input_path)) if input_path is not None else None, 0) as bar:
            n = predict_records(clf, stream, writer, labelling, chunk_size=chunk_size, progress=bar)
        return BulkResult(None, n, 0, n)
    if input_path is None:  # stdin: nothing to resume by
        records = read_records(None, stream=stdin)
        n = write_predictions(clf, records, output_path, labelling, overwrite=overwrite, chunk_size=chunk_size)
        return BulkResult(Path(output_path), n, 0, n)

    input_path = Path(input_path)
    if not input_path.is_file():
        raise DataError("file not found", path=input_path)
    out = Path(output_path) if shard is None else shard_path(Path(output_path), *shard)
    sidecar = progress_path(out)
    remove_stale_temps(out)  # what an earlier goemo's atomic write, killed, left behind
    job_options = {"text_column": text_column, "id_column": id_column, **labelling.decisions}
    job_options |= {"all_scores": labelling.all_scores, "with_text": labelling.with_text}
    if labelling.spans:  # left out when off: a job started before --spans existed still resumes
        job_options["spans"] = True
    job = job_identity(clf, input_path, fmt, job_options, chunk_size)
    saved = None if overwrite else read_progress(sidecar)
    fresh = overwrite or not out.exists() or (saved is None and out.stat().st_size == 0)
    if not fresh:
        if saved is None:
            raise RunFolderError(
                f"{out} exists, without the {sidecar.name} of the goemo predict job that would have written it; "
                "--overwrite to replace it"
            )
        difference = job_difference(saved["job"], job) or shard_difference(saved.get("shard"), shard)
        if difference:
            raise RunFolderError(
                f"{out} is the output of another job ({difference}); --overwrite to replace it, or another --output"
            )
        if saved.get("complete"):
            if out.stat().st_size != saved.get("bytes"):
                raise RunFolderError(
                    f"{out} changed since its job completed ({out.stat().st_size:,} bytes, {sidecar.name} says "
                    f"{saved.get('bytes')}); --overwrite to label again"
                )
            say(f"{out} is complete ({saved['records']:,} records); nothing to do (--overwrite labels again)")
            return BulkResult(out, 0, saved["records"], saved["records"], already_complete=True)

    records = read_records(input_path, text_column, id_column)
    shard_doc: dict[str, int] | None = None
    if shard is not None:
        if saved is not None and not fresh:
            shard_doc = dict(saved["shard"])
        else:
            total = sum(1 for _ in read_records(input_path, text_column, id_column))  # checks every row, too
            first, end = shard_range(total, *shard, chunk_size)
            shard_doc = {"k": shard[0], "n": shard[1], "start": first, "end": end, "total": total}
        records = itertools.islice(records, shard_doc["start"], shard_doc["end"])
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    writer = labelling.writer(None, fmt, names)
    done = 0
    if fresh:

        def start() -> None:  # never a new job's progress file beside another job's records
            sidecar.unlink(missing_ok=True)
            if out.exists():
                os.truncate(out, 0)
            atomic_write_json(sidecar, progress_doc(job, shard_doc, complete=False, started=started))

        sink = AppendFile(out, truncate=True, start=start)
    else:
        done, keep, records, complete = resume_point(out, fmt, writer.header(), records, chunk_size)
        if complete:
            say(f"{out} holds every record of this job ({done:,}); marking it complete")
        elif done:
            say(f"resuming at record {done + 1:,}: {out} holds the first {done:,} records of this job")
        else:
            say(f"{out} holds no whole record of this job yet; starting at record 1")
        os.truncate(out, keep)
        writer = labelling.writer(None, fmt, names, header=keep == 0)
        sink = AppendFile(out, truncate=False)
    writer.stream = sink
    show = sys.stderr.isatty()
    size = shard_doc["end"] - shard_doc["start"] if shard_doc else None
    try:
        with _bar(show, lambda: size if size is not None else count_lines(input_path), done) as bar:
            labelled = predict_records(clf, records, writer, labelling, chunk_size=chunk_size, progress=bar)
        sink.open()  # an empty input still gets its (empty) file
        sink.close(sync=True)
    except BaseException:
        sink.close(sync=False)
        raise
    count = done + labelled
    atomic_write_json(
        sidecar,
        progress_doc(
            job,
            shard_doc,
            complete=True,
            records=count,
            bytes=out.stat().st_size,
            started=(saved or {}).get("started", started),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ),
    )
    return BulkResult(out, labelled, done, count)


def _bar(show: bool, total: Callable[[], int | None], initial: int) -> tqdm:
    """A tqdm bar on stderr when ``show`` (a terminal), else a silent one; ``total`` is counted only then."""
    return tqdm(
        total=total() if show else None,
        initial=initial,
        unit="texts",
        desc="predict",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not show,
    )


def write_predictions(
    clf: EmotionClassifier,
    records: Iterable[Record],
    output_path: str | Path,
    labelling: Labelling | None = None,
    *,
    overwrite: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> int:
    """Label records with no input file to resume by (texts as arguments, stdin) into a file, atomically.

    An existing non-empty file is replaced only with ``overwrite``; a file job's progress file
    beside it is removed, since the output is no longer that job's.
    """
    out = Path(output_path)
    fmt = output_format(out)
    if out.exists() and out.stat().st_size > 0 and not overwrite:
        raise RunFolderError(f"{out} exists; --overwrite to replace it")
    labelling = labelling or Labelling()
    with atomic_open(out) as f:
        writer = labelling.writer(f, fmt, clf.label_names_for(labelling.taxonomy))
        count = predict_records(clf, records, writer, labelling, chunk_size=chunk_size)
    progress_path(out).unlink(missing_ok=True)
    return count
