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
from goemo.predict.classifier import EmotionClassifier

Format = Literal["jsonl", "csv"]


@dataclass(frozen=True)
class Labelling:
    """What a labelling job decides and writes per text, passed whole from the CLI to the writer.

    ``top_k``, ``threshold`` and ``taxonomy`` decide the labels as `EmotionClassifier.predict`
    does; ``all_scores`` adds every label's probability and ``with_text`` the text itself;
    ``spans`` (JSON Lines only) the pieces the model read, each with its characters
    ``[start, end)`` and its own labels, decided the same way (`EmotionClassifier.predict_spans`).

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
    """(scores, chosen label indices per text, highest score first): `EmotionClassifier.predict_from_proba`, vectorised.

    The same decisions and the same order (ties: lower index first); sorting the whole chunk
    at once keeps the per-text Python work to slicing a list.
    """
    _, scores, on = clf.decide(probs, threshold=threshold, taxonomy=taxonomy)
    chosen = on.astype(bool)
    if top_k is not None and threshold is None:
        chosen[:] = True
    # Chosen labels sort first (-score <= 0 < 1), by score, highest first; stable: ties by index.
    order = np.argsort(np.where(chosen, -scores, np.float32(1.0)), axis=1, kind="stable")
    counts = chosen.sum(axis=1)
    if top_k is not None:
        counts = np.minimum(counts, int(top_k))
    width = int(counts.max()) if len(counts) else 0  # most texts carry one or two labels: convert only those
    return scores, [row[:c] for row, c in zip(order[:, :width].tolist(), counts.tolist())]


def _csv_lines(rows: Sequence[Sequence[str]]) -> str:
    r"""CSV rows, each ending in ``\n``, that every CSV reader splits as they were written.

    The ``csv`` module quotes a field holding the line terminator (``\n``) but not a bare
    ``\r``, which readers (the ``csv`` module's own included) take for the end of a line; a
    row holding one is quoted whole. Rare, so looked for once in the chunk's text.

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


def _lines(lines: list[str]) -> str:
    """One record a line, each ending in a newline, the last included.

    A chunk whose last line lacked its newline would join the next chunk's first record
    onto it: two records on one line, and a resume that counts lines would count one.
    """
    return "\n".join(lines) + "\n" if lines else ""


class PredictionWriter:
    """Writes predictions as JSON Lines or CSV, one record per text, one ``write`` per chunk.

    A chunk is formatted into one string and written with one ``write`` call, so a file
    sink never holds part of a chunk's records unless the process died inside that call.
    The CSV header goes out with the first chunk (``header=False``: a resumed file has it).
    """

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
        # JSON Lines are built from pieces encoded once: the label names never change, and the
        # encoder's ``encode`` of one string is a single C call. The bytes are exactly those of
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
        finite = np.isfinite(scores).all() and (pieces is None or np.isfinite(pieces.scores).all())
        if not finite:  # NaN/inf from a broken model: the encoder's own spelling
            return self._format_slowly(records, rounded, chosen, pieces, piece_rows)
        string, heads, keys = self._string, self._label_heads, self._score_keys
        lines = []
        for i, (record, row, idx) in enumerate(zip(records, rounded, chosen)):
            line = '{"id": ' + string(record.id)
            if self.with_text:
                line += ', "text": ' + string(record.text)
            line += ', "labels": [' + ", ".join([f"{heads[j]}{row[j]!r}}}" for j in idx]) + "]"
            if self.all_scores:
                line += ', "scores": {' + ", ".join([f"{k}{p!r}" for k, p in zip(keys, row)]) + "}"
            if pieces is not None and piece_rows is not None:
                parts = []
                for j in range(int(pieces.first[i]), int(pieces.first[i + 1])):
                    labels = ", ".join([f"{heads[k]}{piece_rows[j][k]!r}}}" for k in pieces.chosen[j]])
                    start, end = pieces.spans[j]
                    parts.append(f'{{"start": {int(start)}, "end": {int(end)}, "labels": [{labels}]}}')
                line += ', "pieces": [' + ", ".join(parts) + "]"
            lines.append(line + "}")
        return _lines(lines)

    def _format_slowly(
        self,
        records: Sequence[Record],
        rounded: list[list[float]],
        chosen: Sequence[Sequence[int]],
        pieces: PieceLabels | None = None,
        piece_rows: list[list[float]] | None = None,
    ) -> str:
        """JSON Lines through the encoder, object by object: the reference `format_chunk` equals."""
        names, dumps = self.label_names, json.JSONEncoder(ensure_ascii=False).encode
        lines = []
        for i, (record, row, idx) in enumerate(zip(records, rounded, chosen)):
            obj: dict[str, Any] = {"id": record.id}
            if self.with_text:
                obj["text"] = record.text
            obj["labels"] = [{"label": names[j], "score": row[j]} for j in idx]
            if self.all_scores:
                obj["scores"] = dict(zip(names, row))
            if pieces is not None and piece_rows is not None:
                obj["pieces"] = [
                    {
                        "start": int(pieces.spans[j][0]),
                        "end": int(pieces.spans[j][1]),
                        "labels": [{"label": names[k], "score": piece_rows[j][k]} for k in pieces.chosen[j]],
                    }
                    for j in range(int(pieces.first[i]), int(pieces.first[i + 1]))
                ]
            lines.append(dumps(obj))
        return _lines(lines)

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
