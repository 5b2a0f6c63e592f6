"""Quality of a preset end to end: test macro-F1 (thresholds from dev) beside the field.

Runs `goemo reproduce` (train, select and tune on dev, evaluate on test once) and prints
its test macro-F1 beside published GoEmotions results, with the wall time. With ``--seeds``
it does so once per seed (runs OUT-seedN), then prints the spread over the seeds and the
seed ensemble (mean probabilities, per-label thresholds tuned on the averaged dev
probabilities; `goemo.evaluation.ensemble`).

    python benchmarks/quality.py --preset fast --data-dir data/goemotions --from ../shared/goemotions
    python benchmarks/quality.py --preset fast --seeds 42,43,44 --out runs/quality
    python benchmarks/quality.py --seeds 42,43,44 --out runs/distill \
        --teacher runs/q3-seed42/best --teacher runs/q3-seed43/best --teacher runs/q3-seed44/best

The whole distillation recipe in one command: ``--teacher-seeds`` first trains one teacher per
seed (runs OUT-teacher-seedN, ``--teacher-epochs`` epochs, resumable like every run), then
every student learns from all of them:

    python benchmarks/quality.py --seeds 42,43,44 --teacher-seeds 42,43,44 --teacher-epochs 3 --out runs/distill

With ``--teacher-folds 3`` the teachers are cross-fitted: each holds one third of the training
texts out, and every text is distilled from the teacher that never saw it.
"""

from __future__ import annotations

import argparse
import json
import time

# Test-split macro-F1 over the 28 labels, as reported (sources in docs/benchmarks.md / issue 8).
REFERENCES = [
    ("paper BERT-base, threshold 0.3 (Demszky et al. 2020, Table 4)", 0.46),
    ("official code rerun", 0.49),
    ("BERT-base, focal loss + label smoothing", 0.53),
    ("DistilBERT, per-label thresholds tuned on dev", 0.52),
    ("roberta-base-go_emotions at 0.5", 0.45),
    ("TF-IDF + logistic regression, dev-tuned thresholds", 0.44),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--data-dir", default="data/goemotions")
    ap.add_argument("--from", dest="source", default=None, help="local copy or mirror of the data")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--seeds", default=None, help="comma-separated seeds: one run each, then the spread and the ensemble"
    )
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--num-threads", type=int, default=None, help="CPU threads (e.g. 1 each for two runs side by side)")
    ap.add_argument("--teacher", action="append", default=None, help="distil from this model folder (repeatable)")
    ap.add_argument("--distill-alpha", type=float, default=None, help="weight of the teachers' probabilities")
    ap.add_argument(
        "--teacher-seeds",
        default=None,
        help="comma-separated seeds: train these teachers first (OUT-teacher-seedN), then distil from them",
    )
    ap.add_argument("--teacher-epochs", type=float, default=3.0, help="epochs for each --teacher-seeds teacher")
    ap.add_argument(
        "--teacher-folds",
        type=int,
        default=None,
        help="cross-fit the --teacher-seeds teachers: the i-th holds out fold i mod N of the training "
        "texts (OUT-teacher-seedS-foldK), and each text is distilled only from those that never saw it",
    )
    args = ap.parse_args(argv)

    if args.teacher_seeds:
        args.teacher = (args.teacher or []) + _train_teachers(args, _seed_list(args.teacher_seeds))

    if args.seeds:
        return _seeds(args, _seed_list(args.seeds))
    _one(args, args.seed, args.out)
    return 0


def _seed_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _train_teachers(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """Train (or finish) one plain model per seed and return their best/ folders.

    Each teacher is an ordinary run of this script (no teachers of its own, --teacher-epochs),
    so an interrupted recipe resumes where it stopped and a finished teacher costs nothing the
    second time.
    """
    plain = argparse.Namespace(**{**vars(args), "epochs": args.teacher_epochs, "teacher": None, "distill_alpha": None})
    folds = args.teacher_folds
    if not folds:
        return [f"{_one(plain, seed, f'{args.out}-teacher-seed{seed}')['run_dir']}/best" for seed in seeds]
    if len(seeds) < folds:
        raise SystemExit(f"--teacher-folds {folds} needs at least {folds} --teacher-seeds, one per fold")
    return [
        f"{_one(plain, seed, f'{args.out}-teacher-seed{seed}-fold{i % folds}', (i % folds, folds))['run_dir']}/best"
        for i, seed in enumerate(seeds)
    ]


def _one(args: argparse.Namespace, seed: int | None, out: str, holdout: tuple[int, int] | None = None) -> dict:
    from goemo.reproduce import reproduce

    start = time.perf_counter()
    result = reproduce(
        args.preset,
        out,
        args.data_dir,
        args.source,
        {
            "seed": seed,
            "epochs": args.epochs,
            "num_threads": args.num_threads,
            "teachers": args.teacher,
            "distill_alpha": args.distill_alpha,
            **({"holdout_fold": holdout[0], "num_folds": holdout[1]} if holdout else {}),
        },
    )
    wall = time.perf_counter() - start
    rows = {(r["taxonomy"], "dev" in r["thresholds"]): r["macro_f1"] for r in result.rows}
    ours_tuned, ours_fixed = rows[("goemotions", True)], rows[("goemotions", False)]
    print(
        f"goemo --preset {args.preset}: test macro-F1 {ours_tuned:.3f} (dev-tuned thresholds), "
        f"{ours_fixed:.3f} at 0.3; Ekman {rows[('ekman', False)]:.3f}, sentiment {rows[('sentiment', False)]:.3f} "
        f"at 0.3; wall {wall / 60:.1f} min"
    )
    for name, value in REFERENCES:
        print(f"  {value:.2f}  {name}   (goemo {ours_tuned - value:+.3f})")
    record = {
        "preset": args.preset,
        "seed": seed,
        "test_macro_f1_tuned": ours_tuned,
        "test_macro_f1_at_0.3": ours_fixed,
        "train_wall_s": result.train_summary["resources"]["wall_time_s"],
        "wall_s": round(wall, 1),
        "run_dir": str(result.run_dir),
    }
    print(json.dumps(record))
    return record


def _seeds(args: argparse.Namespace, seeds: list[int]) -> int:
    from goemo.data.source import DataSource
    from goemo.evaluation.ensemble import evaluate_ensemble, write_ensemble

    records = [_one(args, seed, f"{args.out}-seed{seed}") for seed in seeds]
    result = evaluate_ensemble([f"{r['run_dir']}/best" for r in records], source=DataSource.folder(args.data_dir))
    write_ensemble(result, args.out + "-ensemble")
    print(result.to_markdown())
    for key in ("f1_macro", "f1_macro_tuned"):
        s = result.spread.get(key)
        if s:
            print(
                f"{key}: {len(seeds)} seeds mean {s['mean']:.4f} sd {s['sd']:.4f} (min {s['min']:.4f}, max "
                f"{s['max']:.4f}); ensemble {result.ensemble[key]:.4f}"
            )
    print(
        json.dumps(
            {
                "preset": args.preset,
                "seeds": seeds,
                "spread": result.spread,
                "ensemble": result.ensemble,
                "train_wall_s": [r["train_wall_s"] for r in records],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
