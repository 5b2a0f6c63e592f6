"""Load test of `goemo serve` against the server a user would write in ten lines, in one run.

On the same machine, with the same model and texts, one after another:

(a) a plain server: FastAPI and ``transformers.pipeline`` on the model folder (torch fp32,
    one request per forward pass, called inline), uvicorn with one worker;
(b) ``goemo serve`` with its defaults (plus ``--serve-args``);
(c) the predictor alone, without HTTP: `goemo.serve.load_for_serving` (what (b) runs)
    labelling the same texts in batches of 64, the ceiling of (b).

(a) and (b) run as subprocesses on 127.0.0.1 and are driven by the same closed-loop load:
K clients, each on its own keep-alive connection, each sending one text and its next
request as soon as the answer is read, for ``--seconds`` per level of K (1, 8, 32, 128).
The client is a minimal HTTP/1.1 one written on asyncio streams, so that the load generator,
which shares the cores with the server, costs as little CPU as possible and the same for
both servers. Recorded per level: requests/s, texts/s, p50/p95/p99 latency (request sent to
answer read) and errors; per server, its memory (RSS, children included) after warm-up and
at the end. Then the ratios, checked against the targets at 32 clients.

    python benchmarks/serve_load.py --model runs/reproduce/best
    python benchmarks/serve_load.py --model runs/reproduce/best --seconds 3 --json /tmp/load.json  # a smoke run

Bounded: every level stops after ``--seconds`` (and `MAX_REQUESTS_PER_LEVEL` requests),
every request after `REQUEST_TIMEOUT_S`, every server start after ``--start-timeout``.
Exits 1 when a request to goemo serve failed; the plain server's failures (timeouts at high
concurrency) are part of its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common import HOST, REPO, free_port, machine, rss_mb
from goemo.core.run_settings import RunSettings
from goemo.data.io import load_split
from goemo.serve import default_num_threads, load_for_serving

MAX_REQUESTS_PER_LEVEL = 1_000_000  # a hard bound besides the duration
REQUEST_TIMEOUT_S = 60.0
MAX_RESPONSE_BYTES = 10_000_000
FALLBACK_TEXTS = [
    "Thank you so much, this made my day!",
    "I can't believe they cancelled the show. So disappointed.",
    "Wait, what? How does that even work?",
    "I'm so sorry for your loss.",
    "This is the worst service I have ever had.",
    "I'm terrified of the exam tomorrow.",
    "lol that is hilarious",
    "Okay.",
]

# (a): what a user writes in ten lines, in plain transformers: a goemo model folder carries its
# head's code (`modeling_goemo.py`, `auto_map`), so trust_remote_code=True is all it takes
# (a folder saved before goemo wrote that file: re-save it, or train it again).
PLAIN_SERVER = """\
import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

clf = pipeline("text-classification", model=sys.argv[1], top_k=None, function_to_apply="sigmoid",
               trust_remote_code=True)
app = FastAPI()


class Texts(BaseModel):
    texts: list[str]


@app.post("/predict")
async def predict(body: Texts):
    return {"results": clf(body.texts)}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@dataclass
class Level:
    """One server at one concurrency."""

    server: str
    clients: int
    seconds: float = 0.0
    requests: int = 0
    texts: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def tps(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "requests_per_s": self.rps, "texts_per_s": self.tps}


@dataclass
class ServerRun:
    name: str
    command: list[str]
    levels: list[Level] = field(default_factory=list)
    rss_after_warmup_mb: float = float("nan")
    rss_end_mb: float = float("nan")
    health: dict | None = None

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_after_warmup_mb


# ---------------------------------------------------------------- texts, ports, processes


def load_texts(path: Path | None, n: int = 2000) -> list[str]:
    """GoEmotions dev texts (the first ``n``), else a built-in handful."""
    candidates = (
        [path]
        if path
        else [REPO.parent / "shared" / "goemotions" / "dev.tsv", REPO / "data" / "goemotions" / "dev.tsv"]
    )
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return [t for t in load_split(candidate).texts[:n] if t.strip()]
    return FALLBACK_TEXTS


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------- the load generator


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the status and body (Content-Length only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if not 0 <= length <= MAX_RESPONSE_BYTES:
            raise ValueError(f"Content-Length {length}")
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def drive(name: str, port: int, texts: list[str], clients: int, seconds: float) -> Level:
    """``clients`` closed-loop clients for ``seconds``, one text per request."""
    level = Level(server=name, clients=clients)
    latencies: list[float] = []
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    end = time.monotonic() + seconds

    async def client(k: int) -> None:
        conn = Connection(port)
        i = k * 97
        try:
            while time.monotonic() < end and level.requests + level.errors < MAX_REQUESTS_PER_LEVEL:
                body = bodies[i % len(bodies)]
                i += 1
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status, data = await conn.post("/predict", body)
                    ok = status == 200 and len(json.loads(data)["results"]) == 1
                    problem = "" if ok else f"HTTP {status}: {data[:200]!r}"
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as e:
                    problem = f"{type(e).__name__}: {e}"
                    await conn.close()
                if problem:
                    level.errors += 1
                    if len(level.error_samples) < 5:
                        level.error_samples.append(problem)
                else:
                    latencies.append(time.perf_counter() - t0)
                    level.requests += 1
                    level.texts += 1
        finally:
            await conn.close()

    started = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    level.seconds = time.monotonic() - started
    if latencies:
        level.p50_ms, level.p95_ms, level.p99_ms = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99))
    return level


def wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> None:
    """Until ``POST /predict`` answers 200 (the model is loaded), or the server dies, or ``timeout``."""
    deadline = time.monotonic() + timeout
    body = json.dumps({"texts": ["warming up"]}).encode()

    async def probe() -> int:
        conn = Connection(port)
        try:
            async with asyncio.timeout(10):
                return (await conn.post("/predict", body))[0]
        finally:
            await conn.close()

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with status {proc.returncode} before answering")
        try:
            if asyncio.run(probe()) == 200:
                return
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout:.0f} s")


def health(port: int) -> dict | None:
    """``/health`` of goemo serve (None for a server without it)."""
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/health")
        r = conn.getresponse()
        return json.loads(r.read()) if r.status == 200 else None
    except (OSError, ValueError):
        return None


def run_server(run: ServerRun, port: int, texts: list[str], args: argparse.Namespace) -> None:
    print(f"({run.name}) starting: {shlex.join(run.command)}", file=sys.stderr)
    proc = subprocess.Popen(run.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(proc, port, args.start_timeout)
        asyncio.run(drive(run.name, port, texts, 8, args.warmup))  # warm-up: lazy initialisation, allocator pools
        run.rss_after_warmup_mb = rss_mb(proc.pid, children=True)
        for clients in args.clients:
            level = asyncio.run(drive(run.name, port, texts, clients, args.seconds))
            run.levels.append(level)
            print(
                f"({run.name}) {clients:>4} clients: {level.rps:8.1f} req/s  p50 {level.p50_ms:7.1f} ms  "
                f"p99 {level.p99_ms:7.1f} ms  errors {level.errors}",
                file=sys.stderr,
            )
        run.rss_end_mb = rss_mb(proc.pid, children=True)
        run.health = health(port)
    finally:
        stop(proc)
        err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"({run.name}) exited with {proc.returncode}:\n{err[-2000:]}", file=sys.stderr)
    elif args.show_logs:
        print(textwrap.indent(err[-3000:], f"({run.name}) "), file=sys.stderr)


def predictor_alone(model: Path, texts: list[str], seconds: float, batch: int = 64) -> tuple[float, str]:
    """(c): texts/s of the predictor `goemo serve` runs, labelling ``texts`` in batches, no HTTP.

    The ceiling is the predictor's best on this machine in one process: measured with the
    threads one server worker gets by default and with every core, the faster counts (on a
    2-core CPU, `goemo serve` runs 2 workers of 1 thread, and 1 thread per process is not
    what one process alone could do).
    """
    best: tuple[float, str] = (0.0, "")
    for threads in sorted({default_num_threads(1), os.cpu_count() or 1}):
        clf = load_for_serving(model, RunSettings(num_threads=threads))
        clf.predict_proba(texts[:batch])  # warm-up
        done, i, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
            i += batch
            clf.predict_proba(chunk)
            done += batch
        tps = done / (time.perf_counter() - start)
        print(f"(c) the predictor alone, {clf.describe()}: {tps:.1f} texts/s", file=sys.stderr)
        best = max(best, (tps, clf.describe()))
    return best


# ---------------------------------------------------------------- report


def table(runs: list[ServerRun]) -> str:
    head = ["server", "clients", "requests/s", "texts/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for run in runs:
        for lv in run.levels:
            cells = [run.name, str(lv.clients), f"{lv.rps:.1f}", f"{lv.tps:.1f}"]
            cells += [f"{lv.p50_ms:.0f}", f"{lv.p95_ms:.0f}", f"{lv.p99_ms:.0f}", str(lv.errors)]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ratios(plain: ServerRun, goemo: ServerRun, ceiling_tps: float) -> list[dict]:
    out = []
    by_clients = {lv.clients: lv for lv in plain.levels}
    for lv in goemo.levels:
        a = by_clients.get(lv.clients)
        if a is None:
            continue
        out.append(
            {
                "clients": lv.clients,
                "requests_per_s_b_over_a": lv.rps / a.rps if a.rps else float("inf"),
                "p99_b_over_a": lv.p99_ms / a.p99_ms if a.p99_ms else float("nan"),
                "texts_per_s_b_over_c": lv.tps / ceiling_tps if ceiling_tps else float("nan"),
            }
        )
    return out


def targets(ratio_rows: list[dict], runs: list[ServerRun], at: int = 32) -> list[tuple[str, bool]]:
    row = next((r for r in ratio_rows if r["clients"] == at), None)
    if row is None:
        return []
    goemo = runs[1]
    b_errors = sum(lv.errors for lv in goemo.levels)
    return [
        (
            f"(b) >= 4x the requests/s of (a) at {at} clients: {row['requests_per_s_b_over_a']:.2f}x",
            row["requests_per_s_b_over_a"] >= 4,
        ),
        (f"(b) p99 <= 1/3 of (a)'s at {at} clients: {row['p99_b_over_a']:.2f}", row["p99_b_over_a"] <= 1 / 3),
        (f"(b) >= 60% of (c) at {at} clients: {row['texts_per_s_b_over_c']:.0%}", row["texts_per_s_b_over_c"] >= 0.6),
        (f"(b) no errors: {b_errors}", b_errors == 0),
        (f"(b) RSS growth after warm-up < 50 MB: {goemo.rss_growth_mb:+.1f} MB", goemo.rss_growth_mb < 50),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", type=Path, required=True, help="A trained model folder (PyTorch weights), e.g. runs/reproduce/best."
    )
    p.add_argument("--texts", type=Path, help="A GoEmotions-style .tsv of texts (default: the dev split).")
    p.add_argument("--seconds", type=float, default=20.0, help="Seconds of load per level (default 20).")
    p.add_argument("--warmup", type=float, default=3.0, help="Seconds of warm-up load per server, not counted.")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128], help="Concurrency levels.")
    p.add_argument("--serve-args", default="", help="Extra options for goemo serve, e.g. '--workers 2'.")
    p.add_argument("--ceiling-seconds", type=float, default=None, help="Seconds for (c) (default: --seconds).")
    p.add_argument(
        "--start-timeout",
        type=float,
        default=600.0,
        help="Seconds a server may take to answer first (the first goemo serve of a folder makes its CPU export).",
    )
    p.add_argument("--only", choices=["a", "b"], help="Run only one server (and (c)); no ratios.")
    p.add_argument("--show-logs", action="store_true", help="Print the end of each server's log.")
    p.add_argument("--json", type=Path, help="Also write every figure here.")
    args = p.parse_args(argv)
    if not all(1 <= c <= 1024 for c in args.clients) or not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 600:
        p.error("--clients must be in 1..1024, --seconds in (0, 600], --warmup in [0, 600]")
    if not (args.model / "config.json").is_file():
        p.error(f"{args.model}: not a model folder (no config.json)")

    texts = load_texts(args.texts)
    load_before = os.getloadavg()[0]
    runs: list[ServerRun] = []
    with tempfile.TemporaryDirectory(prefix="goemo-serve-load-") as tmp:
        plain_script = Path(tmp) / "plain_server.py"
        plain_script.write_text(PLAIN_SERVER)
        port_a, port_b = free_port(), free_port()
        servers = [
            (
                "a",
                ServerRun("(a) FastAPI + pipeline", [sys.executable, str(plain_script), str(args.model), str(port_a)]),
                port_a,
            ),
            (
                "b",
                ServerRun(
                    "(b) goemo serve",
                    [
                        sys.executable,
                        "-m",
                        "goemo.cli",
                        "serve",
                        "--model",
                        str(args.model),
                        "--port",
                        str(port_b),
                        "--no-access-log",
                    ]
                    + shlex.split(args.serve_args),
                ),
                port_b,
            ),
        ]
        for key, run, port in servers:
            if args.only and key != args.only:
                continue
            run_server(run, port, texts, args)
            runs.append(run)
    print("(c) the predictor alone ...", file=sys.stderr)
    ceiling_tps, ceiling_desc = predictor_alone(args.model, texts, args.ceiling_seconds or args.seconds)

    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    goemo_health = next((r.health for r in runs if r.health), None) or {}
    print(
        f"\nMachine: {machine()}. Date: {when}. 1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after."
    )
    print(f"Model: {args.model}; {len(texts)} texts, one per request; {args.seconds:g} s per level.")
    if goemo_health:
        print(
            f"goemo serve: backend {goemo_health.get('backend')}, precision {goemo_health.get('precision')}, "
            f"model threads {goemo_health.get('threads')}, workers {goemo_health.get('workers', 1)}"
        )
    print()
    print(table(runs))
    print(f"\n(c) the predictor alone ({ceiling_desc}), batches of 64: {ceiling_tps:.1f} texts/s")
    for run in runs:
        print(
            f"{run.name}: RSS {run.rss_after_warmup_mb:.0f} MB after warm-up, {run.rss_end_mb:.0f} MB at the end ({run.rss_growth_mb:+.1f} MB)"
        )
    ratio_rows = ratios(runs[0], runs[1], ceiling_tps) if len(runs) == 2 else []
    if ratio_rows:
        print("\n| clients | requests/s (b)/(a) | p99 (b)/(a) | texts/s (b)/(c) |\n|---:|---:|---:|---:|")
        for r in ratio_rows:
            print(
                f"| {r['clients']} | {r['requests_per_s_b_over_a']:.2f}x | {r['p99_b_over_a']:.2f} | {r['texts_per_s_b_over_c']:.0%} |"
            )
    checks = targets(ratio_rows, runs) if ratio_rows else []
    if checks:
        print()
        for text, ok in checks:
            print(f"{'PASS' if ok else 'MISS'}  {text}")
    errors = [e for r in runs for lv in r.levels for e in lv.error_samples]
    for e in errors[:10]:
        print(f"error: {e}", file=sys.stderr)
    if args.json:
        report = {
            "machine": machine(),
            "date": when,
            "load_average": [load_before, os.getloadavg()[0]],
            "model": str(args.model),
            "seconds_per_level": args.seconds,
            "serve_args": args.serve_args,
            "servers": [
                {
                    "name": r.name,
                    "command": r.command,
                    "levels": [lv.to_dict() for lv in r.levels],
                    "rss_after_warmup_mb": r.rss_after_warmup_mb,
                    "rss_end_mb": r.rss_end_mb,
                    "health": r.health,
                }
                for r in runs
            ],
            "predictor_alone": {"texts_per_s": ceiling_tps, "describe": ceiling_desc},
            "ratios": ratio_rows,
            "targets": [{"check": t, "met": ok} for t, ok in checks],
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"written to {args.json}", file=sys.stderr)
    if any(lv.errors for r in runs if r.name.startswith("(b)") for lv in r.levels):
        print("some requests to goemo serve failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
