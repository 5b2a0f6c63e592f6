"""Load test of `goemo serve`: throughput and latency with and without micro-batching.

Starts the server in a subprocess on 127.0.0.1 (once per mode: ``--max-batch 1``, i.e. one
model call per request, then ``--max-batch 64``), drives it from this process with K
concurrent clients for a fixed time, and prints requests/s, texts/s and p50/p99 latency.
Any failed request is an error: they are printed and the script exits 1.

The model defaults to an untrained all-MiniLM-L6-v2 mean-pool classifier (same size and
speed as a trained one), built once in a temporary folder; ``--model DIR`` serves yours.
Texts are GoEmotions test sentences when ``--data-dir`` has them, else a built-in set.

    python benchmarks/serve_load.py                         # 2 modes x 20 s, 32 clients
    python benchmarks/serve_load.py --clients 64 --duration 10 --write-docs docs/benchmarks.md

Loopback only, bounded in time and in requests: every loop stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from goemo.training.resources import cpu_model

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
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
MAX_REQUESTS_PER_MODE = 200_000  # a hard bound besides the duration


@dataclass
class ModeResult:
    max_batch: int
    num_threads: int
    clients: int
    duration_s: float
    requests: int = 0
    texts: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    server: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def tps(self) -> float:
        return self.texts / self.duration_s

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def mean_batch(self) -> float:
        b = self.server.get("batches", 0)
        return self.server.get("texts", 0) / b if b else float("nan")


from docs_section import write_section  # noqa: E402  (sibling module: scripts run as files)


def build_default_model(folder: Path) -> Path:
    """An untrained MiniLM mean-pool classifier with GoEmotions labels, saved like a trained one."""
    from goemo.data.taxonomy import load_taxonomy
    from goemo.models.modeling import build_model, load_tokenizer, save_model

    labels = list(load_taxonomy("goemotions").labels)
    model = build_model("minilm", labels, pooling="mean")
    tokenizer = load_tokenizer("minilm")
    meta = {"label_names": labels, "max_length": 128, "pooling": "mean", "thresholds": {"global": 0.3}}
    save_model(model, tokenizer, folder, meta)
    return folder


def load_texts(data_dir: Path | None, n: int = 2000) -> list[str]:
    if data_dir is not None and (data_dir / "test.tsv").is_file():
        from goemo.data.io import load_split

        split = load_split(data_dir / "test.tsv")
        return list(split.texts[:n])
    return FALLBACK_TEXTS


def model_cost(model: Path, texts: list[str], backend: str, seconds: float = 3.0) -> dict[int, float]:
    """Milliseconds per text of a bare ``predict_proba`` call (1 thread) at batch sizes 1 and 32.

    The ceiling of what micro-batching can gain on this machine: how much cheaper a text is
    inside a batch than alone.
    """
    from goemo.predict.classifier import EmotionClassifier

    clf = EmotionClassifier.load(model, backend=backend, device="cpu", num_threads=1)
    clf.predict_proba(texts[:2])
    out = {}
    for size in (1, 32):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            i = (calls * size) % max(1, len(texts) - size)
            clf.predict_proba(texts[i : i + size])
            calls += 1
        out[size] = (time.perf_counter() - start) * 1000 / (calls * size)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(
    model: Path, port: int, max_batch: int, max_wait_ms: float, backend: str, num_threads: int | None
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "goemo.cli",
        "serve",
        "--model",
        str(model),
        "--host",
        HOST,
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(max_wait_ms),
        "--backend",
        backend,
        "--max-texts",
        "64",
        "--no-access-log",
    ] + (["--num-threads", str(num_threads)] if num_threads else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, base: str, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def drive(base: str, texts: list[str], clients: int, duration: float, per_request: int) -> ModeResult:
    """K clients, each sending its next request as soon as the previous one is answered."""
    import httpx

    result = ModeResult(max_batch=0, num_threads=0, clients=clients, duration_s=duration)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        # warm-up: first calls pay for lazy initialisation
        for i in range(3):
            await http.post("/predict", json={"texts": texts[i : i + per_request]})
        end = time.monotonic() + duration

        async def client(k: int) -> None:
            i = k * 97
            while time.monotonic() < end and result.requests < MAX_REQUESTS_PER_MODE:
                batch = [texts[(i + j) % len(texts)] for j in range(per_request)]
                i += per_request * clients
                t0 = time.perf_counter()
                try:
                    r = await http.post("/predict", json={"texts": batch})
                    ok = r.status_code == 200 and len(r.json()["results"]) == len(batch)
                    if not ok:
                        result.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    ok = False
                    result.errors.append(f"{type(e).__name__}: {e}")
                if ok:
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    result.requests += 1
                    result.texts += len(batch)

        started = time.monotonic()
        await asyncio.gather(*(client(k) for k in range(clients)))
        result.duration_s = time.monotonic() - started
        result.server = (await http.get("/health")).json()["batching"]
    return result


def run_mode(model: Path, texts: list[str], max_batch: int, threads: int, args: argparse.Namespace) -> ModeResult:
    port = free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(model, port, max_batch, args.max_wait_ms, args.backend, threads or None)
    try:
        wait_ready(proc, base)
        before = _health_counts(base)
        result = asyncio.run(drive(base, texts, args.clients, args.duration, args.texts_per_request))
        for key in ("requests", "texts", "batches"):
            result.server[key] -= before.get(key, 0)  # the warm-up is not part of the figures
    finally:
        stop_server(proc)
    result.max_batch, result.num_threads = max_batch, threads
    return result


def _health_counts(base: str) -> dict:
    import httpx

    return httpx.get(f"{base}/health", timeout=10).json()["batching"]


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def table(results: list[ModeResult]) -> str:
    head = [
        "mode",
        "model threads",
        "clients",
        "requests",
        "requests/s",
        "texts/s",
        "p50 ms",
        "p99 ms",
        "texts per model call",
        "errors",
    ]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    default_threads = f"{max(1, (os.cpu_count() or 1) - 1)} (default)"
    for r in results:
        mode = "no batching (`--max-batch 1`)" if r.max_batch == 1 else f"micro-batching (`--max-batch {r.max_batch}`)"
        cells = [
            mode,
            str(r.num_threads or default_threads),
            str(r.clients),
            f"{r.requests:,}",
            f"{r.rps:.1f}",
            f"{r.tps:.1f}",
            f"{r.pct(50):.0f}",
            f"{r.pct(99):.0f}",
            f"{r.mean_batch:.1f}",
            str(len(r.errors)),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="Model folder (default: an untrained MiniLM mean-pool classifier).")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "auto"])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "goemotions")
    p.add_argument("--clients", type=int, default=32, help="Concurrent clients.")
    p.add_argument("--duration", type=float, default=20.0, help="Seconds of load per mode.")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--max-batch", type=int, nargs="+", default=[1, 64], help="Modes to compare.")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument(
        "--num-threads",
        type=int,
        nargs="+",
        help="Server's model threads to compare (goemo serve --num-threads; 0: its default, all cores but one). "
        "Default: 0 and all cores.",
    )
    p.add_argument("--write-docs", type=Path, help="Also write the figures into this Markdown file (## Serving).")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 512 or not 0 < args.duration <= 600:
        p.error("--clients must be in 1..512 and --duration in (0, 600] seconds")

    if args.num_threads is None:
        default = max(1, (os.cpu_count() or 1) - 1)
        args.num_threads = [0] + ([os.cpu_count()] if os.cpu_count() != default else [])
    texts = load_texts(args.data_dir)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="goemo-serve-load-") as tmp:
        model = args.model or build_default_model(Path(tmp) / "minilm-untrained")
        model_desc = str(args.model) if args.model else "untrained all-MiniLM-L6-v2 mean-pool classifier (28 labels)"
        cost = model_cost(model, texts, args.backend)
        print(
            f"model alone, 1 thread: {cost[1]:.1f} ms per text at batch 1, {cost[32]:.1f} at batch 32", file=sys.stderr
        )
        results = []
        for threads in args.num_threads:
            for max_batch in args.max_batch:
                print(
                    f"threads={threads or 'default'} max_batch={max_batch}: {args.clients} clients for "
                    f"{args.duration:.0f} s ...",
                    file=sys.stderr,
                )
                results.append(run_mode(model, texts, max_batch, threads, args))

    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = table(results)
    print(out)
    ratios = []
    for threads in args.num_threads:
        rows = {r.max_batch: r for r in results if r.num_threads == threads}
        if 1 in rows and len(rows) > 1 and rows[1].tps:
            best = max(rows.values(), key=lambda r: r.tps)
            ratios.append(f"{best.tps / rows[1].tps:.2f}x with {threads or 'default'} model threads")
    summary = "micro-batching / no batching, texts/s: " + (", ".join(ratios) or "n/a")
    print(summary)
    errors = [e for r in results for e in r.errors]
    for e in errors[:20]:
        print(f"error: {e}", file=sys.stderr)
    if args.write_docs and not errors:
        cmd = "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = (
            "## Serving\n\n"
            f"`goemo serve` under load: {args.clients} concurrent clients on 127.0.0.1 (one process; the server is "
            f"another), each sending its next request (`{args.texts_per_request}` text, GoEmotions test sentences) "
            f"as soon as the last one is answered, for {args.duration:.0f} s per mode. Model: {model_desc}, "
            f"{args.backend} backend, `--max-wait-ms {args.max_wait_ms:g}`.\n\n"
            f"Machine: {machine()}. Date: {when}. Client and server share the same cores; the 1-minute "
            f"load average was {load_before:.1f} before the run and {os.getloadavg()[0]:.1f} after it (other "
            f"jobs on the machine make the figures noisy).\n\n"
            f"{out}\n\n{summary}. Latency is measured by the client (request sent to answer read).\n\n"
            f'Reading the table: "texts per model call" is how many concurrent requests shared one forward '
            f"pass. On a CPU the gain of micro-batching is bounded by how much cheaper a text is inside a batch "
            f"than alone: here the model alone (one thread, same texts) took {cost[1]:.1f} ms for one text and "
            f"{cost[32]:.1f} ms per text in batches of 32, at most {cost[1] / cost[32]:.1f}x; on a GPU the "
            f"ratio is far larger. The rows with every core given to PyTorch show its OpenMP threads spinning "
            f"against the server's event loop and the load generator, which is why `goemo serve` leaves one "
            f"core to the event loop by default (`--num-threads`).\n\n"
            f"Reproduce: `{cmd.strip()}`\n"
        )
        write_section(args.write_docs, section)
        print(f"written to {args.write_docs}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} failed requests", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
