"""Streaming records through the model (`goemo.predict.stream`): bounded chunks, both schedules, errors midway."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from goemo.core.errors import DataError
from goemo.data.records import Record
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.prediction_writer import PredictionWriter
from goemo.predict.stream import PREFETCH, predict_records


@pytest.mark.parametrize("overlap", [True, False])
def test_the_pipeline_holds_a_bounded_number_of_chunks(tiny_clf: EmotionClassifier, overlap: bool) -> None:
    read = 0

    def counting() -> Iterator[Record]:
        nonlocal read
        for i in range(400):
            read += 1
            yield Record(str(i + 1), f"text {i}")

    class Stream:
        def __init__(self) -> None:
            self.written = 0
            self.ahead: list[int] = []

        def write(self, text: str) -> None:
            self.ahead.append(read - self.written)  # read from the input, not yet written
            self.written += text.count("\n")

        def flush(self) -> None:
            pass

    stream = Stream()
    writer = PredictionWriter(stream, "jsonl", tiny_clf.label_names)
    assert predict_records(tiny_clf, counting(), writer, chunk_size=2, prefetch=PREFETCH, overlap=overlap) == 400
    assert stream.written == 400 and len(stream.ahead) == 200
    # overlapping: the chunk being written, PREFETCH queued for writing, one at the model,
    # PREFETCH queued for it and one being read; in turn: the one chunk. Never the whole input.
    assert max(stream.ahead) <= ((2 * PREFETCH + 3) * 2 if overlap else 2)


@pytest.mark.parametrize("overlap", [True, False])
def test_a_bad_record_midway_leaves_the_whole_chunks_before_it(tiny_clf: EmotionClassifier, overlap: bool) -> None:

    def records() -> Iterator[Record]:
        yield from (Record(str(i), f"fine {i}") for i in range(1, 7))
        raise DataError("invalid JSON", path="in.jsonl", line=7)

    stream = io.StringIO()
    with pytest.raises(DataError, match="in.jsonl:7"):
        predict_records(
            tiny_clf, records(), PredictionWriter(stream, "jsonl", tiny_clf.label_names), chunk_size=2, overlap=overlap
        )
    assert [json.loads(line)["id"] for line in stream.getvalue().splitlines()] == ["1", "2", "3", "4", "5", "6"]


def test_overlapping_stages_write_what_stages_in_turn_write(tiny_clf: EmotionClassifier) -> None:
    """The accelerator's pipeline and the CPU's one-thread loop are two schedules of the same work."""
    records = [Record(f"r{i}", t) for i, t in enumerate([f"text {i} " + "word " * (i % 9) for i in range(50)])]
    outputs = []
    for overlap in (True, False):
        stream = io.StringIO()
        predict_records(
            tiny_clf,
            iter(records),
            PredictionWriter(stream, "jsonl", tiny_clf.label_names),
            chunk_size=8,
            overlap=overlap,
        )
        outputs.append(stream.getvalue())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 50


@pytest.mark.parametrize("overlap", [True, False])
def test_spans_across_chunks_are_what_predict_spans_gives(tiny_clf: EmotionClassifier, overlap: bool) -> None:
    from goemo.predict.prediction_writer import Labelling

    long = "The parcel came late. " * 10 + "It was broken and I am so angry about it!"
    texts = ["fine", long, "ok then", long.lower(), "yes", long + " " + long]
    records = [Record(str(i), t) for i, t in enumerate(texts)]
    labelling = Labelling(threshold=0.45, spans=True)
    stream = io.StringIO()
    writer = labelling.writer(stream, "jsonl", tiny_clf.label_names)
    predict_records(tiny_clf, iter(records), writer, labelling, chunk_size=2, overlap=overlap)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    expected = tiny_clf.predict_spans(texts, threshold=0.45)
    assert len(lines) == len(texts)
    for line, exp in zip(lines, expected):
        assert [(p["start"], p["end"]) for p in line["pieces"]] == [(p["start"], p["end"]) for p in exp["pieces"]]
        for got, want in zip(line["pieces"], exp["pieces"]):
            assert [d["label"] for d in got["labels"]] == [d["label"] for d in want["labels"]]
            assert [d["score"] for d in got["labels"]] == pytest.approx([d["score"] for d in want["labels"]], abs=1e-5)
    assert len(lines[1]["pieces"]) == 11 and len(lines[5]["pieces"]) == 22
