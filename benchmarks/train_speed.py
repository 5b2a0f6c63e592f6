"""Training throughput: goemo's training loop against a naive loop, same model, batch and texts.

The naive loop is written like the W&B report's ``trainer()``: every text padded to a fixed
length of 40, fp32, random batches, the architecture's standard head, plain AdamW.
goemo's side is the real `goemo.training.loop.train` on the same texts for one epoch (length
buckets, dynamic padding, bf16 autocast where the CPU has it), and its examples/s is read
from the epoch record. Runs alternate (naive, goemo, naive, goemo, …) so that a noisy
neighbour slows both equally; the median of each is reported.

    python benchmarks/train_speed.py --data-dir ../shared/goemotions --texts 1600 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def naive_examples_per_s(model_name: str, split, batch_size: int, max_length: int, seed: int) -> float:
    """The baseline: fixed padding to ``max_length``, fp32, shuffled batches."""
    from goemo.models.modeling import build_model, load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_name)
    model = build_model(model_name, split.label_names, pooling="cls")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    enc = tokenizer(split.texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    labels = torch.from_numpy(split.labels.astype(np.float32))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for i in range(0, len(split), batch_size):
        idx = order[i : i + batch_size]
        logits = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx]).logits
        loss = loss_fn(logits, labels[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return len(split) / (time.perf_counter() - start)


def goemo_examples_per_s(model_name: str, splits: dict, batch_size: int, extra: dict) -> float:
    """One epoch of the real training loop; examples/s as it records it."""
    from goemo.core.config import TrainConfig
    from goemo.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            model=model_name,
            data_dir=None,
            epochs=1,
            batch_size=batch_size,
            output=f"{tmp}/run",
            cache_dir=f"{tmp}/cache",
            eval_test=False,
            log_every=10**6,
            **extra,
        )
        result = train(cfg, splits=splits)
        return float(result.summary["epochs"][-1]["examples_per_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/goemotions")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--texts", type=int, default=1600, help="training texts per measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pooling", default="cls", help="goemo side's head (cls matches the naive loop)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="goemo side's truncation (the naive loop pads and truncates to 40); 40 = the same tokens",
    )
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from goemo.data.io import load_goemotions
    from goemo.training.resources import hardware

    data = load_goemotions(args.data_dir)
    train_split = data["train"].sample(args.texts, seed=0)
    splits = {"train": train_split, "dev": data["dev"].sample(64, seed=0)}
    extra = {"pooling": args.pooling, "precision": args.precision, "max_length": args.max_length}
    naive, ours = [], []
    for r in range(args.repeats):
        naive.append(naive_examples_per_s(args.model, train_split, args.batch_size, 40, seed=r))
        ours.append(goemo_examples_per_s(args.model, splits, args.batch_size, extra))
        print(f"repeat {r + 1}: naive {naive[-1]:.1f} ex/s, goemo {ours[-1]:.1f} ex/s", file=sys.stderr)
    a, b = statistics.median(naive), statistics.median(ours)
    hw = hardware()
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "texts": args.texts,
        "repeats": args.repeats,
        "naive_examples_per_s": round(a, 1),
        "goemo_examples_per_s": round(b, 1),
        "ratio": round(b / a, 2),
        "goemo_settings": extra,
        "cpu": hw["cpu"],
        "cores": hw["cpu_cores"],
        "torch": hw["torch"],
    }
    print(json.dumps(result))
    print(
        f"train speed ratio (goemo / naive): {b / a:.2f}x  ({b:.1f} vs {a:.1f} examples/s, {hw['cpu']}, {hw['cpu_cores']} cores)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
