"""Readers that turn text files into a `Split`, failing with the exact file, line and field.

Three formats, one result:

- the official GoEmotions TSV (no header; tab separated with CSV quoting; columns text,
  comma-separated label ids, comment id), read exactly as the paper's code reads it;
- CSV with a header row, and JSON Lines, where the caller names the text column and either
  one label-list column (names or ids, as a JSON list or a comma-separated string) or one
  0/1 column per label.

Every reader decodes the whole file first (a UTF-8 BOM and CRLF line ends are accepted) and
checks every row, so a bad row is reported as ``file:line: field: problem`` before anything
downstream (tokenising, training) spends time on it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
import reprlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.errors import ConfigError, DataError, json_problem
from goemo.data.split import Split
from goemo.data.taxonomy import Taxonomy, load_taxonomy, project_split

logger = logging.getLogger(__name__)

PathLike = str | Path

TSV_COLUMNS = ("text", "labels", "id")
DEFAULT_LABEL_COLUMN = "labels"
OFFICIAL_SPLITS = ("train", "dev", "test")

# Bytes that are not UTF-8 survive decoding with "surrogateescape" as lone surrogates in this
# range; valid UTF-8 can never produce them, so finding one locates the bad byte exactly.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# A lone surrogate is not text: a JSON escape such as "\ud800" decodes to one, and neither the
# tokenizer nor any UTF-8 writer can take it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT = re.compile(r"-?[0-9]+")
# Label ids longer than this are out of range whatever the label count (and int() of a
# 5,000-digit string raises ValueError).
_MAX_ID_DIGITS = 18
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}


# ----------------------------------------------------------------------------- decoding


class _Text:
    """A decoded file, remembering whether it held bytes that are not UTF-8.

    Decoding strictly is the fast path; only when it fails is the file decoded again with
    ``surrogateescape`` so the row parser can say which line and field hold the bad byte.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        data = _read_bytes(path).removeprefix(codecs.BOM_UTF8)
        try:
            self.text = data.decode("utf-8")
            self.clean = True
        except UnicodeDecodeError as e:
            self.text = data.decode("utf-8", errors="surrogateescape")
            self.clean = False
            self.first_bad_line = data.count(b"\n", 0, e.start) + 1
            self.first_bad_byte = data[e.start]
        # CRLF -> LF up front, so a quoted text spanning lines reads the same from a Windows file.
        self.text = self.text.replace("\r\n", "\n")

    def check(self, value: str, line: int, field: str | None) -> None:
        """Raise if ``value`` (a field of the row starting at ``line``) holds a bad byte."""
        if self.clean:
            return
        m = _ESCAPED_BYTE.search(value)
        if m is not None:
            bad_line = line + value.count("\n", 0, m.start())
            raise _undecodable(self.path, bad_line, field, ord(m.group()) - 0xDC00)

    def fail_anywhere(self) -> None:
        """Raise for the first bad byte, for formats that could not pin it to a field."""
        if not self.clean:
            raise _undecodable(self.path, self.first_bad_line, None, self.first_bad_byte)


def _undecodable(path: Path, line: int, field: str | None, byte: int) -> DataError:
    return DataError(
        f"undecodable byte 0x{byte:02x}: the file is not UTF-8 (re-save it as UTF-8)",
        path=path,
        line=line,
        field=field,
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError("no such file", path=path) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a file", path=path) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=path) from None


def delimited_rows(
    lines: Iterable[str], path: PathLike, delimiter: str = ",", *, skip_blank: bool = True
) -> Iterator[tuple[int, list[str]]]:
    r"""Yield ``(first line number, fields)`` per record of CSV-quoted text, strictly.

    The one CSV parser of goemo, for training's readers and ``goemo predict``'s alike:
    ``strict=True`` makes an unbalanced quote an error (``file:line: malformed quoting``)
    instead of a text that silently swallows the rows after it, and a field longer than the
    ``csv`` module's limit is named as such. Blank records are skipped (as pandas does) unless
    ``skip_blank=False``, which yields them as ``[]``. ``lines`` is a text stream opened with
    ``newline=""`` (or a ``StringIO``), so quoted line breaks survive.

    >>> list(delimited_rows(io.StringIO('a,b\n"x\ny",z\n'), "in.csv"))
    [(1, ['a', 'b']), (2, ['x\ny', 'z'])]
    """
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise _csv_error(e, path, reader.line_num) from None
        line, start = start, reader.line_num + 1
        if row or not skip_blank:
            yield line, row


def _csv_error(e: csv.Error, path: PathLike, line: int) -> DataError:
    if "field larger than field limit" in str(e):
        limit = csv.field_size_limit()
        return DataError(f"a field is longer than {limit:,} characters, the most one may hold", path=path, line=line)
    return DataError(f"malformed quoting: {e}", path=path, line=line)


def _delimited_rows(text: _Text, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    return delimited_rows(io.StringIO(text.text, newline=""), text.path, delimiter)


# ----------------------------------------------------------------------------- values


def check_unicode(value: str, path: PathLike | None = None, line: int | None = None, field: str | None = None) -> str:
    r"""``value``, refused with a `DataError` when it holds a lone surrogate (not text: no UTF-8 for it).

    >>> check_unicode("a\ud800b", "in.jsonl", 3, "text")
    Traceback (most recent call last):
    goemo.core.errors.DataError: in.jsonl:3: text: not valid Unicode: lone surrogate \ud800 at character 2 (a \u escape for half of a surrogate pair?)
    """
    m = _SURROGATE.search(value)
    if m is not None:
        raise DataError(
            f"not valid Unicode: lone surrogate {ascii(m.group())[1:-1]} at character {m.start() + 1} "
            "(a \\u escape for half of a surrogate pair?)",
            path=path,
            line=line,
            field=field,
        )
    return value


def loads_json(text: str) -> Any:
    """`json.loads`, with its other failures raised as `json.JSONDecodeError` too.

    A number of more digits than Python converts raises ``ValueError``, and nesting deeper
    than the recursion limit ``RecursionError``; both are just invalid input here.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError:
        raise json.JSONDecodeError(f"a number of more than {sys.get_int_max_str_digits():,} digits", text, 0) from None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """A short ``repr`` of a value from the data, for messages (long strings and deep lists are cut)."""
    return _REPR.repr(value)


# ----------------------------------------------------------------------------- label names


def read_label_names(path: PathLike) -> list[str]:
    """Read one label name per line (``emotions.txt``): the line order defines the label ids.

    Blank lines and surrounding spaces are ignored because the official file has no trailing
    newline and hand-made copies often do; a duplicate name is an error since ids would clash.

        read_label_names("../shared/goemotions/emotions.txt")[:3]
        # -> ['admiration', 'amusement', 'anger']
    """
    text = _Text(Path(path))
    names: list[str] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.text.splitlines(), start=1):
        text.check(raw, number, "label")
        name = raw.strip()
        if not name:
            continue
        if name in first_seen:
            raise DataError(
                f"duplicate label {name!r} (first on line {first_seen[name]})",
                path=path,
                line=number,
                field="label",
            )
        first_seen[name] = number
        names.append(name)
    if not names:
        raise DataError("no label names (expected one per line)", path=path)
    return names


# ----------------------------------------------------------------------------- official TSV


def read_goemotions_tsv(path: PathLike, label_names: Sequence[str], name: str | None = None) -> Split:
    """Read an official GoEmotions split (``train.tsv``, ``dev.tsv``, ``test.tsv``).

    Parsed with the ``csv`` module (tab delimiter, CSV quoting) because that is how the
    paper's code (pandas) reads it: a quoted field with doubled quotes inside
    (``"He said ""hi"" "``) is the text ``He said "hi" ``.
    Label ids index ``label_names``; an empty label column gives a row with no labels.

        names = read_label_names("data/goemotions/emotions.txt")
        dev = read_goemotions_tsv("data/goemotions/dev.tsv", names)
        len(dev), dev.labels.shape
        # -> (5426, (5426, 28))
    """
    path = Path(path)
    names = _check_names(label_names)
    text = _Text(path)
    texts: list[str] = []
    ids: list[str] = []
    label_ids: list[list[int]] = []
    for line, row in _delimited_rows(text, "\t"):
        if len(row) != len(TSV_COLUMNS):
            raise DataError(
                f"expected 3 tab-separated columns (text, label ids, id), got {len(row)}",
                path=path,
                line=line,
                field="columns",
            )
        for field, value in zip(TSV_COLUMNS, row):
            text.check(value, line, field)
        texts.append(row[0])
        label_ids.append(_parse_id_list(row[1], len(names), path, line, "labels"))
        ids.append(row[2])
    text.fail_anywhere()
    return _finish(path, texts, ids, label_ids, names, name)


def _check_names(label_names: Sequence[str]) -> list[str]:
    if isinstance(label_names, (str, Path)):
        raise ConfigError("label_names must be a list of names; use read_label_names(path) for a file")
    names = [str(n) for n in label_names]
    if not names:
        raise ConfigError("label_names is empty")
    if len(set(names)) != len(names):
        raise ConfigError("label_names has duplicates")
    return names


def _parse_id_list(value: str, num_labels: int, path: Path, line: int, field: str) -> list[int]:
    if not value.strip():
        return []
    return [_parse_id(token.strip(), num_labels, path, line, field) for token in value.split(",")]


def _parse_id(token: str, num_labels: int, path: Path, line: int, field: str) -> int:
    if not _INT.fullmatch(token):
        problem = "empty label id" if not token else f"label id {shown(token)} is not an integer"
        raise DataError(problem, path=path, line=line, field=field)
    if len(token.lstrip("-")) > _MAX_ID_DIGITS:
        raise DataError(
            f"label id {shown(token)} out of range (expected 0..{num_labels - 1})", path=path, line=line, field=field
        )
    value = int(token)
    if not 0 <= value < num_labels:
        raise DataError(
            f"label id {value} out of range (expected 0..{num_labels - 1})", path=path, line=line, field=field
        )
    return value


def _finish(
    path: Path,
    texts: list[str],
    ids: list[str],
    label_ids: list[list[int]],
    names: list[str],
    name: str | None,
) -> Split:
    if not texts:
        raise DataError("no data rows", path=path)
    labels = np.zeros((len(texts), len(names)), dtype=np.uint8)
    for i, row in enumerate(label_ids):
        labels[i, row] = 1
    logger.debug("read %d rows, %d labels from %s", len(texts), len(names), path)
    return Split(texts, ids, labels, names, name or path.stem, path)


# ----------------------------------------------------------------------------- CSV / JSONL


class _Columns:
    """Which columns hold what, validated once before any row is read."""

    def __init__(
        self,
        text_column: str,
        label_column: str | None,
        label_columns: Sequence[str] | None,
        label_names: Sequence[str] | None,
        id_column: str | None,
    ) -> None:
        if label_column is not None and label_columns is not None:
            raise ConfigError("give either label_column (one list column) or label_columns (0/1 columns), not both")
        if label_columns is not None:
            label_columns = [str(c) for c in label_columns]
            if not label_columns:
                raise ConfigError("label_columns is empty")
            if label_names is not None and len(label_names) != len(label_columns):
                raise ConfigError(
                    f"{len(label_names)} label_names for {len(label_columns)} label_columns; give one name per column"
                )
        self.text = text_column
        self.label: str = DEFAULT_LABEL_COLUMN if label_column is None else label_column
        self.flags = label_columns
        self.names = None if label_names is None else _check_names(label_names)
        self.id = id_column

    def required(self) -> list[str]:
        cols = [self.text, *(self.flags or [self.label])]
        return cols + ([self.id] if self.id is not None else [])


def read_csv(
    path: PathLike,
    *,
    text_column: str,
    label_column: str | None = None,
    label_columns: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    id_column: str | None = None,
    delimiter: str = ",",
) -> Split:
    """Read your own labelled data from a CSV file with a header row.

    Labels come either from ``label_column`` (default ``"labels"``), holding names or ids as a
    JSON list (``["joy", "love"]``) or a comma-separated string (``joy,love`` or ``17,18``),
    or from ``label_columns``, one 0/1 column per label. Without ``label_names`` the names are
    the label columns, or the sorted set of names seen. Without ``id_column`` the ids are the
    row numbers (``"0"``, ``"1"``, ...).

        s = read_csv("mine.csv", text_column="comment", label_column="emotions")
        s = read_csv("mine.csv", text_column="text", label_columns=["joy", "anger"])
    """
    path = Path(path)
    cols = _Columns(text_column, label_column, label_columns, label_names, id_column)
    text = _Text(path)
    rows = _delimited_rows(text, delimiter)
    header_line, header = next(rows, (1, None))
    if header is None:
        text.fail_anywhere()
        raise DataError("empty file (expected a header row)", path=path)
    for column in header:
        text.check(column, header_line, "header")
    for column in cols.required():
        if column not in header:
            raise DataError(
                f"no column {column!r} in the header (columns: {', '.join(header)})",
                path=path,
                line=header_line,
                field=column,
            )
    return _build(path, _csv_records(rows, header, text), cols)


def _csv_records(
    rows: Iterator[tuple[int, list[str]]], header: list[str], text: _Text
) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(
                f"expected {len(header)} columns as in the header, got {len(row)}",
                path=text.path,
                line=line,
                field="columns",
            )
        for column, value in zip(header, row):
            text.check(value, line, column)
        yield line, dict(zip(header, row))
    text.fail_anywhere()


def read_jsonl(
    path: PathLike,
    *,
    text_column: str,
    label_column: str | None = None,
    label_columns: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Split:
    """Read your own labelled data from JSON Lines: one JSON object per line.

    Same column rules as `read_csv`; a label list may be a real JSON list
    (``{"text": "yay", "labels": ["joy"]}``), ids (``[17]``) or a comma-separated string.
    Blank lines are skipped.

        s = read_jsonl("mine.jsonl", text_column="text", label_column="labels")
    """
    path = Path(path)
    cols = _Columns(text_column, label_column, label_columns, label_names, id_column)
    return _build(path, _jsonl_records(path), cols)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Decode each line on its own, so a bad byte or bad JSON is reported on its own line."""
    data = _read_bytes(path).removeprefix(codecs.BOM_UTF8)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _undecodable(path, number, _bad_json_key(raw), raw[e.start]) from None
        yield number, parse_json_object(line, path, number)


def parse_json_object(line: str, path: PathLike, number: int) -> dict[str, Any]:
    """One line of a JSON Lines file as an object, or a `DataError` naming the file and line."""
    try:
        obj = loads_json(line)
    except json.JSONDecodeError as e:
        hint = " (expected one JSON object per line, not a JSON array)" if line.lstrip().startswith("[") else ""
        raise DataError(f"invalid JSON: {json_problem(e)}{hint}", path=path, line=number) from None
    if not isinstance(obj, dict):
        hint = " (expected one JSON object per line, not a JSON array)" if isinstance(obj, list) else ""
        raise DataError(f"expected a JSON object, got {type(obj).__name__}{hint}", path=path, line=number)
    return obj


def _bad_json_key(raw: bytes) -> str | None:
    """The key whose value holds the undecodable byte, when the line is otherwise valid JSON."""
    try:
        obj = loads_json(raw.decode("utf-8", errors="surrogateescape"))
        if isinstance(obj, dict):
            for key, value in obj.items():
                if _ESCAPED_BYTE.search(json.dumps(value, ensure_ascii=False)) or _ESCAPED_BYTE.search(key):
                    return key
    except (json.JSONDecodeError, RecursionError):
        return None
    return None


def _build(path: Path, records: Iterable[tuple[int, Mapping[str, Any]]], cols: _Columns) -> Split:
    """Turn validated records into a Split; label names may only be known after the last row."""
    texts: list[str] = []
    ids: list[str] = []
    flag_ids: list[list[int]] = []
    tokens: list[tuple[int, list[str]]] = []
    for row_number, (line, record) in enumerate(records):
        texts.append(_text_value(record, cols.text, path, line))
        ids.append(_id_value(record, cols.id, path, line) if cols.id is not None else str(row_number))
        if cols.flags is not None:
            flag_ids.append(_flag_ids(record, cols.flags, path, line))
        else:
            value = _get(record, cols.label, path, line)
            tokens.append((line, _label_tokens(value, path, line, cols.label)))
    if cols.flags is not None:
        return _finish(path, texts, ids, flag_ids, cols.names or list(cols.flags), None)
    names = cols.names or _names_seen(tok for _, toks in tokens for tok in toks)
    index = {name: i for i, name in enumerate(names)}
    label_ids = [[_resolve(t, index, path, line, cols.label) for t in toks] for line, toks in tokens]
    return _finish(path, texts, ids, label_ids, names, None)


def _get(record: Mapping[str, Any], key: str, path: Path, line: int) -> Any:
    if key not in record:
        keys = [str(k) for k in record]
        listed = ", ".join(shown(k)[1:-1] for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        raise DataError(f"missing (keys on this line: {listed})", path=path, line=line, field=key)
    return record[key]


def _text_value(record: Mapping[str, Any], key: str, path: Path, line: int) -> str:
    value = _get(record, key, path, line)
    if not isinstance(value, str):
        got = "null" if value is None else type(value).__name__
        raise DataError(f"expected a string, got {got}", path=path, line=line, field=key)
    return check_unicode(value, path, line, key)


def _id_value(record: Mapping[str, Any], key: str, path: Path, line: int) -> str:
    value = _get(record, key, path, line)
    if isinstance(value, (dict, list)) or value is None:
        raise DataError("expected a string or number as id", path=path, line=line, field=key)
    return check_unicode(str(value), path, line, key)


def split_label_list(value: Any, fail: Callable[[str], DataError]) -> Any:
    """A label-list string as a list (JSON, or comma-separated); None as ``[]``; other values as they are.

    >>> split_label_list(" joy,love ", DataError), split_label_list('["joy"]', DataError)
    (['joy', 'love'], ['joy'])
    """
    if value is None:
        return []
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return loads_json(text)
        except json.JSONDecodeError as e:
            raise fail(f"invalid JSON list: {json_problem(e)}") from None
    return text.split(",") if text else []


def _label_tokens(value: Any, path: Path, line: int, field: str) -> list[str]:
    """Label names or ids as strings, from a list, a JSON-list string or a comma-separated string."""
    value = split_label_list(value, lambda problem: DataError(problem, path=path, line=line, field=field))
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"expected a list of labels, got {type(value).__name__}", path=path, line=line, field=field)
    tokens = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise DataError(f"expected a label name or id, got {shown(item)}", path=path, line=line, field=field)
        token = str(item).strip()
        if not token:
            raise DataError("empty label name", path=path, line=line, field=field)
        tokens.append(check_unicode(token, path, line, field))
    return tokens


def _names_seen(tokens: Iterable[str]) -> list[str]:
    """Sorted label names; integer-looking names sort numerically so ``"10"`` follows ``"9"``."""
    seen = set(tokens)
    return sorted(seen, key=lambda t: (0, int(t), t) if _is_small_int(t) else (1, 0, t))


def _is_small_int(token: str) -> bool:
    return _INT.fullmatch(token) is not None and len(token.lstrip("-")) <= _MAX_ID_DIGITS


def _resolve(token: str, index: dict[str, int], path: Path, line: int, field: str) -> int:
    """A name wins over an id, so label sets whose names are numbers still work."""
    if token in index:
        return index[token]
    if _INT.fullmatch(token):
        return _parse_id(token, len(index), path, line, field)
    known = ", ".join(list(index)[:8]) + (", ..." if len(index) > 8 else "")
    raise DataError(f"unknown label name {shown(token)} (known: {known})", path=path, line=line, field=field)


def _flag_ids(record: Mapping[str, Any], columns: list[str], path: Path, line: int) -> list[int]:
    return [j for j, column in enumerate(columns) if _flag(_get(record, column, path, line), path, line, column)]


def _flag(value: Any, path: Path, line: int, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _TRUE:
            return True
        if key in _FALSE:
            return False
    raise DataError(f"expected 0 or 1, got {shown(value)}", path=path, line=line, field=field)


# ----------------------------------------------------------------------------- dispatch


def load_split(
    path: PathLike,
    *,
    label_names: Sequence[str] | None = None,
    text_column: str = "text",
    label_column: str | None = None,
    label_columns: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Split:
    """Read any supported file by its suffix: ``.tsv`` (official), ``.csv``, ``.jsonl``/``.json``.

    For ``.tsv`` without ``label_names`` the names come from ``emotions.txt`` beside the file,
    else from the copy shipped with goemo, so ``load_split("dev.tsv")`` just works.

        dev = load_split("data/goemotions/dev.tsv")
        mine = load_split("mine.jsonl", text_column="comment", label_column="emotions")
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        if text_column != "text" or label_column or label_columns or id_column:
            raise ConfigError(
                f"{path}: the official .tsv format has fixed columns (text, label ids, id); "
                "column options apply to .csv and .jsonl only"
            )
        return read_goemotions_tsv(path, label_names or _default_label_names(path))
    options: dict[str, Any] = dict(
        text_column=text_column,
        label_column=label_column,
        label_columns=label_columns,
        label_names=label_names,
        id_column=id_column,
    )
    if suffix == ".csv":
        return read_csv(path, **options)
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path, **options)
    raise ConfigError(
        f"{path}: unsupported file type {suffix or '(none)'!r}: expected .tsv (official GoEmotions), "
        ".csv or .jsonl/.json (JSON Lines)"
    )


def _default_label_names(path: Path) -> list[str]:
    beside = path.parent / "emotions.txt"
    if beside.is_file():
        return read_label_names(beside)
    return list(load_taxonomy("goemotions").labels)


def load_goemotions(
    data_dir: PathLike,
    taxonomy: str | Path | Taxonomy = "goemotions",
    splits: Sequence[str] = OFFICIAL_SPLITS,
) -> dict[str, Split]:
    """Read the official splits from ``data_dir``, optionally mapped to a coarser taxonomy.

    Label names come from ``data_dir/emotions.txt`` (the ids in the TSV files index it);
    for ``"ekman"``, ``"sentiment"`` or a grouping JSON file a group is on when any of its
    members is, as in the paper's Table 5.

        data = load_goemotions("data/goemotions", taxonomy="ekman")
        data["train"].label_names
        # -> ['anger', 'disgust', 'fear', 'joy', 'sadness', 'surprise', 'neutral']
    """
    data_dir = Path(data_dir)
    needed = ["emotions.txt", *(f"{s}.tsv" for s in splits)]
    missing = [f for f in needed if not (data_dir / f).is_file()]
    if missing:
        raise DataError(
            f"missing {', '.join(missing)}; fetch them with `goemo download --dest {data_dir}`", path=data_dir
        )
    names = read_label_names(data_dir / "emotions.txt")
    target = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy, data_dir=data_dir)
    out: dict[str, Split] = {}
    for split_name in splits:
        split = read_goemotions_tsv(data_dir / f"{split_name}.tsv", names, name=split_name)
        out[split_name] = project_split(split, target)
    return out
