"""Predictions as text (`goemo.predict.prediction_writer`): vectorised decisions, and JSON Lines equal to the encoder's."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest

from goemo.core.errors import ConfigError
from goemo.data.records import Record
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.prediction_writer import PieceLabels, PredictionWriter, decide_chunk, output_format
from goemo.predict.progress import count_records, scan_output

TEXTS = [f"text {i} " + "word " * (i * 7 % 23) for i in range(30)]


@pytest.mark.parametrize(("all_scores", "with_text"), [(False, True), (True, True), (True, False), (False, False)])
def test_json_lines_are_the_encoders_bytes(all_scores: bool, with_text: bool) -> None:
    """The pieced-together JSON Lines equal ``json.dumps(record, ensure_ascii=False)`` byte for byte."""
    names = ["joy", 'quote"d', "ünï\\code", "tab\t"]
    odd = ['a "quoted" text', "back\\slash", "line\nbreak\x00\x1f", "émoji 😀 \u2028", "", "</script>"]
    records = [Record(f"id-{i}" if i % 2 else f'"{i}"', odd[i % len(odd)] + str(i)) for i in range(40)]
    rng = np.random.default_rng(0)
    scores = rng.random((len(records), len(names)), dtype=np.float32)
    scores[0] = [0.0, 1.0, 1e-7, 0.5]  # the extremes and a value that rounds to 0
    scores[1] = np.float32(0.1234565)  # round half to even at the 6th digit
    chosen = [list(rng.permutation(len(names))[: i % (len(names) + 1)]) for i in range(len(records))]
    writer = PredictionWriter(None, "jsonl", names, all_scores, with_text)
    fast = writer.format_chunk(records, scores, chosen)
    reference = []
    for record, row, idx in zip(records, np.round(scores.astype(np.float64), 6).tolist(), chosen):
        obj: dict[str, Any] = {"id": record.id} | ({"text": record.text} if with_text else {})
        obj["labels"] = [{"label": names[j], "score": row[j]} for j in idx]
        reference.append(
            json.dumps(obj | ({"scores": dict(zip(names, row))} if all_scores else {}), ensure_ascii=False)
        )
    assert fast == "\n".join(reference) + "\n"
    broken = scores.copy()
    broken[3, 1] = np.nan  # a broken model's NaN is spelled as the encoder spells it
    assert "NaN" in writer.format_chunk(records, broken, [[1]] * len(records))


def test_the_encoders_path_for_nan_writes_the_same_lines() -> None:
    """A chunk with NaN goes through ``json`` object by object: still one record a line, the last ended."""
    names = ["joy", "ängër"]
    records = [Record(str(i), f"text {i} émoji 😀") for i in range(3)]  # kept as UTF-8, not \u escapes
    scores = np.array([[0.5, np.nan], [0.25, 0.75], [np.inf, 0.0]], dtype=np.float32)
    chosen = [[0], [1, 0], []]
    for all_scores in (False, True):
        writer = PredictionWriter(None, "jsonl", names, all_scores)
        text = writer.format_chunk(records, scores, chosen)
        expected = []
        for record, row, idx in zip(records, scores.astype(np.float64).tolist(), chosen):
            obj: dict[str, Any] = {"id": record.id, "text": record.text}
            obj["labels"] = [{"label": names[j], "score": row[j]} for j in idx]
            expected.append(
                json.dumps(obj | ({"scores": dict(zip(names, row))} if all_scores else {}), ensure_ascii=False)
            )
        assert text == "\n".join(expected) + "\n"
    assert PredictionWriter(None, "jsonl", names).format_chunk([], np.zeros((0, 2), np.float32), []) == ""


def test_chunks_written_one_after_another_keep_one_record_a_line() -> None:
    """What resume counts: each chunk ends its last line, NaN or not, so records never share a line."""
    stream = io.StringIO()
    writer = PredictionWriter(stream, "jsonl", ["joy", "anger"])
    records = [Record(str(i), "t") for i in range(2)]
    writer.write_chunk(records, np.array([[0.5, np.nan], [0.1, 0.2]], np.float32), [[0], []])
    writer.write_chunk(records, np.array([[0.5, 0.6], [0.1, 0.2]], np.float32), [[1], [0]])
    writer.write_chunk(records, np.array([[np.nan, 0.6], [0.1, 0.2]], np.float32), [[], [0]])
    writer.finish()
    lines = stream.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 7
    assert [json.loads(line)["id"] for line in lines[:-1]] == ["0", "1"] * 3
    assert [[d["label"] for d in json.loads(line)["labels"]] for line in lines[2:4]] == [["anger"], ["joy"]]


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize(("all_scores", "with_text"), [(False, True), (True, True), (True, False), (False, False)])
def test_csv_rows_hold_every_column(all_scores: bool, with_text: bool) -> None:
    names = ["joy", "an,ger", 'qu"ote']
    records = [Record("a", 'text, with "quotes"\nand a line break'), Record("b", ""), Record("c,d", "plain")]
    records.append(Record("e\rf", "a bare\rcarriage return"))  # which the csv module does not quote itself
    scores = np.array([[0.9, 0.25, 0.5], [0.1, 0.2, 0.3], [0.123456789, 1.0, 0.0], [0.5, 0.5, 0.5]], np.float32)
    chosen = [[0, 2], [], [1, 0], [2]]
    stream = io.StringIO()
    writer = PredictionWriter(stream, "csv", names, all_scores, with_text)
    writer.write_chunk(records[:2], scores[:2], chosen[:2])
    writer.write_chunk(records[2:], scores[2:], chosen[2:])
    writer.finish()
    text_col = ["text"] if with_text else []
    expected = [["id", *text_col, "labels", "scores", *(names if all_scores else [])]]
    for record, row, idx in zip(records, scores.tolist(), chosen):
        line = [record.id, *([record.text] if with_text else [])]
        line += [",".join(names[j] for j in idx), ",".join(f"{row[j]:.6f}" for j in idx)]
        expected.append(line + ([f"{p:.6f}" for p in row] if all_scores else []))
    assert _csv(stream.getvalue()) == expected
    assert expected[1][expected[0].index("scores")] == "0.900000,0.500000"  # the reference itself, by hand
    assert stream.getvalue().endswith("\n")


def test_a_csv_record_with_a_bare_carriage_return_is_one_record_to_resume(tmp_path) -> None:
    """Unquoted, a bare ``\r`` ends a line for every CSV reader: resume refused the file as not ours."""
    path = tmp_path / "out.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = PredictionWriter(f, "csv", ["joy"])
        writer.write_chunk([Record("1\r2", "a\rb"), Record("3", "c")], np.array([[0.9], [0.1]], np.float32), [[0], []])
    assert [rid for _, rid in scan_output(path, "csv", writer.header())] == ["1\r2", "3"]
    assert count_records(path, "csv") == 2


def test_csv_header_once_or_not_at_all() -> None:
    stream = io.StringIO()
    PredictionWriter(stream, "csv", ["joy"]).finish()  # no text at all: the header still goes out
    assert stream.getvalue() == "id,text,labels,scores\n"
    resumed = io.StringIO()
    writer = PredictionWriter(resumed, "csv", ["joy"], header=False)  # a resumed file has its header
    writer.write_chunk([Record("1", "x")], np.array([[0.75]], np.float32), [[0]])
    writer.finish()
    assert resumed.getvalue() == "1,x,joy,0.750000\n"
    assert PredictionWriter(None, "csv", ["joy"], True, False).header() == "id,labels,scores,joy\n"
    assert PredictionWriter(None, "jsonl", ["joy"]).header() == ""
    jsonl = io.StringIO()
    PredictionWriter(jsonl, "jsonl", ["joy"]).finish()
    assert jsonl.getvalue() == ""


@pytest.mark.parametrize(
    ("path", "fmt"),
    [(None, "jsonl"), ("out.csv", "csv"), ("OUT.CSV", "csv"), ("a/b.jsonl", "jsonl"), ("b.json", "jsonl")],
)
def test_output_format_from_the_file_name(path: str | None, fmt: str) -> None:
    assert output_format(path) == fmt


@pytest.mark.parametrize("path", ["out.txt", "out", "out.csv.gz"])
def test_output_format_refuses_other_names(path: str) -> None:
    with pytest.raises(ConfigError, match=".jsonl or .csv"):
        output_format(path)


class _Threshold:
    """The part of `EmotionClassifier` that `decide_chunk` uses: ``decide`` at one threshold, 0.5 by default."""

    def decide(self, probs: np.ndarray, threshold: float | None = None, taxonomy: str | None = None):
        t = 0.5 if threshold is None else threshold
        return ["a", "b", "c", "d"], probs, (probs > np.float32(t)).astype(np.uint8)


PROBS = np.array([[0.2, 0.9, 0.6, 0.6], [0.1, 0.1, 0.1, 0.1], [0.7, 0.2, 0.95, 0.51]], dtype=np.float32)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [[1, 2, 3], [], [2, 0, 3]]),  # above 0.5, highest first; ties by index
        ({"top_k": 2}, [[1, 2], [0, 1], [2, 0]]),  # the k highest, whatever their score
        ({"threshold": 0.65}, [[1], [], [2, 0]]),
        ({"top_k": 1, "threshold": 0.55}, [[1], [], [2]]),  # at most k of those above the threshold
        ({"top_k": 9}, [[1, 2, 3, 0], [0, 1, 2, 3], [2, 0, 3, 1]]),
    ],
)
def test_decide_chunk_orders_and_cuts(options: dict, expected: list[list[int]]) -> None:
    scores, chosen = decide_chunk(_Threshold(), PROBS, **options)  # type: ignore[arg-type]
    assert chosen == expected and scores is PROBS


def test_decide_chunk_of_no_texts() -> None:
    scores, chosen = decide_chunk(_Threshold(), np.zeros((0, 4), np.float32), top_k=2)  # type: ignore[arg-type]
    assert chosen == [] and scores.shape == (0, 4)


def test_vectorised_decisions_equal_the_classifiers(tiny_clf: EmotionClassifier) -> None:
    probs = tiny_clf.predict_proba(TEXTS)
    probs[0, :3] = probs[0, 5]  # ties: the lower index first, as predict_from_proba
    cases: list[dict[str, Any]] = [{}, {"top_k": 3}, {"threshold": 0.4}, {"top_k": 2, "threshold": 0.1}]
    for options in [*cases, {"taxonomy": "ekman"}, {"taxonomy": "sentiment", "top_k": 1}]:
        expected = tiny_clf.predict_from_proba(probs, **options)
        scores, chosen = decide_chunk(tiny_clf, probs, **options)
        names = tiny_clf.label_names_for(options.get("taxonomy"))
        assert [[names[j] for j in row] for row in chosen] == [[d["label"] for d in row] for row in expected]
        assert [[float(scores[i, j]) for j in row] for i, row in enumerate(chosen)] == [
            [d["score"] for d in row] for row in expected
        ]


def test_spans_are_the_encoders_bytes_too() -> None:
    names = ["joy", 'quote"d', "ünï"]
    records = [Record("1", "One. Two!"), Record("2", "short")]
    scores = np.array([[0.9, 0.1, 0.4], [0.2, 0.8, 0.1]], np.float32)
    piece_scores = np.array([[0.9, 0.05, 0.1], [0.3, 0.1, 0.4], [0.2, 0.8, 0.1]], np.float32)
    pieces = PieceLabels(np.array([[0, 4], [5, 9], [0, 5]]), np.array([0, 2, 3]), piece_scores, [[0], [2], [1]])
    writer = PredictionWriter(None, "jsonl", names, spans=True)
    fast = writer.format_chunk(records, scores, [[0, 2], [1]], pieces)
    lines = [json.loads(line) for line in fast.splitlines()]
    assert lines[0]["pieces"] == [
        {"start": 0, "end": 4, "labels": [{"label": "joy", "score": 0.9}]},
        {"start": 5, "end": 9, "labels": [{"label": "ünï", "score": 0.4}]},
    ]
    assert lines[1]["pieces"] == [{"start": 0, "end": 5, "labels": [{"label": 'quote"d', "score": 0.8}]}]
    assert fast == "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in lines)  # the encoder's bytes
    broken = piece_scores.copy()
    broken[1, 0] = np.nan
    slow = writer.format_chunk(
        records, scores, [[0, 2], [1]], PieceLabels(pieces.spans, pieces.first, broken, [[0], [0], [1]])
    )
    assert "NaN" in slow and json.loads(slow.splitlines()[1])["pieces"][0]["labels"][0]["label"] == 'quote"d'
    with pytest.raises(ConfigError, match="spans are written as JSON Lines"):
        PredictionWriter(None, "csv", names, spans=True)
