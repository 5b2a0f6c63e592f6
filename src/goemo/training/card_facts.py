"""What training measured that the model card shows (`goemo.models.card.CardFacts`), which computes nothing itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from goemo.core.thresholds import TunedThresholds
from goemo.data.split import Split
from goemo.models.card import CardFacts, LabelRow, data_origin
from goemo.scoring.bootstrap import bootstrap_scores
from goemo.scoring.metrics import compute_metrics


def label_rows(split: Split, probs: np.ndarray, thresholds: TunedThresholds | float) -> list[LabelRow]:
    """One `LabelRow` per label of ``split`` at ``thresholds``, in label order."""
    report = compute_metrics(split.labels, probs, split.label_names, thresholds=thresholds, sweep=None)
    values = (
        np.asarray(thresholds, dtype=np.float64)
        if isinstance(thresholds, TunedThresholds)
        else np.full(len(split.label_names), float(thresholds))
    )
    return [
        LabelRow(m.name, round(float(t), 6), m.precision, m.recall, m.f1, m.auc, int(m.support))
        for m, t in zip(report.per_label, values)
    ]


def card_facts(
    splits: Mapping[str, Split],
    probs: Mapping[str, np.ndarray],
    tuned: TunedThresholds | None,
    summary: Mapping[str, Any],
    threshold: float = 0.3,
    training_config: Mapping[str, Any] | None = None,
) -> CardFacts:
    """Per-label rows on test (else dev) at the tuned thresholds, sizes, label counts, selection and resources.

    With ``training_config``, also where the data came from, judged now, while a local path still exists.
    """
    split = "test" if "test" in probs else "dev"
    chosen = tuned if tuned is not None else threshold
    rows = label_rows(splits[split], probs[split], chosen) if split in probs else []
    intervals = None
    if rows:  # the rows' 95% intervals: 1,000 seeded resamples of the texts (`goemo.scoring.bootstrap`)
        values = chosen.values if isinstance(chosen, TunedThresholds) else chosen
        data = splits[split]
        intervals = bootstrap_scores(data.labels, probs[split], values, data.label_names).to_dict()
    train = splits["train"]
    counts = np.asarray(train.labels).sum(axis=0)
    return CardFacts(
        per_label=rows,
        per_label_split=split if rows else None,
        split_sizes={k: len(s) for k, s in splits.items()},
        train_label_counts={n: int(c) for n, c in zip(train.label_names, counts)},
        selection={
            "best_epoch": summary.get("best_epoch"),
            "epochs_run": len(summary.get("epochs") or []),
            "select_metric": summary.get("select_metric"),
            "best_metric": summary.get("best_metric"),
        },
        resources=dict(summary.get("resources") or {}),
        data_origin=asdict(data_origin(training_config)) if training_config is not None else None,
        intervals=intervals,
    )
