"""A label set the source model never learnt: learnt from few texts, from --init-from the source or from the encoder.

GoEmotions' 27 emotions are split into 19 source labels and 8 held-out labels (`HELD_OUT`,
chosen to spread over the label frequencies and to have at least 50 positive test texts each).

1. **The source** is trained on the 19 with the ``fast`` preset. Every text that carries one of
   the 8 is left out of its training, dev and test texts, so that the source has never read a
   text of a held-out emotion; texts whose only label is ``neutral`` stay in, with no label
   (neutral is "none of these", which is what an empty row means to a multi-label model).
2. **The target** learns the 8 from N labelled training texts (``--sizes``: 100, 300, 1,000),
   once per seed (``--seeds``): a seeded sample of the training split in which every held-out
   label has at least ``--min-per-label`` positive texts (drawn first), the rest drawn at
   random; a text with none of the 8 is a negative for all of them. Each sample is learnt
   twice, with the same settings (the ``fast`` preset), from ``--init-from`` the source and from
   the plain encoder (``--model``, the offline MiniLM). The run is selected and its per-label
   thresholds are tuned on ``--dev-texts`` dev texts (the same ones for every run); epochs are
   ``--steps`` optimiser steps' worth, at least ``--min-epochs``.
3. **Scored** on the whole test split's 8 labels at the dev-tuned thresholds: macro-F1 with its
   95% percentile-bootstrap interval over the test texts (`goemo.scoring.bootstrap`), per run,
   and the seeds' mean and spread (max - min) per size and start.

Run folders go to ``--out`` (``source/``, ``nN-seedS-init/``, ``nN-seedS-plain/``); a finished
run is reused, so a killed benchmark continues where it stopped. The last lines are a markdown
table for docs/benchmarks.md. Full size (the figures in the docs):

    python benchmarks/transfer.py --out runs/transfer

A smoke run in seconds (tiny random model, a few dozen texts; the numbers mean nothing):

    python benchmarks/transfer.py --quick --out /tmp/transfer
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import find_data, machine
from goemo.core.config import TrainConfig, resolve_config
from goemo.data.io import load_goemotions
from goemo.data.split import Split
from goemo.evaluation.evaluate import evaluate
from goemo.scoring.bootstrap import Resampling, bootstrap_scores
from goemo.training.loop import train

# The 8 held-out emotions (train-split counts 2,662 to 545; test positives 352 to 56).
HELD_OUT = ("gratitude", "curiosity", "anger", "confusion", "sadness", "surprise", "fear", "remorse")
NEUTRAL = "neutral"
SIZES = (100, 300, 1000)
SEEDS = (1, 2, 3)
QUICK = {
    "model": "tiny-random-bert",
    "sizes": "20,40",
    "seeds": "1",
    "source_texts": 300,
    "source_epochs": 1.0,
    "dev_texts": 60,
    "test_texts": 120,
    "steps": 2,
    "min_epochs": 1,
    "max_length": 32,
    "resamples": 200,
}


def source_labels(names: list[str]) -> list[str]:
    """The 19 source labels: GoEmotions' emotions less `HELD_OUT` and neutral, in GoEmotions' order."""
    return [n for n in names if n not in HELD_OUT and n != NEUTRAL]


def with_labels(split: Split, names: list[str], rows: np.ndarray | None = None) -> Split:
    """``split`` (its ``rows``, default all) with only the label columns ``names``, in that order."""
    idx = np.arange(len(split)) if rows is None else np.asarray(rows, dtype=np.int64)
    cols = [split.label_names.index(n) for n in names]
    return Split(
        [split.texts[i] for i in idx],
        [split.ids[i] for i in idx],
        split.labels[np.ix_(idx, cols)],
        list(names),
        split.name,
        split.source,
    )


def without_held_out(split: Split) -> np.ndarray:
    """The rows of ``split`` that carry none of the held-out labels (the source's texts)."""
    held = [split.label_names.index(n) for n in HELD_OUT]
    return np.flatnonzero(split.labels[:, held].sum(axis=1) == 0)


def target_sample(train: Split, n: int, seed: int, min_per_label: int) -> np.ndarray:
    """``n`` training rows: ``min_per_label`` positives of each held-out label first, then the rest at random."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for name in HELD_OUT:
        have = sum(train.labels[i, train.label_names.index(name)] for i in chosen)
        pool = np.setdiff1d(np.flatnonzero(train.labels[:, train.label_names.index(name)]), chosen)
        need = max(0, min(min_per_label - int(have), len(pool)))
        chosen += rng.choice(pool, size=need, replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(train)), chosen)
    chosen += rng.choice(rest, size=max(0, n - len(chosen)), replace=False).tolist()
    return np.sort(np.asarray(chosen[:n] if len(chosen) > n else chosen, dtype=np.int64))


def run(config: TrainConfig, splits: dict[str, Split]) -> Path:
    """Train ``config`` on ``splits`` unless its folder holds a finished run; its ``best/``."""
    out = Path(config.output)
    if not (out / "summary.json").is_file():
        train(config.replace(overwrite=out.exists()), splits=splits)
    return out / "best"


def score(best: Path, test: Split, resamples: int) -> dict[str, Any]:
    """Test macro-F1 on the held-out labels at the dev-tuned thresholds, with its bootstrap interval."""
    result = evaluate(best, test, thresholds="tuned")
    boot = bootstrap_scores(
        test.labels,
        result.predictions.probs,
        result.thresholds.value,
        test.label_names,
        Resampling(n_resamples=resamples),
    )
    return {
        "f1_macro": boot.f1_macro.estimate,
        "low": boot.f1_macro.low,
        "high": boot.f1_macro.high,
        "f1_per_label": {k: v.estimate for k, v in boot.f1_per_label.items()},
    }


def epochs_for(n: int, args: argparse.Namespace, batch_size: int) -> float:
    """Epochs that make ``--steps`` optimiser steps on ``n`` texts, at least ``--min-epochs``."""
    return float(max(args.min_epochs, math.ceil(args.steps * batch_size / n)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/transfer", help="folder of the runs and transfer.json")
    ap.add_argument("--data-dir", default=None, help="GoEmotions folder (default: ../shared/goemotions or data/)")
    ap.add_argument("--model", default="minilm", help="the plain encoder, and the source's (default: minilm)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="labelled training texts per target run")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="one target sample and run per seed")
    ap.add_argument("--source-texts", type=int, default=None, help="train the source on a sample (default: all)")
    ap.add_argument("--source-epochs", type=float, default=None, help="the source's epochs (default: the preset's)")
    ap.add_argument("--dev-texts", type=int, default=1000, help="dev texts that select and tune every target run")
    ap.add_argument("--test-texts", type=int, default=None, help="score on a sample of test (default: all)")
    ap.add_argument("--min-per-label", type=int, default=2, help="positive texts of each held-out label per sample")
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps per target run (as whole epochs)")
    ap.add_argument("--min-epochs", type=int, default=3, help="at least this many epochs per target run")
    ap.add_argument("--max-length", type=int, default=None, help="tokens per text (default: the preset's)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the test texts")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run in seconds (other options still win): " + json.dumps(QUICK)
    )
    if ap.parse_args(argv).quick:  # the quick settings are defaults: options given beside --quick win
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    out = Path(args.out)
    started = time.perf_counter()

    data = load_goemotions(find_data(args.data_dir))
    names = data["train"].label_names
    missing = [n for n in HELD_OUT if n not in names]
    if missing:
        raise SystemExit(f"held-out labels not in the data: {missing}")
    source_names = source_labels(names)
    held = list(HELD_OUT)
    base = resolve_config(
        "fast",
        overrides={
            "model": args.model,
            "device": args.device,
            "num_threads": args.num_threads,
            "max_length": args.max_length,
            "cache_dir": str(out / "token-cache"),
            "log_every": 10**6,
        },
    )

    # ---- the source: the 19 labels, no text of a held-out emotion anywhere
    source_splits = {k: with_labels(s, source_names, without_held_out(s)) for k, s in data.items()}
    if args.source_texts:
        source_splits["train"] = source_splits["train"].sample(args.source_texts, seed=0)
        for key in ("dev", "test"):
            source_splits[key] = source_splits[key].sample(max(args.source_texts // 4, 50), seed=0)
    source_config = base.replace(output=str(out / "source"), seed=0)
    if args.source_epochs:
        source_config = source_config.replace(epochs=args.source_epochs)
    source_best = run(source_config, source_splits)
    source_summary = json.loads((out / "source" / "summary.json").read_text())

    # ---- the targets: the 8 labels from N texts, from the source and from the encoder
    dev = with_labels(data["dev"], held).sample(args.dev_texts, seed=0, name="dev")
    test = with_labels(data["test"], held)
    if args.test_texts:
        test = test.sample(args.test_texts, seed=0, name="test")
    train_all = data["train"]
    results: list[dict[str, Any]] = []
    for n in sizes:
        for seed in seeds:
            rows = target_sample(train_all, n, seed, args.min_per_label)
            splits = {"train": with_labels(train_all, held, rows), "dev": dev, "test": test}
            for start, changes in (("init", {"init_from": str(source_best)}), ("plain", {})):
                config = base.replace(
                    output=str(out / f"n{n}-seed{seed}-{start}"),
                    seed=seed,
                    epochs=epochs_for(n, args, base.batch_size),
                    **changes,
                )
                best = run(config, dict(splits))
                scored = score(best, test, args.resamples)
                results.append({"texts": n, "seed": seed, "start": start, **scored})
                print(
                    f"{n:>5} texts  seed {seed}  {start:<5}  macro-F1 {scored['f1_macro']:.3f} "
                    f"({scored['low']:.3f} to {scored['high']:.3f})",
                    flush=True,
                )

    figures = {
        "machine": machine(),
        "date": str(dt.date.today()),
        "held_out": held,
        "source_labels": source_names,
        "source": {"texts": len(source_splits["train"]), "dev_f1_macro": source_summary.get("dev", {}).get("f1_macro")},
        "settings": {k: v for k, v in vars(args).items()},
        "runs": results,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print()
    print(markdown(results, sizes, figures, len(test), len(dev)))
    return 0


def markdown(results: list[dict[str, Any]], sizes: list[int], figures: dict[str, Any], test: int, dev: int) -> str:
    """The table for docs/benchmarks.md: per size and start, the seeds' mean, spread and runs with intervals."""
    lines = [
        f"{figures['machine']}; {figures['date']}. Held out: {', '.join(figures['held_out'])}. "
        f"Source: {figures['source']['texts']:,} texts, 19 labels. Test macro-F1 over the 8 held-out labels "
        f"({test:,} test texts, thresholds tuned on {dev:,} dev texts); each run with its 95% bootstrap interval.",
        "",
        "| texts | start | mean macro-F1 | seeds' spread (max - min) | runs: macro-F1 (95% interval) |",
        "|---:|---|---:|---:|---|",
    ]
    summary: dict[tuple[int, str], list[float]] = {}
    for n in sizes:
        for start, label in (("init", "`--init-from` source"), ("plain", "plain encoder")):
            runs = [r for r in results if r["texts"] == n and r["start"] == start]
            values = [float(r["f1_macro"] or 0.0) for r in runs]
            summary[(n, start)] = values
            cells = ", ".join(f"{r['f1_macro']:.3f} ({r['low']:.3f}-{r['high']:.3f})" for r in runs)
            lines.append(
                f"| {n:,} | {label} | {statistics.fmean(values):.3f} | {max(values) - min(values):.3f} | {cells} |"
            )
    lines += ["", "| texts | `--init-from` minus plain (mean) | larger spread | ahead by more than the spread |"]
    lines += ["|---:|---:|---:|---|"]
    for n in sizes:
        a, b = summary[(n, "init")], summary[(n, "plain")]
        gap = statistics.fmean(a) - statistics.fmean(b)
        spread = max(max(a) - min(a), max(b) - min(b))
        lines.append(f"| {n:,} | {gap:+.3f} | {spread:.3f} | {'yes' if gap > spread else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
