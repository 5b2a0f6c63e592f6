"""Statistics checked against hand-computed answers and an independent count of the real data.

The real-data counts come from a tiny csv-module parser written here, not from
`goemo.data.io`, so a bug shared by the reader and the statistics cannot hide.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from goemo.core.errors import ConfigError, DataError
from goemo.data.split import Split
from goemo.data.stats import (
    CSV_FIELDS,
    LengthStats,
    compute_stats,
    cooccurrence,
    label_stats,
    load_default_tokenizer,
    token_lengths,
    word_lengths,
)

NAMES = ["joy", "anger", "neutral"]


def tiny_split(name: str = "train") -> Split:
    """Five texts; the answers below are worked out by hand from this table.

    text                    joy anger neutral   words
    "so happy"               1    0     0         2
    "happy and mad"          1    1     0         3
    "whatever"               0    0     1         1
    "ok fine then I guess"   0    0     1         5
    "mad mad mad ok"         0    1     1         4
    """
    texts = ["so happy", "happy and mad", "whatever", "ok fine then I guess", "mad mad mad ok"]
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 1]], np.uint8)
    return Split(texts, [f"t{i}" for i in range(5)], y, NAMES, name)


class CharTokenizer:
    """Stand-in tokenizer: one token per non-space character; records batch sizes."""

    name_or_path = "chars"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, texts, add_special_tokens=True, truncation=False):
        assert add_special_tokens is False
        self.batches.append(len(texts))
        return {"input_ids": [[0] * len(t.replace(" ", "")) for t in texts]}


# --------------------------------------------------------------------------- synthetic


def test_label_rows_match_hand_count():
    s = compute_stats({"train": tiny_split()}).splits["train"]
    joy, anger, neutral = (s.label(n) for n in NAMES)
    assert (joy.count, anger.count, neutral.count) == (2, 2, 3)
    assert joy.pct_texts == pytest.approx(40.0)
    assert neutral.pct_texts == pytest.approx(60.0)
    # joy: 1 of its 2 texts has another label; anger: both; neutral: 1 of 3.
    assert joy.cooccurrence_pct == pytest.approx(50.0)
    assert anger.cooccurrence_pct == pytest.approx(100.0)
    assert neutral.cooccurrence_pct == pytest.approx(100.0 / 3)


def test_split_row_matches_hand_count():
    s = compute_stats({"train": tiny_split()}).splits["train"]
    assert s.texts == 5
    assert s.label_cardinality == pytest.approx(7 / 5)
    assert s.pct_multi_label == pytest.approx(40.0)
    # word lengths 2, 3, 1, 5, 4
    assert s.words == LengthStats(mean=3.0, median=3.0, p95=4.8, max=5)
    assert s.tokens is None


def test_token_lengths_batch_and_agree_with_direct_count():
    tok = CharTokenizer()
    split = tiny_split()
    lengths = token_lengths(split.texts, tok, batch_size=2)
    assert lengths.tolist() == [7, 11, 8, 16, 11]
    assert tok.batches == [2, 2, 1]
    stats = compute_stats({"train": split}, tokenizer=tok)
    assert stats.splits["train"].tokens == LengthStats.from_lengths([7, 11, 8, 16, 11])
    assert stats.tokenizer == "chars"


def test_length_stats_follow_numpy_and_survive_empty():
    rng = np.random.default_rng(1)
    a = rng.integers(1, 60, size=301)
    got = LengthStats.from_lengths(a)
    assert got.mean == pytest.approx(a.mean())
    assert got.median == np.median(a)
    assert got.p95 == pytest.approx(np.percentile(a, 95))
    assert got.max == a.max()
    assert LengthStats.from_lengths([]) == LengthStats(0.0, 0.0, 0.0, 0)


def test_word_lengths_split_on_any_whitespace():
    assert word_lengths(["a  b\tc\nd", "", "  x "]).tolist() == [4, 0, 1]


def test_cooccurrence_counts_row_and_jaccard():
    y = tiny_split().labels
    counts = cooccurrence(y)
    assert counts.tolist() == [[2, 1, 0], [1, 2, 1], [0, 1, 3]]
    row = cooccurrence(y, normalize="row")
    assert row[2].tolist() == pytest.approx([0.0, 1 / 3, 1.0])  # P(. | neutral)
    assert row[1].tolist() == pytest.approx([0.5, 1.0, 0.5])
    jac = cooccurrence(y, normalize="jaccard")
    assert jac[1, 2] == pytest.approx(1 / 4)  # anger & neutral: 1 text, either: 4 texts
    assert np.allclose(jac, jac.T)


def test_cooccurrence_of_label_that_never_occurs_is_zero_not_nan():
    y = np.array([[1, 0], [1, 0]], np.uint8)
    assert cooccurrence(y, "row").tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert not np.isnan(cooccurrence(y, "jaccard")).any()


def test_cooccurrence_rejects_bad_input():
    with pytest.raises(ConfigError, match="normalize"):
        cooccurrence(np.zeros((2, 2)), normalize="col")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="2-D"):
        cooccurrence(np.zeros(3))


def test_label_without_texts_has_zero_rates():
    rows = label_stats(np.array([[1, 0]], np.uint8), ["a", "b"])
    assert rows[1].count == 0 and rows[1].cooccurrence_pct == 0.0


def test_splits_are_keyed_by_dict_key_and_must_share_labels():
    split = tiny_split(name="whatever")
    assert compute_stats({"dev": split}).splits["dev"].name == "dev"
    other = Split(["x"], ["1"], np.array([[1, 0]], np.uint8), ["joy", "fear"], "test")
    with pytest.raises(DataError, match="one label set"):
        compute_stats({"train": split, "test": other})
    with pytest.raises(ConfigError):
        compute_stats({})


def test_json_and_csv_views_hold_the_same_numbers():
    stats = compute_stats({"train": tiny_split(), "dev": tiny_split("dev").subset([0, 2])})
    d = json.loads(json.dumps(stats.to_dict()))
    assert d["label_names"] == NAMES
    assert d["splits"]["dev"]["texts"] == 2
    assert d["splits"]["train"]["labels"][1] == {
        "label": "anger",
        "count": 2,
        "pct_texts": 40.0,
        "cooccurrence_pct": 100.0,
    }
    rows = list(csv.DictReader(stats.to_csv().splitlines()))
    assert list(rows[0]) == CSV_FIELDS
    assert [r["level"] for r in rows] == ["split"] * 2 + ["label"] * 6
    neutral_dev = next(r for r in rows if r["split"] == "dev" and r["label"] == "neutral")
    assert (neutral_dev["count"], float(neutral_dev["pct_texts"])) == ("1", 50.0)
    assert rows[0]["words_max"] == "5" and rows[0]["tokens_max"] == ""


def test_label_lookup_names_the_missing_label():
    with pytest.raises(KeyError, match="fear"):
        compute_stats({"train": tiny_split()}).splits["train"].label("fear")


# --------------------------------------------------------------------------- real data


def independent_read(path: Path) -> list[tuple[str, list[int]]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(row[0], [int(x) for x in row[1].split(",")]) for row in csv.reader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def real(shared_data: Path):
    """The three official splits read here, and their statistics with MiniLM token counts (once)."""
    names = [n.strip() for n in (shared_data / "emotions.txt").read_text().splitlines() if n.strip()]
    rows, splits = {}, {}
    for key in ("train", "dev", "test"):
        rows[key] = independent_read(shared_data / f"{key}.tsv")
        y = np.zeros((len(rows[key]), len(names)), np.uint8)
        for i, (_, ids) in enumerate(rows[key]):
            y[i, ids] = 1
        splits[key] = Split([t for t, _ in rows[key]], [str(i) for i in range(len(y))], y, names, key)
    tokenizer = load_default_tokenizer()
    return names, rows, splits, compute_stats(splits, tokenizer), tokenizer


def test_real_split_sizes(real):
    _, _, _, stats, _ = real
    assert {k: s.texts for k, s in stats.splits.items()} == {"train": 43410, "dev": 5426, "test": 5427}


def test_real_label_counts_match_independent_count(real):
    names, rows, _, stats, _ = real
    for key, records in rows.items():
        counts = Counter(i for _, ids in records for i in set(ids))
        multi = Counter(i for _, ids in records if len(set(ids)) > 1 for i in set(ids))
        for j, name in enumerate(names):
            row = stats.splits[key].label(name)
            assert row.count == counts[j], (key, name)
            assert row.cooccurrence_pct == pytest.approx(100 * multi[j] / counts[j]), (key, name)
        n_labels = [len(set(ids)) for _, ids in records]
        assert stats.splits[key].label_cardinality == pytest.approx(np.mean(n_labels))
        assert stats.splits[key].pct_multi_label == pytest.approx(100 * np.mean([n > 1 for n in n_labels]))


def test_real_neutral_cooccurs_in_at_least_9_8_percent_of_its_occurrences(real):
    _, _, _, stats, _ = real
    for key, s in stats.splits.items():
        assert s.label("neutral").cooccurrence_pct >= 9.8, key
    assert stats.splits["train"].label("neutral").count == 14219


def test_real_token_lengths_agree_with_tokenizer_and_exceed_words(real):
    _, _, splits, stats, tokenizer = real
    dev = splits["dev"]
    sample = dev.sample(200, seed=3).texts
    direct = [len(tokenizer.tokenize(t)) for t in sample]
    assert token_lengths(sample, tokenizer, batch_size=64).tolist() == direct
    for s in stats.splits.values():
        assert s.tokens is not None
        assert s.tokens.mean > s.words.mean
        assert s.tokens.median <= s.tokens.p95 <= s.tokens.max
    assert "MiniLM" in (stats.tokenizer or "")


def test_io_reader_gives_the_same_statistics(real, shared_data):
    from goemo.data.io import load_goemotions

    _, _, _, stats, _ = real
    via_io = compute_stats(load_goemotions(shared_data))
    for key, s in via_io.splits.items():
        assert s.labels == stats.splits[key].labels
        assert s.words == stats.splits[key].words


def test_real_row_cooccurrence_is_conditional_probability(real):
    names, rows, splits, _, _ = real
    p = cooccurrence(splits["train"].labels, "row")
    grief, sadness = names.index("grief"), names.index("sadness")
    with_grief = [set(ids) for _, ids in rows["train"] if grief in ids]
    assert p[grief, sadness] == pytest.approx(sum(sadness in ids for ids in with_grief) / len(with_grief))
    assert np.allclose(np.diag(p), 1.0)
