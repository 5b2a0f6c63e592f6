"""Long texts scored piece by piece: sentences, else overlapping token windows, from one tokenisation.

Truncation silently drops the end of a review, an e-mail or a transcript. So a text longer than
``max_length`` tokens is cut into pieces, each scored like a short text (in the same
length-sorted batches), and a label's score is the highest of its pieces' (an emotion said once
is said, however long the text around it). A long text is cut at sentence ends (`sentence_starts`),
and a sentence too long for the model, or a text with none, into 32-token windows overlapping by
half, cut only between words (sizes measured best in docs/benchmarks.md, "Long texts").

Texts are tokenised once, truncated; only those that fill ``max_length`` are tokenised again,
whole, with offsets, which give the sentence of each token and each piece's characters. A
piece's ids are a slice of its text's, between the text's special tokens. A text that fits is
left exactly as truncation gives it (tested).

>>> rule = PieceRule()
>>> rule.window, rule.overlap, rule.sentences
(32, 16, True)
>>> sentence_starts("I loved it. Then it broke!! Why?\\nNo idea")
[0, 12, 28, 33]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from goemo.data.batching import EncodedSplit
from goemo.predict.runner import encode_texts

log = logging.getLogger(__name__)

MODES = ("pieces", "truncate")
AGGREGATE = "max"  # of the pieces' logits, per label
# Characters per token above which a text is taken for long before it is tokenised (English
# averages about 4 per word piece): it is then tokenised once, whole, instead of twice.
LIKELY_LONG = 8
# A sentence ends at . ! ? or … (any run of them, then closing quotes or brackets) before white
# space, or at a line break. Abbreviations ("Mr. Smith") split too: a piece then is shorter than it
# might be, which costs little, since every piece is scored and the max is kept.
_SENTENCE_END = re.compile(r"""[.!?…]+["'”’»)\]]*\s+|\n\s*""")


@dataclass(frozen=True)
class PieceRule:
    """How a long text is cut: at sentence ends (``sentences``), then windows of ``window`` content
    tokens (at most what ``max_length`` leaves) overlapping by ``overlap``; the benchmark's
    back-to-back windows are ``PieceRule(sentences=False, window=10**9, overlap=0)``.
    """

    sentences: bool = True
    window: int = 32
    overlap: int = 16

    def __post_init__(self) -> None:
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError(f"window={self.window}, overlap={self.overlap}: expected 0 <= overlap < window")

    def describe(self, capacity: int | None = None) -> str:
        """In words, for `EmotionClassifier.describe`: ``sentences, else 32-token windows overlapping by 16``."""
        window = self.window if capacity is None else min(self.window, capacity)
        overlap = min(self.overlap, window // 2) if window < self.window else self.overlap
        windows = f"{window}-token windows" + (f" overlapping by {overlap}" if overlap else "")
        return f"sentences, else {windows}" if self.sentences else windows


DEFAULT_RULE = PieceRule()


def sentence_starts(text: str) -> list[int]:
    """Character positions where the sentences of ``text`` start (always 0 first).

    >>> sentence_starts('He said "wow!" and left. Ok')
    [0, 15, 25]
    """
    starts = [0]
    for match in _SENTENCE_END.finditer(text):
        if starts[-1] < match.end() < len(text):
            starts.append(match.end())
    return starts


def windows(begin: int, end: int, size: int, step: int, word_start: np.ndarray) -> list[tuple[int, int]]:
    """Token ranges ``[a, b)`` covering ``[begin, end)``: ``size`` tokens each, starting ``step`` apart,
    with no gap; a cut moves back to the start of the word it would split (unless the word alone
    is longer than ``size``), and a window that this leaves inside the one before it is dropped.

    >>> windows(0, 10, 4, 2, np.ones(10, bool))
    [(0, 4), (2, 6), (4, 8), (6, 10)]
    >>> windows(0, 7, 4, 2, np.array([1, 1, 0, 1, 0, 0, 1], bool))  # words: 0, 1-2, 3-5, 6
    [(0, 3), (3, 7)]
    """
    out: list[tuple[int, int]] = []
    a = begin
    while True:
        b = min(a + size, end)
        if b < end and not word_start[b]:
            cut = b
            while cut > a and not word_start[cut]:
                cut -= 1
            if cut > a:
                b = cut
        if not out or b > out[-1][1]:  # a window inside the one before it adds nothing
            out.append((a, b))
        if b >= end:
            return out
        nxt = a + step
        snapped = nxt
        while snapped > a and not word_start[snapped]:
            snapped -= 1
        if snapped == a:  # no word starts between: the next one after, within this window
            snapped = nxt
            while snapped < b and not word_start[snapped]:
                snapped += 1
        a = min(snapped, b)  # never past the window's end: no gap


def piece_ranges(
    text: str, starts: np.ndarray, word_start: np.ndarray, capacity: int, rule: PieceRule = DEFAULT_RULE
) -> list[tuple[int, int]]:
    """Ranges of content tokens that are the pieces of ``text``, from each token's first character
    (``starts``), whether it begins a word, and the most tokens a piece holds (``capacity``).

    >>> piece_ranges("Ab. Cd", np.array([0, 1, 4]), np.ones(3, bool), capacity=8)
    [(0, 2), (2, 3)]
    """
    n = len(starts)
    size = max(1, min(rule.window, capacity))
    step = size - rule.overlap if size == rule.window else max(1, size - min(rule.overlap, size // 2))
    if rule.sentences:
        sentence_of = np.searchsorted(np.asarray(sentence_starts(text)), starts, side="right")
        cuts = np.flatnonzero(np.diff(sentence_of)) + 1
        bounds = [0, *cuts.tolist(), n]
    else:
        bounds = [0, n]
    out: list[tuple[int, int]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if rule.sentences and b - a <= capacity:
            out.append((a, b))
        else:
            out.extend(windows(a, b, size, step, word_start))
    return out


@dataclass
class Pieces:
    """The pieces of a list of texts, ready for the model: ``encoded`` one row of token ids per piece,
    in text order; ``first[i]:first[i + 1]`` text ``i``'s pieces; ``spans`` their characters
    ``[start, end)``. ``long`` counts the texts over ``max_length`` tokens (in ``truncate`` mode:
    truncated, their one span ending where the model stopped reading).
    """

    encoded: EncodedSplit
    first: np.ndarray  # int64 (n + 1,)
    spans: np.ndarray  # int64 (pieces, 2)
    mode: str
    long: int = 0

    def __len__(self) -> int:
        return len(self.first) - 1

    @property
    def num_pieces(self) -> int:
        return len(self.encoded)

    @property
    def truncated(self) -> int:
        """Texts of which the model read only the first ``max_length`` tokens."""
        return self.long if self.mode == "truncate" else 0

    def aggregate(self, piece_logits: np.ndarray) -> np.ndarray:
        """Per text, each label's highest logit over its pieces (a text of one piece: its own row)."""
        if self.num_pieces == len(self):
            return piece_logits
        return np.maximum.reduceat(piece_logits, self.first[:-1], axis=0)

    def of_text(self, i: int) -> range:
        return range(int(self.first[i]), int(self.first[i + 1]))


def encode_pieces(
    texts: Sequence[str],
    tokenizer: Any,
    max_length: int,
    mode: str = "pieces",
    rule: PieceRule = DEFAULT_RULE,
    encoded: EncodedSplit | None = None,
) -> Pieces:
    """The `Pieces` of ``texts`` for a model that reads ``max_length`` tokens; ``encoded``: their
    truncated token ids when at hand (a split's token cache).

        pieces = encode_pieces(["short", "long " * 300], tokenizer, 64)
        len(pieces), pieces.num_pieces, pieces.long
        # -> (2, 21, 1)
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected {' or '.join(MODES)}")
    n = len(texts)
    fast = bool(getattr(tokenizer, "is_fast", False))
    # Texts of more than LIKELY_LONG characters per token the model reads are almost surely too
    # long: they skip the truncated tokenisation (an empty text holds their place) and are
    # tokenised once, whole, below. Whether they fit is still counted, never guessed.
    skipped = np.zeros(n, dtype=bool)
    if encoded is None:
        if fast and mode == "pieces":
            skipped = np.fromiter((len(t) > LIKELY_LONG * max_length for t in texts), dtype=bool, count=n)
        first = [("" if skip else t) for t, skip in zip(texts, skipped)] if skipped.any() else texts
        encoded = encode_texts(first, tokenizer, max_length)
    whole = np.array([[0, len(t)] for t in texts], dtype=np.int64).reshape(n, 2)
    again = np.flatnonzero((encoded.lengths >= max_length) | skipped)
    if not len(again) or not fast:
        if len(again) and mode == "pieces":
            log.warning("a slow tokenizer has no offset mapping: texts over %d tokens are truncated", max_length)
            mode = "truncate"
        return Pieces(encoded, np.arange(n + 1, dtype=np.int64), whole, mode, int(len(again)))
    batch = tokenizer(
        [texts[i] for i in again.tolist()],
        truncation=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "longer than the model's maximum" warning: that is what this is for
    )
    # Per text whose rows change: its rows of token ids and their character spans.
    replace: dict[int, tuple[list[np.ndarray], list[tuple[int, int]]]] = {}
    long = 0
    for j, i in enumerate(again.tolist()):
        ids = np.asarray(batch["input_ids"][j], dtype=np.int32)
        if len(ids) <= max_length:  # it fits: as truncation gives it
            if skipped[i]:
                replace[i] = ([ids], [(0, len(texts[i]))])
            continue
        long += 1
        spans = np.asarray(batch["offset_mapping"][j], dtype=np.int64).reshape(-1, 2)
        content = np.flatnonzero(np.asarray(batch["special_tokens_mask"][j]) == 0)
        head, tail = ids[: content[0]], ids[content[-1] + 1 :]
        if mode == "truncate":  # never skipped: its truncated row is in `encoded`
            kept = max_length - len(head) - len(tail)
            end = int(spans[content[min(kept, len(content)) - 1], 1]) if kept > 0 else 0
            replace[i] = ([encoded.ids(i)], [(0, end)])
            continue
        words = np.fromiter((-1 if w is None else w for w in batch.word_ids(j)), dtype=np.int64, count=len(ids))
        content_words = words[content]
        word_start = np.ones(len(content), dtype=bool)
        word_start[1:] = content_words[1:] != content_words[:-1]
        capacity = max(1, max_length - len(head) - len(tail))
        ranges = piece_ranges(texts[i], spans[content, 0], word_start, capacity, rule)
        rows = [np.concatenate([head, ids[content[a:b]], tail]) for a, b in ranges]
        replace[i] = (rows, [(int(spans[content[a], 0]), int(spans[content[b - 1], 1])) for a, b in ranges])
    if not replace:
        return Pieces(encoded, np.arange(n + 1, dtype=np.int64), whole, mode, long)
    rows_out: list[np.ndarray] = []
    spans_out: list[np.ndarray] = []
    lengths_out: list[np.ndarray] = []
    counts = np.ones(n, dtype=np.int64)
    text_lengths, start = encoded.lengths, 0
    for i in [*sorted(replace), n]:  # the texts between two replaced ones go over as one block of rows
        rows_out.append(encoded.flat_ids[encoded.offsets[start] : encoded.offsets[i]])
        spans_out.append(whole[start:i])
        lengths_out.append(text_lengths[start:i])
        if i < n:
            rows, piece_spans = replace[i]
            rows_out.extend(rows)
            spans_out.append(np.asarray(piece_spans, dtype=np.int64).reshape(-1, 2))
            lengths_out.append(np.array([len(r) for r in rows], dtype=np.int64))
            counts[i] = len(rows)
            start = i + 1
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths_out))]).astype(np.int64)
    first_piece = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = np.concatenate(rows_out).astype(np.int32, copy=False)
    ids_of_pieces = EncodedSplit(flat, offsets, np.zeros((len(offsets) - 1, 0), np.float32))
    return Pieces(ids_of_pieces, first_piece, np.concatenate(spans_out), mode, long)
