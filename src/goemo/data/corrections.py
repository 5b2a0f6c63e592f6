"""Readers for the two files that clean a training split: ids to exclude, and label corrections.

Both usually come from ``goemo audit`` (its review page exports the corrections), but people
also write them by hand, so every problem is reported as ``file:line: field: problem``:

* an **exclude** file lists text ids to drop: one id per line (blank lines and ``#`` comments
  are skipped), or a ``.csv`` file with an ``id`` column (``label_issues.csv`` itself works);
* a **corrections** file is a CSV with the columns ``id,label,action``, ``action`` being
  ``add`` or ``remove``.

This module only reads and checks the files' own shape; whether an id or a label exists in
the data is checked where the split is known (`goemo.training.data.clean_train`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "fix.csv"
>>> _ = path.write_text("id,label,action\\nabc,joy,add\\n")
>>> read_corrections(path)[0]
Correction(id='abc', label='joy', action='add', line=2)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from goemo.core.errors import DataError

ACTIONS = ("add", "remove")
CORRECTION_COLUMNS = ("id", "label", "action")


@dataclass(frozen=True)
class Excluded:
    """One id to drop, with the line of the file it came from (for error messages)."""

    id: str
    line: int


@dataclass(frozen=True)
class Correction:
    """Add or remove one label of one text; ``line`` is where the file says so."""

    id: str
    label: str
    action: str
    line: int


def read_exclusions(path: str | Path) -> list[Excluded]:
    """The ids of an exclude file: one per line, or the ``id`` column of a ``.csv`` file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "drop.txt"
    >>> _ = path.write_text("# from the audit\\nabc\\n\\ndef\\n")
    >>> [e.id for e in read_exclusions(path)]
    ['abc', 'def']
    """
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path, text, ("id",))
        out = []
        for line, row in rows:
            value = (row.get("id") or "").strip()
            if not value:
                raise DataError("empty id", path=path, line=line, field="id")
            out.append(Excluded(value, line))
        return out
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        value = raw.strip()
        if value and not value.startswith("#"):
            out.append(Excluded(value, number))
    return out


def read_corrections(path: str | Path) -> list[Correction]:
    """The rows of a corrections CSV (``id,label,action``), each checked; other columns are ignored.

    The same (id, label) twice with opposite actions is refused at the second line: the file
    would say two things.
    """
    path = Path(path)
    out: list[Correction] = []
    seen: dict[tuple[str, str], Correction] = {}
    for line, row in _csv_rows(path, _read_text(path), CORRECTION_COLUMNS):
        values = {k: (row.get(k) or "").strip() for k in CORRECTION_COLUMNS}
        for key in ("id", "label"):
            if not values[key]:
                raise DataError(f"empty {key}", path=path, line=line, field=key)
        action = values["action"].lower()
        if action not in ACTIONS:
            raise DataError(f"{values['action']!r} is not add or remove", path=path, line=line, field="action")
        fix = Correction(values["id"], values["label"], action, line)
        before = seen.get((fix.id, fix.label))
        if before is not None and before.action != action:
            raise DataError(
                f"{fix.label!r} of {fix.id!r}: line {before.line} says {before.action}, this line {action}",
                path=path,
                line=line,
                field="action",
            )
        seen[(fix.id, fix.label)] = fix
        out.append(fix)
    return out


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError("no such file", path=path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 (byte {e.start})", path=path) from None


def _csv_rows(path: Path, text: str, needed: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(first line of the record, row) for every record of a CSV file with a header naming ``needed``."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in needed if c not in header]
    if missing:
        has = ", ".join(header) if header else "none (the file is empty)"
        raise DataError(f"no {' or '.join(missing)} column (columns: {has})", path=path, line=1)
    rows = []
    try:
        for row in reader:
            values = [v for v in row.values() if isinstance(v, str)]
            if any(v.strip() for v in values):
                # the reader skips blank lines and counts the lines of quoted fields: the record began here
                rows.append((reader.line_num - sum(v.count("\n") for v in values), row))
    except csv.Error as e:
        raise DataError(f"not valid CSV ({e})", path=path, line=reader.line_num) from None
    return rows
