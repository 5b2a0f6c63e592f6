"""The `goemo` command line: each verb parses options and calls one library function.

Errors from the library (`GoemoError`) become one line on stderr and exit code 1;
``--debug`` shows the traceback instead. Usage errors exit 2 (Typer's default).
"""

from __future__ import annotations

import functools
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer

from goemo.errors import GoemoError

app = typer.Typer(
    name="goemo",
    help="Multi-label emotion classification: data, training, evaluation, sweeps, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it between invocations)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; ignore
        pass


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """goemo: fine-tune, evaluate and serve multi-label emotion classifiers."""
    _state["debug"] = debug
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a verb whose `GoemoError`s are reported in one line (exit 1)."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kw):
            try:
                return func(*args, **kw)
            except GoemoError as e:
                if _state["debug"]:
                    raise
                typer.echo(f"goemo: error: {e}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo("goemo: interrupted", err=True)
                raise typer.Exit(130) from None

        return app.command(name, **kwargs)(wrapper)

    return decorate


@command(
    "download",
    epilog="Example: goemo download --dest data/goemotions --from ../shared/goemotions",
)
def download_command(
    dest: Path = typer.Option(Path("data/goemotions"), "--dest", help="Folder to put the six files in."),
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
    from goemo.data.download import fetch

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
    epilog="Example: goemo stats --data-dir data/goemotions --taxonomy ekman --out runs/data-analysis",
)
def stats_command(
    data_dir: Path = typer.Option(
        Path("data/goemotions"), "--data-dir", help="Folder with the official TSV files."
    ),
    taxonomy: str = typer.Option("goemotions", help="goemotions, ekman, sentiment, or a grouping .json file."),
    fmt: StatsFormat = typer.Option(StatsFormat.table, "--format", help="table (rich), csv or json on stdout."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Also write stats.json/csv, PNG plots and a sample page here."
    ),
    tokens: bool = typer.Option(True, "--tokens/--no-tokens", help="Count MiniLM word pieces (a few seconds)."),
    seed: int = typer.Option(0, help="Seed of the 1,000-record sample written with --out."),
) -> None:
    """Per-split and per-label statistics: counts, co-occurrence, text lengths."""
    import json

    from goemo.data.stats_report import analyse_dataset, render_tables

    result = analyse_dataset(data_dir, taxonomy=taxonomy, out_dir=out, tokens=tokens, seed=seed)
    if fmt is StatsFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif fmt is StatsFormat.csv:
        typer.echo(result.to_csv(), nl=False)
    else:
        from rich.console import Console

        console = Console()
        for table in render_tables(result):
            console.print(table)
            console.print()
        if out is not None:
            console.print(f"plots, tables and a sample page written to {out}")


# ---------------------------------------------------------------- training

Opt = typer.Option


@command(
    "train",
    epilog="Example: goemo train --preset fast --data-dir data/goemotions --output runs/fast",
)
def train_command(
    data_dir: Optional[Path] = Opt(None, "--data-dir", help="GoEmotions folder (train/dev/test.tsv, emotions.txt)."),
    train_file: Optional[Path] = Opt(None, "--train", help="Training file (.tsv official format, .csv, .jsonl)."),
    dev_file: Optional[Path] = Opt(None, "--dev", help="Dev file, used for model selection."),
    test_file: Optional[Path] = Opt(None, "--test", help="Test file, evaluated once at the end."),
    labels_file: Optional[Path] = Opt(None, "--labels", help="Label names, one per line (id order)."),
    text_column: Optional[str] = Opt(None, help="Text column of CSV/JSONL files."),
    label_column: Optional[str] = Opt(None, help="Label-list column of CSV/JSONL files."),
    taxonomy: Optional[str] = Opt(None, help="goemotions | ekman | sentiment | grouping.json"),
    model: Optional[str] = Opt(None, help="Hub id, local folder, or 'minilm' (offline default)."),
    preset: Optional[str] = Opt(None, help="paper | wandb-report | fast"),
    config_file: Optional[Path] = Opt(None, "--config", help="YAML file of options; the command line wins."),
    pooling: Optional[str] = Opt(None, help="cls (the architecture's own head) | mean"),
    epochs: Optional[float] = Opt(None),
    lr: Optional[float] = Opt(None, help="Encoder learning rate."),
    head_lr: Optional[float] = Opt(None, help="Learning rate of the new classification head."),
    layer_decay: Optional[float] = Opt(None, help="Layer-wise lr decay (1 = none)."),
    batch_size: Optional[int] = Opt(None),
    max_length: Optional[int] = Opt(None, help="Truncate texts to this many tokens."),
    dropout: Optional[float] = Opt(None, help="Dropout before the classifier."),
    warmup_ratio: Optional[float] = Opt(None),
    weight_decay: Optional[float] = Opt(None),
    grad_accum: Optional[int] = Opt(None, help="Gradient accumulation steps."),
    loss: Optional[str] = Opt(None, help="bce | focal"),
    pos_weight: Optional[str] = Opt(None, help="'auto': weight positives by sqrt(neg/pos) per label."),
    threshold: Optional[float] = Opt(None, help="Decision threshold for dev/test F1."),
    select_metric: Optional[str] = Opt(None, help="f1_macro | val_loss | auc_micro | auc_macro | f1_micro"),
    seed: Optional[int] = Opt(None),
    precision: Optional[str] = Opt(None, help="auto | fp32 | bf16 | fp16"),
    device: Optional[str] = Opt(None, help="auto | cpu | cuda | mps"),
    compile: Optional[bool] = Opt(None, "--compile/--no-compile", help="torch.compile the model."),
    num_threads: Optional[int] = Opt(None, help="CPU threads for PyTorch."),
    max_train_samples: Optional[int] = Opt(None, help="Train on a random sample (quick runs)."),
    max_eval_samples: Optional[int] = Opt(None, help="Evaluate on a random sample (quick runs)."),
    save_every: Optional[int] = Opt(None, help="Also checkpoint last/ every N optimiser steps."),
    log_every: Optional[int] = Opt(None, help="Log the running loss every N steps."),
    output: Optional[Path] = Opt(None, help="Run folder (default runs/goemo)."),
    resume: Optional[bool] = Opt(None, "--resume", help="Continue the run in --output from last/."),
    overwrite: Optional[bool] = Opt(None, "--overwrite", help="Replace the run in --output."),
    cache_dir: Optional[Path] = Opt(None, help="Token cache folder (default ~/.cache/goemo)."),
    trust_remote_code: Optional[bool] = Opt(None, "--trust-remote-code", help="Allow model code from the hub."),
) -> None:
    """Fine-tune an encoder for multi-label emotion classification.

    Options come from defaults < --preset < --config YAML < the command line. The run
    folder gets config.yaml, metrics.jsonl, best/, last/ and summary.json.
    """
    given = dict(locals())  # first statement: exactly the options, nothing else
    from goemo.config import resolve_config
    from goemo.training import train

    overrides = {k: v for k, v in given.items() if k not in ("preset", "config_file")}
    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}
    config = resolve_config(preset, config_file, overrides)
    result = train(config)
    _print_train_summary(result.summary)


def _print_train_summary(summary: dict) -> None:
    """One screen: where the model is, dev/test headline metrics, time and memory."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"goemo train: {summary['run_dir']}", show_header=True)
    table.add_column("split")
    for col in ("f1_macro", "f1_micro", "auc_macro", "auc_micro", "val_loss"):
        table.add_column(col, justify="right")
    for split in ("dev", "test"):
        if split in summary:
            m = summary[split]
            table.add_row(split, *(f"{m[c]:.4f}" for c in ("f1_macro", "f1_micro", "auc_macro", "auc_micro", "val_loss")))
    res = summary["resources"]
    console = Console()
    console.print(table)
    epochs = summary["epochs"]
    speed = epochs[-1]["examples_per_s"] if epochs else float("nan")
    console.print(
        f"best epoch {summary['best_epoch']} by {summary['select_metric']} (threshold {summary['threshold']}); "
        f"wall {res['wall_time_s']:.0f}s, {speed:.0f} train examples/s, peak RSS {res['peak_rss_mb']:.0f} MiB, "
        f"save {res['time_to_save_s']:.1f}s, precision {res['precision']}"
    )
    for gpu in res["gpu_memory"]:
        console.print(f"GPU {gpu['device']} {gpu['name']}: peak allocated {gpu['peak_allocated_mb']:.0f} MiB, reserved {gpu['peak_reserved_mb']:.0f} MiB")
    console.print(f"model: {summary['run_dir']}/best")


@command("fetch-model", epilog="Example: HF_HOME=/shared/hf goemo fetch-model bert-base-cased")
def fetch_model_command(
    name: str = typer.Argument(..., help="Hub id, e.g. bert-base-cased or roberta-base."),
    cache_dir: Optional[Path] = Opt(None, help="Cache folder (default: the HF cache, honouring HF_HOME)."),
) -> None:
    """Download a model into the Hugging Face cache, for GPU nodes without network."""
    from goemo.modeling import fetch_model

    path = fetch_model(name, cache_dir)
    typer.echo(f"{name}: {path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # python -m goemo.cli
    main()
