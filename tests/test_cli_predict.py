"""`goemo predict`: texts as arguments, stdin, .txt/.csv/.jsonl files, order, ids, outputs, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.errors import DataError, RunFolderError
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.files import BulkOptions, predict_file
from goemo.predict.prediction_writer import Labelling

TEXTS = [
    "Thank you, that is so kind of you!",
    "what",
    "I hate waiting in line for hours, it drives me crazy and ruins the whole day.",
    "",
    "So sad to hear that.",
    "Haha, that's hilarious",
]


@pytest.fixture(scope="module")
def clf(tiny_model_dir: Path) -> EmotionClassifier:
    return EmotionClassifier.load(tiny_model_dir, backend="torch", device="cpu")


def run(*args: str, input: str | None = None):
    """``goemo predict ARGS`` on the folder's own torch weights (``--backend auto``) unless ARGS name a backend:
    the default (``fastest``: an int8 export) has its own tests in tests/test_fastest_backend.py and below."""
    backend = [] if "--backend" in args else ["--backend", "auto"]
    return CliRunner().invoke(app, ["predict", *backend, *args], input=input)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_labels(records: list[dict], texts: list[str], clf: EmotionClassifier, **options) -> None:
    """Each record's labels are exactly what the Python API gives for its own text."""
    expected = clf.predict(texts, **options)
    assert len(records) == len(texts)
    for record, exp in zip(records, expected):
        assert [d["label"] for d in record["labels"]] == [d["label"] for d in exp]
        assert [d["score"] for d in record["labels"]] == pytest.approx([d["score"] for d in exp], abs=1e-5)


def test_texts_as_arguments(tiny_model_dir: Path, clf: EmotionClassifier) -> None:
    result = run("--model", str(tiny_model_dir), "--top-k", "3", *TEXTS)
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert [r["id"] for r in records] == [str(i) for i in range(1, 7)]
    assert [r["text"] for r in records] == TEXTS
    check_labels(records, TEXTS, clf, top_k=3)
    assert all(len(r["labels"]) == 3 for r in records)


def test_stdin_one_text_per_line_keeps_empty_lines(tiny_model_dir: Path, clf: EmotionClassifier) -> None:
    result = run("--model", str(tiny_model_dir), "--threshold", "0.05", input="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert [r["text"] for r in records] == TEXTS and records[3]["id"] == "4"
    check_labels(records, TEXTS, clf, threshold=0.05)


def test_txt_file_to_jsonl_file(tiny_model_dir: Path, clf: EmotionClassifier, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\r\n".join(TEXTS) + "\r\n", encoding="utf-8")  # Windows line ends too
    out = tmp_path / "out" / "pred.jsonl"
    result = run(
        "--model", str(tiny_model_dir), "--input", str(src), "--output", str(out), "--all-scores", "--batch-size", "2"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "6 texts labelled" in result.stderr and str(out) in result.stderr
    records = jsonl(out.read_text(encoding="utf-8"))
    assert [r["text"] for r in records] == TEXTS and [r["id"] for r in records] == ["1", "2", "3", "4", "5", "6"]
    probs = clf.predict_proba(TEXTS)
    got = np.array([[r["scores"][n] for n in clf.label_names] for r in records])
    np.testing.assert_allclose(got, probs, atol=1e-5)
    check_labels(records, TEXTS, clf)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_csv_with_ids_quotes_and_newlines_to_csv(tiny_model_dir: Path, clf: EmotionClassifier, tmp_path: Path) -> None:
    texts = ['He said "no", then left.', "line one\nline two", "plain", "commas, commas, commas"]
    ids = ["z9", "a1", "m5", "b2"]  # not sorted: order must follow the file
    src = tmp_path / "in.csv"
    with open(src, "w", encoding="utf-8-sig", newline="") as f:  # with a BOM, as Excel writes
        w = csv.writer(f)
        w.writerow(["id", "body", "other"])
        for i, t in zip(ids, texts):
            w.writerow([i, t, "x"])
    out = tmp_path / "pred.csv"
    result = run(
        "--model",
        str(tiny_model_dir),
        "--input",
        str(src),
        "--text-column",
        "body",
        "--id-column",
        "id",
        "--output",
        str(out),
        "--top-k",
        "2",
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["id"] for r in rows] == ids and [r["text"] for r in rows] == texts
    expected = clf.predict(texts, top_k=2)
    for row, exp in zip(rows, expected):
        assert row["labels"].split(",") == [d["label"] for d in exp]
        assert [float(s) for s in row["scores"].split(",")] == pytest.approx([d["score"] for d in exp], abs=1e-5)


def test_jsonl_with_id_column_and_taxonomy(tiny_model_dir: Path, clf: EmotionClassifier, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": t, "key": 100 + i}) for i, t in enumerate(TEXTS)]
    lines.insert(2, "")  # blank lines are skipped
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(
        "--model",
        str(tiny_model_dir),
        "--input",
        str(src),
        "--id-column",
        "key",
        "--taxonomy",
        "ekman",
        "--top-k",
        "2",
        "--no-text",
    )
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert [r["id"] for r in records] == [str(100 + i) for i in range(6)]
    assert all("text" not in r for r in records)
    check_labels(records, TEXTS, clf, top_k=2, taxonomy="ekman")
    assert {d["label"] for r in records for d in r["labels"]} <= {
        "anger",
        "disgust",
        "fear",
        "joy",
        "sadness",
        "surprise",
        "neutral",
    }


def test_streaming_in_small_chunks_gives_the_same_output(clf: EmotionClassifier, tmp_path: Path) -> None:
    texts = [f"text number {i} " + "word " * (i % 13) for i in range(50)]
    src = tmp_path / "many.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    small, whole = tmp_path / "small.jsonl", tmp_path / "whole.jsonl"
    assert predict_file(clf, src, small, Labelling(all_scores=True), BulkOptions(chunk_size=7)).records == 50
    assert predict_file(clf, src, whole, Labelling(all_scores=True)).records == 50
    a, b = jsonl(small.read_text()), jsonl(whole.read_text())
    assert [r["id"] for r in a] == [str(i) for i in range(1, 51)] and [r["text"] for r in a] == texts
    for ra, rb in zip(a, b):
        assert ra["scores"] == pytest.approx(rb["scores"], abs=1e-5)


def test_a_bad_row_midway_leaves_the_whole_chunks_before_it(clf: EmotionClassifier, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    good = [json.dumps({"text": f"fine {i}"}) for i in range(6)]
    src.write_text("\n".join(good + ["{not json"]) + "\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    with pytest.raises(DataError, match=r"bad.jsonl:7: invalid JSON"):
        predict_file(clf, src, out, options=BulkOptions(chunk_size=2))  # three chunks come before the bad row
    assert [r["id"] for r in jsonl(out.read_text())] == ["1", "2", "3", "4", "5", "6"]
    assert json.loads((tmp_path / "pred.jsonl.goemo-progress.json").read_text())["complete"] is False
    src.write_text("\n".join(good + [json.dumps({"text": "fixed"})]) + "\n", encoding="utf-8")
    with pytest.raises(RunFolderError, match="the input is not the same file, or changed since"):
        predict_file(clf, src, out, options=BulkOptions(chunk_size=2))  # a changed input is never resumed
    assert predict_file(clf, src, out, options=BulkOptions(chunk_size=2, overwrite=True)).records == 7


@pytest.mark.parametrize(
    ("content", "name", "extra", "message"),
    [
        ("id,body\n1,hi\n", "in.csv", [], "in.csv:1: no column 'text' in the header (id, body)"),
        ('{"body": "hi"}\n', "in.jsonl", [], "in.jsonl:1: text: missing"),
        ('{"text": 5}\n', "in.jsonl", [], "in.jsonl:1: text: expected a string, got int"),
        ("hi\n", "in.xml", [], "unsupported input type .xml"),
        ("hi\n", "in.txt", ["--output", "out.txt"], "expected a .jsonl or .csv file name"),
        ("hi\n", "in.txt", ["also a text"], "not both"),
    ],
)
def test_errors_are_one_line_exit_1(
    tiny_model_dir: Path, tmp_path: Path, content: str, name: str, extra: list[str], message: str
) -> None:
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    result = run("--model", str(tiny_model_dir), "--input", str(src), *extra)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_usage_errors_exit_2(tiny_model_dir: Path) -> None:
    assert run("--model", str(tiny_model_dir), "--top-k", "0", "x").exit_code == 2
    assert run("--model", str(tiny_model_dir), "--threshold", "2", "x").exit_code == 2
    assert run("x").exit_code == 2  # --model is required
    missing = run("--model", "/nonexistent/model", "x")
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["predict", "--help"])
    assert result.exit_code == 0 and "Example: goemo predict --model" in result.output


# ----------------------------------------------------------------------------- hostile input and faults


def test_max_length_beyond_the_models_positions_is_refused_before_anything_is_written(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("short\n" + " ".join(["word"] * 1500) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--output", str(out), "--max-length", "1000")
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "goemo: error: max_length=1000: the model takes at most 512 tokens (config.json max_position_embeddings 512)\n"
    )
    assert list(tmp_path.iterdir()) == [src]
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--output", str(out), "--max-length", "512")
    assert result.exit_code == 0, result.output  # the limit itself is fine, on the long text too
    assert len(jsonl(out.read_text())) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "a\\ud800b"}', "in.jsonl:2: text: not valid Unicode: lone surrogate \\ud800 at character 2"),
        ('{"text": "ok", "key": "\\udfff"}', "in.jsonl:2: key: not valid Unicode: lone surrogate \\udfff"),
        (
            '{"text": "ok", "key": ' + "9" * 5000 + "}",
            "in.jsonl:2: invalid JSON: a number of more than 4,300 digits at column 1",
        ),
        ('{"text": ' + "[" * 5000 + "]" * 5000 + "}", "in.jsonl:2: invalid JSON: nested too deeply at column 1"),
    ],
)
def test_jsonl_that_is_valid_json_but_not_text_is_one_line(
    tiny_model_dir: Path, tmp_path: Path, line: str, message: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine", "key": 1}\n' + line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--id-column", "key", "--output", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not out.exists()


def test_text_argument_that_is_not_utf8_is_one_line(tiny_model_dir: Path) -> None:
    # what Python makes of a command-line argument holding the byte 0xff (os.fsdecode)
    result = run("--model", str(tiny_model_dir), "fine", "caf\udcff")
    assert result.exit_code == 1, result.output
    assert (
        result.stderr
        == "goemo: error: texts[1]: not valid Unicode: lone surrogate \\udcff at character 4 (a \\u escape for half of a surrogate pair?)\n"
    )


def test_csv_field_over_the_csv_modules_limit_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,fine\n2," + "x" * 140_000 + "\n3,after\n", encoding="utf-8")
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--id-column", "id")
    assert result.exit_code == 1, result.output
    assert result.stderr == f"goemo: error: {src}:3: a field is longer than 131,072 characters, the most one may hold\n"


def test_an_unbalanced_quote_is_refused_as_training_refuses_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    from goemo.data.io import load_split

    # Without strict quoting the quote would swallow rows 3 and 4 into the text of row 2.
    src = tmp_path / "in.csv"
    src.write_text('id,text\n1,ok\n2,"broken\n3,after\n', encoding="utf-8")
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--id-column", "id")
    assert result.exit_code == 1, result.output
    assert result.stderr == f"goemo: error: {src}:4: malformed quoting: unexpected end of data\n"
    labelled = tmp_path / "train.csv"
    labelled.write_text('labels,text\njoy,ok\njoy,"broken\njoy,after\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_split(labelled)
    assert str(info.value) == f"{labelled}:4: malformed quoting: unexpected end of data"


def test_a_dead_writers_temp_file_is_removed_and_a_live_ones_kept(clf: EmotionClassifier, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited and reaped: no such process any more
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    stale = tmp_path / f".out.jsonl.{dead_pid}.abc123_x.tmp"
    live = tmp_path / f".out.jsonl.{os.getppid()}.def456.tmp"  # pytest's parent: alive, maybe writing
    other = tmp_path / f".other.jsonl.{dead_pid}.abc123.tmp"  # another file's temp: not ours to judge
    for p in (stale, live, other):
        p.write_text("half-written", encoding="utf-8")
    assert predict_file(clf, src, out).records == 1
    assert not stale.exists() and live.exists() and other.exists() and out.is_file()


def test_an_existing_output_is_replaced_only_with_overwrite(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("my own notes\n", encoding="utf-8")
    result = run("--model", str(tiny_model_dir), "--output", str(out), "hello")
    assert result.exit_code == 1 and result.stderr == f"goemo: error: {out} exists; --overwrite to replace it\n"
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--output", str(out))
    assert result.exit_code == 1 and "--overwrite to replace it" in result.stderr
    assert out.read_text() == "my own notes\n"
    result = run("--model", str(tiny_model_dir), "--input", str(src), "--output", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in jsonl(out.read_text())] == ["hello"]


def test_the_default_runs_the_fastest_backend_and_says_so_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    """No --backend: on a CPU the folder's ONNX export (made once, checked on dev), named in the first log line."""
    import shutil

    pytest.importorskip("onnxruntime", reason="the fastest CPU backend is ONNX Runtime (the onnx extra)")
    model = tmp_path / "best"
    shutil.copytree(tiny_model_dir, model)  # the export is cached inside the folder: keep the shared one clean
    made = CliRunner().invoke(app, ["predict", "--model", str(model), *TEXTS[:2]])
    assert made.exit_code == 0, made.output
    assert "building the int8 ONNX export once" in made.stderr and (model / ".onnx-cpu" / "model.onnx").is_file()
    result = CliRunner().invoke(app, ["predict", "--model", str(model), *TEXTS[:2]])  # reuses it: no export
    assert result.exit_code == 0 and "building" not in result.stderr, result.output
    first = result.stderr.splitlines()[0]
    assert "onnx" in first and "on cpu" in first and "thread" in first, first
    torch_run = run("--model", str(model), "--all-scores", *TEXTS[:2])
    fast = jsonl(result.stdout)
    assert [r["id"] for r in fast] == ["1", "2"] and len(jsonl(torch_run.stdout)) == 2


LONG = (
    "I waited three weeks for this order and checked the tracking every day. "
    "When it finally came the box was crushed and half the parts were missing! "
    "Thank you so much to the shop, though, they sent the rest the very next morning. "
    "Honestly I am still a bit annoyed about the wait."
)


def test_spans_give_each_piece_its_characters_and_labels(tiny_model_dir: Path, clf: EmotionClassifier) -> None:
    texts = ["So sad to hear that.", LONG]
    result = run("--model", str(tiny_model_dir), "--spans", "--threshold", "0.2", *texts)
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    check_labels(records, texts, clf, threshold=0.2)
    assert records[0]["pieces"] == [{"start": 0, "end": len(texts[0]), "labels": records[0]["labels"]}]
    pieces = records[1]["pieces"]
    assert [LONG[p["start"] : p["end"]][-1] for p in pieces] == [".", "!", ".", "."]  # one piece per sentence
    expected = clf.predict_spans([LONG], threshold=0.2)[0]["pieces"]
    assert [(p["start"], p["end"]) for p in pieces] == [(p["start"], p["end"]) for p in expected]
    for got, exp in zip(pieces, expected):
        assert [d["label"] for d in got["labels"]] == [d["label"] for d in exp["labels"]]
    # the text's labels are those of its pieces (max over pieces)
    assert {d["label"] for d in records[1]["labels"]} == {d["label"] for p in pieces for d in p["labels"]}


def test_spans_need_json_lines_and_truncation_is_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run("--model", str(tiny_model_dir), "--spans", "--output", str(tmp_path / "out.csv"), "hi")
    assert result.exit_code == 1 and "--spans writes JSON Lines" in result.output
    result = run("--model", str(tiny_model_dir), "--long-text", "truncate", "--spans", "fine", LONG)
    assert result.exit_code == 0, result.output
    assert f"1 of 2 texts were longer than {clf_max_length(tiny_model_dir)} tokens and truncated" in result.output
    records = jsonl(result.stdout)
    (piece,) = records[1]["pieces"]
    assert piece["start"] == 0 and 0 < piece["end"] < len(LONG)  # where the model stopped reading
    result = run("--model", str(tiny_model_dir), "--long-text", "whole", "hi")
    assert result.exit_code == 1 and "long_text='whole': expected pieces or truncate" in result.output


def clf_max_length(folder: Path) -> int:
    return int(json.loads((folder / "goemo.json").read_text())["max_length"])
