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
  it had started a request). The body has its own deadline, in the app (`goemo.serve.guards`).

`quiet_resource_errors` turns the event loop's "out of file descriptors" errors into one
log line per interval. Nothing here imports uvicorn: the protocol to wrap is passed in.

>>> guard = ConnectionGuard(max_connections=100, header_timeout_s=10)   # doctest: +SKIP
>>> uvicorn.Config(app, http=guard.wrap(H11Protocol))                   # doctest: +SKIP
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
from typing import Any, ClassVar

from goemo.core.errors import ConfigError

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

    def warning(self, msg: str, *args: Any) -> None:
        self._held += 1
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        if self._held > 1:
            msg += f" ({self._held} times since the last such line)"
        self._last, self._held = now, 0
        self.logger.warning(msg, *args)


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


class ConnectionGuard:
    """Shared state of one server's connections: the cap, the head deadline, and counters.

    ``wrap(protocol_class)`` gives the protocol class to hand to uvicorn (``http=``).
    ``open`` is the number of connections admitted and not yet closed; ``refused`` and
    ``head_timeouts`` count since start.
    """

    def __init__(self, max_connections: int, header_timeout_s: float, grace: int = 8) -> None:
        if max_connections < 1 or header_timeout_s <= 0 or grace < 0:
            raise ConfigError(
                f"max_connections={max_connections}, header_timeout_s={header_timeout_s}, grace={grace}: "
                "expected a cap >= 1, a timeout > 0 and a grace >= 0"
            )
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.grace = grace
        self.open = 0
        self.lingering = 0  # refused connections still reading their 503
        self.refused = 0
        self.head_timeouts = 0
        self.refused_log = Throttled(log, 10.0)
        self.timeout_log = Throttled(log, 10.0)

    def wrap(self, inner: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """A protocol class that applies this guard, then hands admitted connections to ``inner``."""
        return type(f"Guarded{inner.__name__}", (_Guarded,), {"guard": self, "inner_class": inner})

    def stats(self) -> dict[str, int | float]:
        return {
            "open": self.open,
            "max_connections": self.max_connections,
            "refused": self.refused,
            "head_timeouts": self.head_timeouts,
        }


class _WatchedTransport(asyncio.Transport):
    """The connection's transport as the inner protocol sees it: writes are reported first."""

    def __init__(self, transport: asyncio.Transport, on_write: Callable[[bytes], None]) -> None:
        super().__init__()
        self._transport = transport
        self._on_write = on_write

    def write(self, data: Any) -> None:
        self._on_write(bytes(data))
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class _Guarded(asyncio.Protocol):
    """One connection: admitted (and passed to the inner protocol) or refused with a 503.

    An admitted connection is in one of three states: ``head`` (a request head is due: the
    deadline runs), ``request`` (the head is in: body and answer are the app's business) and
    ``idle`` (the answer has started; uvicorn's keep-alive timeout covers the wait for the
    next request, whose first byte starts a new head deadline).
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

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self.guard
        if guard.open >= guard.max_connections:
            self._refuse(transport)
            return
        guard.open += 1
        self._inner = self.inner_class(*self._args, **self._kwargs)
        self._inner.connection_made(_WatchedTransport(transport, self._written))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # a refused connection: its request is not read
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
        self._inner.data_received(data)

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
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # ---------------------------------------------------------------- the guard

    def _written(self, data: bytes) -> None:
        """The server answers: the head was read (or refused by the HTTP parser); stop its clock."""
        if data and not data.startswith(b"HTTP/1.1 100 ") and self._state != _IDLE:
            self._state = _IDLE
            self._disarm()

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

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Over the cap: a 503 with Retry-After, read side left open briefly so the client sees it."""
        guard = self.guard
        guard.refused += 1
        guard.refused_log.warning(
            "refused a connection: %d are open, the limit is %d (--max-connections)",
            guard.open,
            guard.max_connections,
        )
        if guard.lingering >= guard.grace:
            transport.abort()  # too many refusals at once: drop, the descriptor is freed now
            return
        guard.lingering += 1
        self._refused = True
        detail = f"server busy: {guard.open} connections are open (limit {guard.max_connections}); retry later"
        transport.write(raw_response(503, "Service Unavailable", detail, [("retry-after", "1")]))
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, transport.close)
