"""Soak test of `goemo serve` under hostile load: does one bad client hurt the others?

Starts ``goemo serve`` on 127.0.0.1 with a model folder and drives it from this process.
Normal clients (closed loop, one text per request) run the whole time; the run alternates
quiet windows (normal clients only: the unloaded baseline, measured side by side in the same
run) with hostile windows, in which bounded numbers of hostile clients run beside them:

- oversized bodies (a Content-Length over --max-body-bytes, and a chunked body that passes it): 413
- malformed JSON and wrong shapes: 422 (400 for what the JSON parser cannot read)
- lone surrogates (``{"texts": ["a\\ud800"]}``, valid JSON, not valid Unicode): 422
- a foreign Host header (DNS rebinding): 400
- abandoned clients (they give up after 50 ms): their requests should be dropped uncomputed
- slow clients holding half-sent POSTs: 408 from the body timeout, or closed

It reports requests/s, counts by kind and status, p50/p99 latency of the normal clients in
quiet and hostile windows and their ratio, and the server's RSS growth after the warm-up
(``VmRSS`` of the server and its worker processes, /proc). Targets: no 5xx but 503, no answer outside each kind's
expected ones, no traceback in the server's log, normal p99 within 2x of the quiet windows',
RSS growth under 50 MB. The exit status is 1 when a target is missed.

    python benchmarks/serve_soak.py --model runs/reproduce/best --duration 600
    python benchmarks/serve_soak.py --model runs/x/best --duration 120 --window 15

Loopback only; every loop is bounded in time and count (at most --slow-clients sockets held
at once, hostile requests paced per kind).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import HOST, REPO, free_port, machine, rss_mb

FALLBACK_TEXTS = [
    "Thank you so much, this made my day!",
    "I can't believe they cancelled the show. So disappointed.",
    "Wait, what? How does that even work?",
    "I'm so sorry for your loss.",
    "This is the worst service I have ever had.",
    "lol that is hilarious",
]
MAX_BODY_BYTES = 100_000  # the server's --max-body-bytes here: oversized bodies stay cheap to send
BODY_TIMEOUT_S = 5.0
# Statuses each kind may get ("reset": the server closed the connection; "gave up": the client's own timeout).
EXPECTED = {
    "normal": {"200"},
    "oversized": {"413", "reset"},
    "oversized-chunked": {"413", "reset"},
    "malformed": {"422", "400"},
    "surrogate": {"422"},
    "foreign-host": {"400"},
    "abandoned": {"gave up", "200"},
    "slow": {"408", "reset"},
}
MALFORMED = [
    b'{"texts": ["unfinished',
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'{"texts": "one string"}',
    b'{"texts": []}',
    b'{"texts": ["a"], "top_k": -1}',
    b'{"texts": [' + b'"x", ' * 500 + b'"x"]}',
    b"[" * 5000 + b"]" * 5000,
    b'{"text": ["typo"]}',
    b'{"texts": ["a"], "threshold": "high"}',
]


@dataclass
class Tally:
    """Everything the clients saw, by kind."""

    statuses: dict[str, Counter] = field(default_factory=lambda: {k: Counter() for k in EXPECTED})
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {"quiet": [], "hostile": []})
    phase: str = "warm-up"

    def add(self, kind: str, status: str) -> None:
        if self.phase != "warm-up":
            self.statuses[kind][status] += 1

    def unexpected(self) -> dict[str, Counter]:
        return {k: Counter({s: n for s, n in c.items() if s not in EXPECTED[k]}) for k, c in self.statuses.items()}


def load_texts(data_dir: Path, n: int = 2000) -> list[str]:
    path = data_dir / "test.tsv"
    if not path.is_file():
        return FALLBACK_TEXTS
    texts = [line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [t for t in texts if t.strip()] or FALLBACK_TEXTS


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---------------------------------------------------------------- clients


async def normal_client(http, texts: list[str], k: int, tally: Tally, end: float) -> None:
    i = k * 131
    while time.monotonic() < end:
        text = texts[i % len(texts)]
        i += 7
        phase = tally.phase
        t0 = time.perf_counter()
        try:
            r = await http.post("/predict", json={"texts": [text]})
            status = str(r.status_code)
        except Exception as e:  # counted, not raised: a soak reports everything
            status = type(e).__name__
        ms = (time.perf_counter() - t0) * 1000
        tally.add("normal", status)
        if status == "200" and phase == tally.phase and phase in tally.latency_ms:
            tally.latency_ms[phase].append(ms)


async def raw_exchange(port: int, payload: bytes, read_timeout: float, then: bytes = b"") -> str:
    """Send ``payload`` (then ``then`` in 64 KiB pieces while no answer has come); the status, or "reset"."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    except (OSError, TimeoutError):
        return "reset"
    try:
        writer.write(payload)
        for start in range(0, len(then), 65536):
            await writer.drain()
            writer.write(then[start : start + 65536])
        await writer.drain()
        head = await asyncio.wait_for(reader.read(64), read_timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return "reset"
    finally:
        writer.close()
    m = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return m.group(1).decode() if m else "reset"


async def hostile_client(kind: str, http, port: int, tally: Tally, end: float, rate: float) -> None:
    """One hostile kind, paced at ``rate`` requests per second while a hostile window lasts."""
    rng = random.Random(kind)
    while time.monotonic() < end:
        if tally.phase != "hostile":
            await asyncio.sleep(0.2)
            continue
        started = time.monotonic()
        status = "?"
        try:
            if kind == "oversized":
                head = (
                    f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {MAX_BODY_BYTES * 20}\r\n\r\n"
                ).encode()
                status = await raw_exchange(port, head + b'{"texts": ["', 10)
            elif kind == "oversized-chunked":
                head = (
                    f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                ).encode()
                chunk = b"%x\r\n" % 32768 + b"z" * 32768 + b"\r\n"
                status = await raw_exchange(port, head, 10, then=chunk * (MAX_BODY_BYTES // 32768 + 4))
            elif kind == "malformed":
                body = rng.choice(MALFORMED)
                r = await http.post("/predict", content=body, headers={"content-type": "application/json"})
                status = str(r.status_code)
            elif kind == "surrogate":
                body = b'{"texts": ["fine", "a\\ud800b"]}' if rng.random() < 0.5 else b'{"texts": ["\\udfff"]}'
                r = await http.post("/predict", content=body, headers={"content-type": "application/json"})
                status = str(r.status_code)
            elif kind == "foreign-host":
                r = await http.get("/labels", headers={"host": "rebound.example"})
                status = str(r.status_code)
            elif kind == "abandoned":
                try:
                    r = await http.post("/predict", json={"texts": ["I will not wait for this"]}, timeout=0.05)
                    status = str(r.status_code)
                except Exception:  # the client's own timeout, as intended
                    status = "gave up"
        except Exception as e:
            status = type(e).__name__
        tally.add(kind, status)
        await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))


async def slow_clients(port: int, tally: Tally, end: float, count: int) -> None:
    """Keep ``count`` half-sent POSTs open during hostile windows; each reopened when the server cuts it off."""
    half = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        'Content-Length: 5000\r\n\r\n{"texts": ["never finished'
    ).encode()

    async def one() -> None:
        while time.monotonic() < end:
            if tally.phase != "hostile":
                await asyncio.sleep(0.2)
                continue
            status = await raw_exchange(port, half, BODY_TIMEOUT_S * 3)
            tally.add("slow", status)
            await asyncio.sleep(0.1)

    await asyncio.gather(*(one() for _ in range(count)))


# ---------------------------------------------------------------- the run


async def soak(port: int, pid: int, texts: list[str], args: argparse.Namespace) -> dict:
    import httpx

    tally = Tally()
    base = f"http://{HOST}:{port}"
    windows = max(2, round(args.duration / args.window))
    total = args.warmup + 2 * windows * args.window
    end = time.monotonic() + total + 1
    limits = httpx.Limits(max_connections=args.clients + 64, max_keepalive_connections=args.clients + 8)
    rss: dict[str, float] = {}
    rss_samples: list[float] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as normal_http,
        httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=32)) as hostile_http,
    ):
        rates = {
            "oversized": 4,
            "oversized-chunked": 2,
            "malformed": 8,
            "surrogate": 8,
            "foreign-host": 4,
            "abandoned": 8,
        }
        tasks = [asyncio.ensure_future(normal_client(normal_http, texts, k, tally, end)) for k in range(args.clients)]
        tasks += [
            asyncio.ensure_future(hostile_client(kind, hostile_http, port, tally, end, rate))
            for kind, rate in rates.items()
        ]
        tasks.append(asyncio.ensure_future(slow_clients(port, tally, end, args.slow_clients)))
        await asyncio.sleep(args.warmup)
        rss["after warm-up"] = rss_mb(pid, children=True)
        started = time.monotonic()
        for w in range(2 * windows):
            tally.phase = "quiet" if w % 2 == 0 else "hostile"
            print(f"  window {w + 1}/{2 * windows}: {tally.phase}", file=sys.stderr, flush=True)
            window_end = time.monotonic() + args.window
            while time.monotonic() < window_end:
                await asyncio.sleep(min(1.0, window_end - time.monotonic()))
                rss_samples.append(rss_mb(pid, children=True))
        elapsed = time.monotonic() - started
        tally.phase = "warm-up"  # stop counting; the clients wind down
        health = (await normal_http.get("/health")).json()
        await asyncio.wait(tasks, timeout=BODY_TIMEOUT_S * 3 + 20)
        for t in tasks:
            t.cancel()
    rss["end"] = rss_mb(pid, children=True)
    rss["max"] = max(rss_samples + [rss["end"]])
    if rss_samples:  # the path: a leak climbs to the end, a first pass through new code levels off
        for q in (25, 50, 75):
            rss[f"at {q}%"] = rss_samples[min(len(rss_samples) - 1, len(rss_samples) * q // 100)]
    return {"tally": tally, "seconds": elapsed, "windows": windows, "rss": rss, "health": health}


def _path(rss: dict[str, float]) -> str:
    """RSS at quarters of the windows, and the growth over their second half."""
    if "at 50%" not in rss:
        return "no samples"
    marks = ", ".join(f"{rss[f'at {q}%']:.0f} MB at {q}%" for q in (25, 50, 75))
    return f"{marks}; second half {rss['end'] - rss['at 50%']:+.1f} MB"


def report(result: dict, args: argparse.Namespace, model_desc: str, tracebacks: int) -> tuple[str, bool]:
    tally: Tally = result["tally"]
    quiet, hostile = tally.latency_ms["quiet"], tally.latency_ms["hostile"]
    hostile_seconds = result["windows"] * args.window
    counted = sum(sum(c.values()) for c in tally.statuses.values())
    server_5xx = sum(n for c in tally.statuses.values() for s, n in c.items() if s.startswith("5") and s != "503")
    unexpected = {k: dict(c) for k, c in tally.unexpected().items() if c}
    p99_ratio = pct(hostile, 99) / pct(quiet, 99)
    growth = result["rss"]["end"] - result["rss"]["after warm-up"]
    batching, connections = result["health"]["batching"], result["health"].get("connections") or {}
    lines = [
        f"Model: {model_desc}. {args.clients} normal clients (closed loop, one text per request) throughout; "
        f"{result['windows']} quiet and {result['windows']} hostile windows of {args.window:.0f} s, alternating, "
        f"after {args.warmup:.0f} s of warm-up; server `--max-body-bytes {MAX_BODY_BYTES} --body-timeout "
        f"{BODY_TIMEOUT_S:g}`, everything else default; {args.slow_clients} slow clients held at once.",
        "",
        f"Machine: {machine()}, no GPU. Date: {dt.datetime.now():%Y-%m-%d %H:%M}. 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine).",
        "",
        "| kind | requests | answers |",
        "|---|---:|---|",
    ]
    for kind, c in tally.statuses.items():
        shown = ", ".join(f"{s}: {n:,}" for s, n in sorted(c.items(), key=lambda kv: -kv[1])) or "none"
        lines.append(f"| {kind} | {sum(c.values()):,} | {shown} |")
    lines += [
        "",
        "| normal clients | requests | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| quiet windows | {len(quiet):,} | {pct(quiet, 50):.0f} | {pct(quiet, 99):.0f} |",
        f"| hostile windows | {len(hostile):,} | {pct(hostile, 50):.0f} | {pct(hostile, 99):.0f} |",
        "",
        f"All kinds: {counted / (2 * hostile_seconds):.1f} requests/s over the windows "
        f"({len(hostile) / hostile_seconds:.1f} normal requests/s in hostile windows, "
        f"{len(quiet) / hostile_seconds:.1f} in quiet ones). Hostile / quiet latency of the normal clients: "
        f"p50 {pct(hostile, 50) / pct(quiet, 50):.2f}x, p99 {p99_ratio:.2f}x. "
        f"Server RSS: {result['rss']['after warm-up']:.0f} MB after warm-up, {result['rss']['end']:.0f} MB at "
        f"the end (growth {growth:+.1f} MB; peak {result['rss']['max']:.0f} MB; "
        f"{_path(result['rss'])}). Server counters: "
        f"{batching.get('abandoned', 0):,} abandoned requests skipped uncomputed, "
        f"{connections.get('refused', 0):,} connections refused over the cap, "
        f"{connections.get('head_timeouts', 0):,} head timeouts; {tracebacks} tracebacks in its log.",
    ]
    targets = {
        "no 5xx but 503": server_5xx == 0,
        "only expected answers": not unexpected,
        "no traceback in the server log": tracebacks == 0,
        "normal p99 within 2x of quiet": p99_ratio <= 2.0,
        "RSS growth < 50 MB": growth < 50,
    }
    lines += ["", "Targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets.items())]
    if unexpected:
        lines.append(f"Unexpected answers: {unexpected}")
    return "\n".join(lines), all(targets.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="Model folder to serve (runs/NAME/best, or an export).")
    p.add_argument(
        "--backend",
        default="fastest",
        choices=["fastest", "torch", "onnx", "auto"],
        help="as goemo serve's (default: fastest, its default)",
    )
    p.add_argument("--duration", type=float, default=600.0, help="Seconds of hostile load (as many quiet besides).")
    p.add_argument("--window", type=float, default=20.0, help="Seconds per quiet or hostile window.")
    p.add_argument("--warmup", type=float, default=15.0, help="Seconds of normal load before anything is counted.")
    p.add_argument("--clients", type=int, default=4, help="Normal clients.")
    p.add_argument("--slow-clients", type=int, default=20, help="Half-sent POSTs held at once in hostile windows.")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "goemotions")
    p.add_argument("--write-docs", type=Path, help="Also write the figures into this Markdown file.")
    args = p.parse_args(argv)
    if not 10 <= args.duration <= 7200 or not 2 <= args.window <= args.duration:
        p.error("--duration must be in 10..7200 s and --window in 2..duration")
    if not 1 <= args.clients <= 64 or not 0 <= args.slow_clients <= 200:
        p.error("--clients must be in 1..64 and --slow-clients in 0..200")
    import httpx

    texts = load_texts(args.data_dir)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "goemo.cli",
        "serve",
        "--model",
        str(args.model),
        "--host",
        HOST,
        "--port",
        str(port),
        "--backend",
        args.backend,
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--body-timeout",
        str(BODY_TIMEOUT_S),
        "--no-access-log",
    ]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"server did not start (exit {proc.returncode}):\n{log.read()[-3000:]}")
                try:
                    if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            print(f"soak: {args.duration:.0f} s hostile + as much quiet, against {args.model}", file=sys.stderr)
            result = asyncio.run(soak(port, proc.pid, texts, args))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.seek(0)
        server_log = log.read()
    tracebacks = server_log.count("Traceback")
    if tracebacks:
        print(server_log[-4000:], file=sys.stderr)
    h = result["health"]
    served = f"{args.model} ({h.get('backend')} {h.get('precision')}, {h.get('workers')} worker(s) of {h.get('threads')} thread(s))"
    text, ok = report(result, args, served, tracebacks)
    print(text)
    if args.write_docs:
        from docs_section import write_section  # sibling module: scripts run as files

        write_section(args.write_docs, "## Serving under hostile load (soak)\n\n" + text + "\n")
    print("all targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
