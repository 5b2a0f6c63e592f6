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
- the same for the threshold-adjusted score that was measured and not kept (the log-odds by
  which each pair passes its label's confident-learning threshold).

``--probs-from MODEL`` checks the score alone, without training folds: MODEL (trained on the
train split, e.g. ``goemo baseline tfidf``) predicts dev and test, texts it never saw, and
their labels are corrupted and scored the same way.

    python benchmarks/audit_recall.py --texts 10000 --folds 3 --preset fast --out runs/bench-audit
    python benchmarks/audit_recall.py --probs-from runs/tfidf/best --out runs/bench-audit-tfidf

A killed run resumes (the audit reuses and resumes its folds). Its size is configurable
because each fold trains a model: on a loaded 2-core CPU use fewer texts and ``--epochs 1``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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


def threshold_log_odds(given: np.ndarray, probs: np.ndarray, present: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """The score not kept: log-odds past the label's threshold, ``logit(p) - logit(t_j)`` for a label
    not given, ``logit(a_j) - logit(p)`` for a given one (`goemo.audit.quality` for t_j and a_j)."""

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)

    t = np.nan_to_num(present, nan=1 - 1e-6)
    a = np.nan_to_num(absent, nan=1e-6)
    return np.where(given == 1, logit(a)[None, :] - logit(probs), logit(probs) - logit(t)[None, :])


def figures(given: np.ndarray, probs: np.ndarray, pairs: list[tuple[int, int, str]], top: float) -> dict:
    """Ranking figures of the audit score and of the score not kept, and what the audit flags."""
    from goemo.audit.quality import label_quality

    quality = label_quality(given, probs, [str(j) for j in range(given.shape[1])])
    truth = np.zeros_like(given)
    for i, j, _ in pairs:
        truth[i, j] = 1
    kinds = {kind: [(i, j) for i, j, k in pairs if k == kind] for kind in ("added", "removed")}
    flagged = quality.flagged
    other = threshold_log_odds(given, probs, quality.present_mean, quality.absent_mean)
    return {
        "corrupted_pairs": {k: len(v) for k, v in kinds.items()},
        "ranking": {
            "audit score (normalized margin)": ranking_figures(quality.score, truth, top),
            "threshold-adjusted log-odds (not kept)": ranking_figures(other, truth, top),
        },
        "flagged": {
            "pairs": int(flagged.sum()),
            "share_of_pairs": float(flagged.mean()),
            "corrupted_flagged": float(flagged[truth == 1].mean()),
            "precision": float(truth[flagged].mean()) if flagged.any() else None,
            **{f"{kind}_flagged": float(np.mean([flagged[i, j] for i, j in v])) for kind, v in kinds.items()},
        },
    }


def print_table(report: dict, top: float) -> None:
    k = sum(report["corrupted_pairs"].values())
    print(f"| score | ROC-AUC | recall in top {top:.0%} of pairs | precision = recall at k = {k} |")
    print("|---|---:|---:|---:|")
    for name, f in report["ranking"].items():
        print(f"| {name} | {f['roc_auc']:.3f} | {f['recall_top_share']:.1%} | {f['precision_at_k']:.1%} |")


def check_scores(model: str, data_dir: Path, args: argparse.Namespace) -> int:
    """``--probs-from``: the score on MODEL's out-of-sample probabilities of dev + test."""
    from goemo.data.io import load_goemotions
    from goemo.data.split import Split
    from goemo.predict.cache import predict_split

    started = time.perf_counter()
    splits = load_goemotions(data_dir)
    dev, test = splits["dev"], splits["test"]
    both = Split(dev.texts + test.texts, dev.ids + test.ids, np.vstack([dev.labels, test.labels]), dev.label_names)
    probs = predict_split(model, both).probs.astype(np.float32)
    noisy, pairs = corrupt(both.labels, args.noise, args.seed)
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "probabilities_of": model,
        "texts": len(both),
        "pairs": int(noisy.size),
        "seed": args.seed,
        **figures(noisy, probs, pairs, args.top),
        "seconds": round(time.perf_counter() - started),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit_recall.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print_table(report, args.top)
    return 0


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
    ap.add_argument("--probs-from", default=None, help="a model trained on train: score its dev + test probabilities")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    data_dir = find_data(args.data_dir)
    if args.probs_from:
        return check_scores(args.probs_from, data_dir, args)
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
    # The audit reads the whole sample written above (--texts sizes it), even where
    # GOEMO_MAX_TRAIN_SAMPLES would otherwise sample it again.
    config = dataclasses.replace(resolve_config(args.preset, overrides=overrides), max_train_samples=None)
    t0 = time.perf_counter()
    result = run_audit(config, out / "audit", folds=args.folds)
    audit_s = time.perf_counter() - t0

    with np.load(out / "audit" / OOF_FILE, allow_pickle=False) as saved:
        ids = [str(i) for i in saved["ids"]]
        probs, given = saved["probs"], saved["labels"]
    audited = json.loads((out / "audit" / "audit.json").read_text())["data_checksum"]
    expected = Split(sample.texts, sample.ids, noisy, sample.label_names, "train").checksum()
    if ids != [str(i) for i in sample.ids] or not np.array_equal(given, noisy) or audited != expected:
        sys.exit("the audit's texts are not the corrupted sample")
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "texts": len(sample),
        "labels": given.shape[1],
        "pairs": int(given.size),
        "corrupted_texts": len(pairs),
        "folds": args.folds,
        "preset": args.preset,
        "config": {k: getattr(config, k) for k in ("model", "epochs", "max_length", "batch_size", "loss", "seed")},
        "max_eval_samples": args.max_eval_samples,
        **figures(given, probs, pairs, args.top),
        "fold_dev_auc_macro": [
            json.loads((out / "audit" / "folds" / f"fold-{k}" / "summary.json").read_text())["dev"]["auc_macro"]
            for k in range(args.folds)
        ],
        "audit_seconds": round(audit_s),
        "total_seconds": round(time.perf_counter() - started),
        "audit_flagged_by_kind": result.flagged,
    }
    (out / "audit_recall.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print_table(report, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
