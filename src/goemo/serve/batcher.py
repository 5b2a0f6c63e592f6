"""Micro-batching: many small requests, one model call.

Every model call has a fixed cost (tokenizer and framework overhead, thread start-up, on a
GPU a kernel launch), so a server that runs each request alone pays it once per request;
how much batching saves depends on the hardware (docs/benchmarks.md, "Serving"). `MicroBatcher`
puts every request on an asyncio queue; one worker task takes the first request, keeps
taking more until it holds ``max_batch`` texts or ``max_wait_ms`` has passed, runs the model
once in a worker thread (so the event loop keeps accepting connections meanwhile) and hands
each caller its own rows. Under light load a request waits at most ``max_wait_ms``; under
heavy load the queue fills while the model runs, and batches grow by themselves.

It knows nothing about HTTP: it wraps any ``predict_proba(texts) -> (n, L) array``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

PredictFn = Callable[[Sequence[str]], np.ndarray]


class QueueFullError(RuntimeError):
    """More texts are waiting than the batcher accepts; the caller should retry later (HTTP 503)."""


@dataclass
class BatcherStats:
    """Counters since start: how many requests were merged into how many model calls."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    largest_batch: int = 0
    model_seconds: float = 0.0
    errors: int = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class MicroBatcher:
    """Gather concurrent requests into batches of at most ``max_batch`` texts.

    ``max_batch=1`` turns batching off (one model call per request, as a plain server does);
    a single request longer than ``max_batch`` still runs in one call of its own.

    >>> import numpy as np, asyncio
    >>> batcher = MicroBatcher(lambda texts: np.zeros((len(texts), 2), np.float32), max_batch=8)
    >>> asyncio.run(batcher.submit(["I love it", "meh"])).shape
    (2, 2)
    """

    def __init__(
        self,
        predict_proba: PredictFn,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 4096,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.predict_proba = predict_proba
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = 0  # texts queued and not yet taken by the worker
        # One thread: model calls never overlap (torch already uses every core for one call).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="goemo-model")

    # ------------------------------------------------------------------ lifecycle

    def _ensure_started(self) -> asyncio.Queue:
        """Start the worker on the running loop (again, if an earlier loop has gone away).

        Lazy start keeps the batcher usable from test clients that open a fresh event loop
        per request, as well as from a server's lifespan hook.
        """
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._pending = 0
            self._worker = loop.create_task(self._run(self._queue), name="goemo-microbatcher")
        return self._queue

    async def start(self) -> None:
        """Start the worker now (optional: `submit` starts it when needed)."""
        self._ensure_started()

    async def stop(self) -> None:
        """Cancel the worker; requests still queued get `asyncio.CancelledError`."""
        worker, queue = self._worker, self._queue
        self._worker = self._queue = self._loop = None
        if worker is not None and not worker.done():
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        while queue is not None and not queue.empty():
            _, future = queue.get_nowait()
            if not future.done():
                future.cancel()

    def close(self) -> None:
        """Release the model thread (after `stop`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ requests

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities ``(len(texts), L)`` for these texts, computed together with other callers'.

        Raises `QueueFullError` when ``max_queue`` texts are already waiting.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("submit() needs at least one text")
        queue = self._ensure_started()
        if self._pending + len(texts) > self.max_queue:
            raise QueueFullError(
                f"{self._pending} texts are waiting for the model (limit {self.max_queue}); retry later"
            )
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending += len(texts)
        queue.put_nowait((texts, future))
        return await future

    async def _collect(self, queue: asyncio.Queue, carry: tuple | None) -> tuple[list[tuple], tuple | None]:
        """One batch: the first request, then more until ``max_batch`` texts or the wait bound."""
        first = carry if carry is not None else await queue.get()
        batch, size = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(item[0]) > self.max_batch:
                return batch, item  # does not fit: it opens the next batch
            batch.append(item)
            size += len(item[0])
        return batch, None

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        carry = None
        while True:
            batch, carry = await self._collect(queue, carry)
            self._pending -= sum(len(texts) for texts, _ in batch)  # a carried request stays counted
            live = [(texts, fut) for texts, fut in batch if not fut.done()]  # callers that gave up are skipped
            if not live:
                continue
            all_texts = [t for texts, _ in live for t in texts]
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self.predict_proba, all_texts)
                probs = np.asarray(probs)
                if probs.shape[0] != len(all_texts):
                    raise RuntimeError(f"model returned {probs.shape[0]} rows for {len(all_texts)} texts")
            except Exception as e:  # the worker must outlive a failing batch
                log.exception("model call on %d texts failed", len(all_texts))
                self.stats.errors += 1
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            elapsed = time.perf_counter() - started
            s = self.stats
            s.requests += len(live)
            s.texts += len(all_texts)
            s.batches += 1
            s.largest_batch = max(s.largest_batch, len(all_texts))
            s.model_seconds += elapsed
            start = 0
            for texts, fut in live:
                rows = probs[start : start + len(texts)]
                start += len(texts)
                if not fut.done():
                    fut.set_result(rows)
