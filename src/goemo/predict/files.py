"""Bulk labelling: stream a file of texts through `EmotionClassifier` into JSON Lines or CSV.

Speed. Three stages overlap, as a pipeline: a reader thread reads, checks and tokenises the
next chunks of texts while the calling thread runs the model on the current one, and a
writer thread decides the labels of the previous one, formats it and appends it. Tokenisers,
PyTorch and ONNX Runtime release the GIL, so on a model-bound job the reading and writing
cost (almost) nothing. The queues between the stages hold at most ``PREFETCH`` chunks each,
so memory is bounded by the chunk size, whatever the size of the file.

Safety. ``--output`` is written in place, one ``write`` of whole records per chunk (CSV:
whole rows, the header once), so at every moment the file holds only whole records, except
possibly a torn last one after a hard kill. Beside it, ``OUT.goemo-progress.json`` (written
atomically) names the job: the input (size, modification time), the model (fingerprint,
thresholds), the backend settings and the options. A rerun of the same job resumes: the torn
tail is cut, the ids of the records already written are checked against the input's, and
labelling goes on from the last whole chunk, so a resumed output is the byte-for-byte
output of an uninterrupted run (every chunk is labelled in the same company). When the job
ends, the progress file says ``complete`` with the output's record count and size.

Scale-out. ``shard=(k, n)`` labels one contiguous range of the input, cut at chunk
boundaries (`shard_range`), into `shard_path`; `merge_predictions` joins the n shards in
input order. Cut at chunk boundaries, the shards' chunks are those of an unsharded run, so
the merged file equals the unsharded output.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import os
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TextIO

import numpy as np
from tqdm import tqdm

from goemo.core.errors import ConfigError, DataError, RunFolderError
from goemo.core.fileio import atomic_open, atomic_write_json, remove_stale_temps
from goemo.core.thresholds import sigmoid
from goemo.data.records import Record, check_texts, count_lines, read_records
from goemo.predict.classifier import EmotionClassifier

log = logging.getLogger(__name__)

# A chunk of a streamed file: large enough that length-sorted batches inside it pad almost as
# little as a sort of the whole file would, small enough that memory stays flat and that a
# resume relabels little (at most one chunk).
DEFAULT_CHUNK = 4096
# Chunks queued between two stages of the pipeline: enough to hide a slow read or write,
# few enough that memory stays a few chunks' worth.
PREFETCH = 2
PROGRESS_SUFFIX = ".goemo-progress.json"
PROGRESS_FORMAT = "goemo-predict-progress/1"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_JSON = json.JSONDecoder()
_JSONL_START = b'{"id": "'

Format = Literal["jsonl", "csv"]


def output_format(path: str | Path | None) -> Format:
    """The format an output file's name asks for (stdout: JSON Lines)."""
    if path is None:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(f"output {path}: expected a .jsonl or .csv file name")


def progress_path(output: str | Path) -> Path:
    """The progress file beside an output: ``labels.jsonl`` -> ``labels.jsonl.goemo-progress.json``."""
    output = Path(output)
    return output.with_name(output.name + PROGRESS_SUFFIX)


def shard_path(output: Path, k: int, n: int) -> Path:
    """Where shard ``k`` of ``n`` of ``output`` is written: ``labels.jsonl`` -> ``labels.shard-3-of-8.jsonl``.

    Part of the cluster contract: ``goemo predict --output OUT --shard K/N`` writes here and
    ``goemo merge-predictions --output OUT --shards N`` reads from here.

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
    """Records ``[start, end)`` (0-based) of shard ``k`` of ``n`` in an input of ``total`` records.

    Contiguous ranges of whole chunks, as even as chunks allow: every chunk of a shard is a
    chunk an unsharded run would label, so the merged shards equal the unsharded output.

    >>> [shard_range(10, k, 3, chunk_size=2) for k in (1, 2, 3)]
    [(0, 2), (2, 6), (6, 10)]
    """
    _check_shard(k, n)
    chunks = -(-total // chunk_size)
    return min((k - 1) * chunks // n * chunk_size, total), min(k * chunks // n * chunk_size, total)


# ----------------------------------------------------------------------------- formatting


def decide_chunk(
    clf: EmotionClassifier,
    probs: np.ndarray,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
) -> tuple[np.ndarray, list[list[int]]]:
    """(scores, chosen label indices per text, highest score first): `EmotionClassifier.predict_from_proba`, vectorised.

    The same decisions and the same order (ties: lower index first); sorting the whole chunk
    at once keeps the per-text Python work to slicing a list.
    """
    _, scores, on = clf.decide(probs, threshold=threshold, taxonomy=taxonomy)
    chosen = on.astype(bool)
    if top_k is not None and threshold is None:
        chosen[:] = True
    # Chosen labels sort first (-score <= 0 < 1), by score, highest first; stable: ties by index.
    order = np.argsort(np.where(chosen, -scores, np.float32(1.0)), axis=1, kind="stable")
    counts = chosen.sum(axis=1)
    if top_k is not None:
        counts = np.minimum(counts, int(top_k))
    return scores, [row[:c] for row, c in zip(order.tolist(), counts.tolist())]


class PredictionWriter:
    """Writes predictions as JSON Lines or CSV, one record per text, one ``write`` per chunk.

    A chunk is formatted into one string and written with one ``write`` call, so a file
    sink never holds part of a chunk's records unless the process died inside that call.
    The CSV header goes out with the first chunk (``header=False``: a resumed file has it).
    """

    def __init__(
        self,
        stream: IO[str] | Any,
        fmt: Format,
        label_names: Sequence[str],
        all_scores: bool = False,
        with_text: bool = True,
        *,
        header: bool = True,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.label_names = list(label_names)
        self.all_scores = all_scores
        self.with_text = with_text
        self._header_pending = fmt == "csv" and header

    def header(self) -> str:
        """The CSV header line (JSON Lines: none)."""
        if self.fmt != "csv":
            return ""
        columns = ["id"] + (["text"] if self.with_text else []) + ["labels", "scores"]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(columns + (self.label_names if self.all_scores else []))
        return buf.getvalue()

    def format_chunk(self, records: Sequence[Record], scores: np.ndarray, chosen: Sequence[Sequence[int]]) -> str:
        """The text of a chunk's records; ``scores`` (n, labels), ``chosen`` from `decide_chunk`."""
        names = self.label_names
        # float32 -> float64 is exact, and so is x * 1e6 then: np.round gives Python's round(x, 6).
        rounded = np.round(scores.astype(np.float64), 6).tolist()
        if self.fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            rows = []
            for record, row_scores, idx in zip(records, scores.tolist(), chosen):
                row = [record.id, record.text] if self.with_text else [record.id]
                row.append(",".join([names[j] for j in idx]))
                row.append(",".join([f"{row_scores[j]:.6f}" for j in idx]))
                if self.all_scores:
                    row += [f"{p:.6f}" for p in row_scores]
                rows.append(row)
            writer.writerows(rows)
            return buf.getvalue()
        dumps = json.JSONEncoder(ensure_ascii=False).encode
        lines = []
        for record, row, idx in zip(records, rounded, chosen):
            obj: dict[str, Any] = {"id": record.id}
            if self.with_text:
                obj["text"] = record.text
            obj["labels"] = [{"label": names[j], "score": row[j]} for j in idx]
            if self.all_scores:
                obj["scores"] = dict(zip(names, row))
            lines.append(dumps(obj))
        lines.append("")
        return "\n".join(lines)

    def write_chunk(self, records: Sequence[Record], scores: np.ndarray, chosen: Sequence[Sequence[int]]) -> None:
        """Format and write one chunk (with the CSV header first, the first time), then flush."""
        text = self.format_chunk(records, scores, chosen)
        if self._header_pending:
            text = self.header() + text
            self._header_pending = False
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        """End the output: an empty CSV still gets its header."""
        if self._header_pending:
            self.stream.write(self.header())
            self._header_pending = False
            self.stream.flush()


# ----------------------------------------------------------------------------- the pipeline


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _background(items: Iterator[Any], depth: int, name: str) -> Iterator[Any]:
    """Iterate ``items`` in a thread, at most ``depth`` items ahead; its exceptions are raised here.

    Closing the returned generator (or an exception in the consumer) stops the thread at the
    next item and closes ``items`` there, so an open input file is closed too.
    """
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.1)
                return True
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as e:  # handed to the consumer, which raises it
            put((False, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)  # a reader blocked on stdin is a daemon: left behind


class _BackgroundWriter:
    """Runs ``write(item)`` for each item put, in order, in a thread, at most ``depth`` items behind."""

    def __init__(self, write: Callable[[Any], None], depth: int) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="goemo-predict-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._abort.is_set():
                return
            try:
                self._write(item)
            except BaseException as e:  # raised in the caller at its next put or close
                self._error = e
                return

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        while True:
            self._check()
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return

    def close(self) -> None:
        """Wait until everything put is written; raise the writer's error, if any."""
        self.put(None)
        self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop after the write in progress (a write is whole chunks: the output stays whole)."""
        self._abort.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join()


def _encoded_chunks(clf: EmotionClassifier, records: Iterable[Record], size: int) -> Iterator[tuple[list[Record], Any]]:
    """Chunks of records with their token ids (None for a backend that takes texts)."""
    takes_tokens = clf.tokenizer is not None
    for chunk in _chunks(records, size):
        texts = check_texts([r.text for r in chunk])
        yield chunk, (clf.encode(texts) if takes_tokens and texts else None)


def predict_records(
    clf: EmotionClassifier,
    records: Iterable[Record],
    writer: PredictionWriter,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Any = None,
    prefetch: int = PREFETCH,
) -> int:
    """Label a stream of records chunk by chunk, writing each chunk in input order; returns the count.

    Reading and tokenising (a thread ahead), the model (this thread) and deciding, formatting
    and writing (a thread behind) overlap; each queue holds at most ``prefetch`` chunks, so
    at most ``2 * prefetch + 3`` chunks are in memory at once.

    >>> n = predict_records(clf, read_records("in.txt"), PredictionWriter(sys.stdout, "jsonl", clf.label_names))  # doctest: +SKIP
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size}: expected an integer >= 1")
    clf.predict_from_proba(np.zeros((0, clf.num_labels), np.float32), top_k, threshold, taxonomy)  # checks them

    def write(item: tuple[list[Record], np.ndarray]) -> None:
        chunk, probs = item
        scores, chosen = decide_chunk(clf, probs, top_k=top_k, threshold=threshold, taxonomy=taxonomy)
        writer.write_chunk(chunk, scores, chosen)
        if progress is not None:
            progress.update(len(chunk))

    count = 0
    chunks = _background(_encoded_chunks(clf, records, chunk_size), prefetch, "goemo-predict-read")
    sink = _BackgroundWriter(write, prefetch)
    try:
        for chunk, encoded in chunks:
            if encoded is not None:
                logits = clf.logits_for_encoded(encoded)
            else:
                logits = clf.predict_logits([r.text for r in chunk])
            sink.put((chunk, sigmoid(logits).astype(np.float32)))
            count += len(chunk)
        sink.close()
    except Exception:
        # A bad row (or a model error) midway: what was labelled before it is written, so
        # the output ends with the last whole chunk before the problem, whatever the timing.
        with contextlib.suppress(Exception):
            sink.close()
        raise
    except BaseException:  # Ctrl-C: stop at once, after the write in progress
        sink.abort()
        raise
    finally:
        chunks.close()  # type: ignore[attr-defined]  # a generator: stops the reader thread
    writer.finish()
    return count


# ----------------------------------------------------------------------------- output files


class _AppendFile:
    """A file written by whole chunks: each ``write`` is one ``os.write`` loop of the chunk's bytes.

    Opened on the first write (``start`` runs just before), so a job that fails on its first
    chunk leaves nothing behind.
    """

    def __init__(self, path: Path, *, truncate: bool, start: Callable[[], None] | None = None) -> None:
        self.path = path
        self._truncate = truncate
        self._start = start
        self._fd: int | None = None

    def open(self) -> None:
        if self._fd is not None:
            return
        if self._start is not None:
            self._start()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if self._truncate else 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, flags, 0o666)

    def write(self, text: str) -> None:
        self.open()
        assert self._fd is not None
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(self._fd, view) :]

    def flush(self) -> None:  # every write went straight to the kernel
        pass

    def close(self, sync: bool) -> None:
        if self._fd is None:
            return
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None


def _scan_output(path: Path, fmt: Format, header: str) -> Iterator[tuple[int, str]]:
    """(end offset, id) of each whole record of a goemo predict output, CSV header skipped.

    A record is whole when its line end was written (CSV: a line end outside quotes); the torn
    rest of a killed write is not yielded. Anything that is not a record goemo predict writes
    is refused: a file we did not write must never be appended to.
    """
    offset = 0
    with open(path, "rb") as f:
        if fmt == "jsonl":
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    return
                offset += len(line)
                try:
                    if not (line.startswith(_JSONL_START) and line.endswith(b"}\n")):
                        raise ValueError
                    rid = _JSON.raw_decode(line.decode("utf-8"), len(_JSONL_START) - 1)[0]
                except ValueError:
                    raise RunFolderError(
                        f"{path}:{number}: not a record goemo predict writes; --overwrite to replace the file"
                    ) from None
                yield offset, rid
            return
        expected = header.encode("utf-8")
        record = b""
        quoted = False
        number = 0
        for line in f:
            record += line
            quoted ^= line.count(b'"') % 2 == 1
            if quoted or not line.endswith(b"\n"):
                continue
            offset += len(record)
            number += 1
            if number == 1:
                if record != expected:
                    raise RunFolderError(
                        f"{path}: its header ({record.decode('utf-8', 'replace').strip()}) is not the one this job "
                        f"writes ({header.strip()}); --overwrite to replace the file"
                    )
            else:
                try:
                    rid = next(csv.reader([record.decode("utf-8")]))[0]
                except (ValueError, IndexError, csv.Error):
                    raise RunFolderError(
                        f"{path}: record {number - 1}: not a record goemo predict writes; --overwrite to replace the file"
                    ) from None
                yield offset, rid
            record = b""


def _count_records(path: Path, fmt: Format) -> int:
    """Whole records of one of our outputs (the CSV header not counted)."""
    records, quoted = 0, False
    with open(path, "rb") as f:
        for line in f:
            quoted ^= line.count(b'"') % 2 == 1
            records += not quoted and line.endswith(b"\n")
    return max(records - (fmt == "csv"), 0)


def _read_progress(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path}: unreadable ({type(e).__name__}); --overwrite to start the job again") from None
    if not isinstance(doc, dict) or doc.get("format") != PROGRESS_FORMAT or not isinstance(doc.get("job"), dict):
        raise RunFolderError(f"{path}: not a goemo predict progress file; --overwrite to start the job again")
    return doc


def _job(
    clf: EmotionClassifier, input_path: Path, fmt: Format, options: dict[str, Any], chunk_size: int
) -> dict[str, Any]:
    """What decides an output's records: the input, the model, the backend settings and the options."""
    st = input_path.stat()
    settings = {k: v for k, v in clf.settings.items() if k != "device"}  # a resume may run elsewhere
    return {
        "input": {"path": str(input_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "model": {
            "path": str(clf.path) if clf.path is not None else None,
            "fingerprint": clf.folder.fingerprint if clf.folder is not None else None,
            "labels": list(clf.label_names),
            "thresholds": [round(float(t), 9) for t in clf.thresholds],
        },
        "settings": settings,
        "options": {"format": fmt, **options, "chunk_size": chunk_size},
    }


def _job_difference(saved: dict[str, Any], job: dict[str, Any]) -> str | None:
    """What differs between two jobs, in words (None: the same job). Paths do not count."""
    a_in, b_in = saved.get("input", {}), job["input"]
    if (a_in.get("size"), a_in.get("mtime_ns")) != (b_in["size"], b_in["mtime_ns"]):
        return f"the input is not the same file, or changed since ({a_in.get('path')}, {a_in.get('size')} bytes)"
    a_model, b_model = saved.get("model", {}), job["model"]
    for key in ("fingerprint", "labels", "thresholds"):
        if a_model.get(key) != b_model[key]:
            return f"another model ({key} differs; it was {a_model.get('path')})"
    for group in ("settings", "options"):
        a, b = saved.get(group, {}), job[group]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"{key} was {a.get(key)!r}, now {b.get(key)!r}"
    return None


def _progress_doc(job: dict[str, Any], shard: dict[str, int] | None, **state: Any) -> dict[str, Any]:
    return {"format": PROGRESS_FORMAT, "job": job, "shard": shard, **state}


@dataclass(frozen=True)
class BulkResult:
    """What a `predict_file` call did."""

    output: Path | None  # the file written (a shard's own file with ``shard``); None: stdout
    labelled: int  # texts labelled by this call
    resumed_at: int  # records already in the output when this call began (0: a fresh start)
    records: int  # records in the output now
    already_complete: bool = False  # the output was the complete output of this job: nothing done


def predict_file(
    clf: EmotionClassifier,
    input_path: str | Path | None,
    output_path: str | Path | None = None,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    all_scores: bool = False,
    with_text: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    notify: Callable[[str], None] | None = None,
) -> BulkResult:
    """Label every text of a file (or stdin) into JSON Lines or CSV on ``output_path`` (or stdout).

    An output file is written in place by whole records and resumed when the same job runs
    again (see the module's docstring); its progress file ``OUT.goemo-progress.json`` names
    the job and says when it is complete. An existing output of another job, or a file goemo
    did not write, is refused unless ``overwrite``. From stdin (nothing to resume by) the
    output is written atomically instead. ``shard=(k, n)`` labels only shard k of n into
    ``shard_path(output_path, k, n)``. ``notify`` gets one-line news (resuming, complete).

    >>> predict_file(clf, "comments.csv", "labels.jsonl", text_column="body", id_column="id").records  # doctest: +SKIP
    10000
    """
    say = notify or log.info
    fmt = output_format(output_path)
    names = clf.label_names_for(taxonomy)
    decide = {"top_k": top_k, "threshold": threshold, "taxonomy": taxonomy}
    if shard is not None and (input_path is None or output_path is None):
        raise ConfigError("--shard needs --input FILE and --output FILE")
    if output_path is None:  # stdout: streamed as it comes
        stream = read_records(input_path, text_column, id_column, stream=stdin)
        writer = PredictionWriter(stdout or sys.stdout, fmt, names, all_scores, with_text)
        show = progress and input_path is not None and sys.stderr.isatty()
        with _bar(show, lambda: count_lines(Path(input_path)) if input_path is not None else None, 0) as bar:
            n = predict_records(
                clf,
                stream,
                writer,
                top_k=top_k,
                threshold=threshold,
                taxonomy=taxonomy,
                chunk_size=chunk_size,
                progress=bar,
            )
        return BulkResult(None, n, 0, n)
    if input_path is None:  # stdin: nothing to resume by
        n = write_predictions(
            clf,
            read_records(None, stream=stdin),
            output_path,
            overwrite=overwrite,
            top_k=top_k,
            threshold=threshold,
            taxonomy=taxonomy,
            all_scores=all_scores,
            with_text=with_text,
            chunk_size=chunk_size,
        )
        return BulkResult(Path(output_path), n, 0, n)

    input_path = Path(input_path)
    if not input_path.is_file():
        raise DataError("file not found", path=input_path)
    out = Path(output_path) if shard is None else shard_path(Path(output_path), *shard)
    sidecar = progress_path(out)
    remove_stale_temps(out)  # what an earlier goemo's atomic write, killed, left behind
    options = {"text_column": text_column, "id_column": id_column, **decide}
    options |= {"all_scores": all_scores, "with_text": with_text}
    job = _job(clf, input_path, fmt, options, chunk_size)
    saved = None if overwrite else _read_progress(sidecar)
    fresh = overwrite or not out.exists() or (saved is None and out.stat().st_size == 0)
    if not fresh:
        if saved is None:
            raise RunFolderError(
                f"{out} exists, without the {sidecar.name} of the goemo predict job that would have written it; "
                "--overwrite to replace it"
            )
        difference = _job_difference(saved["job"], job) or _shard_difference(saved.get("shard"), shard)
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

    records: Iterator[Record] = read_records(input_path, text_column, id_column)
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
    writer = PredictionWriter(None, fmt, names, all_scores, with_text)
    done = 0
    if fresh:

        def start() -> None:  # never a new job's progress file beside another job's records
            sidecar.unlink(missing_ok=True)
            if out.exists():
                os.truncate(out, 0)
            atomic_write_json(sidecar, _progress_doc(job, shard_doc, complete=False, started=started))

        sink = _AppendFile(out, truncate=True, start=start)
    else:
        done, keep, records, complete = _resume_point(out, fmt, writer.header(), records, chunk_size)
        if complete:
            say(f"{out} holds every record of this job ({done:,}); marking it complete")
        elif done:
            say(f"resuming at record {done + 1:,}: {out} holds the first {done:,} records of this job")
        else:
            say(f"{out} holds no whole record of this job yet; starting at record 1")
        os.truncate(out, keep)
        writer = PredictionWriter(None, fmt, names, all_scores, with_text, header=keep == 0)
        sink = _AppendFile(out, truncate=False)
    writer.stream = sink
    show = progress and sys.stderr.isatty()
    size = shard_doc["end"] - shard_doc["start"] if shard_doc else None
    try:
        with _bar(show, lambda: size if size is not None else count_lines(input_path), done) as bar:
            labelled = predict_records(
                clf,
                records,
                writer,
                top_k=top_k,
                threshold=threshold,
                taxonomy=taxonomy,
                chunk_size=chunk_size,
                progress=bar,
            )
        sink.open()  # an empty input still gets its (empty) file
        sink.close(sync=True)
    except BaseException:
        sink.close(sync=False)
        raise
    count = done + labelled
    atomic_write_json(
        sidecar,
        _progress_doc(
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


@contextlib.contextmanager
def _bar(show: bool, total: Callable[[], int | None], initial: int) -> Iterator[Any]:
    """A tqdm bar on stderr when ``show`` (a terminal), else none; ``total`` is counted only then."""
    if not show:
        yield None
        return
    with tqdm(total=total(), initial=initial, unit="texts", desc="predict", file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar


def _shard_difference(saved: dict[str, Any] | None, shard: tuple[int, int] | None) -> str | None:
    """How the shard of a saved job differs from this one's, in words (None: the same)."""
    was = None if saved is None else (saved.get("k"), saved.get("n"))
    if was == shard:
        return None

    def words(s: tuple[Any, Any] | None) -> str:
        return "the whole input" if s is None else f"shard {s[0]}/{s[1]}"

    return f"it was {words(was)}, now {words(shard)}"


def _resume_point(
    out: Path, fmt: Format, header: str, records: Iterator[Record], chunk_size: int
) -> tuple[int, int, Iterator[Record], bool]:
    """(records kept, bytes kept, the input records still to label, complete?) for a partial output.

    Walks the output's whole records beside the input's, checking that their ids agree, then
    keeps what lies before the last whole chunk: the records of a torn chunk are labelled
    again with their whole chunk, as an uninterrupted run labels them. The records since the
    last chunk boundary (fewer than a chunk) are held to be labelled again.
    """
    head = header.encode("utf-8")
    base = 0
    if head:  # a CSV output's header, when whole, stays
        with open(out, "rb") as f:
            base = len(head) if f.read(len(head)) == head else 0
    keep_bytes, last_end, n = base, base, 0
    pending: list[Record] = []
    for end, rid in _scan_output(out, fmt, header):
        record = next(records, None)
        if record is None:
            raise RunFolderError(
                f"{out} holds more records than this job's input has: not its output; --overwrite to replace it"
            )
        if record.id != rid:
            raise RunFolderError(
                f"{out}: record {n + 1} has id {rid!r}, the input's record {n + 1} has id {record.id!r}: "
                "not this input's output; --overwrite to replace it"
            )
        n += 1
        last_end = end
        pending.append(record)
        if n % chunk_size == 0:
            keep_bytes, pending = end, []
    following = next(records, None)
    if following is None:  # the input ends where the output does: every record is there
        return n, last_end, iter(()), True
    return n - len(pending), keep_bytes, itertools.chain(pending, [following], records), False


def write_predictions(
    clf: EmotionClassifier,
    records: Iterable[Record],
    output_path: str | Path,
    *,
    overwrite: bool = False,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    all_scores: bool = False,
    with_text: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> int:
    """Label records with no input file to resume by (texts as arguments, stdin) into a file, atomically.

    The file appears whole or not at all. An existing non-empty file is replaced only with
    ``overwrite``; a progress file beside it (of a file job) is removed, since the output is
    no longer that job's.
    """
    out = Path(output_path)
    fmt = output_format(out)
    if out.exists() and out.stat().st_size > 0 and not overwrite:
        raise RunFolderError(f"{out} exists; --overwrite to replace it")
    names = clf.label_names_for(taxonomy)
    with atomic_open(out) as f:
        writer = PredictionWriter(f, fmt, names, all_scores, with_text)
        count = predict_records(
            clf, records, writer, top_k=top_k, threshold=threshold, taxonomy=taxonomy, chunk_size=chunk_size
        )
    progress_path(out).unlink(missing_ok=True)
    return count


# ----------------------------------------------------------------------------- merging shards


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

    Every shard must be complete (its progress file says so, and its size is the one it
    recorded), of the same job, and the shards' ranges must tile the input, else one line
    names the first shard that is missing or incomplete. ``output`` appears whole or not at
    all, with a progress file like an unsharded run's, so ``goemo predict`` on it says it is
    complete. Shard files are removed only with ``remove_shards``, once the merge is written.
    Running it again after a merge says so and does nothing (or removes the shards).

    >>> merge_predictions("labels.jsonl", 8).records   # doctest: +SKIP
    1000000
    """
    output = Path(output)
    fmt = output_format(output)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"--shards {shards}: expected an integer >= 1")
    parts = [shard_path(output, k, shards) for k in range(1, shards + 1)]
    existing = [p for p in parts if p.exists()]
    merged = None if overwrite else _read_progress(progress_path(output)) if output.exists() else None
    if merged is not None and merged.get("merged_from") == shards and merged.get("complete"):
        if output.stat().st_size == merged.get("bytes"):
            removed = _remove_shards(existing) if remove_shards else 0
            return MergeResult(output, shards, merged["records"], already_merged=True, removed=removed)
    if output.exists() and output.stat().st_size > 0 and not overwrite:
        raise RunFolderError(f"{output} exists; --overwrite to replace it with the merged shards")
    docs: list[dict[str, Any]] = []
    for k, part in enumerate(parts, start=1):
        where = f"shard {k} of {shards} ({part})"
        doc = _read_progress(progress_path(part)) if part.exists() else None
        if doc is None:
            raise RunFolderError(f"{where} is missing: run array task {k} (goemo predict --shard {k}/{shards})")
        info = doc.get("shard") or {}
        if (info.get("k"), info.get("n")) != (k, shards):
            raise RunFolderError(f"{where}: its progress file is not that of shard {k}/{shards}")
        if not doc.get("complete"):
            done = _count_records(part, fmt)
            raise RunFolderError(
                f"{where} is incomplete ({done:,} of {info.get('end', 0) - info.get('start', 0):,} records): "
                f"run array task {k} again, it resumes"
            )
        if part.stat().st_size != doc.get("bytes"):
            raise RunFolderError(f"{where} changed since its job completed; run array task {k} again with --overwrite")
        if docs:
            difference = _job_difference(docs[0]["job"], doc["job"])
            if difference:
                raise RunFolderError(f"{where} is not from the job of shard 1 ({difference})")
            if info.get("start") != docs[-1]["shard"]["end"] or info.get("total") != docs[0]["shard"]["total"]:
                raise RunFolderError(f"{where}: its records do not follow those of shard {k - 1}")
        elif info.get("start") != 0:
            raise RunFolderError(f"{where}: does not start at the first record")
        docs.append(doc)
    if docs[-1]["shard"]["end"] != docs[-1]["shard"]["total"]:
        raise RunFolderError(f"shard {shards} of {shards}: does not end at the last record")
    header = b""
    if fmt == "csv":
        header = _first_record(parts[0])
        for k, part in enumerate(parts[1:], start=2):
            if _first_record(part) != header:
                raise RunFolderError(f"shard {k} of {shards} ({part}): its header differs from shard 1's")
    size = sum(p.stat().st_size for p in parts) - len(header) * (shards - 1)
    total = docs[0]["shard"]["total"]
    atomic_write_json(
        progress_path(output),
        _progress_doc(
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
    record, quoted = b"", False
    with open(path, "rb") as f:
        for line in f:
            record += line
            quoted ^= line.count(b'"') % 2 == 1
            if not quoted:
                break
    return record


def _remove_shards(parts: Sequence[Path]) -> int:
    for part in parts:
        progress_path(part).unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    return len(parts)
