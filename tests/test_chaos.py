"""Chaos: ``kill -9`` a tiny training run at many seeded random points, resume it each time with the
same command plus ``--resume``, and end with exactly what an uninterrupted run writes.

The kills land inside training steps (offsets drawn from a seeded RNG over the measured length of
one uninterrupted run), inside checkpoint writes (the moment a ``.last.*.tmp`` or ``.best.*.tmp``
folder appears, plus a random few milliseconds) and right after a metrics append (the moment
``metrics.jsonl`` grows). A kill cannot tear a small ``write()`` in half, but a power cut or a full
disk can, so after each of those kills half a record is appended by hand, as such a crash leaves it.

Starting Python, torch and transformers takes longer than training the tiny model, so every run
is forked from one server process that imported them once (`_SERVER`): each fork runs the real
``goemo train`` command line (`goemo.cli.main`), and is killed by its pid.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

PY = sys.executable
SEED = 20240917
KILLS = 24

# Imports what `goemo train` needs, then for each request on stdin forks a child that runs the CLI.
_SERVER = r"""
import json, os, sys, traceback
import torch, transformers  # the slow imports, done once; forked children share them
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification  # noqa: F401
import goemo.training.loop  # noqa: F401
from goemo.cli import main

out = sys.stdout
sys.stdout = sys.stderr
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "run":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
                sys.argv = ["goemo", *req["argv"]]
                try:
                    main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        out.write(json.dumps({"pid": pid}) + "\n")
    else:
        _, status = os.waitpid(req["pid"], 0)
        out.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
    out.flush()
"""


class ForkServer:
    """Runs ``goemo`` command lines as children of one pre-imported process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [PY, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.running: set[int] = set()

    def _ask(self, req: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)

    def start(self, argv: list[str], log: Path) -> int:
        pid = self._ask({"op": "run", "argv": argv, "log": str(log)})["pid"]
        self.running.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        self.running.discard(pid)
        return self._ask({"op": "wait", "pid": pid})["code"]

    def close(self) -> None:
        for pid in self.running:  # a failed test leaves no run behind
            os.kill(pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _argv(shared_data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """2 epochs of 30 steps, a checkpoint every 5 steps, a step record every 3 (and grad norms)."""
    return [
        "train",
        "--data-dir",
        str(shared_data),
        "--model",
        "tiny-random-bert",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--max-train-samples",
        "240",
        "--max-eval-samples",
        "60",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--save-every",
        "5",
        "--log-every",
        "3",
        "--num-threads",
        "1",
        "--ema-decay",
        "0.9",
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
    ]


_TIMING = {"epoch_time_s", "examples_per_s"}
_LEFTOVER = re.compile(r"^\..*\.(tmp|old)$|^\.lock$")


def _records(run: Path) -> list[dict]:
    """metrics.jsonl without the resume events and the timings (which differ from run to run)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in rows if r["event"] != "resume"]


def _assert_same_as_reference(run: Path, ref: Path) -> None:
    for folder, weights in (("best", "model.safetensors"), ("last", "model.safetensors"), ("last", "ema.safetensors")):
        a, b = load_file(str(ref / folder / weights)), load_file(str(run / folder / weights))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (
                f"{run.name}: {folder}/{weights}:{key} differs from the uninterrupted run"
            )
    records = _records(run)
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2], run.name  # each epoch once
    assert records == _records(ref), f"{run.name}: metrics.jsonl differs from the uninterrupted run's"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == json.loads((ref / "summary.json").read_text())["best_epoch"]
    left = [p.relative_to(run) for p in run.rglob("*") if _LEFTOVER.match(p.name)]
    assert not left, f"{run.name}: left behind {left}"


def _wait_for(pid: int, deadline: float, ready) -> bool:
    """Poll ``ready()`` until it holds (True) or the child ``pid`` has exited or time is up (False)."""
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":  # exited, not yet reaped by the server
                    return False
        except FileNotFoundError:
            return False
        if ready():
            return True
        time.sleep(0.002)
    return False


def _temp_appeared(run: Path, name: str):
    pattern = re.compile(rf"^\.{name}\.\d+\.[a-z0-9_]+\.tmp$")
    return lambda: run.is_dir() and any(pattern.match(e.name) for e in os.scandir(run))


def _metrics_grew(run: Path):
    path = run / "metrics.jsonl"
    start = path.stat().st_size if path.is_file() else 0
    return lambda: path.is_file() and path.stat().st_size > start


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_run(tmp_path, shared_data) -> None:
    began = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cache = tmp_path / "cache"
    server = ForkServer(env)
    try:
        ref = tmp_path / "ref"
        t0 = time.monotonic()
        pid = server.start(_argv(shared_data, ref, cache), tmp_path / "ref.log")
        assert server.wait(pid) == 0, (tmp_path / "ref.log").read_text()[-3000:]
        t0 = time.monotonic()  # once more, with the token cache warm, as every later run has it
        pid = server.start(_argv(shared_data, tmp_path / "timed", cache), tmp_path / "timed.log")
        assert server.wait(pid) == 0
        duration = time.monotonic() - t0
        _assert_same_as_reference(tmp_path / "timed", ref)  # uninterrupted runs agree bit for bit

        rng = random.Random(SEED)
        kinds = ["step", "step", "last", "metrics", "step", "best"]
        hits: dict[str, int] = {}
        chains, attempt, kills, torn = 0, 0, 0, 0
        run: Path | None = None
        while kills < KILLS:
            if run is None:
                chains += 1
                run, first = tmp_path / f"chaos{chains}", True
            kind = kinds[(kills + attempt) % len(kinds)]
            argv = _argv(shared_data, run, cache, *(() if first else ("--resume",)))
            log = tmp_path / f"{run.name}.log"
            pid = server.start(argv, log)
            attempt += 1
            deadline = time.monotonic() + 4 * duration + 30
            if kind == "step":
                time.sleep(rng.uniform(0.05, duration))
                alive = _wait_for(pid, deadline, lambda: True)
            elif kind == "metrics":
                time.sleep(rng.uniform(0.0, duration / 2))
                alive = _wait_for(pid, deadline, _metrics_grew(run))
            else:  # inside the write of last/ or best/: once its temporary folder exists
                alive = _wait_for(pid, deadline, _temp_appeared(run, kind))
                time.sleep(rng.uniform(0.0, 0.03))
            if alive:
                os.kill(pid, signal.SIGKILL)
            code = server.wait(pid)
            if code == -signal.SIGKILL:
                kills += 1
                first = False
                if kind in ("last", "best") and _temp_appeared(run, kind)():
                    hits[kind] = hits.get(kind, 0) + 1  # killed with the checkpoint half-written
                if kind == "metrics" and (run / "metrics.jsonl").is_file():
                    with open(run / "metrics.jsonl", "ab") as f:  # a torn append, as a power cut leaves it
                        f.write(b'{"event": "step", "epoch": 1, "global_st')
                    torn += 1
                continue
            assert code == 0, log.read_text()[-3000:]
            _assert_same_as_reference(run, ref)  # it finished before the kill came: a complete chain
            run = None
        if run is not None:
            pid = server.start(_argv(shared_data, run, cache, "--resume"), tmp_path / f"{run.name}.log")
            assert server.wait(pid) == 0, (tmp_path / f"{run.name}.log").read_text()[-3000:]
            _assert_same_as_reference(run, ref)
    finally:
        server.close()
    elapsed = time.monotonic() - began
    print(
        f"chaos: {kills} kills over {chains} chain(s) of resumes, {hits.get('last', 0)} inside a last/ write, "
        f"{hits.get('best', 0)} inside a best/ write, {torn} torn metrics lines; "
        f"one run {duration:.1f}s, all {elapsed:.0f}s"
    )
    assert kills >= 20
    assert hits.get("last", 0) >= 1  # the targeted kills did land inside checkpoint writes
