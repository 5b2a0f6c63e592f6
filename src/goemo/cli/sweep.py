"""``goemo sweep`` and ``goemo sweep-report``: hyperparameter sweeps over training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.table import Table

from goemo.cli.common import Opt, command, make_console
from goemo.cli.options import given, with_options
from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.sweeps.report import write_sweep_report


def _parse_sets(items: list[str] | None) -> dict:
    """``--set key=value`` pairs; values are read as YAML (numbers, booleans, null, lists)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set warmup_ratio=0.06")
        out[key.strip()] = yaml.safe_load(value)
    return out


# The training options a sweep's base run takes on the command line (the rest: --set KEY=VALUE);
# declared once, by TrainConfig's fields, as goemo train's.
BASE_OPTIONS = (
    "data_dir",
    "dataset",
    "dataset_config",
    "model",
    "init_from",
    "epochs",
    "max_train_samples",
    "max_eval_samples",
    "device",
    "precision",
    "num_threads",
    "cache_dir",
    "seed",
)


@command(
    "sweep",
    epilog=(
        "Example: goemo sweep --config examples/wandb_report_sweep.yaml --count 6 --model minilm "
        "--data-dir data/goemotions   (on more machines: the same command with --storage postgresql://...)"
    ),
)
@with_options(TrainConfig, only=BASE_OPTIONS)
def sweep_command(
    config: Path = Opt(
        ..., "--config", help="Sweep config in W&B format (method, metric, parameters, early_terminate)."
    ),
    count: Optional[int] = Opt(
        None, min=1, help="Trials in all, shared by every worker (default: the grid size, or run_cap)."
    ),
    storage: Optional[str] = Opt(
        None,
        help="Optuna storage URL (default: SQLite study.db in the sweep folder), e.g. postgresql://user:pw@host/db",
    ),
    study: Optional[str] = Opt(None, help="Study name (default: the config's name, else its file name)."),
    workers: int = Opt(1, min=1, help="Worker processes on this machine (GPUs are shared out one per worker)."),
    output: Optional[Path] = Opt(None, help="Sweep folder (default runs/sweeps/STUDY)."),
    trackers: Optional[list[str]] = Opt(
        None, "--tracker", help="tensorboard | mlflow | wandb for every trial (repeatable)."
    ),
    preset: Optional[str] = Opt(None, help="Base options: paper | wandb-report | fast"),
    base_config: Optional[Path] = Opt(None, help="Base options from a YAML file (as goemo train --config)."),
    eval_test: Optional[bool] = Opt(
        None,
        "--eval-test/--no-eval-test",
        help="Also evaluate each trial's best model on test (off by default: a sweep chooses on dev).",
    ),
    set_: Optional[list[str]] = Opt(None, "--set", help="Any other training option, KEY=VALUE (repeatable)."),
    **base: Any,
) -> None:
    """Run a hyperparameter sweep: each trial is a training run folder in SWEEP/trials/N.

    The same command resumes a killed sweep, retries the trials that failed (fix the cause
    first) and, run on more machines against one --storage, adds workers to it. Parameter
    names may be W&B's (learning_rate, tokenizer_max_len, ...) or goemo's; metric auc_score
    is macro ROC-AUC. Each trial keeps its best epoch by its select_metric (parameters:
    select_metric: {value: val_loss} in the config); its value is the sweep metric at that
    epoch. Exits 1 when every trial this command ran failed, or when nothing ran and the
    study holds only failures.
    """
    from goemo.sweeps.runner import BaseOptions, prepare_sweep, route_optuna_logging, run_sweep  # optuna, sqlalchemy

    route_optuna_logging()
    overrides = {**given(TrainConfig, base), "eval_test": eval_test, **_parse_sets(set_)}
    sweep = prepare_sweep(
        config,
        output=output,
        count=count,
        storage=storage,
        study_name=study,
        base=BaseOptions(preset, base_config, overrides),
        trackers=trackers or [],
    )
    for note in sweep.spec.notes:
        typer.echo(f"note: {note}", err=True)
    metric, select = sweep.spec.metric, sweep.base.select_metric
    if select != metric:
        typer.echo(
            f"note: each trial keeps its best epoch by {select}; the sweep ranks trials by {metric} at that epoch",
            err=True,
        )
    result = run_sweep(sweep, workers=workers)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items()))
    typer.echo(f"sweep {result.study_name} in {result.sweep_dir}: {counts}")
    if result.best_number is not None:
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
        typer.echo(f"best: trial {result.best_number}, {sweep.spec.metric} {result.best_value:.4f} ({params})")
        typer.echo(f"model: {result.best_run_dir}/best")
    typer.echo(f"report: goemo sweep-report {result.sweep_dir}")
    status, lines = result.verdict()
    for i, line in enumerate(lines):
        typer.echo(f"goemo: error: {line}" if status and i == 0 else line, err=True)
    if status:
        raise typer.Exit(status)


@command("sweep-report", epilog="Example: goemo sweep-report runs/sweeps/wandb_report_sweep")
def sweep_report_command(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (holds sweep.json)."),
    storage: Optional[str] = Opt(None, help="Storage URL, when it is not the folder's own (or has a password)."),
    study: Optional[str] = Opt(None, help="Study name, when not the one in sweep.json."),
    top: int = Opt(3, min=1, help="How many of the best trials to compare class by class."),
) -> None:
    """Write SWEEP/sweep_report.md and .html: trials by metric, the best run, per-trial curves, parameter
    importance, parallel coordinates, per-class AUC; the HTML is one self-contained page, the PNGs are in plots/."""
    report = write_sweep_report(sweep_dir, storage=storage, study_name=study, top=top)
    a = report.analysis
    table = Table(title=f"{a.study_name}: {a.direction} {a.metric}")
    for col in ("trial", "state", a.metric, *a.param_names):
        table.add_column(col, justify="left" if col == "state" else "right")
    for r in a.rows[:10]:
        value = f"{r.value:.4f}" if r.value is not None else "-"
        table.add_row(
            str(r.number),
            r.state.lower(),
            value,
            *[
                (f"{r.params[p]:.3g}" if isinstance(r.params.get(p), float) else str(r.params.get(p, "-")))
                for p in a.param_names
            ],
        )
    console = make_console()
    console.print(table)
    if a.importance:
        console.print("importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in a.importance.items()))
    elif a.importance_note:
        console.print(a.importance_note)
    for name, why in a.no_effect.items():
        console.print(f"no measurable effect: {name} ({why})")
    if a.best is not None:
        console.print(f"best: trial {a.best.number} ({a.best.run_dir})")
    console.print(f"report: {report.markdown} and {report.html}")
