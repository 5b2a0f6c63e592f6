"""``goemo evaluate``, ``goemo report`` and ``goemo ensemble``: scoring model folders on a split."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from goemo.cli.common import Opt, command, data_source, make_console, sort_option
from goemo.cli.options import gather, with_options
from goemo.core.run_settings import DataOptions, RunSettings


class EvalFormat(str, Enum):
    """Output formats of `goemo evaluate`."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class ThresholdMode(str, Enum):
    """fixed: one global threshold; tuned: the per-label thresholds tuned on dev in training."""

    fixed = "fixed"
    tuned = "tuned"


@command(
    "evaluate",
    epilog=(
        "Example: goemo evaluate --model runs/minilm/best --split test --thresholds tuned --taxonomy ekman   "
        "(a Hugging Face dataset: --dataset go_emotions --dataset-config simplified)"
    ),
)
@with_options(DataOptions, RunSettings)
def evaluate_command(
    model: Path = Opt(..., "--model", help="Model folder written by goemo train, e.g. runs/NAME/best."),
    split: str = Opt(
        "test", help="train | dev | test (read from --data-dir or --dataset), or a .tsv/.csv/.jsonl file."
    ),
    threshold: Optional[float] = Opt(
        None, "--threshold", min=0.0, max=1.0, help="One global threshold (default: goemo.json's, the paper's 0.3)."
    ),
    thresholds: Optional[ThresholdMode] = Opt(
        None, "--thresholds", help="fixed (one global threshold) or tuned (per-label, tuned on dev in training)."
    ),
    taxonomy: Optional[str] = Opt(
        None, help="goemotions | ekman | sentiment (default: the model's own); 28-label models are projected."
    ),
    out: Optional[Path] = Opt(None, "--out", help="Also write evaluation.json, .csv and .md into this folder."),
    fmt: EvalFormat = Opt(EvalFormat.table, "--format", help="table, json, csv or markdown on stdout."),
    max_samples: Optional[int] = Opt(None, min=1, help="Score a seeded random subset of the split (quick checks)."),
    no_cache: bool = Opt(False, "--no-cache", help="Run the model even if cached predictions exist; store none."),
    sort: Optional[str] = sort_option(),
    resamples: int = Opt(
        1000, "--resamples", min=0, help="Bootstrap resamples of the texts for the 95% intervals (0: none)."
    ),
    **options: Any,
) -> None:
    """Per-label and averaged metrics of a model folder on a split, at one or per-label thresholds.

    Predictions are cached in the run's predictions/ folder, so a second evaluation (another
    threshold or taxonomy) does not run the model again.
    """
    from goemo.evaluation.evaluate import evaluate, rows_to_csv, write_evaluation  # numpy, scikit-learn
    from goemo.scoring.metrics import sort_labels

    if threshold is not None and thresholds is ThresholdMode.tuned:
        raise typer.BadParameter("give --threshold or --thresholds tuned, not both", param_hint="--threshold")
    source, settings = data_source(options), gather(RunSettings, options)
    spec = threshold if threshold is not None else (thresholds.value if thresholds else None)
    result = evaluate(
        model,
        split,
        source=source,
        settings=settings,
        thresholds=spec,
        taxonomy=taxonomy,
        max_samples=max_samples,
        cache=not no_cache,
    )
    result.add_intervals(resamples)
    result.add_calibration()
    if sort is not None:
        result.report = dataclasses.replace(result.report, per_label=sort_labels(result.report.per_label, sort))
    if out is not None:
        write_evaluation(result, out)
    if fmt is EvalFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif fmt is EvalFormat.csv:
        typer.echo(rows_to_csv(result.to_rows()), nl=False)
    elif fmt is EvalFormat.markdown:
        typer.echo(result.to_markdown(), nl=False)
    else:
        _print_evaluation(result)
    if out is not None:
        typer.echo(f"evaluation.json, evaluation.csv and evaluation.md written to {out}", err=True)


def _print_evaluation(result) -> None:
    """Rich tables: per label with the averages below, then the paper's threshold sweep."""

    def cell(value, digits: int = 3) -> str:
        return "n/a" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}")

    def span(row: dict[str, Any]) -> list[str]:  # the F1 interval's column, when there is one
        if result.intervals is None:
            return []
        low, high = row.get("f1_low"), row.get("f1_high")
        return ["" if low is None or high is None else f"{low:.3f}–{high:.3f}"]

    r = result.report
    rows = {row["label"]: row for row in result.to_rows()}
    table = Table(title=result.headline(), title_justify="left", box=box.SIMPLE_HEAD)
    c = result.calibration
    ece = {} if c is None else dict(zip(c.label_names, c.ece_after.tolist()))
    names = ("label", "P", "R", "F1", *(["F1 95% CI"] if result.intervals else []), "n", "predicted", "ROC-AUC", "AP")
    names += ("ECE",) if ece else ()
    for name in names:
        table.add_column(name, justify="left" if name == "label" else "right", no_wrap=True)

    def add_row(name: str, m: Any, interval: dict[str, Any], predicted: str, ece_cell: str, **style: Any) -> None:
        scores = (cell(m.precision), cell(m.recall), cell(m.f1), *span(interval), cell(m.support), predicted)
        table.add_row(name, *scores, cell(m.auc), cell(m.ap), *([ece_cell] if ece else []), **style)

    for m in r.per_label:
        name = m.name + ("" if m.defined else " †")
        add_row(name, m, rows[m.name], cell(m.predicted), cell(ece.get(m.name), 4))
    table.add_section()
    for avg in (r.macro, r.micro, r.weighted, r.samples):
        macro = avg.name == "macro"
        ece_cell = cell(c.macro_ece_after, 4) if macro and c else ""
        add_row(avg.name, avg, rows[avg.name] if macro else {}, "", ece_cell, style="bold" if macro else None)
    console = make_console()
    console.print(table)
    if result.intervals is not None:
        console.print(result.interval_text(), highlight=False)
    if c is not None:
        lost = sum(row["ece_before"] is None for row in c.rows())
        unknown = f" ({lost} isotonic label(s) left out: their maps cannot be undone)" if lost else ""
        raw = "" if set(c.methods) == {"none"} else f"; the raw model's scores: {c.macro_ece_before:.4f}{unknown}"
        console.print(f"macro ECE ({c.bins} bins) {c.macro_ece_after:.4f}{raw}", highlight=False)
    console.print(
        f"exact match {cell(r.exact_match)}; {result.thresholds.description}; "
        f"predictions {'from the cache' if result.predictions.from_cache else 'computed'}"
        + (f" ({result.predictions.cache_path})" if result.predictions.cache_path else "")
    )
    for note in r.notes:
        console.print(f"- {note}", highlight=False)
    if r.at_thresholds:
        sweep = Table(title="at each global threshold (the paper's sweep)", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("threshold", "macro P", "macro R", "macro F1", "micro F1", "exact match"):
            sweep.add_column(name, justify="right", no_wrap=True)
        for row in r.at_thresholds:  # micro P/R: --format json, csv or markdown
            sweep.add_row(
                f"{row.threshold:g}",
                *(
                    cell(v)
                    for v in (row.macro_precision, row.macro_recall, row.macro_f1, row.micro_f1, row.exact_match)
                ),
            )
        console.print(sweep)


@command(
    "report",
    epilog="Example: goemo report runs/minilm --compare runs/tiny --data-dir data/goemotions",
)
@with_options(DataOptions, RunSettings)
def report_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by goemo train (holds best/)."),
    compare: Optional[list[Path]] = Opt(
        None, "--compare", metavar="RUN_DIR", help="Another run folder to compare with (repeatable)."
    ),
    split: str = Opt("test", help="Split to report on: train | dev | test, or a data file."),
    data_analysis: Optional[Path] = Opt(
        None, "--data-analysis", help="Folder written by goemo stats --out (default: data-analysis beside RUN_DIR)."
    ),
    max_samples: Optional[int] = Opt(None, min=1, help="Report on a seeded random subset (quick looks only)."),
    no_cache: bool = Opt(False, "--no-cache", help="Run the model even if cached predictions exist; store none."),
    sort: Optional[str] = sort_option(),
    **options: Any,
) -> None:
    """Write RUN_DIR/report.md, a self-contained RUN_DIR/report.html and RUN_DIR/plots/*.png.

    Per-label results beside the paper's Tables 4 and 5, problematic classes, precision-recall
    curves, label confusion with examples, training curves, resources and the run config.
    """
    from goemo.report import ScoringOptions, build_report  # matplotlib, numpy, scikit-learn

    result = build_report(
        run_dir,
        split=split,
        source=data_source(options),
        compare=compare or (),
        data_analysis=data_analysis,
        scoring=ScoringOptions(max_samples, gather(RunSettings, options), cache=not no_cache),
        sort=sort,
    )
    s = result.scored
    tuned = f", {s.tuned.report.macro.f1:.3f} with dev-tuned thresholds" if s.tuned else ""
    typer.echo(
        f"{s.data.name} macro F1 {s.fixed.report.macro.f1:.3f} at threshold 0.3{tuned} "
        f"({len(s.data):,} texts; predictions {'computed' if result.model_ran else 'from the cache'})"
    )
    typer.echo(
        f"report: {result.markdown} and {result.html} ({len(result.plots)} plots in {result.html.parent / 'plots'})"
    )


@command(
    "ensemble",
    epilog="Example: goemo ensemble runs/seed1/best runs/seed2/best runs/seed3/best --out runs/ensemble",
)
@with_options(DataOptions, RunSettings)
def ensemble_command(
    models: list[Path] = typer.Argument(..., help="Model folders written by goemo train (same labels)."),
    split: str = Opt("test", help="The split to score (never the one thresholds are tuned on)."),
    tune_split: str = Opt("dev", help="The split the per-label thresholds are tuned on."),
    threshold: float = Opt(0.3, min=0.0, max=1.0, help="The fixed threshold of the first column (the paper's 0.3)."),
    threshold_shrink: Optional[float] = Opt(
        None,
        min=0.0,
        max=1.0,
        help="Pull tuned per-label thresholds this far towards the best global one (default: as the first model was trained).",
    ),
    out: Optional[Path] = Opt(None, "--out", help="Also write ensemble.json and ensemble.md into this folder."),
    **options: Any,
) -> None:
    """Each model alone (mean ± sd over the members: the seed spread) and the average of their probabilities.

    Thresholds are tuned per label on --tune-split for every member and for the ensemble;
    predictions come from each run's cache when present.
    """
    from goemo.evaluation.ensemble import evaluate_ensemble, write_ensemble  # numpy, scikit-learn

    result = evaluate_ensemble(
        models,
        source=data_source(options),
        settings=gather(RunSettings, options),
        tune_split=tune_split,
        eval_split=split,
        threshold=threshold,
        shrink=threshold_shrink,
    )
    typer.echo(result.to_markdown(), nl=False)
    if out is not None:
        write_ensemble(result, out)
        typer.echo(f"ensemble.json and ensemble.md written to {out}", err=True)
