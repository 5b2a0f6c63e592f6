"""``goemo audit``: which labels are wrong (`goemo.audit`); its training options are ``goemo train``'s, less those
it sets per fold (``--output``, ``--holdout-fold``, ``--num-folds``, ``--resume``, ``--eval-test``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from goemo.cli.common import Opt, command, make_console
from goemo.cli.options import plain, with_options
from goemo.core.config import TrainConfig, resolve_config
from goemo.core.errors import ConfigError

# Fields the audit sets per fold (or that mean nothing for a fold model): not audit options.
SET_PER_FOLD = ("output", "holdout_fold", "num_folds", "resume", "eval_test")


@command(
    "audit",
    epilog="Example: goemo audit --preset fast --data-dir data/goemotions --folds 3 --out runs/audit   "
    "then open runs/audit/review.html",
)
@with_options(TrainConfig, order=lambda f: f.name != "preset", skip=SET_PER_FOLD)
def audit_command(
    out: Path = Opt(Path("runs/audit"), "--out", help="Audit folder: label_issues.csv, review.html, summary, folds/."),
    split: str = Opt("train", "--split", help="The split to audit: train, dev or test."),
    folds: int = Opt(5, "--folds", min=2, help="Folds: each text is scored by the one fold model that never saw it."),
    fold: Optional[int] = Opt(
        None, "--fold", min=0, help="Only train fold K (0-based) and predict its texts: one cluster array task."
    ),
    score_only: bool = Opt(
        False, "--score-only", help="Only score the folds' saved predictions and write the outputs: the last job."
    ),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of options; the command line wins."),
    **fields: Any,
) -> None:
    """Find likely label errors: K fold models predict the texts they never saw, and every
    (text, label) pair is scored in the manner of confident learning.

    Writes OUT/label_issues.csv (missing and spurious labels, surest first), OUT/review.html
    (a page to check them and export corrections for goemo train --corrections), per-label
    suspected rates (summary.csv, summary.json) and the fold models (OUT/folds/). Running it
    again continues a killed audit and reuses finished folds.
    """
    from goemo.audit.runner import load_audit_data, run_audit, score_audit, train_fold  # torch, transformers

    if fold is not None and score_only:
        raise ConfigError("--fold K trains one fold and --score-only scores them all: give one of them")
    if fold is not None and fold >= folds:
        raise ConfigError(f"--fold {fold}: expected 0 to {folds - 1} with --folds {folds} (folds count from 0)")
    preset = fields.pop("preset")
    overrides = {name: plain(value) for name, value in fields.items()}
    config = resolve_config(preset, config_file, overrides)
    console = make_console()
    if fold is not None:  # (load_audit_data refuses --exclude/--corrections beside another --split)
        done = train_fold(config, out, fold, folds, load_audit_data(config, split))
        how = "trained" if done.trained else "reused"
        console.print(
            f"fold {done.fold} of {done.folds}: {how} {done.run_dir}; its {done.texts:,} held-out texts predicted "
            f"({done.seconds:.0f} s). When every fold is done: goemo audit ... --score-only"
        )
        return
    result = score_audit(config, out, folds, split) if score_only else run_audit(config, out, folds, split)
    _print_result(result)


def _print_result(result) -> None:
    """The labels with the most suspected pairs, and where the files are."""
    console = make_console()
    rows = sorted(result.quality.summary(), key=lambda r: -(r["suspected_rate"] or 0))
    table = Table(title=f"goemo audit: {result.texts:,} texts, {result.folds} folds", show_header=True)
    for col in ("label", "texts with it", "missing", "spurious", "suspected rate"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for r in rows[:10]:
        rate = r["suspected_rate"]
        table.add_row(
            r["label"], f"{r['given']:,}", f"{r['missing']:,}", f"{r['spurious']:,}", f"{100 * (rate or 0):.2f}%"
        )
    console.print(table)
    console.print(
        f"{result.flagged['missing']:,} missing and {result.flagged['spurious']:,} spurious labels flagged, "
        f"surest first: {result.files['issues']}\nreview them: {result.files['page']} (its export feeds "
        f"goemo train --corrections FILE)\nper label: {result.files['summary_csv']}"
    )
