"""Labelling a stream of records chunk by chunk, in input order, with memory bounded by the chunk size.

On an accelerator three stages overlap: a reader thread reads and tokenises the next chunks, the
calling thread runs the model, and a writer thread decides, formats and appends the previous
chunk; the CPU is free while the device computes. On a CPU the model keeps every core busy and
the stages run in turn in one thread: threads beside it only contend for the cores and the GIL
(docs/benchmarks.md, "Bulk labelling"). A long text's pieces (`goemo.predict.pieces`) are scored
in its chunk's length-sorted batches with the short texts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from goemo.core.errors import ConfigError
from goemo.data.records import Record, check_texts
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.pieces import Pieces
from goemo.predict.prediction_writer import Labelling, PieceLabels, PredictionWriter, decide_chunk

log = logging.getLogger(__name__)

# A chunk of a streamed file: large enough that length-sorted batches inside it pad almost as
# little as a sort of the whole file would, small enough that memory stays flat and that a
# resume relabels little (at most one chunk).
DEFAULT_CHUNK = 4096
# Chunks queued between two stages of the pipeline: enough to hide a slow read or write,
# few enough that memory stays a few chunks' worth.
PREFETCH = 2


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _background(items: Iterator[Any], depth: int, name: str) -> Iterator[Any]:
    """Iterate ``items`` in a thread, at most ``depth`` items ahead, raising its exceptions here; closing
    the generator stops the thread at the next item and closes ``items`` (and an open input file)."""
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.1)
                return True
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as e:  # handed to the consumer, which raises it
            put((False, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)  # a reader blocked on stdin is a daemon: left behind


class _BackgroundWriter:
    """Runs ``write(item)`` for each item put, in order, in a thread, at most ``depth`` items behind.

    A failed write skips the rest (the output ends with whole chunks) and is raised at a later put
    or at close.
    """

    def __init__(self, write: Callable[[Any], None], depth: int) -> None:
        self._write = write
        self._depth = depth
        self._failed = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="goemo-predict-write")
        self._pending: deque[Future[None]] = deque()

    def _run(self, item: Any) -> None:
        if self._failed:
            return
        try:
            self._write(item)
        except BaseException:
            self._failed = True
            raise

    def put(self, item: Any) -> None:
        self._pending.append(self._pool.submit(self._run, item))
        while len(self._pending) > self._depth + 1:  # + 1: the write in progress
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait until everything put is written; raise the writer's error, if any."""
        self._pool.shutdown()
        for done in self._pending:
            done.result()

    def abort(self) -> None:
        """Stop after the write in progress (a write is whole chunks: the output stays whole)."""
        self._pool.shutdown(cancel_futures=True)


class _InlineWriter:
    """`_BackgroundWriter`'s interface, writing in the calling thread (on a CPU: no threads beside the model)."""

    def __init__(self, write: Callable[[Any], None]) -> None:
        self.put = write

    def close(self) -> None:
        pass

    abort = close


def _encoded_chunks(
    clf: EmotionClassifier, records: Iterable[Record], size: int
) -> Iterator[tuple[list[Record], Pieces | None]]:
    """Chunks of records with the pieces the model reads (None for a backend that takes texts)."""
    takes_tokens = clf.tokenizer is not None
    for chunk in _chunks(records, size):
        texts = check_texts([r.text for r in chunk])
        yield chunk, (clf.encode_pieces(texts) if takes_tokens and texts else None)


# Per piece: its probabilities, its character spans, and which pieces are each text's.
PieceScores = tuple[np.ndarray, np.ndarray, np.ndarray]
Scored = tuple[list[Record], np.ndarray, PieceScores | None]


def _probabilities(clf: EmotionClassifier, chunk: list[Record], pieces: Pieces | None, spans: bool) -> Scored:
    """The model's probabilities for one chunk (``pieces``: what it reads, or None: texts), and
    with ``spans`` those of every piece."""
    if pieces is None:
        probs = clf.probabilities(clf.predict_logits([r.text for r in chunk]), np.float32)
        whole = np.array([[0, len(r.text)] for r in chunk], dtype=np.int64).reshape(-1, 2)
        return chunk, probs, (probs, whole, np.arange(len(chunk) + 1)) if spans else None
    piece_logits = clf.logits_for_pieces(pieces)
    probs = clf.probabilities(pieces.aggregate(piece_logits), np.float32)
    if not spans:
        return chunk, probs, None
    return chunk, probs, (clf.probabilities(piece_logits, np.float32), pieces.spans, pieces.first)


def predict_records(
    clf: EmotionClassifier,
    records: Iterable[Record],
    writer: PredictionWriter,
    labelling: Labelling | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Any = None,
    prefetch: int = PREFETCH,
    overlap: bool | None = None,
) -> int:
    """Label a stream of records chunk by chunk, writing each chunk in input order; returns the count.

    ``labelling`` decides the labels; the writer knows what else to write. With ``overlap`` (the
    default on an accelerator) the three stages run in threads (the module's docstring), each
    queue holding at most ``prefetch`` chunks: at most ``2 * prefetch + 3`` chunks in memory.

        n = predict_records(clf, read_records("in.txt"), PredictionWriter(sys.stdout, "jsonl", clf.label_names))
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size}: expected an integer >= 1")
    labelling = labelling or Labelling()
    decisions = labelling.decisions
    clf.predict_from_proba(np.zeros((0, clf.num_labels), np.float32), **decisions)  # checks them

    def write(item: Scored) -> None:
        chunk, probs, piece_scores = item
        scores, chosen = decide_chunk(clf, probs, **decisions)
        pieces = None
        if piece_scores is not None:
            piece_probs, spans, first = piece_scores
            p_scores, p_chosen = decide_chunk(clf, piece_probs, **decisions)
            pieces = PieceLabels(spans, first, p_scores, p_chosen)
        writer.write_chunk(chunk, scores, chosen, pieces)
        if progress is not None:
            progress.update(len(chunk))

    if overlap is None:
        overlap = clf.settings["device"] != "cpu"
    chunks = _encoded_chunks(clf, records, chunk_size)
    sink: _BackgroundWriter | _InlineWriter = _InlineWriter(write)
    if overlap:
        chunks = _background(chunks, prefetch, "goemo-predict-read")
        sink = _BackgroundWriter(write, prefetch)
    count = truncated = 0
    try:
        for chunk, pieces in chunks:
            sink.put(_probabilities(clf, chunk, pieces, labelling.spans))
            count += len(chunk)
            truncated += pieces.truncated if pieces is not None else 0
        sink.close()
    except Exception:
        # A bad row (or a model error) midway: what was labelled before it is written, so
        # the output ends with the last whole chunk before the problem, whatever the timing.
        with contextlib.suppress(Exception):
            sink.close()
        raise
    except BaseException:  # Ctrl-C: stop at once, after the write in progress
        sink.abort()
        raise
    finally:
        chunks.close()  # type: ignore[attr-defined]  # a generator: stops the reader thread
    writer.finish()
    clf.report_truncation(truncated, count, "--long-text truncate; pieces")
    return count
