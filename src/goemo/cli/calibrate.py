"""``goemo calibrate``: calibrate a model's scores on dev (`goemo.evaluation.calibration.calibrate_model`)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich import box
from rich.table import Table

from goemo.cli.common import Opt, command, data_source, make_console
from goemo.cli.options import with_options
from goemo.core.run_settings import DataOptions

if TYPE_CHECKING:
    from goemo.evaluation.calibration import CalibrationOutcome


class OutputFormat(str, Enum):
    """Output formats of `goemo calibrate` and `goemo compare`."""

    table = "table"
    json = "json"


class CalibrationMethod(str, Enum):
    """auto: chosen per label by cross-validated dev log-loss; else that map for every label."""

    auto = "auto"
    temperature = "temperature"
    platt = "platt"
    isotonic = "isotonic"


@command(
    "calibrate",
    epilog="Example: goemo calibrate runs/minilm/best --split test   (fit on dev; --dry-run writes nothing)",
)
@with_options(DataOptions)
def calibrate_command(
    model: Path = typer.Argument(..., help="Model folder written by goemo train (runs/NAME/best), or a run folder."),
    split: Optional[list[str]] = Opt(
        None, "--split", help="Also report ECE before and after on this split (repeatable; e.g. test)."
    ),
    method: CalibrationMethod = Opt(
        CalibrationMethod.auto, "--method", help="auto (per label, by cross-validated dev log-loss) or one map for all."
    ),
    global_choice: bool = Opt(
        False, "--global", help="Choose one method for all labels (by summed dev log-loss) instead of per label."
    ),
    seed: int = Opt(0, help="Seed of the cross-validation folds."),
    dry_run: bool = Opt(False, "--dry-run", help="Fit and report, but change nothing in the folder."),
    fmt: OutputFormat = Opt(OutputFormat.table, "--format", help="table or json on stdout."),
    **options: Any,
) -> None:
    """Calibrate a model's scores on dev: per-label temperature, Platt or isotonic maps.

    The affine maps are folded into the classifier's last layer, the record goes into
    config.json, and the thresholds are re-expressed on the calibrated scale, so every
    decision stays the same. Prints the macro expected calibration error (ECE, 15 bins)
    before and after, and a per-label table. A calibrated folder is left as it is.
    """
    from goemo.evaluation.calibration import calibrate_model  # numpy, scikit-learn, torch
    from goemo.evaluation.compare import resolve_model_dir
    from goemo.scoring.calibration import CalibrationSettings

    outcome = calibrate_model(
        resolve_model_dir(model),
        splits=list(split or []),
        source=data_source(options),
        settings=CalibrationSettings(
            method=method.value, selection="global" if global_choice else "per-label", seed=seed
        ),
        dry_run=dry_run,
    )
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(_outcome_dict(outcome), indent=2, ensure_ascii=False))
    else:
        _print_calibration(outcome)


def _outcome_dict(outcome: CalibrationOutcome) -> dict:
    return {
        "model": str(outcome.folder),
        "already_calibrated": outcome.already,
        "written": outcome.written,
        "calibration": outcome.calibration.to_dict(),
        "splits": {name: report.to_dict() for name, report in outcome.reports.items()},
    }


def _print_calibration(outcome: CalibrationOutcome) -> None:
    console = make_console()
    cal = outcome.calibration
    methods = ", ".join(f"{k} {v}" for k, v in cal.method_counts().items())
    if outcome.already:
        dev = cal.info.get("dev") or {}
        console.print(
            f"{outcome.folder} is already calibrated on {cal.info.get('fitted_on', 'dev')} ({methods}); "
            "nothing changed (a calibration is never applied twice)",
            highlight=False,
        )
        if dev.get("macro_ece_before") is not None:
            console.print(
                f"macro ECE on dev when it was fitted: {dev['macro_ece_before']:.4f} -> {dev['macro_ece_after']:.4f}",
                highlight=False,
            )
        return
    where = "folded into the classifier's last layer" if cal.folded else "applied by the predictor"
    state = "dry run, nothing written" if not outcome.written else f"written; affine maps {where}"
    console.print(f"{outcome.folder}: calibrated on dev ({cal.info.get('texts', 0):,} texts; {state})", highlight=False)
    console.print(f"maps: {methods}", highlight=False)
    console.print(f"rule: {cal.info.get('rule')}", highlight=False)
    for name, report in outcome.reports.items():
        mean = report.summary()
        console.print(
            f"macro ECE on {name}: {report.macro_ece_before:.4f} -> {report.macro_ece_after:.4f} "
            f"(log-loss {mean['log_loss_before']:.4f} -> {mean['log_loss_after']:.4f}; {report.texts:,} texts)",
            highlight=False,
        )
    table = Table(title="per label: ECE before -> after", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("label", no_wrap=True)
    table.add_column("method", no_wrap=True)
    table.add_column("dev positives", justify="right")
    for name in outcome.reports:
        table.add_column(f"ECE {name}", justify="right", no_wrap=True)
    fits = {f.name: f for f in outcome.fit.labels} if outcome.fit is not None else {}
    for j, label in enumerate(cal.label_names):
        cells = [f"{r.ece_before[j]:.4f} -> {r.ece_after[j]:.4f}" for r in outcome.reports.values()]
        fit = fits.get(label)
        table.add_row(label, cal.maps[j].method, str(fit.positives) if fit else "", *cells)
    console.print(table)
    if outcome.written:
        console.print("thresholds re-expressed on the calibrated scale: every decision stays the same", highlight=False)
