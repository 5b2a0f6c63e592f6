"""``goemo download``, ``goemo stats`` and ``goemo fetch-model``: the data and the models to train on."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from goemo.cli.common import command, data_source, make_console
from goemo.cli.options import with_options
from goemo.core.errors import ConfigError
from goemo.core.run_settings import DataOptions


@command(
    "download",
    epilog="Example: goemo download data/goemotions --from ../shared/goemotions   (or --dest data/goemotions)",
)
def download_command(
    folder: Optional[Path] = typer.Argument(
        None, metavar="[DIR]", help="Folder to put the six files in (the same as --dest; default data/goemotions)."
    ),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Folder to put the six files in (or give it as DIR)."),
    source: Optional[str] = typer.Option(
        None,
        "--from",
        help="A local folder holding the files, or a mirror base URL (default: the official URL).",
    ),
    retries: int = typer.Option(3, min=0, help="Retries of a transient HTTP failure (5xx, reset, timeout)."),
    timeout: float = typer.Option(30.0, min=0.1, help="Seconds to wait for each request."),
) -> None:
    """Fetch the GoEmotions data (train/dev/test TSV, label names, groupings) and verify sha256.

    Files already present with the official checksum are kept, so it is safe to run again.
    Without network, point --from at a copy of the files, e.g. goemo download --from ../shared/goemotions
    """
    from goemo.data.download import fetch  # the HTTP stack

    if folder is not None and dest is not None and folder != dest:
        raise ConfigError(f"download folder given twice: {folder} and --dest {dest}; give one")
    dest = folder or dest or Path("data/goemotions")
    result = fetch(dest, source, retries=retries, timeout=timeout)
    typer.echo(
        f"{len(result.paths)} files verified in {dest}: "
        f"{len(result.fetched)} fetched, {len(result.valid)} already valid"
    )


class StatsFormat(str, Enum):
    """Output formats of `goemo stats`."""

    table = "table"
    csv = "csv"
    json = "json"


@command(
    "stats",
    epilog=(
        "Example: goemo stats --data-dir data/goemotions --taxonomy ekman --out runs/data-analysis   "
        "(a Hugging Face dataset: --dataset go_emotions --dataset-config simplified; "
        "the sample to W&B / TensorBoard too: --tracker wandb --tracker tensorboard)"
    ),
)
@with_options(DataOptions)
def stats_command(
    labels_file: Optional[Path] = typer.Option(
        None, "--labels", help="Label names, one per line, for a --dataset label column without ClassLabel names."
    ),
    taxonomy: str = typer.Option("goemotions", help="goemotions, ekman, sentiment, or a grouping .json file."),
    fmt: StatsFormat = typer.Option(StatsFormat.table, "--format", help="table (rich), csv or json on stdout."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Also write stats.json/csv, PNG plots and a sample page here."
    ),
    tokens: bool = typer.Option(True, "--tokens/--no-tokens", help="Count MiniLM word pieces (a few seconds)."),
    seed: int = typer.Option(0, help="Seed of the 1,000-record sample written with --out."),
    trackers: Optional[list[str]] = typer.Option(
        None,
        "--tracker",
        help="tensorboard | mlflow | wandb (repeatable): also log the --out sample as a table "
        "(W&B Table, TensorBoard text) and the key figures, as one run in --out.",
    ),
    **options: Any,
) -> None:
    """Per-split and per-label statistics: counts, co-occurrence, text lengths."""
    from goemo.data.stats_report import SAMPLE_COLUMNS, analyse_splits, data_sample, render_tables, sample_rows

    if trackers:
        if out is None:
            raise typer.BadParameter("logs the --out sample: give --out DIR as well", param_hint="--tracker")
        from goemo.training.tracking import check_trackers  # accelerate, torch

        check_trackers(trackers)  # a typo or a missing package fails before the statistics are computed
    from goemo.data.source import DataSource  # numpy

    source = data_source(options) or DataSource.folder("data/goemotions")
    source = dataclasses.replace(source, taxonomy=taxonomy, labels_file=str(labels_file) if labels_file else None)
    splits = source.splits()
    result = analyse_splits(splits, out_dir=out, tokens=tokens, seed=seed)
    logged: list[str] = []
    if trackers and out is not None:
        from goemo.training.tracking import log_dataset

        key, records = data_sample(splits, seed=seed)
        config = {
            "source": source.describe(),
            "taxonomy": taxonomy,
            "sample_split": key,
            "sample_size": len(records),
            "seed": seed,
        }
        logged = log_dataset(trackers, out, SAMPLE_COLUMNS, sample_rows(records), result.key_figures(), config)
    if fmt is StatsFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif fmt is StatsFormat.csv:
        typer.echo(result.to_csv(), nl=False)
    else:
        console = make_console()
        for table in render_tables(result):
            console.print(table)
            console.print()
        if out is not None:
            console.print(f"plots, tables and a sample page written to {out}")
    if logged:
        typer.echo(
            f"sample and key figures logged to {', '.join(logged)} (run in {out})", err=fmt is not StatsFormat.table
        )


@command("fetch-model", epilog="Example: HF_HOME=/shared/hf goemo fetch-model bert-base-cased")
def fetch_model_command(
    name: str = typer.Argument(..., help="Hub id, e.g. bert-base-cased or roberta-base."),
    cache_dir: Optional[Path] = typer.Option(
        None, help="Cache folder (default: the HF hub cache: HF_HUB_CACHE, else TRANSFORMERS_CACHE, else $HF_HOME/hub)."
    ),
) -> None:
    """Download a model into the Hugging Face cache, for GPU nodes without network."""
    from goemo.models.modeling import fetch_model  # torch, transformers

    path = fetch_model(name, cache_dir)
    typer.echo(f"{name}: {path}")
