"""Several server processes on one listening socket: ``goemo serve --workers N``.

One Python process serves with one event loop and one model thread, so on a machine with
many cores it leaves most of them idle. `run_workers` starts ``count`` copies of a worker
command (``python -m goemo.serve``, see `goemo.serve.__main__`), each inheriting the same
listening socket, loading its own model and running its own event loop; the kernel hands
each new connection to whichever worker accepts it first. The settings travel in an
environment variable (JSON), so nothing needs pickling and the worker is a plain process.

The parent only supervises: SIGTERM or Ctrl-C stops every worker gracefully (SIGTERM, then
SIGKILL after ``stop_timeout_s``); a worker that exits on its own (its model failed to load,
or it crashed) stops the others too, and `run_workers` reports it, so that a service manager
restarts the whole server rather than one worker silently missing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from goemo.core.errors import GoemoError

log = logging.getLogger(__name__)

SPEC_ENV = "GOEMO_SERVE_WORKER"  # the worker's settings, JSON (`goemo.serve.WorkerSpec`)
FD_ENV = "GOEMO_SERVE_FD"  # the inherited listening socket's file descriptor
POLL_S = 0.2  # how often the parent looks at its workers
MAX_WORKERS = 256


@contextmanager
def signal_handlers(handler: Callable[[int, Any], None], *signums: signal.Signals) -> Iterator[None]:
    """``handler`` for ``signums`` inside the block, the previous handlers after it.

    Only the main thread can set signal handlers; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signums}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_all(procs: Sequence[subprocess.Popen], timeout_s: float) -> None:
    """SIGTERM every live worker, wait up to ``timeout_s`` in all, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not stop within %.0f s: killed", p.pid, timeout_s)
            p.kill()
            p.wait(10)


def run_workers(
    command: Sequence[str],
    envs: Sequence[Mapping[str, str]],
    fd: int,
    *,
    stop_timeout_s: float = 30.0,
    stop: threading.Event | None = None,
) -> None:
    """Run one ``command`` per environment in ``envs``, all inheriting file descriptor ``fd``, until stopped.

    Returns once every worker has stopped after SIGTERM/SIGINT (or ``stop`` being set);
    raises `GoemoError` when a worker exits on its own, after stopping the others.
    """
    if not 1 <= len(envs) <= MAX_WORKERS:
        raise GoemoError(f"workers must be between 1 and {MAX_WORKERS}, got {len(envs)}")
    stop = stop or threading.Event()
    procs: list[subprocess.Popen] = []
    failed: subprocess.Popen | None = None
    # SIGTERM and SIGINT set ``stop`` instead of killing the parent
    with signal_handlers(lambda signum, frame: stop.set(), signal.SIGTERM, signal.SIGINT):
        try:
            for env in envs:
                procs.append(
                    subprocess.Popen(list(command), env={**os.environ, **env, FD_ENV: str(fd)}, pass_fds=(fd,))
                )
            log.info("started %d workers (pids %s)", len(procs), ", ".join(str(p.pid) for p in procs))
            while not stop.wait(POLL_S):
                failed = next((p for p in procs if p.poll() is not None), None)
                if failed is not None:
                    break
        finally:
            _stop_all(procs, stop_timeout_s)
    if failed is not None:
        raise GoemoError(
            f"worker pid {failed.pid} exited with status {failed.returncode}; the other workers were stopped"
        )
