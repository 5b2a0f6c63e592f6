"""Serve a model folder over HTTP: a REST API with micro-batching, and a small web page.

``goemo serve --model runs/x/best`` is `run_server`; `create_app` gives the ASGI app for
any other server or for tests. FastAPI and uvicorn come with the ``serve`` extra
(``pip install 'goemo[serve]'``); importing this package does not need them, only the two
functions do.

    from goemo.serve import run_server
    run_server("runs/x/best", port=8000, limits=ServeLimits(max_texts=16))

Uvicorn runs hardened against slow and abandoned clients (`uvicorn_config`) and drains on
SIGTERM (`serve_app`); the model's threads leave the event loop a core (`default_num_threads`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from goemo.core.errors import GoemoError
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.predict.classifier import EmotionClassifier, choose_backend
from goemo.predict.fastest import cuda_available
from goemo.serve.batcher import BatcherStats, MicroBatcher, QueueFullError
from goemo.serve.connections import ConnectionGuard, resolve_connections, throttle_uvicorn_warnings
from goemo.serve.limits import ServeLimits
from goemo.serve.workers import SPEC_ENV, run_workers, signal_handlers

__all__ = [
    "create_app",
    "run_server",
    "serve_app",
    "background_server",
    "bind_socket",
    "ServeLimits",
    "MicroBatcher",
    "BatcherStats",
    "QueueFullError",
    "ConnectionGuard",
    "uvicorn_config",
    "load_for_serving",
    "default_num_threads",
    "WorkerSpec",
]

log = logging.getLogger(__name__)

CPU_CHUNK = 16  # texts per forward pass on a CPU: a merged batch is length-sorted and cut into chunks this size


def __getattr__(name: str) -> Any:
    """`create_app` imports FastAPI only when asked for."""
    if name == "create_app":
        from goemo.serve import app  # noqa: PLC0415  (optional extra: serve, FastAPI)

        return getattr(app, name)
    raise AttributeError(f"module 'goemo.serve' has no attribute {name!r}")


def bind_socket(host: str = "127.0.0.1", port: int = 8000, backlog: int | None = None) -> socket.socket:
    """A listening socket, bound before the model loads so that a busy port fails at once.

    ``port=0`` lets the system pick a free port (read it back with ``sock.getsockname()``).
    ``backlog`` defaults to the one `goemo.serve.connections.resolve_connections` gives.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer uvicorn writes in two parts (head, body) waits ~40 ms for the
    # client's delayed ACK (Nagle), on every keep-alive request. Set on the listening socket
    # too, which accepted sockets inherit.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    ``limit_concurrency``; the rest is a `ConnectionGuard` around its HTTP protocol, put on
    ``app.state.connections`` too, so that ``/health`` shows its counters.

        config = uvicorn_config(create_app(clf), ServeLimits(max_connections=500))
        DrainingServer(config).run(sockets=[bind_socket("127.0.0.1", 8000, config.backlog)])
    """
    import uvicorn  # noqa: PLC0415  (optional extra: serve)
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: PLC0415  (optional extra: serve)

    limits = limits or ServeLimits()
    budget = resolve_connections(limits.max_connections, limits.backlog)
    guard = ConnectionGuard(budget.max_connections, limits.header_timeout_s, budget.grace, limits.drain_timeout_s)
    throttle_uvicorn_warnings()
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
    ``limits`` (default: the app's own, for an app from `create_app`), as `run_server` applies;
    leaving the block stops the server at once, without `serve_app`'s drain.

        with background_server(create_app(clf)) as url:
            httpx.post(f"{url}/predict", json={"texts": ["yay"]}).json()
    """
    import uvicorn  # noqa: PLC0415  (optional extra: serve)

    limits = limits or _limits_of(app)
    config = uvicorn_config(app, limits, log_level="warning", access_log=False)
    sock = bind_socket(host, port, config.backlog)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="goemo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise GoemoError(f"the server did not start within {timeout:.0f} s")
            time.sleep(0.02)
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def default_num_threads(workers: int = 1, cores: int | None = None) -> int:
    """CPU threads for the model of each worker: all cores but one for one worker, an equal share for several.

    With one worker the spare core is the event loop's (parsing requests, writing answers):
    with every core given to the model, its threads spin-wait against the loop and a
    2-core machine answers many times slower (docs/benchmarks.md, "Serving"). With several,
    each worker's loop runs on the cores its model leaves between batches.

    >>> default_num_threads(1, cores=8), default_num_threads(4, cores=8), default_num_threads(1, cores=1)
    (7, 2, 1)
    """
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1) if workers <= 1 else max(1, cores // workers)


MAX_DEFAULT_WORKERS = 4


def default_workers(settings: RunSettings | None = None, cores: int | None = None) -> int:
    """Server processes when ``--workers`` is not given: one per core on a CPU (at most 4), one on a GPU.

    On a CPU, one process with its model on one thread per core shares each core between the
    model and the event loop that parses requests and writes answers; several single-model
    processes keep every core busy with one or the other. Measured on 2 cores
    (docs/benchmarks.md, "Serving"): 2 workers of 1 thread answered 32 clients at 495
    requests/s, 1 worker at 315 (1 thread) or 374 (2 threads). A GPU is shared best by one
    process batching for it.

    >>> cpu, gpu = RunSettings(device="cpu"), RunSettings(device="cuda")
    >>> default_workers(cpu, cores=2), default_workers(cpu, cores=16), default_workers(gpu, cores=16)
    (2, 4, 1)
    """
    device = (settings or RunSettings()).device
    if device.startswith(("cuda", "mps")) or (device == "auto" and cuda_available()):
        return 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores or os.cpu_count() or 1))


def load_for_serving(model: str | Path, settings: RunSettings | None = None) -> EmotionClassifier:
    """The classifier as `run_server` loads it; `benchmarks/serve_load.py` measures the same one alone.

    On a CPU, a merged batch is cut into length-sorted chunks of `CPU_CHUNK` texts: a CPU
    gains little from wide batches, and each chunk is padded only to its own longest text
    (one chunk of 64 pads short comments to the longest of all 64). On a GPU the chunks
    stay as wide as the classifier's default, where width is what pays. ``num_threads``
    defaults to `default_num_threads` for one worker.
    """
    run = settings or RunSettings()
    classifier = EmotionClassifier.load(model, run.replace(num_threads=run.num_threads or default_num_threads()))
    if classifier.device == "cpu" and run.batch_size is None:
        classifier.batch_size = min(classifier.batch_size, CPU_CHUNK)
    return classifier


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What one server process needs besides its socket; travels to ``--workers`` processes as JSON."""

    model: str
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # a RunSettings, as JSON
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    access_log: bool = True
    worker: int = 0  # this process's number, 0-based
    workers: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


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
    return dataclasses.replace(limits, allowed_hosts=(*limits.allowed_hosts, _shown(host)))


def _warn_if_exposed(host: str) -> None:
    """One warning line when the server listens on anything but loopback."""
    if not _is_loopback_bind(host):
        log.warning(
            "listening on %s, reachable from other machines: the API has no authentication; "
            "put a reverse proxy with authentication in front of it (requests must name this "
            "server in their Host header: add names with --allowed-host)",
            _shown(host),
        )


def run_server(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    settings: RunSettings | None = None,
    limits: ServeLimits | None = None,
    access_log: bool = True,
    workers: int | None = None,
) -> None:
    """Load ``model`` and serve it until interrupted (Ctrl-C or SIGTERM stop it cleanly, SIGTERM with exit 0).

    Listens on loopback unless ``host`` says otherwise: the API has no authentication, and
    any other address logs a warning. Requests must name the server by a loopback address
    or one of ``limits.allowed_hosts`` in their Host header (a specific ``host`` is added to
    them). ``settings`` say how the model runs; the default backend, ``fastest``, runs what the
    machine runs fastest (on a CPU the folder's int8 ONNX export, made once:
    `goemo.predict.fastest`). Its ``num_threads`` are the model's CPU threads in each worker
    (default: `default_num_threads`). ``workers`` > 1 runs that many processes on the one socket, each
    loading the model (`goemo.serve.workers`); the default is `default_workers`.
    """
    try:
        import uvicorn  # noqa: F401, PLC0415  (optional extra: serve; checked before the socket is bound)
    except ImportError:
        raise GoemoError("serving needs the serve extra (uvicorn is missing): pip install 'goemo[serve]'") from None
    # a missing or damaged folder is one line here, not one per worker process after the fork
    run = settings or RunSettings()
    choose_backend(ModelFolder.open(model), run.backend or "fastest")
    if workers is None:
        workers = default_workers(run)
    if not 1 <= workers <= 256:
        raise GoemoError(f"workers must be between 1 and 256, got {workers}")
    limits = _served_limits(limits or ServeLimits(), host)
    budget = resolve_connections(limits.max_connections, limits.backlog)  # too many fails before the model loads
    sock = bind_socket(host, port, budget.backlog)
    spec = WorkerSpec(
        model=str(model),
        settings=dataclasses.asdict(run.replace(num_threads=run.num_threads or default_num_threads(workers))),
        limits=limits.to_dict(),
        access_log=access_log,
        workers=workers,
    )
    try:
        bound_host = sock.getsockname()[0]
        _warn_if_exposed(bound_host)
        if workers == 1:
            serve_on(sock, spec)
            return
        log.info("serving %s with %d worker processes on %s", model, workers, _url(sock))
        envs = [{SPEC_ENV: dataclasses.replace(spec, worker=i).to_json()} for i in range(workers)]
        # each worker drains before it exits: give it that long and more before SIGKILL
        stop_timeout_s = max(30.0, limits.drain_timeout_s + 20.0)
        run_workers([sys.executable, "-m", "goemo.serve"], envs, sock.fileno(), stop_timeout_s=stop_timeout_s)
    finally:
        sock.close()


def _shown(host: str) -> str:
    """A host as a URL or Host header names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _url(sock: socket.socket) -> str:
    bound_host, bound_port = sock.getsockname()[:2]
    return f"http://{_shown(bound_host)}:{bound_port}"


def serve_on(sock: socket.socket, spec: WorkerSpec) -> None:
    """One server process: load the model as ``spec`` says and serve on ``sock`` until SIGTERM or Ctrl-C.

    `run_server` calls it for one worker; ``python -m goemo.serve`` (`goemo.serve.__main__`)
    in each of several. The first line it logs names the backend, precision and threads.
    """
    from goemo.serve.app import create_app  # noqa: PLC0415  (optional extra: serve, FastAPI)

    limits = ServeLimits(**spec.limits)
    classifier = load_for_serving(spec.model, RunSettings(**spec.settings))
    app = create_app(classifier, limits, model_threads=classifier.num_threads, workers=spec.workers)
    who = f"worker {spec.worker + 1} of {spec.workers} (pid {os.getpid()}) " if spec.workers > 1 else ""
    log.info(
        "%sserving %s (%d labels): %s; batches up to %d texts; on %s  (web page /, API docs /docs)",
        who,
        spec.model,
        len(classifier.label_names),
        classifier.describe(),
        limits.max_batch,
        _url(sock),
    )
    serve_app(app, sock, limits, access_log=spec.access_log)


def serve_app(
    app: Any,
    sock: socket.socket,
    limits: ServeLimits | None = None,
    *,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve an ASGI app on a listening socket until SIGTERM or Ctrl-C, then drain and return.

    What each process of `run_server` runs once its model is loaded: uvicorn as
    `uvicorn_config` sets it up (``limits`` default to the app's own, for an app from
    `create_app`), stopped by `goemo.serve.server.DrainingServer` (`ConnectionGuard.drain`).

        serve_app(create_app(clf), bind_socket("127.0.0.1", 8000))
    """
    from goemo.serve.server import DrainingServer  # noqa: PLC0415  (optional extra: serve, uvicorn)

    config = uvicorn_config(app, limits or _limits_of(app), log_level=log_level, access_log=access_log)
    # Uvicorn shuts down on SIGTERM, then raises it again for the handler there before it started:
    # with the default one the process would die with 143 after a clean shutdown, so that one does nothing.
    with signal_handlers(lambda signum, frame: None, signal.SIGTERM):
        DrainingServer(config).run(sockets=[sock])
