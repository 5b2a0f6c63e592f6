"""Serve a model folder over HTTP: a REST API with micro-batching, and a small web page.

``goemo serve --model runs/x/best`` is `run_server`; `create_app` gives the ASGI app for
any other server or for tests. FastAPI and uvicorn come with the ``serve`` extra
(``pip install 'goemo[serve]'``); importing this package does not need them, only the two
functions do.

>>> from goemo.serve import run_server
>>> run_server("runs/x/best", port=8000, limits=ServeLimits(max_texts=16))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
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
]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """`create_app` and `ServeLimits` import FastAPI only when asked for."""
    if name in ("create_app", "ServeLimits"):
        from goemo.serve import app  # noqa: PLC0415  (optional extra: serve, FastAPI)

        return getattr(app, name)
    raise AttributeError(f"module 'goemo.serve' has no attribute {name!r}")


def bind_socket(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket, bound before the model loads so that a busy port fails at once.

    ``port=0`` lets the system pick a free port (read it back with ``sock.getsockname()``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise GoemoError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread for the ``with`` block; yields its base URL.

    For notebooks and tests: the caller keeps its own thread (a browser driver, a load
    generator) while the server answers on loopback.

    >>> with background_server(create_app(clf)) as url:                     # doctest: +SKIP
    ...     httpx.post(f"{url}/predict", json={"texts": ["yay"]}).json()
    """
    import uvicorn  # noqa: PLC0415  (optional extra: serve)

    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, log_config=None))
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
    """Load ``model`` and serve it until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    Listens on loopback unless ``host`` says otherwise: the API has no authentication.
    ``num_threads`` sets the model's CPU threads; by default all cores but one, which is left
    to the event loop (parsing requests, writing answers). With every core given to PyTorch,
    its OpenMP threads spin-wait against the event loop and a 2-core machine answers many
    times slower (see docs/benchmarks.md, "Serving").
    """
    try:
        import uvicorn  # noqa: PLC0415  (optional extra: serve)
    except ImportError:
        raise GoemoError("serving needs the serve extra (uvicorn is missing): pip install 'goemo[serve]'") from None
    from goemo.serve.app import ServeLimits, create_app  # noqa: PLC0415  (optional extra: serve, FastAPI)

    limits = limits or ServeLimits()
    sock = bind_socket(host, port)
    try:
        if num_threads is None:
            num_threads = default_num_threads()
        classifier = EmotionClassifier.load(model, backend=backend, device=device, num_threads=num_threads)
        app = create_app(classifier, limits, model_name=str(model))
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info(
            "serving %s (%d labels, %s backend, %d model threads) on http://%s:%d  (web page /, API docs /docs)",
            model,
            len(classifier.label_names),
            getattr(classifier, "backend", backend),
            num_threads,
            shown,
            bound_port,
        )
        config = uvicorn.Config(app, log_level="info", access_log=access_log, log_config=None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
