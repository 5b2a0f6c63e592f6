"""Readers: the three official splits exactly, and a precise error for every kind of bad line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from goemo.core.errors import ConfigError, DataError
from goemo.data.io import (
    load_goemotions,
    load_split,
    read_csv,
    read_goemotions_tsv,
    read_jsonl,
    read_label_names,
)

NAMES = ["joy", "anger", "fear"]
EXPECTED_ROWS = {"train": 43410, "dev": 5426, "test": 5427}


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def bom_crlf(body: str) -> bytes:
    """The same content as a Windows editor would save it: BOM first, CRLF line ends."""
    return b"\xef\xbb\xbf" + body.replace("\n", "\r\n").encode("utf-8")


def simple_parse(path: Path) -> tuple[list[str], np.ndarray]:
    """An independent reading of the official TSV: split on tabs, undo CSV quoting by hand."""
    ids, counts = [], np.zeros(28, dtype=np.int64)
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        text, labels, comment_id = line.split("\t")
        ids.append(comment_id)
        for label in labels.split(","):
            counts[int(label)] += 1
    return ids, counts


# ----------------------------------------------------------------------------- official data


@pytest.fixture(scope="module")
def official(shared_data: Path):
    return load_goemotions(shared_data)


def test_label_names_of_the_official_file(shared_data: Path) -> None:
    names = read_label_names(shared_data / "emotions.txt")
    assert len(names) == 28
    assert names[0] == "admiration" and names[27] == "neutral"


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_official_splits_match_an_independent_parse(official, shared_data: Path, split: str) -> None:
    s = official[split]
    ids, counts = simple_parse(shared_data / f"{split}.tsv")
    assert len(s) == EXPECTED_ROWS[split]
    assert s.labels.shape == (EXPECTED_ROWS[split], 28) and s.labels.dtype == np.uint8
    assert s.ids == ids
    np.testing.assert_array_equal(s.labels.sum(axis=0), counts)
    assert s.name == split and s.source == shared_data / f"{split}.tsv"
    assert s.labels.sum(axis=1).min() >= 1  # every official comment has at least one label


def test_official_quoted_text_is_unquoted(official) -> None:
    texts = official["train"].texts
    # The TSV line is: "Three words, no subtlety. ""Dude. Stop. Seriously."" "<TAB>3<TAB>eetq9g0
    i = official["train"].ids.index("eetq9g0")
    assert texts[i] == 'Three words, no subtlety. "Dude. Stop. Seriously." '
    assert not any(t.startswith('"') and t.endswith('"') and '""' in t for t in texts)


def test_load_goemotions_projects_to_ekman(official, shared_data: Path) -> None:
    ekman = load_goemotions(shared_data, taxonomy="ekman", splits=("dev",))
    dev, fine = ekman["dev"], official["dev"]
    assert list(ekman) == ["dev"]
    assert dev.label_names == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    fear_members = [fine.label_names.index(n) for n in ("fear", "nervousness")]
    np.testing.assert_array_equal(dev.labels[:, 2], fine.labels[:, fear_members].max(axis=1))
    np.testing.assert_array_equal(dev.labels[:, 6], fine.labels[:, 27])
    assert dev.texts == fine.texts


def test_load_goemotions_names_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing emotions\.txt, train\.tsv.*goemo download"):
        load_goemotions(tmp_path)


def test_load_split_reads_official_tsv_with_names_beside_it(shared_data: Path) -> None:
    dev = load_split(shared_data / "dev.tsv")
    assert len(dev) == 5426 and dev.num_labels == 28


# ----------------------------------------------------------------------------- TSV edge cases


def test_tsv_quoting_empty_text_and_labels(tmp_path: Path) -> None:
    p = write(tmp_path / "x.tsv", '"He said ""hi"""\t0,2\ta1\n\t1\ta2\nplain "quote" inside\t\ta3\n')
    s = read_goemotions_tsv(p, NAMES)
    assert s.texts == ['He said "hi"', "", 'plain "quote" inside']
    assert s.ids == ["a1", "a2", "a3"]
    assert s.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert s.name == "x"


def test_bom_and_crlf_read_like_clean_file(tmp_path: Path) -> None:
    body = '"a ""b"""\t0\tid1\n"two\nlines"\t1,2\tid2\n'
    clean = read_goemotions_tsv(write(tmp_path / "clean.tsv", body), NAMES)
    messy = read_goemotions_tsv(write(tmp_path / "messy.tsv", bom_crlf(body)), NAMES)
    assert messy.texts == clean.texts == ['a "b"', "two\nlines"]
    assert messy.ids == clean.ids == ["id1", "id2"]
    np.testing.assert_array_equal(messy.labels, clean.labels)


@pytest.mark.parametrize(
    "body, line, field, problem",
    [
        ("ok\t0\ta\nonly two\t1\n", 2, "columns", "expected 3 tab-separated columns"),
        ("ok\t0\ta\nfour\t1\tb\textra\n", 2, "columns", "got 4"),
        ("ok\t0\ta\nok\t0\tb\nbad\t3\tc\n", 3, "labels", r"label id 3 out of range \(expected 0\.\.2\)$"),
        ("bad\t-1\tc\n", 1, "labels", "out of range"),
        ("bad\tjoy\tc\n", 1, "labels", "label id 'joy' is not an integer"),
        ("bad\t1.5\tc\n", 1, "labels", "not an integer"),
        ("bad\t0,,1\tc\n", 1, "labels", "empty label id"),
        ('ok\t0\ta\n"unterminated\t0\tb\n', 2, None, "malformed quoting"),
    ],
)
def test_tsv_bad_lines(tmp_path: Path, body: str, line: int, field: str | None, problem: str) -> None:
    p = write(tmp_path / "bad.tsv", body)
    with pytest.raises(DataError, match=problem) as info:
        read_goemotions_tsv(p, NAMES)
    err = info.value
    assert (err.path, err.line, err.field) == (str(p), line, field)
    assert str(err).startswith(f"{p}:{line}: ")


def test_tsv_undecodable_byte_reports_its_line_and_field(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.tsv", b"fine\t0\ta\nstill fine\t1\tb\ncaf\xe9 latin-1\t2\tc\n")
    with pytest.raises(DataError, match="undecodable byte 0xe9") as info:
        read_goemotions_tsv(p, NAMES)
    assert (info.value.line, info.value.field) == (3, "text")


def test_tsv_undecodable_byte_inside_multiline_quoted_text(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.tsv", b'fine\t0\ta\n"two\nlines \xff here"\t1\tb\n')
    with pytest.raises(DataError) as info:
        read_goemotions_tsv(p, NAMES)
    assert (info.value.line, info.value.field) == (3, "text")


def test_tsv_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    p = write(tmp_path / "x.tsv", 'a\t0\t1\n"multi\nline"\t0\t2\n\nbad\t9\t3\n')
    with pytest.raises(DataError) as info:
        read_goemotions_tsv(p, NAMES)
    assert info.value.line == 5


def test_empty_tsv_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data rows"):
        read_goemotions_tsv(write(tmp_path / "e.tsv", ""), NAMES)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_goemotions_tsv(tmp_path / "nope.tsv", NAMES)
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataError, match="is a folder, expected a file$"):
        load_split(tmp_path / "folder.jsonl")


# ----------------------------------------------------------------------------- label names


def test_label_names_bom_crlf_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path / "e.txt", b"\xef\xbb\xbfjoy\r\n anger \r\n\r\nfear")
    assert read_label_names(p) == NAMES


def test_label_names_duplicate_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"duplicate label 'joy' \(first on line 1\)") as info:
        read_label_names(write(tmp_path / "d.txt", "joy\nanger\njoy\n"))
    assert info.value.line == 3
    with pytest.raises(DataError, match="no label names"):
        read_label_names(write(tmp_path / "empty.txt", "\n\n"))


# ----------------------------------------------------------------------------- CSV


def test_csv_label_list_as_names_ids_and_json(tmp_path: Path) -> None:
    p = write(
        tmp_path / "x.csv",
        "id,comment,emotions\n"
        'c1,"Hello, world",joy\n'
        'c2,"two, labels","joy,fear"\n'
        'c3,ids,"1,2"\n'
        'c4,json,"[""anger""]"\n'
        "c5,,\n",
    )
    s = read_csv(p, text_column="comment", label_column="emotions", label_names=NAMES, id_column="id")
    assert s.texts == ["Hello, world", "two, labels", "ids", "json", ""]
    assert s.ids == ["c1", "c2", "c3", "c4", "c5"]
    assert s.labels.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 1], [0, 1, 0], [0, 0, 0]]
    assert s.label_names == NAMES


def test_csv_names_default_to_sorted_names_seen_and_ids_to_row_numbers(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", 'text,labels\na,zeal\nb,"awe,zeal"\n')
    s = read_csv(p, text_column="text")  # label column defaults to "labels"
    assert s.label_names == ["awe", "zeal"]
    assert s.labels.tolist() == [[0, 1], [1, 1]]
    assert s.ids == ["0", "1"]


def test_csv_one_column_per_label(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", "text,joy,anger,extra\nyay,1,0,x\ngrr,0,1,y\nmeh,0,0,z\n")
    s = read_csv(p, text_column="text", label_columns=["joy", "anger"])
    assert s.label_names == ["joy", "anger"]
    assert s.labels.tolist() == [[1, 0], [0, 1], [0, 0]]
    renamed = read_csv(p, text_column="text", label_columns=["joy", "anger"], label_names=["J", "A"])
    assert renamed.label_names == ["J", "A"]


def test_csv_semicolon_delimiter(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", "text;labels\nhello, there;joy\n")
    s = read_csv(p, text_column="text", delimiter=";", label_names=NAMES)
    assert s.texts == ["hello, there"] and s.labels.tolist() == [[1, 0, 0]]


def test_csv_bom_and_crlf(tmp_path: Path) -> None:
    body = 'text,labels\n"a ""q""",joy\nb,anger\n'
    clean = read_csv(write(tmp_path / "c.csv", body), text_column="text")
    messy = read_csv(write(tmp_path / "m.csv", bom_crlf(body)), text_column="text")
    assert messy.texts == clean.texts == ['a "q"', "b"]
    np.testing.assert_array_equal(messy.labels, clean.labels)


@pytest.mark.parametrize(
    "body, kwargs, line, field, problem",
    [
        ("comment,labels\nhi,joy\n", {}, 1, "text", "no column 'text' in the header"),
        ("text,labels\nhi,joy\nhey\n", {}, 3, "columns", "expected 2 columns as in the header, got 1"),
        ("text,labels\nhi,joy\nyo,glee\n", {"label_names": NAMES}, 3, "labels", "unknown label name 'glee'"),
        ("text,labels\nhi,7\n", {"label_names": NAMES}, 2, "labels", "label id 7 out of range"),
        ('text,labels\nhi,"[1,"\n', {"label_names": NAMES}, 2, "labels", "invalid JSON list"),
        ("text,joy\nhi,yes\n", {"label_columns": ["joy"]}, 2, "joy", "expected 0 or 1, got 'yes'"),
        ("text,labels\nhi,joy\n", {"id_column": "id"}, 1, "id", "no column 'id'"),
    ],
)
def test_csv_bad_lines(tmp_path: Path, body: str, kwargs: dict, line: int, field: str, problem: str) -> None:
    p = write(tmp_path / "bad.csv", body)
    with pytest.raises(DataError, match=problem) as info:
        read_csv(p, text_column="text", **kwargs)
    assert (info.value.path, info.value.line, info.value.field) == (str(p), line, field)


def test_csv_undecodable_byte(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.csv", b"text,labels\nok,joy\nok,joy\nbad,\xff\n")
    with pytest.raises(DataError, match="undecodable byte 0xff") as info:
        read_csv(p, text_column="text")
    assert (info.value.line, info.value.field) == (4, "labels")


def test_csv_option_conflicts_are_config_errors(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", "text,labels\nhi,joy\n")
    with pytest.raises(ConfigError, match="not both"):
        read_csv(p, text_column="text", label_column="labels", label_columns=["joy"])
    with pytest.raises(ConfigError, match="one name per column"):
        read_csv(p, text_column="text", label_columns=["joy"], label_names=NAMES)


def test_csv_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty file"):
        read_csv(write(tmp_path / "e.csv", ""), text_column="text")


# ----------------------------------------------------------------------------- JSONL


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_jsonl_label_lists_in_every_form(tmp_path: Path) -> None:
    p = write(
        tmp_path / "x.jsonl",
        jsonl(
            {"text": "a", "labels": ["joy", "fear"], "id": 10},
            {"text": "b", "labels": [1], "id": "x"},
            "",  # blank lines are skipped
            {"text": "", "labels": "joy,anger", "id": 3},
            {"text": "d", "labels": "[2]", "id": "y"},
            {"text": "e", "labels": [], "id": "z"},
        ),
    )
    s = read_jsonl(p, text_column="text", label_column="labels", label_names=NAMES, id_column="id")
    assert s.texts == ["a", "b", "", "d", "e"]
    assert s.ids == ["10", "x", "3", "y", "z"]
    assert s.labels.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_jsonl_one_field_per_label_and_json_suffix(tmp_path: Path) -> None:
    records = jsonl({"text": "a", "joy": 1, "anger": False}, {"text": "b", "joy": 0, "anger": True})
    p = write(tmp_path / "x.json", records)
    s = load_split(p, label_columns=["joy", "anger"])
    assert s.labels.tolist() == [[1, 0], [0, 1]] and s.ids == ["0", "1"]


def test_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    body = jsonl({"text": "é ok", "labels": ["joy"]}, {"text": "b", "labels": ["fear"]})
    clean = read_jsonl(write(tmp_path / "c.jsonl", body), text_column="text")
    messy = read_jsonl(write(tmp_path / "m.jsonl", bom_crlf(body)), text_column="text")
    assert messy.texts == clean.texts == ["é ok", "b"]
    assert messy.label_names == clean.label_names == ["fear", "joy"]
    np.testing.assert_array_equal(messy.labels, clean.labels)


@pytest.mark.parametrize(
    "lines, line, field, problem",
    [
        (
            [{"text": "a", "labels": []}, '{"text": "b", "labels": [}'],
            2,
            None,
            "invalid JSON: Expecting value at column 26$",
        ),
        (
            [{"text": "a", "labels": []}, '{"text": "b\tc"}'],
            2,
            None,
            "invalid JSON: Invalid control character at column 12$",
        ),
        (
            [{"text": "a", "labels": []}, '{"text": "b'],
            2,
            None,
            "invalid JSON: Unterminated string starting at column 10$",
        ),
        (['[{"text": "a"}]'], 1, None, "not a JSON array"),
        ([{"text": "a", "labels": []}, [1, 2]], 2, None, "expected a JSON object, got list"),
        (
            [{"text": "a", "labels": []}, {"body": "b", "labels": []}],
            2,
            "text",
            r"missing \(keys on this line: body, labels\)",
        ),
        ([{"text": None, "labels": []}], 1, "text", "expected a string, got null"),
        ([{"text": "a", "labels": ["glee"]}], 1, "labels", "unknown label name 'glee'"),
        ([{"text": "a", "labels": [3]}], 1, "labels", "label id 3 out of range"),
        ([{"text": "a", "labels": [{"x": 1}]}], 1, "labels", "expected a label name or id"),
        ([{"text": "a", "labels": {"joy": 1}}], 1, "labels", "expected a list of labels"),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, lines: list, line: int, field: str | None, problem: str) -> None:
    p = write(tmp_path / "bad.jsonl", jsonl(*lines))
    with pytest.raises(DataError, match=problem) as info:
        read_jsonl(p, text_column="text", label_column="labels", label_names=NAMES)
    assert (info.value.path, info.value.line, info.value.field) == (str(p), line, field)


def test_jsonl_undecodable_byte(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.jsonl", b'{"text": "ok", "labels": []}\n\n{"text": "caf\xe9", "labels": []}\n')
    with pytest.raises(DataError, match="undecodable byte 0xe9") as info:
        read_jsonl(p, text_column="text", label_names=NAMES)
    assert (info.value.line, info.value.field) == (3, "text")


# ----------------------------------------------------------------------------- dispatch


def test_load_split_dispatches_on_suffix(tmp_path: Path) -> None:
    csv_split = load_split(write(tmp_path / "a.CSV", "text,labels\nhi,joy\n"))
    jsonl_split = load_split(write(tmp_path / "a.jsonl", jsonl({"text": "hi", "labels": ["joy"]})))
    tsv_split = load_split(write(tmp_path / "a.tsv", "hi\t17\tx\n"))  # packaged emotions.txt
    assert csv_split.texts == jsonl_split.texts == tsv_split.texts == ["hi"]
    assert tsv_split.label_names[17] == "joy" and tsv_split.labels[0, 17] == 1
    with pytest.raises(ConfigError, match="unsupported file type '.txt'"):
        load_split(write(tmp_path / "a.txt", "hi"))
    with pytest.raises(ConfigError, match="fixed columns"):
        load_split(tmp_path / "a.tsv", text_column="comment")


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ('{"text": "a\\ud800b", "labels": []}', "text", r"lone surrogate \\ud800 at character 2"),
        ('{"text": "a", "labels": ["jo\\udc80y"], "id": 2}', "labels", r"lone surrogate \\udc80"),
        ('{"text": "a", "labels": [], "id": "\\udfff"}', "id", r"lone surrogate \\udfff"),
    ],
)
def test_jsonl_lone_surrogate_is_a_data_error(tmp_path: Path, line: str, field: str, problem: str) -> None:
    # Valid JSON escapes, but not text: the tokenizer and every UTF-8 writer would fail on them.
    p = write(tmp_path / "s.jsonl", '{"text": "fine", "labels": [], "id": 1}\n' + line + "\n")
    with pytest.raises(DataError, match=problem) as info:
        read_jsonl(p, text_column="text", id_column="id")
    assert (info.value.line, info.value.field) == (2, field)
    assert "not valid Unicode" in str(info.value)


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"text": "a", "labels": [], "id": ' + "7" * 5000 + "}", "a number of more than 4,300 digits"),
        ('{"text": "a", "labels": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
def test_jsonl_numbers_and_nesting_python_cannot_take_are_data_errors(tmp_path: Path, line: str, problem: str) -> None:
    p = write(tmp_path / "n.jsonl", line + "\n")
    with pytest.raises(DataError, match=problem) as info:
        read_jsonl(p, text_column="text", id_column="id")
    assert info.value.line == 1


@pytest.mark.parametrize(
    "body",
    [
        'text,labels\nhi,"' + "9" * 5000 + '"\n',  # a 5,000-digit label id
        "text,labels\nhi,a\nho," + "9" * 5000 + "\n",  # and as a label name among names
    ],
)
def test_huge_label_ids_are_out_of_range_not_a_crash(tmp_path: Path, body: str) -> None:
    with pytest.raises(DataError, match=r"out of range \(expected 0\.\.1\)$") as info:
        read_csv(write(tmp_path / "h.csv", body), text_column="text", label_names=["a", "b"])
    assert info.value.field == "labels"
    # without label names the digits are a name like any other
    assert len(read_csv(tmp_path / "h.csv", text_column="text").label_names) >= 1


@pytest.mark.parametrize(
    ("count", "listed"), [(8, "n0, n1, n2, n3, n4, n5, n6, n7)"), (9, "n0, n1, n2, n3, n4, n5, n6, n7, ...)")]
)
def test_unknown_label_name_lists_the_first_eight_known(tmp_path: Path, count: int, listed: str) -> None:
    p = write(tmp_path / "u.csv", "text,labels\nhi,glee\n")
    with pytest.raises(DataError) as info:
        read_csv(p, text_column="text", label_names=[f"n{i}" for i in range(count)])
    assert str(info.value).endswith(f"unknown label name 'glee' (known: {listed}")


def test_jsonl_huge_label_id_is_out_of_range(tmp_path: Path) -> None:
    p = write(tmp_path / "h.jsonl", '{"text": "a", "labels": [' + "9" * 4000 + "]}\n")
    with pytest.raises(DataError, match="out of range") as info:
        read_jsonl(p, text_column="text", label_names=NAMES)
    assert (info.value.line, info.value.field) == (1, "labels")


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_field_over_the_csv_limit_names_its_line(tmp_path: Path, suffix: str, sep: str) -> None:
    rows = ["hi", "0", "a"] if suffix == ".tsv" else ["hi", "joy"]
    header = "" if suffix == ".tsv" else "text,labels\n"
    big = ["x" * 140_000, *rows[1:]]
    p = write(tmp_path / f"big{suffix}", header + sep.join(rows) + "\n" + sep.join(big) + "\n")
    with pytest.raises(DataError) as info:
        load_split(p, label_names=["joy"] if suffix == ".csv" else None)
    assert (
        str(info.value)
        == f"{p}:{2 if suffix == '.tsv' else 3}: a field is longer than 131,072 characters, the most one may hold"
    )


def test_messages_quoting_the_file_stay_one_line(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "h.csv", '"te\nxt",labels\nhi,joy\n')
    with pytest.raises(DataError) as info:
        read_csv(csv_path, text_column="text")
    assert "\n" not in str(info.value) and "te\\nxt" in str(info.value)
    jsonl_path = write(tmp_path / "k.jsonl", '{"\\u001b[31mred": 1, "line\\nbreak": 2}\n')
    with pytest.raises(DataError, match="text: missing") as info:
        read_jsonl(jsonl_path, text_column="text")
    message = str(info.value)
    assert message.isprintable() and "\\x1b[31mred" in message and "line\\nbreak" in message


# ----------------------------------------------------------------------------- default ids around blank lines


def test_csv_and_jsonl_number_the_same_rows_alike_around_blank_lines(tmp_path: Path) -> None:
    """Blank lines take no number in either format: the same texts get the same default ids."""
    from goemo.data.records import read_records

    texts = ["first", "second", "third"]
    csv_file = write(tmp_path / "t.csv", "text,labels\nfirst,joy\n\nsecond,joy\n\n\nthird,joy\n")
    jsonl_file = write(
        tmp_path / "t.jsonl", jsonl({"text": "first"}, "", {"text": "second"}, "", "", {"text": "third"})
    )
    for path in (csv_file, jsonl_file):
        records = list(read_records(path))
        assert [(r.id, r.text) for r in records] == [("1", "first"), ("2", "second"), ("3", "third")], path.name
    # the training readers agree with each other too (counted from 0)
    trained_csv = read_csv(csv_file, text_column="text")
    jsonl_with_labels = jsonl({"text": "first", "labels": ["joy"]}, "", {"text": "second", "labels": ["joy"]})
    trained_jsonl = read_jsonl(write(tmp_path / "l.jsonl", jsonl_with_labels), text_column="text")
    assert trained_csv.texts == texts and trained_csv.ids == ["0", "1", "2"]
    assert trained_jsonl.ids == ["0", "1"]
