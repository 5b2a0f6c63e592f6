"""Predictions as text (`goemo.predict.prediction_writer`): vectorised decisions, and JSON Lines equal to the encoder's."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from goemo.core.errors import ConfigError
from goemo.data.records import Record
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.prediction_writer import PieceLabels, PredictionWriter, decide_chunk

TEXTS = [f"text {i} " + "word " * (i * 7 % 23) for i in range(30)]


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
