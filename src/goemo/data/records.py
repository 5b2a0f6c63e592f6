"""Texts to label, read from ``.txt`` / ``.csv`` / ``.jsonl`` files or stdin, lazily and strictly.

Input is validated at the boundary: a file that is not what it claims to be ends in one
`DataError` naming the file, the line and the field, before anything is computed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from goemo.core.errors import ConfigError, DataError
from goemo.data.io import check_unicode, delimited_rows, parse_json_object


def check_texts(texts: Sequence[str]) -> list[str]:
    r"""Validate at the boundary: a bare string would otherwise be read as a list of characters.

    A text holding a lone surrogate (a command-line argument that is not UTF-8, a JSON
    ``"\ud800"`` escape) is refused with a `DataError`: no tokenizer or UTF-8 writer takes it.
    """
    if isinstance(texts, str):
        raise ConfigError("texts must be a list of strings, got one string; wrap it: [text]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"texts[{i}] is {type(t).__name__}, expected str")
        check_unicode(t, field=f"texts[{i}]")
    return out


@dataclass
class Record:
    """One text to label, with the id that comes back beside its prediction."""

    id: str
    text: str


def read_records(
    path: str | Path | None,
    text_column: str = "text",
    id_column: str | None = None,
    stream: TextIO | None = None,
) -> Iterator[Record]:
    """Stream texts from ``.txt`` (one per line), ``.csv`` (header row) or ``.jsonl``, lazily.

    Ids come from ``id_column`` when given, else they are line numbers (``.txt``, stdin) or
    row numbers counted from 1 (``.csv``, ``.jsonl``). Empty lines of a ``.txt`` file are
    empty texts, so ids stay equal to line numbers; blank lines of a ``.csv`` or ``.jsonl``
    are skipped and take no number, so the same rows get the same ids in either format.
    ``path=None`` reads ``stream`` (stdin) as text lines.

        next(read_records("texts.csv", text_column="body", id_column="id"))
        # -> Record(id='a1', text='I love it')
    """
    if path is None:
        yield from _txt_records(stream if stream is not None else sys.stdin)
        return
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".jsonl", ".json"):
        raise DataError(f"unsupported input type {suffix or '(none)'}: expected .txt, .csv or .jsonl", path=path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            if suffix == ".txt":
                if id_column:
                    raise ConfigError("--id-column applies to .csv and .jsonl inputs; .txt ids are line numbers")
                yield from _txt_records(f)
            elif suffix == ".csv":
                yield from _csv_records(f, path, text_column, id_column)
            else:
                yield from _jsonl_records(f, path, text_column, id_column)
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start} of a read block)", path=path) from None


def _txt_records(f: TextIO) -> Iterator[Record]:
    for number, line in enumerate(f, start=1):
        yield Record(str(number), line.rstrip("\r\n"))


def _csv_records(f: TextIO, path: Path, text_column: str, id_column: str | None) -> Iterator[Record]:
    # Training's parser (strict quoting): an unbalanced quote is an error, not merged rows.
    rows = delimited_rows(f, path, skip_blank=False)
    first = next(rows, None)
    if first is None:
        return
    header_line, header = first
    for column in (text_column, id_column):
        if column is not None and column not in header:
            raise DataError(f"no column {column!r} in the header ({', '.join(header)})", path=path, line=header_line)
    ti = header.index(text_column)
    ii = header.index(id_column) if id_column else None
    row_number = 0
    for line, row in rows:
        if not row:  # a blank line: no row, so it takes no number (as in JSON Lines)
            continue
        row_number += 1
        if len(row) != len(header):
            raise DataError(f"{len(row)} fields, the header has {len(header)}", path=path, line=line)
        yield Record(row[ii] if ii is not None else str(row_number), row[ti])


def _jsonl_records(f: TextIO, path: Path, text_column: str, id_column: str | None) -> Iterator[Record]:
    row_number = 0
    for line_number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        row_number += 1
        obj = parse_json_object(line, path, line_number)
        if text_column not in obj:
            raise DataError("missing", path=path, line=line_number, field=text_column)
        text = obj[text_column]
        if not isinstance(text, str):
            raise DataError(
                f"expected a string, got {type(text).__name__}", path=path, line=line_number, field=text_column
            )
        check_unicode(text, path, line_number, text_column)
        if id_column is not None:
            if id_column not in obj or obj[id_column] is None:
                raise DataError("missing", path=path, line=line_number, field=id_column)
            rid = check_unicode(str(obj[id_column]), path, line_number, id_column)
        else:
            rid = str(row_number)
        yield Record(rid, text)


def count_lines(path: Path) -> int | None:
    """Line count for a progress bar's total (a cheap binary pass); None for CSV, whose rows may span lines."""
    if path.suffix.lower() == ".csv":
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")
