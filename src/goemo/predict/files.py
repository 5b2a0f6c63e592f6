"""Bulk labelling: stream a file of texts through `EmotionClassifier` and write JSON Lines or CSV.

Reads and predicts a chunk of texts at a time, so memory does not grow with the file; the
output file is written atomically (it appears whole, or not at all).
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TextIO

import numpy as np
from tqdm import tqdm

from goemo.core.errors import ConfigError
from goemo.core.fileio import atomic_open, remove_stale_temps
from goemo.data.records import Record, count_lines, read_records
from goemo.predict.classifier import EmotionClassifier

# A chunk of a streamed file: large enough that length sorting has something to sort,
# small enough that memory stays flat whatever the file size.
DEFAULT_CHUNK = 2048


class PredictionWriter:
    """Writes predictions as JSON Lines or CSV, one row per text, in the order given."""

    def __init__(
        self,
        stream: IO[str],
        fmt: Literal["jsonl", "csv"],
        label_names: Sequence[str],
        all_scores: bool = False,
        with_text: bool = True,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.label_names = list(label_names)
        self.all_scores = all_scores
        self.with_text = with_text
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            header = ["id"] + (["text"] if with_text else []) + ["labels", "scores"]
            self._csv.writerow(header + (self.label_names if all_scores else []))

    def write(self, record: Record, labels: list[dict[str, Any]], probs: np.ndarray) -> None:
        if self._csv is not None:
            row = [record.id] + ([record.text] if self.with_text else [])
            row += [",".join(d["label"] for d in labels), ",".join(f"{d['score']:.6f}" for d in labels)]
            if self.all_scores:
                row += [f"{p:.6f}" for p in probs]
            self._csv.writerow(row)
            return
        obj: dict[str, Any] = {"id": record.id}
        if self.with_text:
            obj["text"] = record.text
        obj["labels"] = [{"label": d["label"], "score": round(d["score"], 6)} for d in labels]
        if self.all_scores:
            obj["scores"] = {n: round(float(p), 6) for n, p in zip(self.label_names, probs)}
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")


def output_format(path: str | Path | None) -> Literal["jsonl", "csv"]:
    """The format an output file's name asks for (stdout: JSON Lines)."""
    if path is None:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(f"output {path}: expected a .jsonl or .csv file name")


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_records(
    clf: EmotionClassifier,
    records: Iterable[Record],
    writer: PredictionWriter,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Any = None,
) -> int:
    """Label a stream of records chunk by chunk, writing each result in input order; returns the count.

    >>> n = predict_records(clf, read_records("in.txt"), PredictionWriter(sys.stdout, "jsonl", clf.label_names))  # doctest: +SKIP
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size}: expected an integer >= 1")
    count = 0
    for chunk in _chunks(records, chunk_size):
        probs = clf.predict_proba([r.text for r in chunk])
        labels = clf.predict_from_proba(probs, top_k=top_k, threshold=threshold, taxonomy=taxonomy)
        if taxonomy is not None:  # the written scores are those of the groups
            probs = clf.decide(probs, taxonomy=taxonomy)[1]
        for record, row_labels, row_probs in zip(chunk, labels, probs):
            writer.write(record, row_labels, row_probs)
        count += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    return count


def predict_file(
    clf: EmotionClassifier,
    input_path: str | Path | None,
    output_path: str | Path | None = None,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    all_scores: bool = False,
    with_text: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = True,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Label every text of a file (or stdin) and write JSON Lines or CSV (or to stdout); returns the count.

    Reads and predicts ``chunk_size`` texts at a time, so memory does not grow with the file.
    The output file is written atomically: it appears whole, or not at all. The temporary
    siblings a killed earlier run left (``.OUT.<pid>.<random>.tmp``, whose writer is gone)
    are removed first. A tqdm bar on stderr shows progress for files (disabled when stderr is
    not a terminal).

    >>> predict_file(clf, "comments.csv", "labels.jsonl", text_column="body", id_column="id")  # doctest: +SKIP
    10000
    """
    fmt = output_format(output_path)
    if output_path is not None:
        remove_stale_temps(output_path)  # what a `kill -9` of an earlier run left behind
    names = clf.label_names_for(taxonomy)
    records = read_records(input_path, text_column, id_column, stream=stdin)
    total = count_lines(Path(input_path)) if input_path is not None and Path(input_path).is_file() else None
    bar = tqdm(
        total=total,
        unit="texts",
        desc="predict",
        file=sys.stderr,
        # None: tqdm shows itself only on a terminal, so logs and pipes stay clean.
        disable=True if (not progress or input_path is None) else None,
        dynamic_ncols=True,
    )
    # stdout is written as it comes; a file appears whole at the end, or not at all.
    sink = contextlib.nullcontext(stdout or sys.stdout) if output_path is None else atomic_open(output_path)
    try:
        with sink as f:
            writer = PredictionWriter(f, fmt, names, all_scores, with_text)
            return predict_records(
                clf,
                records,
                writer,
                top_k=top_k,
                threshold=threshold,
                taxonomy=taxonomy,
                chunk_size=chunk_size,
                progress=bar,
            )
    finally:
        bar.close()
