"""Does ``goemo audit`` find label errors? Plant known ones in GoEmotions and see where they rank.

A seeded sample of the GoEmotions training split is corrupted: ``--noise`` (5%) of its texts
are picked, half of them get one random label they do not carry, the other half lose one of
theirs. The corrupted sample is written as a GoEmotions folder (dev and test unchanged) and
audited with `goemo.audit.runner.run_audit`, K fold models of the given preset. Then, over
every (text, label) pair of the sample:

- ROC-AUC of the audit score, corrupted pairs against untouched ones (target >= 0.95);
- recall in the top 5% of the ranking: the share of corrupted pairs whose score is among the
  highest 5% of all pairs (target >= 80%);
- the stricter view: precision = recall among the top k pairs, k = the number of corrupted
  pairs; and how many corrupted pairs the audit flags (score >= 0), with the flags' precision;
- the same for plain self-confidence (1 - the probability of the given value, no per-label
  thresholds) on the same probabilities, to show what the per-label thresholds add.

    python benchmarks/audit_recall.py --texts 10000 --folds 3 --preset fast --out runs/bench-audit

A killed run resumes (the audit reuses and resumes its folds). Its size is configurable
because each fold trains a model: on a loaded 2-core CPU use fewer texts and ``--epochs 1``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import find_data, machine  # noqa: E402


def corrupt(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """A copy of ``labels`` with ``share`` of the rows corrupted: half gain one random label they do
    not carry ("added"), half lose one they carry ("removed"). Returns it and the (row, label, kind) pairs.

    >>> noisy, pairs = corrupt(np.eye(4, dtype=np.uint8), 0.5, seed=0)
    >>> sorted(kind for _, _, kind in pairs)
    ['added', 'removed']
    """
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    n, num_labels = labels.shape
    picked = rng.choice(n, size=max(2, round(share * n)), replace=False)
    half = len(picked) // 2
    pairs: list[tuple[int, int, str]] = []
    for k, i in enumerate(picked):
        carried = np.flatnonzero(labels[i])
        if k < half or len(carried) == 0:  # a text with no label can only gain one
            j = int(rng.choice(np.setdiff1d(np.arange(num_labels), carried)))
            noisy[i, j] = 1
            pairs.append((int(i), j, "added"))
        else:
            j = int(rng.choice(carried))
            noisy[i, j] = 0
            pairs.append((int(i), j, "removed"))
    return noisy, pairs


def write_tsv(path: Path, texts: list[str], labels: np.ndarray, ids: list[str]) -> None:
    """The official GoEmotions TSV: text, comma-separated label ids, id."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        for text, row, text_id in zip(texts, labels, ids, strict=True):
            writer.writerow([text, ",".join(str(j) for j in np.flatnonzero(row)), text_id])


def ranking_figures(score: np.ndarray, truth: np.ndarray, top_share: float) -> dict[str, float]:
    """ROC-AUC, recall in the top ``top_share`` of pairs, precision = recall at k = #corrupted."""
    from sklearn.metrics import roc_auc_score

    flat, bad = score.ravel(), truth.ravel().astype(bool)
    order = np.argsort(-flat, kind="stable")
    top = order[: math.ceil(top_share * flat.size)]
    at_k = order[: int(bad.sum())]
    return {
        "roc_auc": float(roc_auc_score(bad, flat)),
        "recall_top_share": float(bad[top].sum() / bad.sum()),
        "precision_at_k": float(bad[at_k].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    from goemo.audit.runner import OOF_FILE, run_audit
    from goemo.core.config import resolve_config
    from goemo.data.io import load_goemotions
    from goemo.data.split import Split

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="GoEmotions folder (default: ../shared/goemotions)")
    ap.add_argument("--texts", type=int, default=10000, help="training texts sampled and audited")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.05, help="share of texts corrupted")
    ap.add_argument("--top", type=float, default=0.05, help="the top share of the ranking to report recall in")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample, the corruption and training")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--epochs", type=float, default=None, help="override the preset's epochs")
    ap.add_argument("--max-eval-samples", type=int, default=1000, help="dev texts the folds select on")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="override the preset's model")
    ap.add_argument("--out", default="runs/bench-audit")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    data_dir = find_data(args.data_dir)
    out = Path(args.out)
    splits = load_goemotions(data_dir)
    sample = splits["train"].sample(args.texts, seed=args.seed)
    noisy, pairs = corrupt(sample.labels, args.noise, args.seed)
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "train.tsv", sample.texts, noisy, sample.ids)
    for name in ("dev.tsv", "test.tsv", "emotions.txt"):
        shutil.copyfile(data_dir / name, folder / name)

    overrides = {
        "data_dir": str(folder),
        "epochs": args.epochs,
        "max_eval_samples": args.max_eval_samples,
        "num_threads": args.num_threads,
        "model": args.model,
        "seed": args.seed,
        "cache_dir": str(out / "cache"),
    }
    config = resolve_config(args.preset, overrides=overrides)
    t0 = time.perf_counter()
    result = run_audit(config, out / "audit", folds=args.folds)
    audit_s = time.perf_counter() - t0

    with np.load(out / "audit" / OOF_FILE, allow_pickle=False) as saved:
        ids = [str(i) for i in saved["ids"]]
        score, probs, given = saved["score"], saved["probs"], saved["labels"]
    audited = json.loads((out / "audit" / "audit.json").read_text())["data_checksum"]
    expected = Split(sample.texts, sample.ids, noisy, sample.label_names, "train").checksum()
    if ids != [str(i) for i in sample.ids] or not np.array_equal(given, noisy) or audited != expected:
        sys.exit("the audit's texts are not the corrupted sample")
    truth = np.zeros_like(given)
    for i, j, _ in pairs:
        truth[i, j] = 1
    self_confidence = np.where(given == 1, 1 - probs, probs)  # 1 - p(given value): no per-label thresholds
    kinds = {kind: [(i, j) for i, j, k in pairs if k == kind] for kind in ("added", "removed")}
    flagged = score >= 0
    figures = {
        "audit score": ranking_figures(score, truth, args.top),
        "1 - self-confidence": ranking_figures(self_confidence, truth, args.top),
    }
    total_s = time.perf_counter() - started
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "texts": len(sample),
        "labels": given.shape[1],
        "pairs": int(given.size),
        "corrupted_texts": len(pairs),
        "corrupted_pairs": {k: len(v) for k, v in kinds.items()},
        "folds": args.folds,
        "preset": args.preset,
        "config": {k: getattr(config, k) for k in ("model", "epochs", "max_length", "batch_size", "loss", "seed")},
        "max_eval_samples": args.max_eval_samples,
        "figures": figures,
        "flagged": {
            "pairs": int(flagged.sum()),
            "corrupted_flagged": float(flagged[truth == 1].mean()),
            "precision": float(truth[flagged].mean()) if flagged.any() else None,
            **{f"{kind}_flagged": float(np.mean([flagged[i, j] for i, j in v])) for kind, v in kinds.items()},
        },
        "audit_seconds": round(audit_s),
        "total_seconds": round(total_s),
        "audit_flagged_by_kind": result.flagged,
    }
    (out / "audit_recall.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print(f"| score | ROC-AUC | recall in top {args.top:.0%} of pairs | precision = recall at k = {len(pairs)} |")
    print("|---|---:|---:|---:|")
    for name, f in figures.items():
        print(f"| {name} | {f['roc_auc']:.3f} | {f['recall_top_share']:.1%} | {f['precision_at_k']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
