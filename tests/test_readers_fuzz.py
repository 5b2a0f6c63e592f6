"""Property tests of every reader: hostile files give a result or exactly one one-line `GoemoError`.

The training readers (`goemo.data.io.load_split` on ``.tsv`` / ``.csv`` / ``.jsonl``) and the
predict readers (`goemo.data.records.read_records`) are fed random bytes, random Unicode
(lone surrogates and control characters included, written as JSON escapes or as invalid
UTF-8), random CSV quoting and random JSON values. Whatever comes in, the reader either
returns what it parsed or raises one `GoemoError` whose message is a single line (what the
CLI prints); any other exception is a bug. Where the input's meaning is known, what was parsed
is checked too: a random `Split` written as TSV, CSV or JSON Lines (by the standard ``csv``
and ``json`` modules) reads back equal, and the label-id and JSON Lines tests compare the
texts, ids and labels read with those written. Bounded so the whole file runs in seconds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from goemo.core.errors import GoemoError
from goemo.data.io import load_split
from goemo.data.records import read_records
from goemo.data.split import Split

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # no .hypothesis/ folder in the checkout
)
LABELS = ["joy", "anger", "fear"]
SURROGATE_RE = re.compile("[\ud800-\udfff]")

# Any code point, surrogates and controls included; biased towards the characters that matter
# to the formats (quotes, delimiters, line ends, escapes, BOM, NUL).
SPECIAL = st.sampled_from(
    ['"', ",", "\t", "\n", "\r", "\\", "[", "]", "{", "}", ":", "\ufeff", "\x00", "\ud800", "\udcff"]
)
ANY_CHAR = st.one_of(SPECIAL, st.characters(codec=None), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
TEXT = st.text(ANY_CHAR, max_size=40)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXT)
JSON_VALUE = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def encode(text: str, how: str) -> bytes:
    """Text as the bytes a hostile file might hold: UTF-8 with surrogates passed through, or escaped."""
    if how == "surrogatepass":
        return text.encode("utf-8", "surrogatepass")
    return text.encode("utf-8", "backslashreplace")


def outcome(call) -> object:
    """Run ``call``; a `GoemoError` must be one line, anything else but success fails the test."""
    try:
        return call()
    except GoemoError as e:
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert len(message.splitlines()) == 1, repr(message)
        return e


def valid_unicode(strings) -> None:
    """What a reader returns is text the tokenizer and the writers can take: encodable as UTF-8."""
    for s in strings:
        s.encode("utf-8")


def training(path: Path, **options) -> object:
    result = outcome(lambda: load_split(path, **options))
    if not isinstance(result, GoemoError):
        valid_unicode([*result.texts, *result.ids, *result.label_names])
    return result


def predicting(path: Path, **options) -> object:
    result = outcome(lambda: list(read_records(path, **options)))
    if not isinstance(result, GoemoError):
        valid_unicode([s for r in result for s in (r.id, r.text)])
    return result


# ----------------------------------------------------------------------------- random bytes


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".tsv", ".csv", ".jsonl", ".txt"]))
@example(data=b'{"text": "a\\ud800b", "id": 1}\n', suffix=".jsonl")  # valid JSON, not text
@example(data=b'id,text\n1,"\xff\n', suffix=".csv")
def test_random_bytes(folder: Path, data: bytes, suffix: str) -> None:
    path = folder / f"bytes{suffix}"
    path.write_bytes(data)
    if suffix != ".txt":
        training(path)
        training(path, label_names=LABELS)
    predicting(path)
    if suffix != ".txt":
        predicting(path, id_column="id")


# ----------------------------------------------------------------------------- delimited files


def _row(fields: list[str], delimiter: str, quoting: list[int]) -> str:
    """Fields joined with random quoting: 0 bare, 1 quoted properly, 2 opening quote only, 3 stray quote."""
    out = []
    for value, q in zip(fields, quoting + [0] * len(fields)):
        if q == 1:
            out.append('"' + value.replace('"', '""') + '"')
        elif q == 2:
            out.append('"' + value)
        elif q == 3:
            out.append(value[:1] + '"' + value[1:])
        else:
            out.append(value)
    return delimiter.join(out)


ROWS = st.lists(st.tuples(st.lists(TEXT, min_size=0, max_size=4), st.lists(st.integers(0, 3), max_size=4)), max_size=6)


@FUZZ
@given(
    rows=ROWS,
    header=st.sampled_from([["text", "labels"], ["id", "text"], ["text", "labels", "id"], ["text"]]),
    how=st.sampled_from(["surrogatepass", "escaped"]),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    big=st.integers(0, 140_000) | st.just(0),
)
@example(rows=[], header=["id", "text"], how="escaped", line_end="\n", big=140_000)  # over csv's field limit
@example(rows=[(["1", "a"], []), (["\u2028", "\x1b"], [])], header=["te\nxt"], how="escaped", line_end="\n", big=0)
def test_random_csv_quoting(folder: Path, rows, header: list[str], how: str, line_end: str, big: int) -> None:
    lines = [",".join(header)] + [_row(fields, ",", quoting) for fields, quoting in rows]
    body = line_end.join(lines) + line_end
    if big > 131_000:  # one field over the csv module's 128 KB limit
        body += '"' + "x" * big + '",joy' + line_end
    path = folder / "quoting.csv"
    path.write_bytes(encode(body, how))
    training(path)
    training(path, label_names=LABELS, id_column="id")
    predicting(path)
    predicting(path, id_column="id")


@FUZZ
@given(rows=ROWS, how=st.sampled_from(["surrogatepass", "escaped"]), line_end=st.sampled_from(["\n", "\r\n"]))
def test_random_tsv_quoting(folder: Path, rows, how: str, line_end: str) -> None:
    body = line_end.join(_row(fields, "\t", quoting) for fields, quoting in rows) + line_end
    path = folder / "quoting.tsv"
    path.write_bytes(encode(body, how))
    training(path)
    training(path, label_names=LABELS)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(TEXT, st.lists(st.sampled_from(LABELS + ["0", "2", "-1", "9" * 30, "9" * 5000, ""]), max_size=3))
    ),
    how=st.sampled_from(["surrogatepass", "escaped"]),
)
@example(rows=[("fine", ["9" * 5000])], how="escaped")  # int() refuses 5,000 digits
def test_tsv_label_ids(folder: Path, rows, how: str) -> None:
    body = "".join(_row([text, ",".join(labels), f"id{i}"], "\t", [1]) + "\n" for i, (text, labels) in enumerate(rows))
    path = folder / "labels.tsv"
    path.write_bytes(encode(body, how))
    result = training(path, label_names=LABELS)
    # What the file means: ids 0 and 2 are labels, an empty column is none, anything else is an error;
    # a lone surrogate written raw is not UTF-8, and escaped it is the text of its escape.
    wanted = [[] if not ",".join(labels) else labels for _, labels in rows]
    valid = bool(rows) and all(t in ("0", "2") for labels in wanted for t in labels)
    raw = how == "surrogatepass" and any(SURROGATE_RE.search(text) for text, _ in rows)
    assert isinstance(result, GoemoError) == (not valid or raw), (wanted, result)
    if not isinstance(result, GoemoError):
        assert isinstance(result, Split)
        assert result.texts == [encode(text, how).decode("utf-8").replace("\r\n", "\n") for text, _ in rows]
        assert result.ids == [f"id{i}" for i in range(len(rows))]
        expected = np.zeros((len(rows), len(LABELS)), np.uint8)
        for i, labels in enumerate(wanted):
            expected[i, [int(t) for t in labels]] = 1
        assert result.labels.tolist() == expected.tolist()


# ----------------------------------------------------------------------------- JSON Lines


LABEL_LIST = st.lists(st.sampled_from(LABELS + ["9" * 40, "1", ""]), max_size=3)
# Mostly well-formed rows (so the row checks are reached), some anything at all.
RECORD = st.fixed_dictionaries(
    {"text": TEXT, "labels": LABEL_LIST}, optional={"id": TEXT | st.integers(), "joy": st.sampled_from([0, 1, "1"])}
) | st.fixed_dictionaries(
    {}, optional={"text": TEXT | JSON_VALUE, "labels": LABEL_LIST | JSON_VALUE, "id": JSON_VALUE, "joy": JSON_VALUE}
)


@FUZZ
@given(
    records=st.lists(RECORD, max_size=5),
    values=st.lists(JSON_VALUE, max_size=1),
    ascii_only=st.booleans(),
)
@example(records=[{"text": "a\ud800b", "labels": ["joy"]}], values=[], ascii_only=True)
@example(records=[{"te\nxt": "a", "labels": []}], values=[], ascii_only=True)
@example(records=[{"text": "a", "labels": ["9" * 5000]}], values=[], ascii_only=True)
def test_random_jsonl(folder: Path, records: list[dict], values: list, ascii_only: bool) -> None:
    lines = [json.dumps(v, ensure_ascii=ascii_only) for v in [*records, *values]]
    path = folder / "random.jsonl"
    # ensure_ascii=False keeps lone surrogates raw, which only "surrogatepass" can write (invalid UTF-8)
    path.write_bytes(encode("\n".join(lines) + "\n", "surrogatepass"))
    objects = [*records, *values]
    plain = training(path)
    if isinstance(plain, Split):  # every line an object with a string "text": read as written, ids numbered
        assert plain.texts == [o["text"] for o in objects]
        assert plain.ids == [str(i) for i in range(len(objects))]
    named = training(path, label_names=LABELS, id_column="id")
    if isinstance(named, Split):
        assert named.texts == [o["text"] for o in objects]
        assert named.ids == [str(o["id"]) for o in objects]
        assert named.label_names == LABELS
    flags = training(path, label_columns=["joy"])
    if isinstance(flags, Split):
        assert flags.labels[:, 0].tolist() == [
            int(str(o["joy"]).strip().lower() in ("1", "1.0", "true")) for o in objects
        ]
    predicting(path)
    predicting(path, id_column="id")


@FUZZ
@given(
    depth=st.integers(1, 100_000),
    digits=st.integers(1, 6000),
    kind=st.sampled_from(["nest-list", "nest-object", "long-int", "long-int-label", "text"]),
)
def test_json_lines_built_to_hurt(folder: Path, depth: int, digits: int, kind: str) -> None:
    if kind == "nest-list":
        line = '{"text": "a", "labels": ' + "[" * depth + "]" * depth + "}"
    elif kind == "nest-object":
        line = '{"text": "a", "id": ' + '{"a": ' * depth + "1" + "}" * depth + ', "labels": []}'
    elif kind == "long-int":
        line = '{"text": "a", "labels": [], "id": ' + "7" * digits + "}"
    elif kind == "long-int-label":
        line = '{"text": "a", "labels": ["' + "7" * digits + '"]}'
    else:
        line = json.dumps({"text": "a" * digits + "\ud800", "labels": []})
    path = folder / "hurt.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    plain = training(path)
    named = training(path, label_names=LABELS, id_column="id")
    predicting(path, id_column="id")
    # What each line means, when it can be read at all:
    if kind == "nest-list":  # "labels": [] is no label; [[]] and deeper hold a list where a label goes
        result = training(path, label_names=LABELS)
        assert isinstance(result, Split) == (depth == 1)
        if isinstance(result, Split):
            assert result.texts == ["a"] and result.labels.tolist() == [[0, 0, 0]]
    elif kind == "nest-object":  # an object is no id
        assert isinstance(named, GoemoError)
    elif kind == "long-int":  # an id of up to 4,300 digits (Python's int limit) is kept as written
        assert isinstance(named, Split) == (digits <= 4300)
        if isinstance(named, Split):
            assert named.ids == ["7" * digits]
    elif kind == "long-int-label":  # a label name of digits, the only name seen; not one of LABELS
        assert isinstance(named, GoemoError)
        assert isinstance(plain, Split) and plain.label_names == ["7" * digits] and plain.labels.tolist() == [[1]]
    else:  # a lone surrogate is not text
        assert isinstance(plain, GoemoError) and isinstance(named, GoemoError)


# ----------------------------------------------------------------------------- round trips

ROUND_TRIP = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
# What a Split holds and every format carries: any text but lone surrogates (not text), CRLF
# (read as LF on purpose, so Windows files read like Unix ones) and a BOM (the start of a
# file's is dropped, and a TSV has no header before the first text).
SPLIT_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\ufeff"), max_size=30).map(
    lambda t: t.replace("\r\n", "\n")
)
# Label names: stripped and non-empty (as a reader leaves them), and no column name of the file.
NAME = SPLIT_TEXT.map(str.strip).filter(lambda t: t and t not in ("id", "text", "labels"))


@st.composite
def splits(draw) -> Split:
    names = draw(st.lists(NAME, min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 8))
    texts = draw(st.lists(SPLIT_TEXT, min_size=n, max_size=n))
    ids = draw(st.lists(SPLIT_TEXT, min_size=n, max_size=n))
    rows = draw(st.lists(st.lists(st.integers(0, 1), min_size=len(names), max_size=len(names)), min_size=n, max_size=n))
    return Split(texts, ids, np.array(rows, np.uint8), names)


def write_split(split: Split, fmt: str, form: str, line_end: str, ascii_only: bool) -> str:
    """The split as the standard ``csv`` and ``json`` modules write it: the file's text."""
    out = io.StringIO(newline="")
    on = [[split.label_names[j] for j in np.flatnonzero(row)] for row in split.labels]
    if fmt == "jsonl":
        for text, id_, row, names in zip(split.texts, split.ids, split.labels, on):
            obj = {"id": id_, "text": text}
            obj |= dict(zip(split.label_names, row.tolist())) if form == "flags" else {"labels": names}
            out.write(json.dumps(obj, ensure_ascii=ascii_only) + line_end)
        return out.getvalue()
    options = {"delimiter": "\t" if fmt == "tsv" else ",", "lineterminator": line_end}
    plain, quoted = csv.writer(out, **options), csv.writer(out, quoting=csv.QUOTE_ALL, **options)  # type: ignore[arg-type]
    rows: list[list] = []
    if fmt == "tsv":  # the official layout: text, label ids, id; no header
        rows = [
            [text, ",".join(str(j) for j in np.flatnonzero(row)), id_]
            for text, id_, row in zip(split.texts, split.ids, split.labels)
        ]
    elif form == "flags":
        rows = [["id", "text", *split.label_names]]
        rows += [[id_, text, *row.tolist()] for text, id_, row in zip(split.texts, split.ids, split.labels)]
    else:
        rows = [["id", "text", "labels"]]
        rows += [[id_, text, json.dumps(names)] for text, id_, names in zip(split.texts, split.ids, on)]
    for row in rows:  # the csv module leaves a bare "\r" unquoted when the line end is "\n": quote that row
        (quoted if any("\r" in str(field) for field in row) else plain).writerow(row)
    return out.getvalue()


@ROUND_TRIP
@given(
    split=splits(),
    fmt=st.sampled_from(["tsv", "csv", "jsonl"]),
    form=st.sampled_from(["list", "flags"]),
    line_end=st.sampled_from(["\n", "\r\n"]),
    ascii_only=st.booleans(),
    bom=st.booleans(),
)
@example(
    split=Split(['a "quoted",\ttext', "two\nlines", ""], ["1", "", "x,y"], np.array([[1, 0], [0, 0], [1, 1]]), ["joy", "0"]),
    fmt="csv", form="list", line_end="\r\n", ascii_only=False, bom=True,
)  # fmt: skip
def test_a_written_split_reads_back_equal(
    folder: Path, split: Split, fmt: str, form: str, line_end: str, ascii_only: bool, bom: bool
) -> None:
    path = folder / f"round-trip.{fmt}"
    path.write_text(
        write_split(split, fmt, form, line_end, ascii_only), encoding="utf-8-sig" if bom else "utf-8", newline=""
    )
    if fmt == "tsv":
        back = load_split(path, label_names=split.label_names)
    elif form == "flags":
        back = load_split(path, label_columns=split.label_names, id_column="id")
    else:
        back = load_split(path, label_names=split.label_names, id_column="id")
    assert (back.texts, back.ids, back.label_names) == (split.texts, split.ids, split.label_names)
    assert back.labels.tolist() == split.labels.tolist()
    assert back.checksum() == split.checksum()
