"""Serving shaped for the hardware: continuous batching, the model off the event loop, threads, --workers."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from goemo.core.errors import GoemoError  # noqa: E402
from goemo.core.run_settings import RunSettings  # noqa: E402
from goemo.serve import MicroBatcher, WorkerSpec, bind_socket, default_num_threads, load_for_serving  # noqa: E402
from goemo.serve.app import create_app  # noqa: E402
from goemo.serve.limits import ServeLimits  # noqa: E402
from goemo.serve.workers import run_workers  # noqa: E402

WAIT_S = 20.0  # bound on every wait for the other thread below (never reached when the code is right)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Loading for serving sets torch's (process-wide) threads; later tests get theirs back."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class GatedModel:
    """A fake model that records each call's texts and thread, and holds each call until released."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: list[threading.Thread] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)

    def __call__(self, texts):
        self.calls.append(list(texts))
        self.threads.append(threading.current_thread())
        self.entered.release()
        assert self.gate.acquire(timeout=WAIT_S), "the test never released the model"
        return np.array([[len(t), 0.5] for t in texts], dtype=np.float32)


async def _until(predicate, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


async def _entered(model: GatedModel) -> None:
    """Until the model thread has entered its next call."""
    assert await asyncio.to_thread(model.entered.acquire, True, WAIT_S), "the model was never called"


# ---------------------------------------------------------------- continuous batching


def test_lone_request_runs_at_once_without_the_wait(monkeypatch):
    """With a 10 s window, a request that finds the model idle still runs at once: no wait is even started."""
    waits: list[float] = []

    async def no_linger(queue, seconds):
        waits.append(seconds)
        return None

    batcher = MicroBatcher(lambda t: np.ones((len(t), 2)), max_batch=64, max_wait_ms=10_000)
    monkeypatch.setattr(batcher, "_linger", no_linger)

    async def run():
        first = await batcher.submit(["alone"])
        second = await batcher.submit(["alone again"])  # the model idle again: at once too
        await batcher.stop()
        return first, second

    first, second = asyncio.run(run())
    assert first.shape == second.shape == (1, 2)
    assert waits == []
    assert batcher.stats.idle_starts == 2 and batcher.stats.lingers == 0


def test_requests_queued_during_a_model_call_form_the_next_batch():
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=0)

    async def run():
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await _entered(model)  # "a" runs alone: the model was idle
        rest = [asyncio.ensure_future(batcher.submit([t])) for t in ("b", "c", "d")]
        await _until(lambda: batcher.queued == 3, "three queued requests")
        model.gate.release()
        await _entered(model)
        model.gate.release()
        out = await asyncio.gather(first, *rest)
        await batcher.stop()
        return out

    out = asyncio.run(run())
    assert model.calls == [["a"], ["b", "c", "d"]]
    assert [o[0, 0] for o in out] == [1, 1, 1, 1]
    assert batcher.stats.batches == 2 and batcher.stats.largest_batch == 3


def test_under_load_a_small_batch_waits_for_callers_on_their_way_back():
    """After a batch of 3, a lone newcomer waits (up to max_wait_ms) until as many have come back."""
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=10_000)

    async def run():
        futures = [asyncio.ensure_future(batcher.submit(["x"]))]
        await _entered(model)
        futures += [asyncio.ensure_future(batcher.submit([t])) for t in ("a", "b", "c")]
        await _until(lambda: batcher.queued == 3, "a, b and c queued")
        model.gate.release()  # x done; a, b, c run together
        await _entered(model)
        futures.append(asyncio.ensure_future(batcher.submit(["d"])))
        await _until(lambda: batcher.queued == 1, "d queued")
        model.gate.release()  # a, b, c done; the worker takes d and waits for company
        await _until(lambda: batcher.stats.lingers == 1, "the wait for company")
        futures += [asyncio.ensure_future(batcher.submit([t])) for t in ("e", "f")]
        await _entered(model)  # d, e, f: as many as the last batch, so it did not wait the 10 s out
        model.gate.release()
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(run())
    assert model.calls == [["x"], ["a", "b", "c"], ["d", "e", "f"]]


def test_model_and_tokenizer_run_off_the_event_loop(tiny_model_dir):
    clf = load_for_serving(tiny_model_dir, RunSettings(backend="torch", device="cpu"))
    seen: list[threading.Thread] = []
    encode = clf.encode_pieces

    def recording_encode(texts, *args):
        seen.append(threading.current_thread())
        return encode(texts, *args)

    clf.encode_pieces = recording_encode  # type: ignore[method-assign]
    batcher = MicroBatcher(clf.predict_proba, max_batch=8)

    async def run():
        loop_thread = threading.current_thread()
        probs = await asyncio.gather(*(batcher.submit([f"text {i}"]) for i in range(5)))
        await batcher.stop()
        batcher.close()
        return loop_thread, probs

    loop_thread, probs = asyncio.run(run())
    assert seen and all(t is not loop_thread for t in seen)
    assert all(t.name.startswith("goemo-model") for t in seen)
    assert all(p.shape == (1, clf.num_labels) for p in probs)


# ---------------------------------------------------------------- threads, sockets, health


def test_default_threads_leave_the_event_loop_a_core():
    assert default_num_threads(1, cores=2) == 1
    assert default_num_threads(1, cores=16) == 15
    assert default_num_threads(2, cores=2) == 1
    assert default_num_threads(4, cores=16) == 4
    assert default_num_threads(3, cores=1) == 1


def test_listening_socket_is_tcp_with_nodelay():
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it keep-alive answers wait ~40 ms."""
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


def test_health_says_backend_precision_threads_and_worker(tiny_model_dir):
    clf = load_for_serving(tiny_model_dir, RunSettings(backend="torch", device="cpu", num_threads=1))
    assert clf.batch_size <= 16  # CPU: length-sorted chunks
    with TestClient(create_app(clf, ServeLimits(), workers=3), base_url="http://127.0.0.1") as client:
        health = client.get("/health").json()
    assert (health["backend"], health["precision"], health["device"]) == ("torch", "fp32", "cpu")
    assert health["threads"] == 1 and health["workers"] == 3 and health["pid"] == os.getpid()
    assert {"idle_starts", "lingers"} <= set(health["batching"])


def test_worker_spec_travels_as_json():
    limits = ServeLimits(max_texts=3, allowed_hosts=("example.org",))
    spec = WorkerSpec(model="m", settings={"num_threads": 2}, limits=limits.to_dict(), worker=1, workers=2)
    back = WorkerSpec.from_json(spec.to_json())
    assert back.model == "m" and back.worker == 1 and ServeLimits(**back.limits) == limits


# ---------------------------------------------------------------- the supervisor


SLEEPER = "import os, sys, time; code = int(os.environ['CODE']); time.sleep(120) if code == 0 else sys.exit(code)"


def test_a_worker_that_dies_stops_the_others_and_is_reported():
    sock = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(GoemoError, match="exited with status 3; the other workers were stopped"):
            run_workers([sys.executable, "-c", SLEEPER], [{"CODE": "0"}, {"CODE": "3"}], sock.fileno())
    finally:
        sock.close()


def test_stopping_the_supervisor_stops_every_worker():
    sock, stop = bind_socket("127.0.0.1", 0), threading.Event()
    stop.set()  # as SIGTERM would: the workers are started, then stopped at once
    try:
        run_workers([sys.executable, "-c", SLEEPER], [{"CODE": "0"}, {"CODE": "0"}], sock.fileno(), stop=stop)
    finally:
        sock.close()


@pytest.mark.slow
def test_cli_serve_with_two_workers_answers_from_two_processes(tiny_model_dir: Path):
    cmd = [sys.executable, "-m", "goemo.cli", "serve", "--model", str(tiny_model_dir), "--port", "0"]
    cmd += ["--backend", "torch", "--workers", "2", "--no-access-log"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        port, ready, deadline = None, 0, time.monotonic() + 120
        while ready < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"worker processes on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else port
            ready += bool(re.search(r"worker \d of 2 \(pid \d+\) serving .*torch fp32 on cpu, 1 thread", line))
        assert port and ready == 2, "".join(lines)
        pids = set()
        for _ in range(300):  # fresh connections: the kernel hands each to either worker
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            assert health["workers"] == 2 and health["threads"] == 1
            pids.add(health["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2 and proc.pid not in pids
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["so happy"]}, timeout=10)
        assert r.status_code == 200 and len(r.json()["results"]) == 1
    finally:
        proc.terminate()  # SIGTERM to the parent: every worker shuts down gracefully, exit 0
        rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, "".join(lines) + rest
    assert rest.count("Application shutdown complete") == 2
