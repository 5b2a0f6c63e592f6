"""Quality of a preset end to end: test macro-F1 (thresholds from dev) beside the field.

Runs `goemo reproduce` (train, select and tune on dev, evaluate on test once) and prints
its test macro-F1 beside published GoEmotions results, with the wall time.

    python benchmarks/quality.py --preset fast --data-dir data/goemotions --from ../shared/goemotions
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
    ap.add_argument("--epochs", type=float, default=None)
    args = ap.parse_args(argv)

    from goemo.reproduce import reproduce

    start = time.perf_counter()
    result = reproduce(args.preset, args.out, args.data_dir, args.source, {"seed": args.seed, "epochs": args.epochs})
    wall = time.perf_counter() - start
    rows = {(r["taxonomy"], "dev" in r["thresholds"]): r["macro_f1"] for r in result.rows}
    ours_tuned, ours_fixed = rows[("goemotions", True)], rows[("goemotions", False)]
    print(f"goemo --preset {args.preset}: test macro-F1 {ours_tuned:.3f} (dev-tuned thresholds), "
          f"{ours_fixed:.3f} at 0.3; Ekman {rows[('ekman', False)]:.3f}, sentiment {rows[('sentiment', False)]:.3f} "
          f"at 0.3; wall {wall / 60:.1f} min")
    for name, value in REFERENCES:
        print(f"  {value:.2f}  {name}   (goemo {ours_tuned - value:+.3f})")
    print(json.dumps({"preset": args.preset, "test_macro_f1_tuned": ours_tuned, "test_macro_f1_at_0.3": ours_fixed,
                      "wall_s": round(wall, 1), "run_dir": str(result.run_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
