"""How far to shrink dev-tuned per-label thresholds towards one global threshold, chosen on dev.

A rare label's F1-maximising threshold on dev rests on a handful of positives, so it is
partly noise. This script scores each ``shrink`` value (0 = each label's own value, 1 = one
global threshold; `goemo.scoring.metrics.tune_thresholds`) for each model folder given, and for
their mean probability:

- on dev alone, by the cross-tuned macro-F1 (tune on one random half, score on the other,
  both ways), averaged over ``--halvings`` random halvings: the number to choose by;
- on test, with thresholds tuned on the whole dev split: shown only to check the choice,
  never used to make it.

    python benchmarks/threshold_rules.py runs/quality-seed42/best runs/quality-seed43/best \
        runs/quality-seed44/best --data-dir data/goemotions
"""

from __future__ import annotations

import argparse
import json

import numpy as np

SHRINKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main(argv: list[str] | None = None) -> int:
    from goemo.core.folder import ModelFolder
    from goemo.data.source import DataSource
    from goemo.predict.cache import predict_split
    from goemo.scoring.metrics import cross_tuned_f1_macro, summary, tune_thresholds

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model folders (best/) trained on the same labels")
    ap.add_argument("--data-dir", default="data/goemotions")
    ap.add_argument("--halvings", type=int, default=20, help="random halvings of dev to average over")
    ap.add_argument("--shrinks", default=",".join(str(s) for s in SHRINKS))
    args = ap.parse_args(argv)
    shrinks = [float(s) for s in args.shrinks.split(",")]

    names = ModelFolder.open(args.models[0]).label_names
    dev, test = (DataSource.folder(args.data_dir).split(s, names) for s in ("dev", "test"))
    probs = {
        m: {s: predict_split(m, split).probs.astype(np.float64) for s, split in (("dev", dev), ("test", test))}
        for m in args.models
    }
    if len(args.models) > 1:
        probs["mean probability"] = {s: np.mean([p[s] for p in probs.values()], axis=0) for s in ("dev", "test")}

    table: dict[str, dict[float, tuple[float, float]]] = {}
    for name, p in probs.items():
        table[name] = {}
        for shrink in shrinks:
            xtuned = np.mean(
                [
                    cross_tuned_f1_macro(dev.labels, p["dev"], split_name="dev", seed=k, shrink=shrink)
                    for k in range(args.halvings)
                ]
            )
            tuned = tune_thresholds(dev.labels, p["dev"], split_name="dev", shrink=shrink)
            on_test = summary(test.labels, p["test"], tuned.values)["f1_macro"]
            table[name][shrink] = (float(xtuned), float(on_test))

    print(f"dev macro-F1 cross-tuned (mean of {args.halvings} halvings) / test macro-F1 with thresholds tuned on dev")
    print("| model | " + " | ".join(f"shrink {s:g}" for s in shrinks) + " |")
    print("|---|" + "---:|" * len(shrinks))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{x:.4f} / {t:.4f}" for x, t in row.values()) + " |")
    singles = [n for n in table if n != "mean probability"]
    best = max(shrinks, key=lambda s: np.mean([table[n][s][0] for n in singles]))
    print(f"chosen on dev (best mean cross-tuned F1 over the single models): shrink {best:g}")
    print(
        json.dumps({"chosen_shrink": best, "table": {n: {str(s): v for s, v in r.items()} for n, r in table.items()}})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
