"""A bulk job's output file: written by whole records, named by its progress file, resumed where it ends.

``--output`` is written in place, one ``write`` of whole records per chunk, so it holds only
whole records, except a torn last one after a hard kill. ``OUT.goemo-progress.json`` names the
job: input (size, modification time), model (fingerprint, thresholds), settings and options. A
rerun of the same job resumes (`resume_point`): the torn tail is cut, the ids written are checked
against the input's, and labelling goes on from the last whole chunk, so a resumed output is
byte for byte an uninterrupted run's (every chunk labelled in the same company).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from goemo.core.errors import RunFolderError
from goemo.data.records import Record
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.prediction_writer import Format

PROGRESS_SUFFIX = ".goemo-progress.json"
PROGRESS_FORMAT = "goemo-predict-progress/1"
_JSON = json.JSONDecoder()
_JSONL_START = b'{"id": "'


def progress_path(output: str | Path) -> Path:
    """The progress file beside an output: ``labels.jsonl`` -> ``labels.jsonl.goemo-progress.json``."""
    output = Path(output)
    return output.with_name(output.name + PROGRESS_SUFFIX)


class AppendFile:
    """A file written by whole chunks, each one ``os.write`` loop; opened on the first write (``start``
    runs just before), so a job that fails on its first chunk leaves nothing behind."""

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


def scan_output(path: Path, fmt: Format, header: str) -> Iterator[tuple[int, str]]:
    """(end offset, id) of each whole record of a goemo predict output (`whole_records`), CSV header
    skipped; anything goemo predict does not write is refused: a file we did not write is never appended to."""
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
        for number, record in enumerate(whole_records(f)):
            offset += len(record)
            if number == 0:
                if record != expected:
                    raise RunFolderError(
                        f"{path}: its header ({record.decode('utf-8', 'replace').strip()}) is not the one this job "
                        f"writes ({header.strip()}); --overwrite to replace the file"
                    )
                continue
            try:
                rid = next(csv.reader([record.decode("utf-8")]))[0]
            except (ValueError, IndexError, csv.Error):
                raise RunFolderError(
                    f"{path}: record {number}: not a record goemo predict writes; --overwrite to replace the file"
                ) from None
            yield offset, rid


def whole_records(f: IO[bytes]) -> Iterator[bytes]:
    """The records of one of our outputs, bytes as written: lines joined while a quote is open (a CSV
    field holding a line break); a torn last record, its line end never written, is left out."""
    record, quoted = b"", False
    for line in f:
        record += line
        quoted ^= line.count(b'"') % 2 == 1
        if not quoted and line.endswith(b"\n"):
            yield record
            record = b""


def count_records(path: Path, fmt: Format) -> int:
    """Whole records of one of our outputs (the CSV header not counted)."""
    with open(path, "rb") as f:
        return max(sum(1 for _ in whole_records(f)) - (fmt == "csv"), 0)


def read_progress(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path}: unreadable ({type(e).__name__}); --overwrite to start the job again") from None
    if not isinstance(doc, dict) or doc.get("format") != PROGRESS_FORMAT or not isinstance(doc.get("job"), dict):
        raise RunFolderError(f"{path}: not a goemo predict progress file; --overwrite to start the job again")
    return doc


def job_identity(
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


def job_difference(saved: dict[str, Any], job: dict[str, Any]) -> str | None:
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
        if group == "settings":  # a job started before long texts were scored in pieces truncated them
            a = {"long_text": "truncate", **a}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"{key} was {a.get(key)!r}, now {b.get(key)!r}"
    return None


def progress_doc(job: dict[str, Any], shard: dict[str, int] | None, **state: Any) -> dict[str, Any]:
    return {"format": PROGRESS_FORMAT, "job": job, "shard": shard, **state}


def resume_point(
    out: Path, fmt: Format, header: str, records: Iterator[Record], chunk_size: int
) -> tuple[int, int, Iterator[Record], bool]:
    """(records kept, bytes kept, the input records still to label, complete?) for a partial output.

    Walks the output's records beside the input's, checking their ids, and keeps what lies before
    the last whole chunk: a torn chunk's records are labelled again with their whole chunk.
    """
    head = header.encode("utf-8")
    base = 0
    if head:  # a CSV output's header, when whole, stays
        with open(out, "rb") as f:
            base = len(head) if f.read(len(head)) == head else 0
    keep_bytes, last_end, n = base, base, 0
    pending: list[Record] = []
    for end, rid in scan_output(out, fmt, header):
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
