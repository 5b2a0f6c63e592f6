"""Serve a model folder over HTTP: a REST API with micro-batching, and a small web page.

``goemo serve --model runs/x/best`` is `run_server`; `create_app` gives the ASGI app for
any other server or for tests. FastAPI and uvicorn come with the ``serve`` extra
(``pip install 'goemo[serve]'``); importing this package does not need them, only the two
functions do.

>>> from goemo.serve import run_server
>>> run_server("runs/x/best", port=8000, limits=ServeLimits(max_texts=16))  # doctest: +SKIP

Both run uvicorn hardened against slow and abandoned clients (`uvicorn_config`): a cap on
open connections below the open-file limit, deadlines for request heads and bodies, and a
bounded keep-alive and listen backlog, all read from `ServeLimits`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goemo.core.errors import GoemoError
from goemo.predict.classifier import Backend, EmotionClassifier
from goemo.serve.batcher import BatcherStats, MicroBatcher, QueueFullError
from goemo.serve.connections import ConnectionGuard, resolve_connections

if TYPE_CHECKING:
    from goemo.serve.app import ServeLimits

__all__ = [
    "create_app",
    "run_server",
    "background_server",
    "bind_socket",
    "ServeLimits",
    "MicroBatcher",
    "BatcherStats",
    "QueueFullError",
    "ConnectionGuard",
    "uvicorn_config",
]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """`create_app` and `ServeLimits` import FastAPI only when asked for."""
    if name in ("create_app", "ServeLimits"):
        from goemo.serve import app  # noqa: PLC0415  (optional extra: serve, FastAPI)

        return getattr(app, name)
    raise AttributeError(f"module 'goemo.serve' has no attribute {name!r}")


def bind_socket(host: str = "127.0.0.1", port: int = 8000, backlog: int | None = None) -> socket.socket:
    """A listening socket, bound before the model loads so that a busy port fails at once.

    ``port=0`` lets the system pick a free port (read it back with ``sock.getsockname()``).
    ``backlog`` defaults to the one `goemo.serve.connections.resolve_connections` gives.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise GoemoError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(backlog if backlog is not None else resolve_connections().backlog)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app: Any, limits: ServeLimits | None = None, *, log_level: str = "info", access_log: bool = True
) -> Any:
    """The ``uvicorn.Config`` goemo serves with: ``limits``' connection settings applied.

    Uvicorn's own settings give the keep-alive timeout, the listen backlog and
    ``limit_concurrency``; its HTTP protocol is wrapped in a `ConnectionGuard` for the cap on
    open connections and the deadline on request heads (the body's deadline is the app's
    `goemo.serve.app.BodyReadTimeout`). The guard is also put on ``app.state.connections``,
    so that ``/health`` shows its counters.

    >>> config = uvicorn_config(create_app(clf), ServeLimits(max_connections=500))   # doctest: +SKIP
    >>> uvicorn.Server(config).run(sockets=[bind_socket("127.0.0.1", 8000, config.backlog)])  # doctest: +SKIP
    """
    import uvicorn  # noqa: PLC0415  (optional extra: serve)
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: PLC0415  (optional extra: serve)

    from goemo.serve.app import ServeLimits  # noqa: PLC0415  (optional extra: serve, FastAPI)

    limits = limits or ServeLimits()
    budget = resolve_connections(limits.max_connections, limits.backlog)
    guard = ConnectionGuard(budget.max_connections, limits.header_timeout_s, budget.grace)
    state = getattr(app, "state", None)
    if state is not None:
        state.connections = guard
    return uvicorn.Config(
        app,
        http=guard.wrap(AutoHTTPProtocol),
        ws="none",
        log_level=log_level,
        access_log=access_log,
        log_config=None,
        limit_concurrency=limits.limit_concurrency,
        timeout_keep_alive=limits.timeout_keep_alive_s,
        backlog=budget.backlog,
    )


def _limits_of(app: Any) -> ServeLimits | None:
    return getattr(getattr(app, "state", None), "limits", None)


@contextmanager
def background_server(
    app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0, limits: ServeLimits | None = None
) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread for the ``with`` block; yields its base URL.

    For notebooks and tests: the caller keeps its own thread (a browser driver, a load
    generator) while the server answers on loopback. The connection settings are those of
    ``limits`` (default: the app's own, for an app from `create_app`), as `run_server` applies.

    >>> with background_server(create_app(clf)) as url:                     # doctest: +SKIP
    ...     httpx.post(f"{url}/predict", json={"texts": ["yay"]}).json()
    """
    import uvicorn  # noqa: PLC0415  (optional extra: serve)

    limits = limits or _limits_of(app)
    config = uvicorn_config(app, limits, log_level="warning", access_log=False)
    sock = bind_socket(host, port, config.backlog)
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="goemo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise GoemoError(f"the server did not start within {timeout:.0f} s")
            time.sleep(0.02)
        yield f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def default_num_threads() -> int:
    """CPU threads for the model when serving: every core but one (at least 1)."""
    return max(1, (os.cpu_count() or 1) - 1)


def _is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard_bind(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _served_limits(limits: ServeLimits, host: str) -> ServeLimits:
    """``limits`` with the address bound to among the allowed Host names (a specific non-loopback one)."""
    if _is_loopback_bind(host) or _is_wildcard_bind(host) or host in limits.allowed_hosts:
        return limits
    shown = f"[{host}]" if ":" in host else host
    return dataclasses.replace(limits, allowed_hosts=(*limits.allowed_hosts, shown))


def _warn_if_exposed(host: str) -> None:
    """One warning line when the server listens on anything but loopback."""
    if not _is_loopback_bind(host):
        log.warning(
            "listening on %s, reachable from other machines: the API has no authentication; "
            "put a reverse proxy with authentication in front of it (requests must name this "
            "server in their Host header: add names with --allowed-host)",
            f"[{host}]" if ":" in host else host,
        )


@contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """SIGTERM ends the server gracefully and the process with 0, as Ctrl-C does.

    Uvicorn shuts down on SIGTERM and then raises the signal again for whatever handler was
    there before it started; with the default one the process dies with 143 after a clean
    shutdown. A handler that does nothing in its place lets `run_server` return. Only the
    main thread can set signal handlers; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_server(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    backend: Backend = "auto",
    device: str = "auto",
    num_threads: int | None = None,
    limits: ServeLimits | None = None,
    access_log: bool = True,
) -> None:
    """Load ``model`` and serve it until interrupted (Ctrl-C or SIGTERM stop it cleanly, SIGTERM with exit 0).

    Listens on loopback unless ``host`` says otherwise: the API has no authentication, and
    any other address logs a warning. Requests must name the server by a loopback address
    or one of ``limits.allowed_hosts`` in their Host header (a specific ``host`` is added to
    them). ``num_threads`` sets the model's CPU threads; by default all cores but one, which
    is left to the event loop (parsing requests, writing answers). With every core given to
    PyTorch, its OpenMP threads spin-wait against the event loop and a 2-core machine answers
    many times slower (see docs/benchmarks.md, "Serving").
    """
    try:
        import uvicorn  # noqa: PLC0415  (optional extra: serve)
    except ImportError:
        raise GoemoError("serving needs the serve extra (uvicorn is missing): pip install 'goemo[serve]'") from None
    from goemo.serve.app import ServeLimits, create_app  # noqa: PLC0415  (optional extra: serve, FastAPI)

    limits = _served_limits(limits or ServeLimits(), host)
    budget = resolve_connections(limits.max_connections, limits.backlog)  # too many fails before the model loads
    sock = bind_socket(host, port, budget.backlog)
    try:
        if num_threads is None:
            num_threads = default_num_threads()
        classifier = EmotionClassifier.load(model, backend=backend, device=device, num_threads=num_threads)
        app = create_app(classifier, limits, model_threads=num_threads)
        config = uvicorn_config(app, limits, log_level="info", access_log=access_log)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        _warn_if_exposed(bound_host)
        log.info(
            "serving %s (%d labels, %s backend, %d model threads) on http://%s:%d  (web page /, API docs /docs)",
            model,
            len(classifier.label_names),
            getattr(classifier, "backend", backend),
            num_threads,
            shown,
            bound_port,
        )
        with _sigterm_exits_cleanly():
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
