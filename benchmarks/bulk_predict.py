"""Bulk labelling at scale: `goemo predict --input BIG --output OUT` against the predictor alone.

Builds a ``.jsonl`` of ``--texts`` texts (default 1,000,000) by cycling the GoEmotions
training texts (ids ``<goemotions id>-<cycle>``, unique), then measures:

(c) the predictor alone: ``EmotionClassifier.predict_proba`` on the first ``--sample``
    texts of that file (default 50,000; the file cycles one corpus, so a sample has its
    length mix), in one call (one length sort over the whole sample: the best case), same
    backend and settings, no file I/O: texts/s;
(b) ``goemo predict --input FILE --id-column id --output OUT.jsonl`` as a subprocess: texts/s
    as the command reports them (model loading excluded, as in (c)), and its resident memory,
    sampled from ``/proc/PID/status`` (VmRSS) every 0.5 s: after the warm-up (the first sample
    once the output holds 5% of its final size) and the peak after it;

and prints (b)/(c) (target >= 0.90) and the RSS growth (target < 100 MB). Beside them, (s):
``predict_records`` in one process on the sample with its two schedules (stages in turn in
one thread, and overlapped in threads), the measurement behind the CPU's default. It checks that the
output has every id, in input order. Then the resume check, on the first ``--resume-texts``
texts: a job is started, killed with SIGKILL part way (once ~40% of its records are out),
the file is checked to hold only whole records (bar a torn last line), the same command is
run again, and its output must equal, byte for byte, a clean run's.

    python benchmarks/bulk_predict.py --texts 1000000 --json bulk_predict.json
    python benchmarks/bulk_predict.py --texts 20000 --model tiny      # a smoke run (minutes)

``--model tiny`` builds a tiny random BERT in a temporary folder: a model so cheap that the
reading and writing around it matter most. The default model is ``runs/reproduce/best`` when
it exists (MiniLM: a 1M-text run takes over an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import REPO, find_data, machine, rss_mb

DEFAULT_MODEL = REPO / "runs" / "reproduce" / "best"
_LABELLED = re.compile(r"([\d,]+) texts labelled in ([\d.]+)s")


def build_input(path: Path, data_dir: Path, n: int) -> None:
    """``n`` JSON lines {"id", "text"} cycling the GoEmotions training texts."""
    from goemo.data.io import load_goemotions

    train = load_goemotions(data_dir)["train"]
    pairs = list(zip(train.ids, train.texts))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rid, text = pairs[i % len(pairs)]
            f.write(json.dumps({"id": f"{rid}-{i // len(pairs)}", "text": text}, ensure_ascii=False) + "\n")


def build_tiny_model(folder: Path, data_dir: Path) -> Path:
    """A tiny random BERT classifier (no training: speed does not depend on it).

    Its threshold is set so that it gives as many labels per text as GoEmotions' annotators
    (about 1.2): a random head's probabilities all sit near 0.5, and a fixed threshold would
    give every text all 28 labels or none, an output size no trained model writes.
    """
    import numpy as np
    import torch

    from goemo.data.io import load_goemotions
    from goemo.data.taxonomy import load_taxonomy
    from goemo.models.modeling import TINY_MODEL, build_model, load_tokenizer, save_model
    from goemo.predict.classifier import EmotionClassifier

    names = list(load_taxonomy("goemotions").labels)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, names).eval()
    meta = {"label_names": names, "max_length": 64, "thresholds": {"global": 0.5, "per_label": None}}
    save_model(model, load_tokenizer(TINY_MODEL), folder, meta)
    dev = load_goemotions(data_dir)["dev"]
    per_text = float(dev.labels.sum()) / len(dev.texts)
    probs = EmotionClassifier.load(folder, backend="torch").predict_proba(dev.texts[:2000])
    meta["thresholds"]["global"] = float(np.quantile(probs, 1 - per_text / len(names)))
    save_model(model, load_tokenizer(TINY_MODEL), folder, meta)
    return folder


def predictor_alone(model: str, backend: str, sample: list[str], num_threads: int | None) -> dict[str, Any]:
    """(c): texts/s of `EmotionClassifier.predict_proba` on ``sample``, one call, after a warm-up."""
    from goemo.predict.classifier import EmotionClassifier

    clf = EmotionClassifier.load(model, backend=backend, num_threads=num_threads)  # type: ignore[arg-type]
    clf.predict_proba(sample[:256])
    start = time.perf_counter()
    clf.predict_proba(sample)
    seconds = time.perf_counter() - start
    return {"texts": len(sample), "seconds": seconds, "texts_per_s": len(sample) / seconds, **clf.settings}


class _NullStream:
    """A sink that keeps nothing: the schedules are timed without the disk."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def schedules(model: str, backend: str, src: Path, sample: int, num_threads: int | None) -> dict[str, float]:
    """texts/s of `predict_records` on the first ``sample`` records, stages in turn vs overlapped in threads.

    Side by side in one process, same model and records, written to a null stream: the
    measurement behind the choice of `goemo.predict.stream` (in turn on a CPU).
    """
    import itertools

    from goemo.data.records import read_records
    from goemo.predict.classifier import EmotionClassifier
    from goemo.predict.prediction_writer import PredictionWriter
    from goemo.predict.stream import predict_records

    clf = EmotionClassifier.load(model, backend=backend, num_threads=num_threads)  # type: ignore[arg-type]
    out: dict[str, float] = {}
    for _ in range(2):  # twice, alternating, so that a drift in the machine's speed shows
        for overlap in (False, True):
            records = itertools.islice(read_records(src, "text", "id"), sample)
            writer = PredictionWriter(_NullStream(), "jsonl", clf.label_names)
            start = time.perf_counter()
            n = predict_records(clf, records, writer, overlap=overlap)
            rate = n / (time.perf_counter() - start)
            key = "overlapped" if overlap else "in_turn"
            out[key] = max(out.get(key, 0.0), rate)
    return out


def predict_cmd(model: str, backend: str, src: Path, out: Path, num_threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "goemo", "predict", "--model", model, "--backend", backend]
    cmd += ["--input", str(src), "--id-column", "id", "--output", str(out)]
    return cmd + (["--num-threads", str(num_threads)] if num_threads else [])


def bulk_run(cmd: list[str], out: Path) -> dict[str, Any]:
    """(b): run the command, sampling its RSS and the output's size every 0.5 s."""
    samples: list[tuple[float, float, int]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if not math.isnan(rss):  # NaN: the process has ended
            samples.append((time.perf_counter() - start, rss, out.stat().st_size if out.exists() else 0))
        time.sleep(0.5)
    reader.join()
    wall = time.perf_counter() - start
    text = "".join(stderr)
    if proc.returncode != 0:
        sys.exit(f"goemo predict failed ({proc.returncode}):\n{text}")
    m = _LABELLED.search(text)
    assert m is not None, text
    count, seconds = int(m[1].replace(",", "")), float(m[2])
    final = out.stat().st_size
    warm = next((s for s in samples if s[2] >= 0.05 * final), samples[-1] if samples else (0.0, 0.0, 0))
    after = [s[1] for s in samples if s[0] >= warm[0]]
    return {
        "texts": count,
        "seconds": seconds,
        "wall_seconds": wall,
        "texts_per_s": count / seconds,
        "rss_warm_mb": warm[1],
        "rss_peak_after_warm_mb": max(after) if after else None,
        "rss_peak_mb": max((s[1] for s in samples), default=None),
        "rss_growth_mb": (max(after) - warm[1]) if after else None,
        "rss_samples": len(samples),
        "stderr_last_line": text.strip().splitlines()[-1] if text.strip() else "",
    }


def check_ids(src: Path, out: Path) -> int:
    """Every input id, in order, once; returns the count."""
    n = 0
    with open(src, encoding="utf-8") as a, open(out, encoding="utf-8") as b:
        for n, (line_in, line_out) in enumerate(zip(a, b, strict=True), start=1):
            if json.loads(line_in)["id"] != json.loads(line_out)["id"]:
                sys.exit(f"{out}:{n}: id differs from the input's")
    return n


def resume_check(cmd_for: Any, src: Path, work: Path) -> dict[str, Any]:
    """Kill a job part way (SIGKILL), check whole records, rerun, compare with a clean run."""
    total = sum(1 for _ in open(src, "rb"))
    clean, out = work / "resume-clean.jsonl", work / "resume.jsonl"
    subprocess.run(cmd_for(src, clean), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(cmd_for(src, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = 0.4 * clean.stat().st_size
    try:
        while proc.poll() is None and not (out.exists() and out.stat().st_size >= target):
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_mid_job = proc.returncode == -signal.SIGKILL
    data = out.read_bytes()
    lines = data.split(b"\n")
    whole = 0
    for line in lines[:-1]:
        json.loads(line)  # raises on a torn record anywhere but the end
        whole += 1
    torn = len(lines[-1])
    rerun = subprocess.run(cmd_for(src, out), capture_output=True, text=True, check=True)
    resumed = [line for line in rerun.stderr.splitlines() if "resuming at record" in line or "holds" in line]
    equal = out.read_bytes() == clean.read_bytes()
    return {
        "texts": total,
        "killed_mid_job": killed_mid_job,
        "whole_records_at_kill": whole,
        "torn_bytes_at_kill": torn,
        "rerun_said": resumed[0] if resumed else "",
        "equal_to_clean_run": equal,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=50_000, help="texts for (c), the predictor alone")
    ap.add_argument("--schedule-texts", type=int, default=20_000, help="texts for (s), each schedule, twice")
    ap.add_argument(
        "--resume-texts", type=int, default=None, help="texts for the resume check (default min(texts, 50,000))"
    )
    ap.add_argument("--model", default=None, help="model folder, or 'tiny' (default: runs/reproduce/best, else tiny)")
    ap.add_argument("--backend", default="fastest", help="as goemo predict's (default: fastest, its default)")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work-dir", default=None, help="where the big files go (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    data_dir = find_data(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="goemo-bulk-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        model = args.model or (str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else "tiny")
        model_name = model
        if model == "tiny":
            model = str(build_tiny_model(work / "tiny-model", data_dir))
        src = work / "texts.jsonl"
        t0 = time.perf_counter()
        build_input(src, data_dir, args.texts)
        print(
            f"input: {args.texts:,} texts, {src.stat().st_size / 2**20:.1f} MiB ({time.perf_counter() - t0:.1f}s to build)"
        )
        load_before = os.getloadavg()[0]

        with open(src, encoding="utf-8") as f:
            sample = [json.loads(line)["text"] for _, line in zip(range(args.sample), f)]
        alone = predictor_alone(model, args.backend, sample, args.num_threads)
        print(
            f"(c) predictor alone: {alone['texts_per_s']:,.0f} texts/s on {alone['texts']:,} texts ({alone['backend']}, {alone['precision']})"
        )

        sched = schedules(model, args.backend, src, args.schedule_texts, args.num_threads)
        print(
            f"(s) stages in one thread: {sched['in_turn']:,.0f} texts/s; overlapped in threads: "
            f"{sched['overlapped']:,.0f} texts/s (best of 2 each, {args.schedule_texts:,} records, no disk)"
        )

        out = work / "labels.jsonl"
        bulk = bulk_run(predict_cmd(model, args.backend, src, out, args.num_threads), out)
        bulk["ids_in_order"] = check_ids(src, out) == args.texts
        ratio = bulk["texts_per_s"] / alone["texts_per_s"]
        print(
            f"(b) goemo predict --output: {bulk['texts_per_s']:,.0f} texts/s on {bulk['texts']:,} texts; "
            f"(b)/(c) = {ratio:.3f} (target >= 0.90)"
        )
        print(
            f"    RSS {bulk['rss_warm_mb']:.0f} MB after warm-up, peak after it {bulk['rss_peak_after_warm_mb']:.0f} MB: "
            f"growth {bulk['rss_growth_mb']:+.1f} MB (target < 100); ids in order: {bulk['ids_in_order']}"
        )
        out.unlink()

        resume_n = args.resume_texts or min(args.texts, 50_000)
        small = work / "resume-input.jsonl"
        with open(src, "rb") as a, open(small, "wb") as b:
            for _, line in zip(range(resume_n), a):
                b.write(line)
        resume = resume_check(lambda s, o: predict_cmd(model, args.backend, s, o, args.num_threads), small, work)
        print(
            f"resume: killed at {resume['whole_records_at_kill']:,} whole records (+{resume['torn_bytes_at_kill']} torn bytes) "
            f"of {resume['texts']:,}; rerun: {resume['rerun_said']!r}; equal to a clean run: {resume['equal_to_clean_run']}"
        )
        load_after = os.getloadavg()[0]
        print(f"Machine: {machine()}. 1-minute load average {load_before:.1f} before, {load_after:.1f} after")

    result = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": {
            "machine": machine(),
            "load_before": load_before,
            "load_after": load_after,
        },
        "model": model_name,
        "texts": args.texts,
        "predictor_alone": alone,
        "schedules": sched,
        "bulk": bulk,
        "ratio": ratio,
        "resume": resume,
        "targets_met": ratio >= 0.9 and (bulk["rss_growth_mb"] or 0) < 100 and resume["equal_to_clean_run"],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
