"""Connections: a cap below the file-descriptor limit, a deadline for request heads, quiet logs.

Uvicorn accepts every connection it is offered and waits as long as a client likes for the
head of a request, so one client holding many half-sent requests can use up the process's
file descriptors: every real request then times out, and each failed ``accept()`` logs a
traceback. `ConnectionGuard` wraps uvicorn's HTTP protocol (uvicorn's ``http=`` setting
takes a protocol class) and adds what it lacks:

- a cap on open connections, below the descriptor limit (`resolve_connections`): a
  connection over it is answered at once with a JSON 503 and ``Retry-After``, then closed;
  past a small grace count of those, further ones are dropped without an answer, so the
  descriptors in use stay bounded whatever the clients do;
- a deadline for the head of every request (``header_timeout_s``): a connection that opens
  and sends nothing, or trickles the request line and headers, is closed (with a 408 when
  it had started a request). The body has its own deadline, in the app (`goemo.serve.guards`);
- a JSON 400 (goemo's ``{"detail": ...}``) for a request the HTTP parser refuses, where
  uvicorn writes plain text;
- a drain (`ConnectionGuard.drain`): when the server is told to stop, every request already
  in, or on its way in, is answered before anything is closed.

`quiet_resource_errors` turns the event loop's "out of file descriptors" errors into one
log line per interval, and `throttle_uvicorn_warnings` does the same for uvicorn's
per-request warnings. Nothing here imports uvicorn: the protocol to wrap is passed in.

    guard = ConnectionGuard(max_connections=100, header_timeout_s=10)
    uvicorn.Config(app, http=guard.wrap(H11Protocol))
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from goemo.core.errors import ConfigError
from goemo.serve.limits import RETRY_AFTER_S

log = logging.getLogger("goemo.serve")

FD_RESERVE = 64  # descriptors kept for the process itself: model and library files, the listening socket, logs
DEFAULT_MAX_CONNECTIONS = 10_000  # the default cap when the descriptor limit is far above it
REFUSE_LINGER_S = 1.0  # how long a refused connection may take to read its 503 before it is closed
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_HEAD, _REQUEST, _IDLE = "head", "request", "idle"


def fd_limit() -> int:
    """This process's soft limit on open file descriptors (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return DEFAULT_MAX_CONNECTIONS * 4 if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True)
class ConnectionBudget:
    """How the process's file descriptors are shared out (`resolve_connections`).

    ``max_connections`` open at once; ``grace`` refused ones that may linger for their 503;
    ``backlog`` for the listen queue, which is also how many connections asyncio accepts in
    one go before any of them can be refused, so up to ``ACCEPT_BURSTS`` times it can be
    open beyond the cap for an instant.
    """

    max_connections: int
    grace: int
    backlog: int
    fd_limit: int


ACCEPT_BURSTS = 4  # accepted connections in flight (accepted, not yet admitted or dropped), in backlogs


def resolve_connections(
    max_connections: int | None = None, backlog: int | None = None, limit: int | None = None
) -> ConnectionBudget:
    """Fit the connection cap, the refusals' grace and the listen backlog under the open-file limit.

    By default the backlog is 1/16 of the limit (16 to 2048), and the cap 7/8 of what is
    left after `FD_RESERVE` and the accept bursts (at most `DEFAULT_MAX_CONNECTIONS`);
    grace takes an eighth of the cap (at least 8). Values that do not fit are refused with
    what would fit.

    >>> resolve_connections(limit=1024)
    ConnectionBudget(max_connections=616, grace=77, backlog=64, fd_limit=1024)
    >>> resolve_connections(100, limit=1024).grace
    13
    """
    limit = fd_limit() if limit is None else limit
    if backlog is None:
        backlog = min(2048, max(16, limit // 16))
    room = limit - FD_RESERVE - ACCEPT_BURSTS * backlog
    cap = min(DEFAULT_MAX_CONNECTIONS, room * 7 // 8) if max_connections is None else max_connections
    grace = max(8, -(-cap // 8))
    if cap < 1 or cap + grace > room:
        fits = room * 8 // 9 if room * 8 // 9 > 64 else max(0, min(64, room - 8))  # cap + its grace <= room
        raise ConfigError(
            f"{cap} connections with a backlog of {backlog} do not fit in this process's limit of "
            f"{limit} open files ({FD_RESERVE} kept for the process, {ACCEPT_BURSTS} x the backlog for "
            f"accepting, an eighth more for refusals): at most {fits} connections fit; lower "
            "--max-connections or --backlog, or raise the limit (ulimit -n)"
        )
    return ConnectionBudget(cap, grace, backlog, limit)


class Throttled:
    """A log line at most once per ``interval_s``; the events held back are counted in the next one.

    >>> warn = Throttled(log, 60.0)
    >>> for _ in range(1000):
    ...     warn.warning("accept failed: %s", "Too many open files")   # one line, not 1000
    """

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last = -float("inf")
        self._held = 0

    def line(self, msg: str) -> str | None:
        """Count one event: ``msg`` as a line written now (with the events it stands for), or None while the interval runs."""
        self._held += 1
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return None
        count, self._last, self._held = self._held, now, 0
        return msg if count == 1 else f"{msg} ({count} times since the last such line)"

    def warning(self, msg: str, *args: Any) -> None:
        line = self.line(msg)
        if line is not None:
            self.logger.warning(line, *args)


# Warnings uvicorn writes once per request or connection, which a client can repeat at will
# (2,000 malformed requests: 2,000 lines); the start of each message.
UVICORN_PER_REQUEST_LINES = (
    "Invalid HTTP request received.",
    "Exceeded concurrency limit.",
    "Unsupported upgrade request.",
    "No supported WebSocket library detected.",
)
LOG_INTERVAL_S = 10.0  # one line per this many seconds for a warning a client can repeat


class ThrottledLines(logging.Filter):
    """A logging filter: each message starting with one of ``prefixes`` passes at most once per ``interval_s``.

    The line that passes says how many it stands for: ``Invalid HTTP request received.
    (57 times since the last such line)``. Other records pass untouched.
    """

    def __init__(self, prefixes: Iterable[str], interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.throttles = {prefix: Throttled(log, interval_s) for prefix in prefixes}

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        throttle = next((t for prefix, t in self.throttles.items() if record.msg.startswith(prefix)), None)
        line = record.msg if throttle is None else throttle.line(record.msg)
        if line is None:
            return False
        record.msg = line
        return True


def throttle_uvicorn_warnings(interval_s: float = LOG_INTERVAL_S) -> None:
    """Uvicorn's per-request warnings (`UVICORN_PER_REQUEST_LINES`) at most once per ``interval_s`` each.

    A filter on uvicorn's ``uvicorn.error`` logger, added once per process.
    """
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ThrottledLines) for f in logger.filters):
        logger.addFilter(ThrottledLines(UVICORN_PER_REQUEST_LINES, interval_s))


def quiet_resource_errors(loop: asyncio.AbstractEventLoop, interval_s: float = 30.0) -> Callable[[], None]:
    """Log the loop's out-of-descriptors errors (``accept()``: EMFILE...) as one line per interval.

    asyncio reports each failed ``accept()`` with a traceback, once a second for as long as
    the process is out of descriptors; other errors go to the handler set before. Returns a
    function that puts that handler back.
    """
    previous = loop.get_exception_handler()
    throttled = Throttled(log, interval_s)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            throttled.warning(
                "cannot accept connections: %s; lower --max-connections or raise the open-file limit (ulimit -n)",
                exc.strerror or exc,
            )
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return lambda: loop.set_exception_handler(previous)


def raw_response(status: int, reason: str, detail: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 response with a JSON ``{"detail": ...}`` body that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers] + ["connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


MALFORMED_DETAIL = "malformed HTTP request: the request line or headers cannot be parsed"
SHUTTING_DOWN_DETAIL = "server is shutting down; retry later"
DRAIN_POLL_S = 0.02  # how often a drain looks at the requests in flight


class ConnectionGuard:
    """Shared state of one server's connections: the cap, the head deadline, the drain, and counters.

    ``wrap(protocol_class)`` gives the protocol class to hand to uvicorn (``http=``).
    ``open`` is the number of connections admitted and not yet closed; ``refused``,
    ``head_timeouts`` and ``malformed`` (requests the HTTP parser refused) count since start.
    ``drain_timeout_s`` bounds `drain`.
    """

    def __init__(
        self, max_connections: int, header_timeout_s: float, grace: int = 8, drain_timeout_s: float = 10.0
    ) -> None:
        if max_connections < 1 or header_timeout_s <= 0 or grace < 0 or drain_timeout_s < 0:
            raise ConfigError(
                f"max_connections={max_connections}, header_timeout_s={header_timeout_s}, grace={grace}, "
                f"drain_timeout_s={drain_timeout_s}: expected a cap >= 1, a timeout > 0, a grace >= 0 and a drain >= 0"
            )
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.grace = grace
        self.drain_timeout_s = drain_timeout_s
        self.open = 0
        self.lingering = 0  # refused connections still reading their 503
        self.refused = 0
        self.head_timeouts = 0
        self.malformed = 0
        self.draining = False
        self.live: set[_Guarded] = set()  # the admitted connections
        self.refused_log = Throttled(log, LOG_INTERVAL_S)
        self.timeout_log = Throttled(log, LOG_INTERVAL_S)
        self.shutdown_log = Throttled(log, LOG_INTERVAL_S)

    def in_flight(self) -> int:
        """Admitted connections with a request on its way in or not yet answered (a fresh connection counts)."""
        return sum(1 for c in self.live if c.in_flight)

    async def drain(self, timeout_s: float | None = None, abandon: Callable[[], bool] = lambda: False) -> int:
        """Answer the requests already in before the server stops; returns how many were left unanswered.

        Called when the server is told to stop (SIGTERM, Ctrl-C), before it closes anything:
        a request being handled is answered as usual, with ``Connection: close``; a
        connection whose request head is still arriving, or that was accepted and has not
        sent yet, is given until its head is in (``header_timeout_s``), then answered the
        same way; an idle kept-alive connection is closed (uvicorn's own shutdown). A
        connection accepted from now on gets a 503 (`SHUTTING_DOWN_DETAIL`, ``Retry-After``)
        rather than a reset, since the listening socket stays open while this waits. Waits
        at most ``timeout_s`` (default ``drain_timeout_s``), or until ``abandon()`` is true.
        """
        timeout_s = self.drain_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.draining = True
        for connection in list(self.live):
            connection.wind_down()
        waiting = self.in_flight()
        if waiting:
            log.info(
                "shutting down: answering %d request%s in flight first (at most %g s); new connections get 503",
                waiting,
                "" if waiting == 1 else "s",
                timeout_s,
            )
        while self.in_flight() and loop.time() < deadline and not abandon():
            await asyncio.sleep(DRAIN_POLL_S)
        left = self.in_flight()
        if left:
            log.warning(
                "shutting down with %d request%s unanswered after %g s", left, "" if left == 1 else "s", timeout_s
            )
        return left

    async def lingered(self, timeout_s: float = REFUSE_LINGER_S + 0.5) -> None:
        """Return once every refused connection has read its 503 (or had its time), at most ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.lingering and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)

    def wrap(self, inner: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """A protocol class that applies this guard, then hands admitted connections to ``inner``."""
        return type(f"Guarded{inner.__name__}", (_Guarded,), {"guard": self, "inner_class": inner})

    def stats(self) -> dict[str, int | float]:
        return {k: getattr(self, k) for k in ("open", "max_connections", "refused", "head_timeouts", "malformed")}


class _WatchedTransport:
    """The connection's transport as the inner protocol sees it: writes are reported first, the rest forwarded."""

    def __init__(self, transport: asyncio.Transport, on_write: Callable[[bytes], bytes]) -> None:
        self._transport = transport
        self._on_write = on_write

    def write(self, data: Any) -> None:
        data = self._on_write(bytes(data))
        if data:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Guarded(asyncio.Protocol):
    """One connection: admitted (and passed to the inner protocol) or refused with a 503.

    An admitted connection is in one of three states: ``head`` (a request head is due: the
    deadline runs), ``request`` (the head is in: body and answer are the app's business) and
    ``idle`` (the answer has started; uvicorn's keep-alive timeout covers the wait for the
    next request, whose first byte starts a new head deadline).

    A request the HTTP parser refuses is answered by uvicorn, inside ``data_received``, with
    a plain-text 400; what it writes there is replaced with goemo's JSON one.
    """

    guard: ClassVar[ConnectionGuard]
    inner_class: ClassVar[type[asyncio.Protocol]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = _HEAD
        self._tail = b""
        self._head_bytes = False
        self._refused = False
        self._parsing = False  # inside the inner protocol's data_received: what it writes is the parser's
        self._replacing = False  # the parser's 400 is being replaced: drop the rest of it
        self._wound_down = False

    @property
    def in_flight(self) -> bool:
        """A request on its way in or not yet answered; a fresh connection counts (its request may be on the way)."""
        return self._state != _IDLE and self._transport is not None and not self._transport.is_closing()

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self.guard
        if guard.draining:
            guard.shutdown_log.warning("answered a new connection 503: the server is shutting down")
            self._refuse(transport, SHUTTING_DOWN_DETAIL)
            return
        if guard.open >= guard.max_connections:
            guard.refused += 1
            guard.refused_log.warning(
                "refused a connection: %d are open, the limit is %d (--max-connections)",
                guard.open,
                guard.max_connections,
            )
            self._refuse(
                transport,
                f"server busy: {guard.open} connections are open (limit {guard.max_connections}); retry later",
            )
            return
        guard.open += 1
        guard.live.add(self)
        self._inner = self.inner_class(*self._args, **self._kwargs)
        self._inner.connection_made(cast(asyncio.Transport, _WatchedTransport(transport, self._written)))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # a refused connection: its request is read and dropped
        if self._state == _IDLE:
            self._state, self._tail, self._head_bytes = _HEAD, b"", False
            self._arm()
        if self._state == _HEAD:
            self._head_bytes = self._head_bytes or bool(data)
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._state = _REQUEST
                self._disarm()
            else:
                self._tail = seen[-3:]
        self._parsing, self._replacing = True, False
        try:
            self._inner.data_received(data)
        finally:
            self._parsing = False
        if self.guard.draining:
            self.wind_down()  # the head came in while the server drains: answer it, then close

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return False  # refused: close now that the client is done
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            self.guard.lingering -= 1
            return
        if self._inner is not None:
            self.guard.open -= 1
            self.guard.live.discard(self)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # ---------------------------------------------------------------- the guard

    def _written(self, data: bytes) -> bytes:
        """The server answers: the head was read (or refused by the HTTP parser); stop its clock.

        Returns what to write instead: the parser's plain-text 400 becomes goemo's JSON one.
        """
        if self._parsing and (self._replacing or data.startswith(b"HTTP/1.1 400 ")):
            if self._replacing:
                return b""
            self._replacing = True
            self.guard.malformed += 1
            data = raw_response(400, "Bad Request", MALFORMED_DETAIL)
        if data and not data.startswith(b"HTTP/1.1 100 ") and self._state != _IDLE:
            self._state = _IDLE
            self._disarm()
        return data

    def wind_down(self) -> None:
        """The server drains: close once the answer is out (uvicorn's ``shutdown``: at once when idle).

        A connection whose request head is still due is left to finish it first.
        """
        if self._state == _HEAD or self._wound_down or self._inner is None:
            return
        self._wound_down = True
        shutdown = getattr(self._inner, "shutdown", None)  # what uvicorn's own shutdown calls on each connection
        if callable(shutdown):
            shutdown()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        transport = self._transport
        if self._state != _HEAD or transport is None or transport.is_closing():
            return
        guard = self.guard
        guard.head_timeouts += 1
        guard.timeout_log.warning(
            "closed a connection whose request head did not arrive within %g s (--header-timeout)",
            guard.header_timeout_s,
        )
        if self._head_bytes:
            detail = f"request head not received within {guard.header_timeout_s:g} s (--header-timeout)"
            transport.write(raw_response(408, "Request Timeout", detail))
        transport.close()

    def _refuse(self, transport: asyncio.Transport, detail: str) -> None:
        """A 503 with Retry-After, read side left open briefly so the client sees it.

        At most the cap and its grace of descriptors are in use: past them, a connection is
        dropped without an answer, its descriptor freed at once.
        """
        guard = self.guard
        if guard.open + guard.lingering >= guard.max_connections + guard.grace:
            transport.abort()
            return
        guard.lingering += 1
        self._refused = True
        transport.write(raw_response(503, "Service Unavailable", detail, [("retry-after", str(RETRY_AFTER_S))]))
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, transport.close)
