"""`goemo reproduce`: the whole paper path in one call, with nothing tuned on test.

Data check -> train (resuming) -> best epoch and thresholds on dev -> test at 0.3 and at the
dev thresholds -> Ekman and sentiment projections -> the Table 4 / Table 5 report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goemo.core.config import resolve_config
from goemo.core.errors import DownloadError
from goemo.data.download import fetch

log = logging.getLogger(__name__)

# Demszky et al. (2020): BERT-base test macro-F1 at threshold 0.3 (Tables 4 and 5).
PAPER_MACRO_F1 = {"goemotions": 0.46, "ekman": 0.64, "sentiment": 0.69}


@dataclass
class ReproduceResult:
    run_dir: Path
    rows: list[dict[str, Any]]  # one per (taxonomy, thresholds): macro P/R/F1 beside the paper
    report_html: Path
    train_summary: dict[str, Any]


def ensure_data(dest: str | Path, source: str | Path | None = None) -> Path:
    """Make sure ``dest`` holds the six verified files; fetch them when it does not."""
    try:
        fetch(dest, source)
    except DownloadError as e:
        raise DownloadError(f"{e} (reproduce: pass --from DIR_OR_URL to use a copy of the data)") from None
    return Path(dest)


def reproduce(
    preset: str = "fast",
    out: str | Path = "runs/reproduce",
    data_dir: str | Path = "data/goemotions",
    source: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ReproduceResult:
    """Run the paper's protocol end to end and return the comparison rows.

    Re-running the same command continues an interrupted run (``--resume`` semantics) and
    reuses cached predictions, so it is cheap once done.

        result = reproduce("fast", "runs/reproduce", source="../shared/goemotions")
        result.rows[0]["macro_f1"]
    """
    # `goemo.cli` imports this module for `goemo --help`, which must not load torch or the extras.
    from goemo.evaluation.evaluate import evaluate  # noqa: PLC0415  (optional extra: train)
    from goemo.report.builder import build_report  # noqa: PLC0415  (optional extra: report)
    from goemo.training.loop import train  # noqa: PLC0415  (optional extra: train)

    data = ensure_data(data_dir, source)
    config = resolve_config(
        preset, overrides={**(overrides or {}), "data_dir": str(data), "output": str(out), "resume": True}
    )
    result = train(config)
    rows: list[dict[str, Any]] = []
    for taxonomy in ("goemotions", "ekman", "sentiment"):
        for thresholds in ("fixed", "tuned"):
            scored = evaluate(
                result.best_dir,
                "test",  # from the data it was trained on (goemo.json's data_source)
                thresholds=thresholds,
                taxonomy=None if taxonomy == "goemotions" else taxonomy,
            )
            macro = scored.report.macro
            bands = scored.add_intervals()  # 95%, 1,000 seeded resamples; None for a projected grouping
            rows.append(
                {
                    "taxonomy": taxonomy,
                    "thresholds": scored.thresholds.description,
                    "macro_precision": macro.precision,
                    "macro_recall": macro.recall,
                    "macro_f1": macro.f1,
                    "macro_f1_interval": None if bands is None else [bands.f1_macro.low, bands.f1_macro.high],
                    "paper_macro_f1": PAPER_MACRO_F1[taxonomy],
                }
            )
    report = build_report(result.run_dir, split="test")
    return ReproduceResult(result.run_dir, rows, report.html, result.summary)
