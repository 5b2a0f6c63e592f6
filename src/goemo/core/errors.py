"""One family of exceptions, so the CLI can turn any of them into a single clear line.

Library code raises these instead of printing; `goemo.cli` catches `GoemoError`
and exits 1 with ``str(error)`` on stderr (no traceback unless ``--debug``).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


def one_line(text: str) -> str:
    r"""``text`` with every character that would break or garble a line escaped as ``repr`` does.

    Messages quote what the user's files hold (a header, a key, a label), which may hold line
    breaks, terminal escapes or lone surrogates; escaped, the message stays one printable line.

    >>> one_line("no column 'te\nxt'")
    "no column 'te\\nxt'"
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def json_problem(error: json.JSONDecodeError) -> str:
    """What is wrong in a JSON text and where, as one finished phrase.

    Python's reason alone may end mid-sentence (``Unterminated string starting at``,
    ``Invalid control character at``): its position completes it. Within one line (JSON Lines,
    a cell) the column says where; the caller names the line.

    >>> json_problem(json.JSONDecodeError("Unterminated string starting at", '{"a": "b', 6))
    'Unterminated string starting at column 7'
    >>> json_problem(json.JSONDecodeError("Expecting value", "", 0))
    'Expecting value at column 1'
    """
    return f"{error.msg.removesuffix(' at')} at column {error.colno}"


class GoemoError(Exception):
    """Base class: a problem the user can fix, explained in one line (`one_line` sees to that)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class DataError(GoemoError):
    """Malformed input data, located precisely so the user can open the file and fix it.

    >>> str(DataError("bad label id 99", path="train.tsv", line=12, field="labels"))
    'train.tsv:12: labels: bad label id 99'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.problem = message
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        if field:
            where += f"{field}: "
        super().__init__(where + message)


class DownloadError(GoemoError):
    """A file could not be fetched or failed its checksum."""


class ConfigError(GoemoError):
    """An option or config file value is invalid."""


class ModelError(GoemoError):
    """A model cannot be found, loaded or does not fit the data."""


class RunFolderError(GoemoError):
    """The output folder holds something that would be overwritten or cannot be resumed."""


# A write the disk refused, which the user fixes outside goemo, and what to do about it.
DISK_ERRNOS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EFBIG: "write elsewhere",
    errno.EROFS: "write elsewhere",
}


class WriteError(GoemoError, OSError):
    """A write the disk refused (full, over quota, read-only), naming what was being written.

    An `OSError` too, with its ``errno`` and ``filename``, so code that handles a failed write
    (a cache that is only an optimisation) still does. goemo's writes are atomic, so what was
    written before is intact: the message says so rather than showing the writer's traceback.

    >>> str(WriteError("runs/x/last", errno.ENOSPC))
    'cannot write runs/x/last: No space left on device (what was written before is intact); free some space or write elsewhere'
    """

    def __init__(self, path: str | Path, code: int) -> None:
        reason = os.strerror(code)
        hint = DISK_ERRNOS.get(code, "write elsewhere")
        self.message = f"cannot write {path}: {reason} (what was written before is intact); {hint}"
        super().__init__(self.message)
        self.errno, self.strerror, self.filename = code, reason, str(path)

    def __str__(self) -> str:  # OSError's would be "[Errno 28] ...: 'path'"
        return one_line(self.message)


class MetricsInputError(GoemoError, ValueError):
    """Labels, probabilities, names or thresholds that do not fit together."""


class EvaluationError(GoemoError):
    """A model, split and option combination that cannot be evaluated as asked."""


class ThresholdLeakError(EvaluationError):
    """Thresholds were about to be tuned, or tuned ones scored, on the split they would flatter.

    Raised when per-label thresholds would be tuned on a test split, and when thresholds
    tuned on dev would be reported on dev itself: either would overstate every score.
    """
