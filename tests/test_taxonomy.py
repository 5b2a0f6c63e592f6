"""Taxonomies: the built-in groupings, projection of labels and probabilities, custom files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from goemo.core.errors import ConfigError, DataError
from goemo.data.taxonomy import Taxonomy, load_taxonomy, project_labels, project_probs

FINE = list(load_taxonomy("goemotions").labels)


def onehot(*names: str) -> np.ndarray:
    row = np.zeros((1, len(FINE)), dtype=np.uint8)
    for name in names:
        row[0, FINE.index(name)] = 1
    return row


def test_goemotions_is_flat_with_28_labels(shared_data: Path) -> None:
    t = load_taxonomy("goemotions")
    assert t.num_labels == 28 and t.groups is None
    assert list(t.labels) == (shared_data / "emotions.txt").read_text().split()
    np.testing.assert_array_equal(t.membership(FINE), np.eye(28, dtype=np.uint8))


def test_ekman_is_six_groups_plus_neutral() -> None:
    t = load_taxonomy("ekman")
    assert t.labels == ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")
    assert t.groups["neutral"] == ("neutral",)
    assert t.groups["anger"] == ("anger", "annoyance", "disapproval")
    m = t.membership(FINE)
    assert m.shape == (28, 7)
    assert m.sum(axis=1).tolist() == [1] * 28  # every fine label lands in exactly one group


def test_sentiment_is_three_groups_plus_neutral() -> None:
    t = load_taxonomy("sentiment")
    assert t.labels == ("positive", "negative", "ambiguous", "neutral")
    assert len(t.groups["positive"]) == 12 and len(t.groups["negative"]) == 11
    assert set(t.groups["ambiguous"]) == {"realization", "surprise", "curiosity", "confusion"}
    assert t.membership(FINE).sum(axis=1).tolist() == [1] * 28


def test_project_labels_any_member_on() -> None:
    ekman = load_taxonomy("ekman")
    labels = np.concatenate([onehot("annoyance"), onehot("nervousness", "gratitude"), onehot("neutral"), onehot()])
    out = project_labels(labels, FINE, ekman)
    assert out.dtype == np.uint8
    assert out.tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    both_anger_members = project_labels(onehot("anger", "annoyance"), FINE, ekman)
    assert both_anger_members[0, 0] == 1  # on, not 2


def test_project_probs_is_max_of_members() -> None:
    sentiment = load_taxonomy("sentiment")
    probs = np.full((2, 28), 0.01, dtype=np.float32)
    probs[0, FINE.index("joy")] = 0.7
    probs[0, FINE.index("love")] = 0.4
    probs[0, FINE.index("grief")] = 0.2
    probs[1, FINE.index("neutral")] = 0.9
    out = project_probs(probs, FINE, sentiment)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out[0], [0.7, 0.2, 0.01, 0.01])
    np.testing.assert_allclose(out[1], [0.01, 0.01, 0.01, 0.9])


def test_projection_of_probs_agrees_with_projection_of_labels() -> None:
    ekman = load_taxonomy("ekman")
    rng = np.random.default_rng(0)
    probs = rng.random((50, 28))
    for threshold in (0.3, 0.5, 0.9):
        from_probs = (project_probs(probs, FINE, ekman) >= threshold).astype(np.uint8)
        from_labels = project_labels((probs >= threshold).astype(np.uint8), FINE, ekman)
        np.testing.assert_array_equal(from_probs, from_labels)


def test_custom_grouping_file(tmp_path: Path) -> None:
    path = tmp_path / "valence.json"
    path.write_text(json.dumps({"good": ["joy", "love"], "bad": ["anger"]}))
    t = load_taxonomy(str(path))
    assert t.name == "valence"
    assert t.labels == ("good", "bad", "neutral")  # neutral kept as its own label
    out = project_labels(np.concatenate([onehot("love"), onehot("anger", "joy"), onehot("fear")]), FINE, t)
    assert out.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]  # fear is in no group


def test_custom_grouping_file_read_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"neutral": ["neutral"], "up": ["joy"]}).encode())
    assert load_taxonomy(path).labels == ("neutral", "up")


def test_data_dir_copy_of_emotions_wins(tmp_path: Path) -> None:
    (tmp_path / "emotions.txt").write_text("a\nb\nneutral\n")
    assert load_taxonomy("goemotions", data_dir=tmp_path).labels == ("a", "b", "neutral")
    with pytest.raises(ConfigError, match="'anger' of group 'anger' is not among the source labels"):
        load_taxonomy("ekman", data_dir=tmp_path)  # packaged ekman groups name labels this file lacks


def test_unknown_taxonomy_name_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown taxonomy 'plutchik'"):
        load_taxonomy("plutchik")
    with pytest.raises(ConfigError, match="unknown taxonomy"):
        load_taxonomy(str(tmp_path / "missing.json"))


def test_unknown_label_in_grouping_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"good": ["joy", "glee"]}))
    with pytest.raises(ConfigError, match="label 'glee' of group 'good'"):
        load_taxonomy(path)
    with pytest.raises(ConfigError, match="'nope'"):
        Taxonomy("t", ("nope",)).membership(FINE)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('["joy"]', "expected a JSON object"),
        ('{"good": []}', "non-empty list"),
        ('{"good": "joy"}', "non-empty list"),
        ('{"good": [1]}', "non-empty list"),
    ],
)
def test_malformed_grouping_is_config_error(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        load_taxonomy(path)


def test_invalid_json_grouping_is_data_error_with_line(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text('{\n"good": ["joy"],\n}\n')
    with pytest.raises(DataError) as info:
        load_taxonomy(path)
    assert info.value.line == 3 and "invalid JSON" in str(info.value)
