"""``goemo compare``: does model A beat model B? (`goemo.evaluation.compare.compare_models`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich import box
from rich.table import Table

from goemo.cli.calibrate import OutputFormat
from goemo.cli.common import Opt, command, data_source, make_console
from goemo.cli.options import with_options
from goemo.core.run_settings import DataOptions

if TYPE_CHECKING:
    from goemo.evaluation.compare import Comparison


@command(
    "compare",
    epilog="Example: goemo compare runs/minilm runs/tfidf --split test   (paired bootstrap, 1,000 resamples)",
)
@with_options(DataOptions)
def compare_command(
    run_a: Path = typer.Argument(..., help="Model A: a run folder (its best/) or a model folder."),
    run_b: Path = typer.Argument(..., help="Model B: a run folder (its best/) or a model folder."),
    split: str = Opt("test", help="train | dev | test, or a .tsv/.csv/.jsonl file (the same texts for both)."),
    threshold: Optional[float] = Opt(None, "--threshold", min=0.0, max=1.0, help="One global threshold for both."),
    fixed: bool = Opt(
        False, "--fixed", help="Each model's global threshold (the paper's 0.3) instead of its dev-tuned ones."
    ),
    resamples: int = Opt(1000, "--resamples", min=1, help="Bootstrap resamples of the texts (1,000 or more)."),
    seed: int = Opt(0, help="Seed of the resamples."),
    max_samples: Optional[int] = Opt(None, min=1, help="Score a seeded random subset of the split (quick checks)."),
    fmt: OutputFormat = Opt(OutputFormat.table, "--format", help="table or json on stdout."),
    **options: Any,
) -> None:
    """Does model A beat model B? Macro-F1 and macro ROC-AUC with a paired bootstrap.

    Both models are scored on the same texts (their cached predictions, each at its own
    dev-tuned thresholds by default); the texts are resampled 1,000 times and both models
    scored on each resample. Prints A - B, its 95% interval, a two-sided p-value (twice the
    share of resamples where the difference has the other sign), and each model's intervals.
    """
    from goemo.evaluation.compare import compare_models  # numpy, scikit-learn, torch when a model runs
    from goemo.scoring.bootstrap import Resampling

    if threshold is not None and fixed:
        raise typer.BadParameter("give --threshold or --fixed, not both", param_hint="--threshold")
    spec = threshold if threshold is not None else ("fixed" if fixed else "tuned")
    result = compare_models(
        run_a,
        run_b,
        split,
        source=data_source(options),
        thresholds=spec,
        resampling=Resampling(n_resamples=resamples, seed=seed),
        max_samples=max_samples,
    )
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_comparison(result)


def _print_comparison(result: Comparison) -> None:
    console = make_console()
    console.print(result.headline(), highlight=False)
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("metric", "A", "B", "A - B", "95% CI of A - B", "p"):
        table.add_column(name, justify="left" if name == "metric" else "right", no_wrap=True)
    label = {"f1_macro": "macro F1", "auc_macro": "macro ROC-AUC"}
    scores = {"f1_macro": (result.scores_a.f1_macro, result.scores_b.f1_macro)}
    scores["auc_macro"] = (result.scores_a.auc_macro, result.scores_b.auc_macro)
    for metric, c in result.paired.items():
        a, b = scores[metric]
        diff = "n/a" if c.difference is None else f"{c.difference:+.4f}"
        ci = "n/a" if c.low is None or c.high is None else f"{c.low:+.4f} to {c.high:+.4f}"
        table.add_row(label[metric], str(a), str(b), diff, ci, c.p_text().removeprefix("p = ").removeprefix("p "))
    console.print(table)
    for c in result.paired.values():
        console.print(c.verdict("A", "B"), highlight=False)
