"""Micro-batching: many small requests, one model call, and no request kept waiting for company.

Every model call has a fixed cost (tokenizer and framework overhead, on a GPU a kernel
launch), so a server that runs each request alone pays it once per request; how much
batching saves depends on the hardware (docs/benchmarks.md, "Serving"). `MicroBatcher` puts
every request on an asyncio queue, and one worker task forms batches continuously:

- when the model is idle, the first request runs at once, with whatever else is already
  queued: a lone request is never delayed by a batch window;
- while the model runs (in one worker thread: tokenising and the forward pass both happen
  there, never on the event loop), new requests queue up; when it is done, the next batch
  is everything that queued meanwhile, up to ``max_batch`` texts (and, when requests say their
  tokens, ``max_batch_tokens`` tokens: a long text scored in many pieces costs what its tokens
  cost, and is not merged with so many others that the call keeps them all waiting). The batch
  window is thus
  the length of the previous model call, and batches grow with the load by themselves;
- under load only (the model has just finished a batch and fewer texts are queued than that
  batch held, i.e. the other callers are likely on their way back), it waits up to
  ``max_wait_ms`` for them, so that a burst is not split into one small batch and one large.

One request never hurts another: a request whose caller has given up (its future cancelled,
as the server does when the client disconnects) is skipped when a batch is formed and stops
counting against ``max_queue`` at once; and when a batched model call raises, each request
of that batch is run again alone, so only the one that fails gets the error. The queue is
bounded (``max_queue`` texts): beyond it `enqueue` raises `QueueFullError` (HTTP 503 with
Retry-After) instead of letting latency grow without limit.

It knows nothing about HTTP: it wraps any ``predict_proba(texts) -> (n, L) array``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from goemo.core.errors import GoemoError

log = logging.getLogger(__name__)

PredictFn = Callable[[Sequence[str]], np.ndarray]


class QueueFullError(RuntimeError):
    """More texts are waiting than the batcher accepts; the caller should retry later (HTTP 503)."""


@dataclass
class BatcherStats:
    """Counters since start: how many requests were merged into how many model calls.

    ``errors`` counts requests that got an error (after isolation, only the guilty ones);
    ``isolated`` counts batched calls that failed and were re-run one request at a time;
    ``abandoned`` counts requests whose caller gave up before the model ran them (skipped,
    never computed); ``idle_starts`` counts batches started by a request that found the model
    idle (run at once, no wait); ``lingers`` counts batches that waited up to ``max_wait_ms``
    for callers on their way back (under load only); ``tokens`` counts the tokens of the texts
    run, as their requests gave them.
    """

    requests: int = 0
    texts: int = 0
    tokens: int = 0
    batches: int = 0
    largest_batch: int = 0
    model_seconds: float = 0.0
    errors: int = 0
    isolated: int = 0
    abandoned: int = 0
    idle_starts: int = 0
    lingers: int = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(eq=False)
class _Job:
    """One request: its texts, the caller's future, and whether it still waits in the queue."""

    texts: list[str]
    future: asyncio.Future
    tokens: int = 0
    queued: bool = field(default=True)


class MicroBatcher:
    """Gather concurrent requests into batches of at most ``max_batch`` texts (continuous batching).

    ``max_wait_ms`` bounds the wait for company under load (module docstring); a request that
    finds the model idle never waits. ``max_batch=1`` turns batching off (one model call per
    request, as a plain server does); a single request longer than ``max_batch`` (or
    ``max_batch_tokens``) still runs in one call of its own.

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
        max_batch_tokens: int | None = None,
    ) -> None:
        for name, value, low in (
            ("max_batch", max_batch, 1),
            ("max_wait_ms", max_wait_ms, 0),
            ("max_queue", max_queue, 1),
            ("max_batch_tokens", 1 if max_batch_tokens is None else max_batch_tokens, 1),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.predict_proba = predict_proba
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = 0  # texts of live requests queued and not yet taken by the worker
        self._last_batch_texts = 0  # texts in the last batch: how many callers may be on their way back
        self._executor: ThreadPoolExecutor | None = None  # made on start, released by `close`

    # ------------------------------------------------------------------ lifecycle

    def _ensure_started(self) -> asyncio.Queue[_Job]:
        """Start the worker on the running loop (again, if an earlier loop has gone away).

        Lazy start keeps the batcher usable from test clients that open a fresh event loop
        per request, as well as from a server's lifespan hook.
        """
        loop = asyncio.get_running_loop()
        if self._executor is None:  # first start, or again after `close` (a server's lifespan may run twice)
            # One thread for tokenising and the forward pass, off the event loop; calls never overlap.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="goemo-model")
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
            job = queue.get_nowait()
            if not job.future.done():
                job.future.cancel()

    def close(self) -> None:
        """Release the model thread (after `stop`); a later `start` or `submit` makes a new one."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        """Texts waiting for the model now (what ``max_queue`` bounds)."""
        return self._pending

    # ------------------------------------------------------------------ requests

    def enqueue(self, texts: Sequence[str], tokens: int = 0) -> asyncio.Future:
        """Queue ``texts`` now and return the future of their probabilities ``(len(texts), L)``.

        ``tokens``: what they cost the model, for ``max_batch_tokens`` (0: not counted).

        Cancel the future to give up: a request not yet taken into a batch is then skipped
        and frees its room in the queue at once. Raises `QueueFullError` when ``max_queue``
        texts are already waiting. Call it from the event loop.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("submit() needs at least one text")
        queue = self._ensure_started()
        if self._pending + len(texts) > self.max_queue:
            raise QueueFullError(
                f"{self._pending} texts are waiting for the model (limit {self.max_queue}); retry later"
            )
        job = _Job(texts, asyncio.get_running_loop().create_future(), tokens)
        job.future.add_done_callback(lambda _: self._given_up(job))
        self._pending += len(texts)
        queue.put_nowait(job)
        return job.future

    async def submit(self, texts: Sequence[str], tokens: int = 0) -> np.ndarray:
        """Probabilities ``(len(texts), L)`` for these texts, computed together with other callers'.

        Raises `QueueFullError` when ``max_queue`` texts are already waiting.
        """
        return await self.enqueue(texts, tokens)

    def _given_up(self, job: _Job) -> None:
        """Done callback: a request cancelled while still queued no longer counts as waiting."""
        if job.queued and job.future.cancelled():
            self._take(job)

    def _take(self, job: _Job) -> bool:
        """``job`` leaves the queue; False when its caller has already given up (counted as abandoned)."""
        if not job.queued:
            return False
        job.queued = False
        self._pending -= len(job.texts)
        if job.future.done():  # cancelled (from `_given_up`, or its done callback not run yet)
            self.stats.abandoned += 1
            return False
        return True

    async def _collect(self, queue: asyncio.Queue[_Job], carry: _Job | None) -> tuple[list[_Job], _Job | None]:
        """One batch: the first live request and everything queued behind it, up to ``max_batch`` texts.

        A request that finds the model idle runs at once; the wait for company
        (`_linger`) happens only right after a batch, when fewer texts are queued than it held.
        """
        first, idle = carry, False
        while first is None:
            if queue.empty():
                idle = True  # nothing queued and the model free: what comes next runs at once
                self.stats.idle_starts += 1
            job = await queue.get()
            first = job if self._take(job) else None
        batch, size, tokens = [first], len(first.texts), first.tokens
        target = min(self.max_batch, self._last_batch_texts)
        deadline: float | None = None
        while size < self.max_batch:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                if idle or size >= target or self.max_wait_s <= 0:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self.max_wait_s
                    self.stats.lingers += 1
                got = await self._linger(queue, deadline - time.monotonic())
                if got is None:
                    break
                item = got
            if not self._take(item):
                continue  # abandoned: skipped, takes no room in the batch
            over_tokens = self.max_batch_tokens is not None and tokens + item.tokens > self.max_batch_tokens
            if size + len(item.texts) > self.max_batch or over_tokens:
                return batch, item  # does not fit: it opens the next batch
            batch.append(item)
            size += len(item.texts)
            tokens += item.tokens
        return batch, None

    @staticmethod
    async def _linger(queue: asyncio.Queue[_Job], seconds: float) -> _Job | None:
        """The next request if one arrives within ``seconds``, else None."""
        if seconds <= 0:
            return None
        try:
            async with asyncio.timeout(seconds):
                return await queue.get()
        except TimeoutError:
            return None

    async def _call(self, texts: list[str]) -> np.ndarray:
        """One model call in the model thread, its output checked for shape."""
        loop = asyncio.get_running_loop()
        probs = np.asarray(await loop.run_in_executor(self._executor, self.predict_proba, texts))
        if probs.ndim != 2 or probs.shape[0] != len(texts):
            raise RuntimeError(f"model returned an array of shape {probs.shape} for {len(texts)} texts")
        return probs

    def _fail(self, job: _Job, error: Exception) -> None:
        """Hand ``error`` to one caller; log a bug (not a `GoemoError`) once, with its traceback."""
        self.stats.errors += 1
        if isinstance(error, GoemoError):
            log.info("request of %d texts refused by the model: %s", len(job.texts), error)
        else:
            log.error("model call on %d texts failed", len(job.texts), exc_info=error)
        if not job.future.done():
            job.future.set_exception(error)

    async def _run(self, queue: asyncio.Queue[_Job]) -> None:
        carry = None
        while True:
            batch, carry = await self._collect(queue, carry)
            live = [job for job in batch if not job.future.done()]  # callers that gave up meanwhile
            self.stats.abandoned += len(batch) - len(live)
            if not live:
                continue
            self._last_batch_texts = sum(len(job.texts) for job in live)
            await self._run_batch(live)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        """One model call for ``jobs``, each caller handed its rows; a failing batch is re-run one request at a time."""
        texts = [t for job in jobs for t in job.texts]
        started = time.perf_counter()
        try:
            probs = await self._call(texts)
        except Exception as e:  # the worker must outlive a failing batch
            if len(jobs) == 1:
                self._fail(jobs[0], e)
            else:
                await self._isolate(jobs, e)
            return
        s = self.stats
        s.requests += len(jobs)
        s.texts += len(texts)
        s.tokens += sum(job.tokens for job in jobs)
        s.batches += 1
        s.largest_batch = max(s.largest_batch, len(texts))
        s.model_seconds += time.perf_counter() - started
        start = 0
        for job in jobs:
            rows = probs[start : start + len(job.texts)]
            start += len(job.texts)
            if not job.future.done():
                job.future.set_result(rows)

    async def _isolate(self, jobs: list[_Job], error: Exception) -> None:
        """A batched call raised: run each request alone, so that only the guilty one fails."""
        self.stats.isolated += 1
        log.info("a batch of %d requests failed (%s: %s); running each alone", len(jobs), type(error).__name__, error)
        for job in jobs:
            if job.future.done():
                self.stats.abandoned += 1
                continue
            await self._run_batch([job])
