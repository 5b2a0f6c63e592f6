"""Predictions as text: the decisions for a chunk of probabilities, written as JSON Lines or CSV.

One place formats what `goemo predict` writes, for files and stdout alike; the per-record
work is kept small (whole-chunk NumPy decisions, JSON Lines pieced from pre-encoded label
names), since on a cheap model formatting is a large share of a bulk job's time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from goemo.core.errors import ConfigError
from goemo.data.records import Record
from goemo.predict.classifier import EmotionClassifier, ranked_choices

Format = Literal["jsonl", "csv"]


@dataclass(frozen=True)
class Labelling:
    """What a labelling job decides and writes per text: ``top_k``, ``threshold`` and ``taxonomy`` as
    for `EmotionClassifier.predict`; ``all_scores`` every label's probability; ``with_text`` the
    text; ``spans`` (JSON Lines) its pieces and their labels (`EmotionClassifier.predict_spans`).

    >>> Labelling(top_k=3).decisions
    {'top_k': 3, 'threshold': None, 'taxonomy': None}
    """

    top_k: int | None = None
    threshold: float | None = None
    taxonomy: str | None = None
    all_scores: bool = False
    with_text: bool = True
    spans: bool = False

    @property
    def decisions(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "threshold": self.threshold, "taxonomy": self.taxonomy}

    def writer(
        self, stream: IO[str] | Any, fmt: Format, label_names: Sequence[str], *, header: bool = True
    ) -> PredictionWriter:
        """The `PredictionWriter` for this job's output."""
        return PredictionWriter(
            stream, fmt, label_names, self.all_scores, self.with_text, header=header, spans=self.spans
        )


@dataclass(frozen=True)
class PieceLabels:
    """The pieces of a chunk's texts with their decisions: ``spans`` (pieces, 2) characters
    ``[start, end)``, ``first[i]:first[i + 1]`` text ``i``'s pieces, ``scores`` and ``chosen``
    as `decide_chunk` gives them for the pieces' probabilities."""

    spans: np.ndarray
    first: np.ndarray
    scores: np.ndarray
    chosen: Sequence[Sequence[int]]


def output_format(path: str | Path | None) -> Format:
    """The format an output file's name asks for (stdout: JSON Lines)."""
    if path is None:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(f"output {path}: expected a .jsonl or .csv file name")


def decide_chunk(
    clf: EmotionClassifier,
    probs: np.ndarray,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
) -> tuple[np.ndarray, list[list[int]]]:
    """(scores, chosen label indices per text, highest score first): `EmotionClassifier.predict_from_proba`'s
    decisions (`ranked_choices`), unchecked."""
    _, scores, on = clf.decide(probs, threshold=threshold, taxonomy=taxonomy)
    return scores, ranked_choices(scores, on, top_k=top_k, threshold=threshold)


def _csv_lines(rows: Sequence[Sequence[str]]) -> str:
    r"""CSV rows, each ending in ``\n``, that every CSV reader splits as they were written: the ``csv``
    module leaves a bare ``\r`` unquoted, which readers take for a line end, so such a (rare) row is quoted whole.

    >>> _csv_lines([["1", "a\rb"], ["2", "c"]])
    '"1","a\rb"\n2,c\n'
    """
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    text = buf.getvalue()
    if "\r" not in text:
        return text
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if any("\r" in field for field in row) else plain).writerow(row)
    return buf.getvalue()


class PredictionWriter:
    """Writes predictions as JSON Lines or CSV, one record per text, one ``write`` per chunk (so a
    file holds part of a chunk only if the process died inside that call); the CSV header goes out
    with the first chunk (``header=False``: a resumed file has it)."""

    def __init__(
        self,
        stream: IO[str] | Any,
        fmt: Format,
        label_names: Sequence[str],
        all_scores: bool = False,
        with_text: bool = True,
        *,
        header: bool = True,
        spans: bool = False,
    ) -> None:
        if spans and fmt != "jsonl":
            raise ConfigError("spans are written as JSON Lines: use a .jsonl output (or stdout)")
        self.stream = stream
        self.fmt = fmt
        self.label_names = list(label_names)
        self.all_scores = all_scores
        self.with_text = with_text
        self.spans = spans
        self._header_pending = fmt == "csv" and header
        # JSON Lines are built from label names encoded once; the bytes are exactly those of
        # ``json.dumps(record, ensure_ascii=False)`` (tested), at a fraction of its per-record cost.
        self._string = json.JSONEncoder(ensure_ascii=False).encode
        self._label_heads = [f'{{"label": {self._string(n)}, "score": ' for n in self.label_names]
        self._score_keys = [f"{self._string(n)}: " for n in self.label_names]

    def header(self) -> str:
        """The CSV header line (JSON Lines: none)."""
        if self.fmt != "csv":
            return ""
        columns = ["id"] + (["text"] if self.with_text else []) + ["labels", "scores"]
        return _csv_lines([columns + (self.label_names if self.all_scores else [])])

    def format_chunk(
        self,
        records: Sequence[Record],
        scores: np.ndarray,
        chosen: Sequence[Sequence[int]],
        pieces: PieceLabels | None = None,
    ) -> str:
        """The text of a chunk's records; ``scores`` (n, labels), ``chosen`` from `decide_chunk`;
        ``pieces`` their pieces' spans and decisions (needed with ``spans``)."""
        if self.spans and pieces is None:
            raise ValueError("this writer writes spans: format_chunk needs the chunk's pieces")
        names = self.label_names
        if self.fmt == "csv":
            rows = []
            for record, row_scores, idx in zip(records, scores.tolist(), chosen):
                row = [record.id, record.text] if self.with_text else [record.id]
                row.append(",".join([names[j] for j in idx]))
                row.append(",".join([f"{row_scores[j]:.6f}" for j in idx]))
                if self.all_scores:
                    row += [f"{p:.6f}" for p in row_scores]
                rows.append(row)
            return _csv_lines(rows)
        # float32 -> float64 is exact, and so is x * 1e6 then: np.round gives Python's round(x, 6).
        rounded = np.round(scores.astype(np.float64), 6).tolist()
        piece_rows = None
        if self.spans and pieces is not None:
            piece_rows = np.round(pieces.scores.astype(np.float64), 6).tolist()
        if not (np.isfinite(scores).all() and (pieces is None or np.isfinite(pieces.scores).all())):
            # NaN/inf from a broken model: the encoder's own spelling (a finite float's str is its repr)
            rounded = [[self._string(p) for p in row] for row in rounded]
            piece_rows = [[self._string(p) for p in row] for row in piece_rows] if piece_rows is not None else None
        string, heads, keys = self._string, self._label_heads, self._score_keys
        lines = []
        for i, (record, row, idx) in enumerate(zip(records, rounded, chosen)):
            line = '{"id": ' + string(record.id)
            if self.with_text:
                line += ', "text": ' + string(record.text)
            line += ', "labels": [' + ", ".join([f"{heads[j]}{row[j]}}}" for j in idx]) + "]"
            if self.all_scores:
                line += ', "scores": {' + ", ".join([f"{k}{p}" for k, p in zip(keys, row)]) + "}"
            if pieces is not None and piece_rows is not None:
                parts = []
                for j in range(int(pieces.first[i]), int(pieces.first[i + 1])):
                    labels = ", ".join([f"{heads[k]}{piece_rows[j][k]}}}" for k in pieces.chosen[j]])
                    start, end = pieces.spans[j]
                    parts.append(f'{{"start": {int(start)}, "end": {int(end)}, "labels": [{labels}]}}')
                line += ', "pieces": [' + ", ".join(parts) + "]"
            lines.append(line + "}")
        # every line ends in a newline, the last included: else the next chunk's first record would join it
        return "\n".join(lines) + "\n" if lines else ""

    def write_chunk(
        self,
        records: Sequence[Record],
        scores: np.ndarray,
        chosen: Sequence[Sequence[int]],
        pieces: PieceLabels | None = None,
    ) -> None:
        """Format and write one chunk (with the CSV header first, the first time), then flush."""
        text = self.format_chunk(records, scores, chosen, pieces)
        if self._header_pending:
            text = self.header() + text
            self._header_pending = False
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        """End the output: an empty CSV still gets its header."""
        if self._header_pending:
            self.stream.write(self.header())
            self._header_pending = False
            self.stream.flush()
