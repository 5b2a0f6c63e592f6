"""Long texts cut into pieces: sentence ends, token windows, spans, and the max over pieces."""

from __future__ import annotations

import numpy as np
import pytest

from goemo.data.taxonomy import load_taxonomy
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.pieces import (
    DEFAULT_RULE,
    PieceRule,
    encode_pieces,
    piece_ranges,
    sentence_starts,
    windows,
)

LABELS = list(load_taxonomy("goemotions").labels)


@pytest.fixture(scope="module")
def tokenizer():
    from goemo.models.modeling import load_tokenizer

    return load_tokenizer("minilm")


# ---------------------------------------------------------------- sentences and windows


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("One sentence only", [0]),
        ("First. Second! Third? Fourth… Fifth", [0, 7, 15, 22, 30]),
        ("Wait... really?! Yes", [0, 8, 17]),
        ('She said "stop!" and left. Ok', [0, 17, 27]),  # an end inside quotes, then a space
        ("line one\nline two\n\nline three", [0, 9, 19]),
        ("3.14 is pi. e.g.this stays", [0, 12]),  # a dot not followed by white space is no end
        ("Trailing end. ", [0]),
    ],
)
def test_sentence_starts(text: str, starts: list[int]) -> None:
    assert sentence_starts(text) == starts


@pytest.mark.parametrize(("n", "size", "step"), [(1, 4, 2), (7, 4, 2), (100, 32, 16), (33, 32, 16), (50, 10, 10)])
def test_windows_cover_every_token_without_gaps_and_stay_within_size(n: int, size: int, step: int) -> None:
    rng = np.random.default_rng(n)
    word_start = rng.random(n) < 0.7
    word_start[0] = True
    spans = windows(0, n, size, step, word_start)
    assert spans[0][0] == 0 and spans[-1][1] == n
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert a < c <= b < d  # each starts later, overlaps or touches the one before, and reaches further
    assert all(0 < b - a <= size for a, b in spans)


def test_windows_do_not_split_words_when_they_can_help_it() -> None:
    word_start = np.array([1, 1, 0, 1, 0, 0, 1, 1], bool)  # words: 0 | 1 2 | 3 4 5 | 6 | 7
    spans = windows(0, 8, 4, 2, word_start)
    assert all(b == 8 or word_start[b] for _, b in spans)
    assert all(word_start[a] for a, _ in spans)


def test_piece_ranges_take_sentences_and_window_the_ones_too_long() -> None:
    text = "Hi. " + "word " * 20 + "end. Bye"
    starts = np.array([0, 2] + [4 + 5 * k for k in range(20)] + [104, 107, 109])  # hi . word*20 end . bye
    ranges = piece_ranges(text, starts, np.ones(len(starts), bool), capacity=8, rule=DEFAULT_RULE)
    assert ranges[0] == (0, 2) and ranges[-1] == (24, 25)
    middle = ranges[1:-1]
    assert middle[0][0] == 2 and middle[-1][1] == 24 and all(b - a <= 8 for a, b in middle)
    windows_only = piece_ranges(text, starts, np.ones(len(starts), bool), 8, PieceRule(sentences=False))
    assert windows_only[0] == (0, 8)  # across the sentence end


def test_a_piece_rule_is_checked_and_says_what_it_does() -> None:
    with pytest.raises(ValueError, match="overlap"):
        PieceRule(window=8, overlap=8)
    assert DEFAULT_RULE.describe(62) == "sentences, else 32-token windows overlapping by 16"
    assert DEFAULT_RULE.describe(14) == "sentences, else 14-token windows overlapping by 7"
    assert PieceRule(sentences=False, window=10**9, overlap=0).describe(62) == "62-token windows"


# ---------------------------------------------------------------- token ids and spans


def test_texts_that_fit_are_left_exactly_as_they_are(tokenizer) -> None:
    from goemo.predict.runner import encode_texts

    # "x " * 22: exactly 24 tokens; "y" * 600: many characters (tokenised once, whole), one [UNK] token
    texts = ["short", "a bit longer, but still short!", "", "x " * 22, "y" * 600]
    pieces = encode_pieces(texts, tokenizer, 24)
    plain = encode_texts(texts, tokenizer, 24)
    assert (len(pieces), pieces.num_pieces, pieces.long) == (5, 5, 0)
    np.testing.assert_array_equal(pieces.encoded.flat_ids, plain.flat_ids)
    np.testing.assert_array_equal(pieces.encoded.offsets, plain.offsets)
    assert pieces.spans.tolist() == [[0, len(t)] for t in texts]
    logits = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert pieces.aggregate(logits) is logits


def test_long_texts_become_sentence_pieces_whose_ids_are_the_sentences_own(tokenizer) -> None:
    long = "I loved the first half. Then the plot fell apart and I was furious! Why? " * 3
    texts = ["before", long.strip(), "after"]
    pieces = encode_pieces(texts, tokenizer, 24)
    assert pieces.long == 1 and len(pieces) == 3
    assert list(pieces.of_text(0)) == [0] and list(pieces.of_text(2)) == [pieces.num_pieces - 1]
    for j in pieces.of_text(1):
        start, end = pieces.spans[j]
        sentence = texts[1][start:end]
        assert sentence[-1] in ".!?" and sentence == sentence.strip()
        assert pieces.encoded.ids(j).tolist() == tokenizer(sentence)["input_ids"]  # no re-tokenising needed
        assert len(pieces.encoded.ids(j)) <= 24
    assert len(pieces.of_text(1)) == 9
    # every character of the text that is not space lies in a piece
    covered = np.zeros(len(texts[1]), bool)
    for j in pieces.of_text(1):
        covered[pieces.spans[j][0] : pieces.spans[j][1]] = True
    assert all(covered[k] or texts[1][k].isspace() for k in range(len(texts[1])))


def test_text_without_sentence_ends_is_read_in_overlapping_windows(tokenizer) -> None:
    text = " ".join(f"word{k}" for k in range(60))  # each word: several word pieces
    pieces = encode_pieces([text], tokenizer, 34)  # 32 tokens between [CLS] and [SEP]
    lengths = pieces.encoded.lengths
    assert pieces.num_pieces > 2 and lengths.max() <= 34
    spans = pieces.spans.tolist()
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert a < c < b < d  # windows overlap
        assert text[c - 1] == " "  # and start at a word


def test_truncate_counts_the_long_texts_and_spans_end_where_reading_stopped(tokenizer) -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    pieces = encode_pieces(["fine", text], tokenizer, 8, mode="truncate")
    assert (pieces.num_pieces, pieces.long, pieces.truncated) == (2, 1, 1)
    assert pieces.spans.tolist() == [[0, 4], [0, len("one two three four five six")]]
    assert encode_pieces(["fine", text], tokenizer, 8).truncated == 0


def test_aggregate_takes_each_labels_max_over_a_texts_pieces(tokenizer) -> None:
    pieces = encode_pieces(["a", "One. Two. Three.", "b"], tokenizer, 4)
    assert pieces.first.tolist() == [0, 1, 4, 5]
    logits = np.array([[0, 9], [1, -1], [5, -2], [3, 0], [7, 7]], dtype=np.float32)
    np.testing.assert_array_equal(pieces.aggregate(logits), [[0, 9], [5, 0], [7, 7]])


# ---------------------------------------------------------------- the classifier


class WordBackend:
    """A model that fires ``anger`` exactly when its input holds the token of one word."""

    name, device, precision, takes_tokens, num_threads = "fake", "cpu", "fp32", True, 1

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id
        self.calls: list[np.ndarray] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.calls.append(input_ids)
        out = np.full((len(input_ids), len(LABELS)), -4.0, dtype=np.float32)
        hit = ((input_ids == self.token_id) & (attention_mask == 1)).any(axis=1)
        out[hit, LABELS.index("anger")] = 4.0
        out[:, LABELS.index("neutral")] = 0.1 * attention_mask.sum(axis=1)  # some score for every piece
        return out


def _classifier(
    tokenizer,
    max_length: int = 16,
    long_text: str = "pieces",
    backend: WordBackend | None = None,
    batch_size: int = 128,
) -> EmotionClassifier:
    (furious,) = tokenizer("furious", add_special_tokens=False)["input_ids"]
    thresholds = np.full(len(LABELS), 0.5, np.float32)
    thresholds[LABELS.index("neutral")] = 0.99
    return EmotionClassifier(
        backend or WordBackend(furious),
        tokenizer,
        LABELS,
        thresholds,
        max_length=max_length,
        batch_size=batch_size,
        long_text=long_text,
    )


TEXT = (
    "The delivery came on time and the box looked fine. "
    "Inside, the screen was cracked and I am furious about it. "
    "Support answered the next morning and sent a new one."
)


def test_predict_spans_puts_the_label_on_the_sentence_that_says_it(tokenizer) -> None:
    clf = _classifier(tokenizer)
    (result,) = clf.predict_spans([TEXT])
    assert [x["label"] for x in result["labels"]] == ["anger"]
    pieces = result["pieces"]
    assert len(pieces) == 3
    with_anger = [p for p in pieces if any(x["label"] == "anger" for x in p["labels"])]
    assert len(with_anger) == 1
    (piece,) = with_anger
    assert "furious" in TEXT[piece["start"] : piece["end"]]
    assert all("furious" not in TEXT[p["start"] : p["end"]] and p["labels"] == [] for p in pieces if p is not piece)
    assert TEXT[pieces[0]["start"] : pieces[0]["end"]] == "The delivery came on time and the box looked fine."


def test_without_sentence_ends_the_window_holding_the_word_carries_the_label(tokenizer) -> None:
    words = (
        "the box came on time but the screen was cracked and i am furious it took a week to get a new "
        "one sent out and the courier left it at the wrong door again"
    ).split()
    text = " ".join(words)
    clf = _classifier(tokenizer, max_length=12)
    (result,) = clf.predict_spans([text])
    assert [x["label"] for x in result["labels"]] == ["anger"]
    for piece in result["pieces"]:
        fires = any(x["label"] == "anger" for x in piece["labels"])
        assert fires == ("furious" in text[piece["start"] : piece["end"]])
    assert sum(any(x["label"] == "anger" for x in p["labels"]) for p in result["pieces"]) >= 1


def test_truncation_misses_what_comes_late_and_pieces_do_not(tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    anger = LABELS.index("anger")
    pieces_clf, truncating = _classifier(tokenizer), _classifier(tokenizer, long_text="truncate")
    texts = [TEXT, "I am furious", "all fine here"]
    with caplog.at_level("INFO", logger="goemo.predict.classifier"):
        truncated = truncating.predict_proba(texts)
    assert "1 of 3 texts were longer than 16 tokens and truncated" in caplog.text
    whole = pieces_clf.predict_proba(texts)
    assert whole[0, anger] > 0.9 > 0.1 > truncated[0, anger]
    np.testing.assert_array_equal(whole[1:], truncated[1:])  # texts that fit: the very same scores
    assert pieces_clf.settings["long_text"] == "pieces" and truncating.settings["long_text"] == "truncate"
    assert "pieces (sentences, else 14-token windows overlapping by 7), max of logits" in pieces_clf.long_text_rule
    assert pieces_clf.long_text_counts["long"] == 1 and truncating.long_text_counts["truncated"] == 1


def test_pieces_share_the_length_sorted_batches_of_short_texts(tokenizer) -> None:
    (furious,) = tokenizer("furious", add_special_tokens=False)["input_ids"]
    backend = WordBackend(furious)
    clf = _classifier(tokenizer, backend=backend, batch_size=4)
    texts = ["ok", TEXT, "fine", "I am furious"]
    clf.predict_proba(texts)  # 3 short texts + 3 pieces: 6 rows, in two batches of the sorted lengths
    lengths = sorted(clf.encode_pieces(texts).encoded.lengths.tolist())
    assert [c.shape for c in backend.calls] == [(4, lengths[3]), (2, lengths[5])]
    assert lengths[5] <= 16


def test_count_tokens_counts_whole_texts(tokenizer) -> None:
    clf = _classifier(tokenizer)
    assert clf.count_tokens(["hello", TEXT]) == [3, len(tokenizer(TEXT)["input_ids"])]
