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

from goemo.core.errors import GoemoError

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
    focal_gamma: Optional[float] = Opt(None, help="Focal loss exponent γ (2 by default)."),
    label_smoothing: Optional[float] = Opt(None, help="Smooth 0/1 targets towards 0.5 by this amount."),
    sentiment_reg: Optional[float] = Opt(
        None, help="Weight of the paper's sentiment-relation regulariser (0 = off; GoEmotions labels)."
    ),
    correlation_reg: Optional[float] = Opt(
        None, help="Weight of the paper's label-correlation regulariser (0 = off)."
    ),
    pos_weight: Optional[str] = Opt(None, help="'auto': weight positives by sqrt(neg/pos) per label."),
    ema_decay: Optional[float] = Opt(
        None, help="Keep an exponential moving average of the weights (e.g. 0.999); it is evaluated and saved."
    ),
    teachers: Optional[list[Path]] = Opt(
        None, "--teacher", help="Distil from this trained model folder (repeatable: the mean of several)."
    ),
    distill_alpha: Optional[float] = Opt(
        None, help="Weight of the teachers' probabilities in the targets (0-1, 0.5 by default)."
    ),
    holdout_fold: Optional[int] = Opt(
        None, help="Train on every fold of the training texts but this one (0-based): a cross-fitted teacher."
    ),
    num_folds: Optional[int] = Opt(None, help="How many folds --holdout-fold splits the training texts into (3)."),
    threshold: Optional[float] = Opt(None, help="Decision threshold for dev/test F1."),
    threshold_shrink: Optional[float] = Opt(
        None, help="Pull each dev-tuned per-label threshold this far (0-1) towards the best global one."
    ),
    select_metric: Optional[str] = Opt(None, help="f1_macro | f1_macro_xtuned | val_loss | auc_micro | auc_macro | f1_micro"),
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
    trackers: Optional[list[str]] = Opt(None, "--tracker", help="jsonl | tensorboard | mlflow | wandb (repeatable; jsonl is always on)."),
) -> None:
    """Fine-tune an encoder for multi-label emotion classification.

    Options come from defaults < --preset < --config YAML < the command line. The run
    folder gets config.yaml, metrics.jsonl, best/, last/ and summary.json.
    """
    given = dict(locals())  # first statement: exactly the options, nothing else
    from goemo.core.config import resolve_config
    from goemo.train.loop import train

    overrides = {k: v for k, v in given.items() if k not in ("preset", "config_file")}
    as_text = lambda v: str(v) if isinstance(v, Path) else v  # noqa: E731 - config fields hold plain strings
    overrides = {k: ([as_text(x) for x in v] if isinstance(v, list) else as_text(v)) for k, v in overrides.items()}
    config = resolve_config(preset, config_file, overrides)
    result = train(config)
    if result.is_main_process:
        _print_train_summary(result.summary)


def _print_train_summary(summary: dict) -> None:
    """One screen: where the model is, dev/test headline metrics, time and memory."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"goemo train: {summary['run_dir']}", show_header=True)
    table.add_column("split")
    cols = ("f1_macro", "f1_macro_tuned", "f1_macro_xtuned", "f1_micro", "auc_macro", "auc_micro", "val_loss")
    for col in cols:
        table.add_column(col, justify="right")
    for split in ("dev", "test"):
        if split in summary:
            m = summary[split]
            table.add_row(split, *(f"{m[c]:.4f}" if isinstance(m.get(c), float) else "" for c in cols))
    res = summary["resources"]
    console = Console()
    console.print(table)
    epochs = summary["epochs"]
    speed = epochs[-1]["examples_per_s"] if epochs else float("nan")
    console.print(
        f"f1_macro at threshold {summary['threshold']}; f1_macro_tuned with per-label thresholds tuned on dev "
        f"(optimistic on dev itself; f1_macro_xtuned tunes on half of dev and scores the other half)\n"
        f"best epoch {summary['best_epoch']} by {summary['select_metric']}; "
        f"wall {res['wall_time_s']:.0f}s, {speed:.0f} train examples/s, peak RSS {res['peak_rss_mb']:.0f} MiB, "
        f"save {res['time_to_save_s']:.1f}s, precision {res['precision']}"
    )
    hw = res["hardware"]
    gpus = ", ".join(hw.get("gpus", [])) or "no GPU"
    console.print(
        f"hardware: {hw['cpu']} ({hw['cpu_cores']} cores), {gpus}; torch {hw['torch']}"
        + (f", CUDA {hw['cuda']}" if hw.get("cuda") else "")
        + f"; epochs took {', '.join(f'{t:.0f}s' for t in res['epoch_time_s'])}"
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
    from goemo.models.modeling import fetch_model

    path = fetch_model(name, cache_dir)
    typer.echo(f"{name}: {path}")


# ---------------------------------------------------------------- serving


class ServeBackend(str, Enum):
    """Inference backends of `goemo serve`."""

    torch = "torch"
    onnx = "onnx"
    auto = "auto"


@command(
    "serve",
    epilog="Example: goemo serve --model runs/goemo/best --port 8000   (then open http://127.0.0.1:8000/)",
)
def serve_command(
    model: Path = Opt(..., "--model", help="Model folder (runs/NAME/best, or an ONNX export)."),
    host: str = Opt("127.0.0.1", help="Address to listen on; the API has no authentication, keep it on loopback."),
    port: int = Opt(8000, min=0, max=65535, help="Port (0: any free port, shown in the log)."),
    backend: ServeBackend = Opt(ServeBackend.auto, help="auto (ONNX when the folder has model.onnx) | torch | onnx"),
    device: str = Opt("auto", help="auto | cpu | cuda"),
    num_threads: Optional[int] = Opt(
        None, min=1, help="CPU threads for the model (default: all cores but one, left to the web server)."
    ),
    max_batch: int = Opt(64, min=1, help="Most texts merged into one model call (1 turns micro-batching off)."),
    max_wait_ms: float = Opt(5.0, min=0, max=10_000, help="Longest wait for more requests before a model call."),
    max_texts: int = Opt(64, min=1, help="Most texts in one request (422 above)."),
    max_chars: int = Opt(2000, min=1, help="Most characters in one text (422 above)."),
    max_body_bytes: int = Opt(1_000_000, min=1, help="Largest request body (413 above)."),
    access_log: bool = Opt(True, "--access-log/--no-access-log", help="Log one line per request."),
) -> None:
    """Serve a model over HTTP: POST /predict, GET /labels, GET /health, a web page at /, docs at /docs.

    Requests from concurrent clients are merged into batches (micro-batching), waiting at
    most --max-wait-ms for company. Stop with Ctrl-C.
    """
    from goemo.serve import ServeLimits, run_server

    limits = ServeLimits(
        max_texts=max_texts,
        max_chars=max_chars,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    run_server(
        model, host, port, backend=backend.value, device=device, num_threads=num_threads, limits=limits,
        access_log=access_log,
    )


# ---------------------------------------------------------------- cluster (SGE / Slurm job scripts)

cluster_app = typer.Typer(
    help="Job scripts for SGE and Slurm clusters: setup, fetch, train, sweep, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(cluster_app, name="cluster")


class ClusterScheduler(str, Enum):
    """Batch schedulers `goemo cluster render` writes for."""

    sge = "sge"
    slurm = "slurm"


class ClusterStage(str, Enum):
    """The jobs of the cluster workflow, in the order they run."""

    setup = "setup"
    fetch = "fetch"
    train = "train"
    sweep = "sweep"
    evaluate = "evaluate"


@cluster_app.command(
    "render",
    epilog=(
        "Example: goemo cluster render --scheduler slurm --stage train --gpus 4 --nodes 2 "
        "--env 'venv:~/goemo-env' --cache-dir '$SCRATCH/hf' --out train.sh -- --model bert-base-cased --epochs 4"
    ),
)
def cluster_render_command(
    scheduler: ClusterScheduler = Opt(..., help="sge (qsub, #$ lines) or slurm (sbatch, #SBATCH lines)."),
    stage: ClusterStage = Opt(..., help="setup | fetch | train | sweep | evaluate"),
    goemo_args: Optional[list[str]] = typer.Argument(None, help="After --: arguments for the stage's goemo verb, verbatim."),
    gpus: Optional[int] = Opt(None, help="GPUs per node (default 1 for train/sweep/evaluate, 0 otherwise)."),
    nodes: int = Opt(1, help="Nodes (train only; >1 launches accelerate on every node)."),
    cpus: Optional[int] = Opt(None, help="CPU cores per node (default 4 per GPU, at least 2)."),
    time: Optional[str] = Opt(None, "--time", help="Wall-clock limit HH:MM:SS or D-HH:MM:SS (default 04:00:00 train/sweep, else 01:00:00)."),
    mem: Optional[str] = Opt(None, help="Memory per node, e.g. 32G (default 32G on GPU stages, 8G otherwise)."),
    queue: Optional[str] = Opt(None, "--queue", "--partition", help="SGE queue or Slurm partition."),
    env: Optional[str] = Opt(None, help="venv:PATH or conda:NAME (setup creates it; other stages activate it)."),
    module: Optional[list[str]] = Opt(None, "--module", help="`module load` this first (repeatable), e.g. cuda/12.4."),
    cache_dir: Optional[str] = Opt(None, help="HF_HOME on shared storage (fetch fills it; GPU stages read it offline)."),
    data_dir: Optional[str] = Opt(None, help="GoEmotions folder on shared storage (fetch fills it; default data/goemotions)."),
    array: Optional[int] = Opt(None, help="Sweep only: N array tasks, each a worker of the same study."),
    model: Optional[list[str]] = Opt(None, "--model", help="Fetch only: hub model to download into HF_HOME (repeatable)."),
    package: Optional[list[str]] = Opt(None, "--package", help="Setup only: what pip installs (repeatable; default goemo): a checkout's path, a git URL, goemo[track]…"),
    torch_index: Optional[str] = Opt(None, help="Setup only: PyTorch wheel index for the cluster's CUDA, e.g. https://download.pytorch.org/whl/cu126"),
    job_name: Optional[str] = Opt(None, help="Job name (default goemo-STAGE)."),
    log_dir: str = Opt("logs", help="Folder for the scheduler's log files (created by --out)."),
    port: Optional[int] = Opt(None, help="Rendezvous port of multi-GPU runs (default 20000 + job id mod 20000)."),
    report_run: Optional[str] = Opt(None, help="Evaluate only: run folder to report on (default: the parent of --model RUN/best)."),
    directive: Optional[list[str]] = Opt(None, "--directive", help="Raw scheduler line after '#$ ' or '#SBATCH ' (repeatable), e.g. '-l coproc_v100=1'."),
    sge_pe: Optional[str] = Opt(None, help="SGE parallel environment (default smp, or mpi for --nodes > 1)."),
    sge_gpu_resource: str = Opt("gpu", help="SGE resource that counts GPUs: -l NAME=N."),
    sge_mem_resource: str = Opt("h_vmem", help="SGE memory resource (per slot): h_vmem, mem_free, h_rss; 'none' to leave it out."),
    out: Optional[Path] = Opt(None, "--out", help="Write the script here (default: print it)."),
) -> None:
    """Write a ready-to-submit SGE or Slurm job script for one stage of the cluster workflow.

    setup makes the environment, fetch puts data and models on shared storage, train runs
    offline on 1 GPU, several GPUs or several nodes, sweep is an array of Optuna workers,
    evaluate evaluates and reports. Walk-through: docs/cluster.md
    """
    from goemo.cluster import JobSpec, render_job, write_job

    try:
        spec = JobSpec(
            scheduler=scheduler.value, stage=stage.value, goemo_args=tuple(goemo_args or ()), gpus=gpus,
            nodes=nodes, cpus=cpus, time=time, mem=mem, queue=queue, env=env, modules=tuple(module or ()),
            cache_dir=cache_dir, data_dir=data_dir, array=array, job_name=job_name, log_dir=log_dir,
            directives=tuple(directive or ()), models=tuple(model or ()), packages=tuple(package or ("goemo",)),
            torch_index=torch_index, port=port, report_run=report_run, sge_pe=sge_pe,
            sge_gpu_resource=sge_gpu_resource,
            sge_mem_resource=None if sge_mem_resource.lower() == "none" else sge_mem_resource,
        )
        job = write_job(spec, out) if out is not None else render_job(spec)
    except GoemoError as e:
        if _state["debug"]:
            raise
        typer.echo(f"goemo: error: {e}", err=True)
        raise typer.Exit(1) from None
    for warning in job.warnings:
        typer.echo(f"goemo: warning: {warning}", err=True)
    if out is None:
        typer.echo(job.text, nl=False)
        return
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    s = job.spec
    shape = f"{s.nodes} node(s) x {s.gpus} GPU(s), {s.cpus} cores, {s.mem}/node, {s.time}"
    typer.echo(f"wrote {out}: {s.scheduler} {s.stage} job, {shape}; log folder {log_dir}/ is ready")
    typer.echo(f"submit from this folder: {job.submit_command} {out}")


# ---------------------------------------------------------------- evaluation and reports


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
    epilog="Example: goemo evaluate --model runs/minilm/best --split test --thresholds tuned --taxonomy ekman",
)
def evaluate_command(
    model: Path = Opt(..., "--model", help="Model folder written by goemo train, e.g. runs/NAME/best."),
    split: str = Opt("test", help="train | dev | test (read from --data-dir), or a .tsv/.csv/.jsonl file."),
    data_dir: Optional[Path] = Opt(
        None, "--data-dir", help="GoEmotions folder (default: the model's training data, else data/goemotions)."
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
    batch_size: int = Opt(128, min=1, help="Texts per inference batch."),
    device: str = Opt("auto", help="auto | cpu | cuda | mps"),
) -> None:
    """Per-label and averaged metrics of a model folder on a split, at one or per-label thresholds.

    Predictions are cached in the run's predictions/ folder, so a second evaluation (another
    threshold or taxonomy) does not run the model again.
    """
    from goemo.evaluate.evaluation import evaluate, rows_to_csv

    if threshold is not None and thresholds is ThresholdMode.tuned:
        raise typer.BadParameter("give --threshold or --thresholds tuned, not both", param_hint="--threshold")
    spec = threshold if threshold is not None else (thresholds.value if thresholds else None)
    result = evaluate(
        model, split, data_dir=data_dir, thresholds=spec, taxonomy=taxonomy, max_samples=max_samples,
        cache=not no_cache, batch_size=batch_size, device=device, out_dir=out,
    )
    if fmt is EvalFormat.json:
        import json

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
    from rich.console import Console
    from rich.table import Table

    def cell(value, digits: int = 3) -> str:
        return "n/a" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}")

    from rich import box

    r = result.report
    table = Table(title=result.headline(), title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("label", "P", "R", "F1", "n", "predicted", "ROC-AUC", "AP"):
        table.add_column(name, justify="left" if name == "label" else "right", no_wrap=True)
    for m in r.per_label:
        table.add_row(m.name + ("" if m.defined else " †"), cell(m.precision), cell(m.recall), cell(m.f1),
                      cell(m.support), cell(m.predicted), cell(m.auc), cell(m.ap))
    table.add_section()
    for avg in (r.macro, r.micro, r.weighted, r.samples):
        table.add_row(avg.name, cell(avg.precision), cell(avg.recall), cell(avg.f1), cell(avg.support), "",
                      cell(avg.auc), cell(avg.ap), style="bold" if avg.name == "macro" else None)
    console = Console()
    console.print(table)
    console.print(f"exact match {cell(r.exact_match)}; {result.thresholds.description}; "
                  f"predictions {'from the cache' if result.predictions.from_cache else 'computed'}"
                  + (f" ({result.predictions.cache_path})" if result.predictions.cache_path else ""))
    for note in r.notes:
        console.print(f"- {note}", highlight=False)
    if r.at_thresholds:
        sweep = Table(title="at each global threshold (the paper's sweep)", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("threshold", "macro P", "macro R", "macro F1", "micro F1", "exact match"):
            sweep.add_column(name, justify="right", no_wrap=True)
        for row in r.at_thresholds:  # micro P/R: --format json, csv or markdown
            sweep.add_row(f"{row.threshold:g}", *(cell(v) for v in (
                row.macro_precision, row.macro_recall, row.macro_f1, row.micro_f1, row.exact_match)))
        console.print(sweep)


@command(
    "ensemble",
    epilog="Example: goemo ensemble runs/seed1/best runs/seed2/best runs/seed3/best --out runs/ensemble",
)
def ensemble_command(
    models: list[Path] = typer.Argument(..., help="Model folders written by goemo train (same labels)."),
    data_dir: Optional[Path] = Opt(
        None, "--data-dir", help="GoEmotions folder (default: the first model's training data, else data/goemotions)."
    ),
    split: str = Opt("test", help="The split to score (never the one thresholds are tuned on)."),
    tune_split: str = Opt("dev", help="The split the per-label thresholds are tuned on."),
    threshold: float = Opt(0.3, min=0.0, max=1.0, help="The fixed threshold of the first column (the paper's 0.3)."),
    threshold_shrink: Optional[float] = Opt(
        None, min=0.0, max=1.0,
        help="Pull tuned per-label thresholds this far towards the best global one (default: as the first model was trained).",
    ),
    out: Optional[Path] = Opt(None, "--out", help="Also write ensemble.json and ensemble.md into this folder."),
    batch_size: int = Opt(128, min=1, help="Texts per inference batch."),
    device: str = Opt("auto", help="auto | cpu | cuda | mps"),
) -> None:
    """Each model alone (mean ± sd over the members: the seed spread) and the average of their probabilities.

    Thresholds are tuned per label on --tune-split for every member and for the ensemble;
    predictions come from each run's cache when present.
    """
    from goemo.evaluate.ensemble import evaluate_ensemble, write_ensemble

    result = evaluate_ensemble(models, data_dir=data_dir, tune_split=tune_split, eval_split=split,
                               threshold=threshold, device=device, batch_size=batch_size, shrink=threshold_shrink)
    typer.echo(result.to_markdown(), nl=False)
    if out is not None:
        write_ensemble(result, out)
        typer.echo(f"ensemble.json and ensemble.md written to {out}", err=True)


@command(
    "report",
    epilog="Example: goemo report runs/minilm --compare runs/tiny --data-dir data/goemotions",
)
def report_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by goemo train (holds best/)."),
    compare: Optional[list[Path]] = Opt(
        None, "--compare", metavar="RUN_DIR", help="Another run folder to compare with (repeatable)."
    ),
    split: str = Opt("test", help="Split to report on: train | dev | test, or a data file."),
    data_dir: Optional[Path] = Opt(
        None, "--data-dir", help="GoEmotions folder (default: the model's training data, else data/goemotions)."
    ),
    data_analysis: Optional[Path] = Opt(
        None, "--data-analysis", help="Folder written by goemo stats --out (default: data-analysis beside RUN_DIR)."
    ),
    max_samples: Optional[int] = Opt(None, min=1, help="Report on a seeded random subset (quick looks only)."),
    no_cache: bool = Opt(False, "--no-cache", help="Run the model even if cached predictions exist; store none."),
    batch_size: int = Opt(128, min=1, help="Texts per inference batch."),
    device: str = Opt("auto", help="auto | cpu | cuda | mps"),
) -> None:
    """Write RUN_DIR/report.md, a self-contained RUN_DIR/report.html and RUN_DIR/plots/*.png.

    Per-label results beside the paper's Tables 4 and 5, problematic classes, precision-recall
    curves, label confusion with examples, training curves, resources and the run config.
    """
    from goemo.report import build_report

    result = build_report(
        run_dir, split=split, data_dir=data_dir, compare=compare or (), data_analysis=data_analysis,
        max_samples=max_samples, cache=not no_cache, batch_size=batch_size, device=device,
    )
    s = result.scored
    tuned = f", {s.tuned.report.macro.f1:.3f} with dev-tuned thresholds" if s.tuned else ""
    typer.echo(
        f"{s.data.name} macro F1 {s.fixed.report.macro.f1:.3f} at threshold 0.3{tuned} "
        f"({len(s.data):,} texts; predictions {'computed' if result.model_ran else 'from the cache'})"
    )
    typer.echo(f"report: {result.markdown} and {result.html} ({len(result.plots)} plots in {result.html.parent / 'plots'})")


# ---------------------------------------------------------------- sweeps


def _parse_sets(items: list[str] | None) -> dict:
    """``--set key=value`` pairs; values are read as YAML (numbers, booleans, null, lists)."""
    import yaml

    from goemo.core.errors import ConfigError

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set warmup_ratio=0.06")
        out[key.strip()] = yaml.safe_load(value)
    return out


@command(
    "sweep",
    epilog=(
        "Example: goemo sweep --config examples/wandb_report_sweep.yaml --count 6 --model minilm "
        "--data-dir data/goemotions   (on more machines: the same command with --storage postgresql://...)"
    ),
)
def sweep_command(
    config: Path = Opt(..., "--config", help="Sweep config in W&B format (method, metric, parameters, early_terminate)."),
    count: Optional[int] = Opt(None, min=1, help="Trials in all, shared by every worker (default: the grid size, or run_cap)."),
    storage: Optional[str] = Opt(None, help="Optuna storage URL (default: SQLite study.db in the sweep folder), e.g. postgresql://user:pw@host/db"),
    study: Optional[str] = Opt(None, help="Study name (default: the config's name, else its file name)."),
    workers: int = Opt(1, min=1, help="Worker processes on this machine (GPUs are shared out one per worker)."),
    output: Optional[Path] = Opt(None, help="Sweep folder (default runs/sweeps/STUDY)."),
    trackers: Optional[list[str]] = Opt(None, "--tracker", help="tensorboard | mlflow | wandb for every trial (repeatable)."),
    preset: Optional[str] = Opt(None, help="Base options: paper | wandb-report | fast"),
    base_config: Optional[Path] = Opt(None, help="Base options from a YAML file (as goemo train --config)."),
    data_dir: Optional[Path] = Opt(None, help="GoEmotions folder."),
    model: Optional[str] = Opt(None, help="Base model (hub id, folder, minilm)."),
    epochs: Optional[float] = Opt(None, help="Epochs per trial (overrides a fixed value in the sweep config)."),
    max_train_samples: Optional[int] = Opt(None, help="Train each trial on a sample (quick sweeps)."),
    max_eval_samples: Optional[int] = Opt(None, help="Evaluate each trial on a sample (quick sweeps)."),
    device: Optional[str] = Opt(None, help="auto | cpu | cuda | mps"),
    precision: Optional[str] = Opt(None, help="auto | fp32 | bf16 | fp16"),
    num_threads: Optional[int] = Opt(None, help="CPU threads per worker."),
    cache_dir: Optional[Path] = Opt(None, help="Token cache folder."),
    seed: Optional[int] = Opt(None, help="Seed of the trials and of the sampler."),
    eval_test: Optional[bool] = Opt(None, "--eval-test/--no-eval-test", help="Also evaluate each trial's best model on test (off by default: a sweep chooses on dev)."),
    set_: Optional[list[str]] = Opt(None, "--set", help="Any other training option, KEY=VALUE (repeatable)."),
) -> None:
    """Run a hyperparameter sweep: each trial is a training run folder in SWEEP/trials/N.

    The same command resumes a killed sweep and, run on more machines against one --storage,
    adds workers to it. Parameter names may be W&B's (learning_rate, tokenizer_max_len, ...)
    or goemo's; metric auc_score is goemo's auc_micro.
    """
    from goemo.sweeps.runner import prepare_sweep, route_optuna_logging, run_sweep

    route_optuna_logging()
    overrides = {
        "data_dir": data_dir, "model": model, "epochs": epochs, "max_train_samples": max_train_samples,
        "max_eval_samples": max_eval_samples, "device": device, "precision": precision,
        "num_threads": num_threads, "cache_dir": cache_dir, "seed": seed, "eval_test": eval_test,
        **_parse_sets(set_),
    }
    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}
    sweep = prepare_sweep(
        config, output=output, count=count, storage=storage, study_name=study, preset=preset,
        base_config=base_config, overrides=overrides, trackers=trackers or [],
    )
    for note in sweep.spec.notes:
        typer.echo(f"note: {note}", err=True)
    result = run_sweep(sweep, workers=workers)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items()))
    typer.echo(f"sweep {result.study_name} in {result.sweep_dir}: {counts}")
    if result.best_number is not None:
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
        typer.echo(f"best: trial {result.best_number}, {sweep.spec.metric} {result.best_value:.4f} ({params})")
        typer.echo(f"model: {result.best_run_dir}/best")
    typer.echo(f"report: goemo sweep-report {result.sweep_dir}")


@command("sweep-report", epilog="Example: goemo sweep-report runs/sweeps/wandb_report_sweep")
def sweep_report_command(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (holds sweep.json)."),
    storage: Optional[str] = Opt(None, help="Storage URL, when it is not the folder's own (or has a password)."),
    study: Optional[str] = Opt(None, help="Study name, when not the one in sweep.json."),
    top: int = Opt(3, min=1, help="How many of the best trials to compare class by class."),
) -> None:
    """Write SWEEP/sweep_report.md and .html: trials by metric, the best run, parameter importance, plots, per-class AUC."""
    from rich.console import Console
    from rich.table import Table

    from goemo.sweeps.report import write_sweep_report

    report = write_sweep_report(sweep_dir, storage=storage, study_name=study, top=top)
    a = report.analysis
    table = Table(title=f"{a.study_name}: {a.direction} {a.metric}")
    for col in ("trial", "state", a.metric, *a.param_names):
        table.add_column(col, justify="left" if col == "state" else "right")
    for r in a.rows[:10]:
        value = f"{r.value:.4f}" if r.value is not None else "-"
        table.add_row(str(r.number), r.state.lower(), value, *[
            (f"{r.params[p]:.3g}" if isinstance(r.params.get(p), float) else str(r.params.get(p, "-"))) for p in a.param_names
        ])
    console = Console()
    console.print(table)
    if a.importance:
        console.print("importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in a.importance.items()))
    elif a.importance_note:
        console.print(a.importance_note)
    if a.best is not None:
        console.print(f"best: trial {a.best.number} ({a.best.run_dir})")
    console.print(f"report: {report.markdown} and {report.html}")


# ---------------------------------------------------------------- predict and export


@command(
    "predict",
    epilog=(
        "Example: goemo predict --model runs/goemo/best 'I love it!' 'Why would you do that?'   "
        "or: goemo predict --model runs/goemo/best --input comments.csv --text-column body --id-column id --output labels.jsonl"
    ),
)
def predict_command(
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to label (default: --input, else one text per stdin line)."),
    model: Path = Opt(..., "--model", help="Model folder: runs/NAME/best, or an ONNX export of one."),
    input_file: Optional[Path] = Opt(None, "--input", help="A .txt (one text per line), .csv or .jsonl file; streamed."),
    text_column: str = Opt("text", help="Text column of a .csv/.jsonl input."),
    id_column: Optional[str] = Opt(None, help="Id column of a .csv/.jsonl input (default: row numbers)."),
    output: Optional[Path] = Opt(None, "--output", help="Write .jsonl or .csv here (atomically) instead of JSON Lines on stdout."),
    top_k: Optional[int] = Opt(None, min=1, help="The K highest-scoring labels per text (with --threshold: at most K above it)."),
    threshold: Optional[float] = Opt(None, min=0.0, max=1.0, help="One threshold for every label (default: the model's own, tuned on dev)."),
    taxonomy: Optional[str] = Opt(None, help="Group labels: ekman | sentiment | grouping.json (a group's score: max of its members)."),
    all_scores: bool = Opt(False, "--all-scores", help="Also write every label's probability."),
    no_text: bool = Opt(False, "--no-text", help="Leave the text out of the output (ids only)."),
    batch_size: int = Opt(64, min=1, help="Texts per forward pass (length-sorted, padded per batch)."),
    max_length: Optional[int] = Opt(None, min=2, help="Truncate texts to this many tokens (default: the model's)."),
    backend: str = Opt("auto", help="auto | torch | onnx (auto: onnx when the folder holds model.onnx)."),
    device: str = Opt("auto", help="auto | cpu | cuda"),
    precision: str = Opt("auto", help="auto | fp32 | bf16 | fp16 (torch backend; auto: bf16 on CUDA, fp32 on CPU)."),
    num_threads: Optional[int] = Opt(None, min=1, help="CPU threads (default: all cores)."),
) -> None:
    """Label texts with a trained model: one JSON line (or CSV row) per text, in input order, with its id.

    Each text gets the emotions above their thresholds, highest score first. Files are read
    and labelled 2,048 texts at a time, so any size fits in memory; a progress bar shows on
    a terminal.
    """
    import time

    from goemo.core.errors import ConfigError
    from goemo.predict.classifier import EmotionClassifier, Record, predict_file, predict_records, PredictionWriter, output_format

    if texts and input_file is not None:
        raise ConfigError("give texts as arguments or --input FILE, not both")
    if not texts and input_file is None and sys.stdin.isatty():
        raise ConfigError("no texts: give them as arguments, with --input FILE, or on stdin (one per line)")
    fmt = output_format(output)  # a bad --output name fails before the model loads
    clf = EmotionClassifier.load(
        model, backend=backend, device=device, batch_size=batch_size, max_length=max_length,
        precision=precision, num_threads=num_threads,
    )
    start = time.perf_counter()
    options = dict(top_k=top_k, threshold=threshold, taxonomy=taxonomy)
    if texts:
        records = [Record(str(i), t) for i, t in enumerate(texts, start=1)]
        names = clf.label_names_for(taxonomy)
        if output is None:
            count = predict_records(clf, records, PredictionWriter(sys.stdout, fmt, names, all_scores, not no_text), **options)
        else:
            from goemo.core.fileio import atomic_open

            with atomic_open(output) as f:
                count = predict_records(clf, records, PredictionWriter(f, fmt, names, all_scores, not no_text), **options)
    else:
        count = predict_file(
            clf, input_file, output, text_column=text_column, id_column=id_column,
            all_scores=all_scores, with_text=not no_text, **options,
        )
    if output is not None:
        seconds = time.perf_counter() - start
        typer.echo(f"{count:,} texts labelled in {seconds:.1f}s ({count / max(seconds, 1e-9):,.0f} texts/s, {clf.backend} on {clf.device}): {output}", err=True)


class ExportFormat(str, Enum):
    """Formats `goemo export` writes."""

    onnx = "onnx"


class Quantize(str, Enum):
    """Quantisations `goemo export` applies."""

    int8 = "int8"


@command("export", epilog="Example: goemo export runs/goemo/best --format onnx --quantize int8 --out models/goemo-int8")
def export_command(
    model_dir: Path = typer.Argument(..., help="Model folder to export (runs/NAME/best)."),
    fmt: ExportFormat = Opt(ExportFormat.onnx, "--format", help="Export format."),
    quantize: Optional[Quantize] = Opt(None, help="int8: dynamic int8 quantisation of the weights (smaller, faster on CPU)."),
    out: Optional[Path] = Opt(None, "--out", help="Output folder (default: MODEL_DIR-onnx, or MODEL_DIR-onnx-int8)."),
    opset: Optional[int] = Opt(None, help="ONNX opset (default: the exporter's recommended one)."),
    overwrite: bool = Opt(False, "--overwrite", help="Replace a non-empty output folder."),
) -> None:
    """Export a model to ONNX (dynamic batch and sequence axes) for `goemo predict/serve --backend onnx`.

    The output folder holds model.onnx, the tokenizer, config.json and goemo.json (labels,
    thresholds); its fp32 probabilities are checked against PyTorch's before it is written.
    """
    from goemo.export import export_onnx

    result = export_onnx(model_dir, out, quantize=quantize.value if quantize else None, opset=opset, overwrite=overwrite)
    typer.echo(
        f"exported {model_dir} -> {result.path} ({fmt.value}{', ' + result.quantize if result.quantize else ''}, "
        f"{result.size_bytes / 2**20:.1f} MiB, max |Δp| vs PyTorch {result.max_abs_prob_diff:.1e}, {result.seconds:.0f}s)"
    )
    typer.echo(f"use: goemo predict --model {result.path} 'some text'")


@command("reproduce", epilog="Example: goemo reproduce --preset fast --from ../shared/goemotions --out runs/reproduce")
def reproduce_command(
    preset: str = typer.Option("fast", help="fast (offline MiniLM) | paper (bert-base-cased) | wandb-report"),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Run folder; re-running continues it."),
    data_dir: Path = typer.Option(Path("data/goemotions"), help="Where the verified data lives."),
    source: Optional[str] = typer.Option(None, "--from", help="Local folder or mirror URL of the data."),
    epochs: Optional[float] = typer.Option(None, help="Override the preset's epochs."),
    seed: Optional[int] = typer.Option(None, help="Override the seed."),
    teachers: Optional[list[Path]] = typer.Option(
        None, "--teacher", help="Distil from this trained model folder (repeatable), as goemo train --teacher."
    ),
    distill_alpha: Optional[float] = typer.Option(None, help="Weight of the teachers' probabilities (0-1)."),
    holdout_fold: Optional[int] = typer.Option(None, help="Leave this fold of the training texts out, as goemo train."),
    num_folds: Optional[int] = typer.Option(None, help="Folds for --holdout-fold (3)."),
    num_threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch."),
) -> None:
    """Paper protocol in one command: data check, train, select and tune thresholds on dev, test, report."""
    from rich.console import Console
    from rich.table import Table

    from goemo.reproduce import reproduce

    overrides = {"epochs": epochs, "seed": seed, "distill_alpha": distill_alpha, "num_threads": num_threads,
                 "holdout_fold": holdout_fold, "num_folds": num_folds,
                 "teachers": [str(t) for t in teachers] if teachers else None}
    result = reproduce(preset, out, data_dir, source, overrides)
    table = Table(title=f"goemo reproduce --preset {preset}: test split, macro averages")
    for col in ("taxonomy", "thresholds", "P", "R", "F1", "paper F1"):
        table.add_column(col, justify="left" if col in ("taxonomy", "thresholds") else "right")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for row in result.rows:
        table.add_row(row["taxonomy"], row["thresholds"], fmt(row["macro_precision"]), fmt(row["macro_recall"]),
                      fmt(row["macro_f1"]), f"{row['paper_macro_f1']:.2f}")
    console = Console()
    console.print(table)
    res = result.train_summary["resources"]
    console.print(f"trained in {res['wall_time_s'] / 60:.1f} min ({res['precision']}); report: {result.report_html}")


# ---------------------------------------------------------------- baselines (TF-IDF + logistic regression)

baseline_app = typer.Typer(
    help="Fast CPU-only reference models, scored, reported and served like a fine-tuned model.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command(
    "tfidf",
    epilog="Example: goemo baseline tfidf --data-dir data/goemotions --out runs/tfidf   then: goemo report runs/tfidf",
)
def baseline_tfidf_command(
    data_dir: Path = Opt(Path("data/goemotions"), "--data-dir", help="GoEmotions folder (train/dev/test.tsv, emotions.txt)."),
    taxonomy: str = Opt("goemotions", help="goemotions | ekman | sentiment | grouping.json"),
    out: Path = Opt(Path("runs/tfidf"), "--out", help="Run folder: config.yaml, metrics.jsonl, summary.json, best/."),
    max_features: Optional[int] = Opt(None, min=1, help="Keep the most frequent terms of each block (default: all seen in >= --min-df texts)."),
    min_df: int = Opt(2, min=1, help="Drop terms seen in fewer training texts."),
    ngram_max: int = Opt(2, min=1, help="Word n-grams from 1 to this."),
    char: bool = Opt(True, "--char/--no-char", help="Add character 2-5-grams within words (better; --no-char fits ~10x faster)."),
    c: float = Opt(2.0, "--c", min=0.0, help="Inverse L2 regularisation strength of each logistic regression."),
    balanced: bool = Opt(True, "--balanced/--no-balanced", help="Weight each label's classes inversely to their frequency."),
    threshold: float = Opt(0.3, min=0.0, max=1.0, help="Global threshold for the fixed-threshold scores."),
    max_train_samples: Optional[int] = Opt(None, min=1, help="Fit on a random sample (quick runs)."),
    n_jobs: int = Opt(1, help="Labels fitted in parallel (-1: all cores)."),
    seed: int = Opt(0, help="Seed of the sample and of liblinear."),
    overwrite: bool = Opt(False, "--overwrite", help="Replace the run in --out."),
) -> None:
    """TF-IDF (word 1-2-grams, char 2-5-grams) + one logistic regression per label, thresholds tuned on dev; CPU, minutes.

    The model folder OUT/best works with goemo evaluate, report, predict and serve. Saved as
    plain arrays and JSON (no pickle).
    """
    from goemo.train.tfidf import TfidfConfig, fit_tfidf_baseline

    try:
        config = TfidfConfig(
            data_dir=str(data_dir), taxonomy=taxonomy, output=str(out), ngram_max=ngram_max, char_ngrams=char, min_df=min_df,
            max_features=max_features, c=c, class_weight="balanced" if balanced else None, threshold=threshold,
            seed=seed, max_train_samples=max_train_samples, n_jobs=n_jobs, overwrite=overwrite,
        )
        result = fit_tfidf_baseline(config)
    except GoemoError as e:
        if _state["debug"]:
            raise
        typer.echo(f"goemo: error: {e}", err=True)
        raise typer.Exit(1) from None
    s = result.summary
    terms = " + ".join(f"{n:,} {name}" for name, n in s["terms"].items())
    typer.echo(f"TF-IDF + logistic regression: {terms} terms, {s['train_texts']:,} training texts, "
               f"fitted in {s['fit_time_s']:.1f}s")
    for key in ("dev", "test"):
        if key in s:
            note = " (thresholds tuned on this split: optimistic)" if key == "dev" else ""
            typer.echo(f"  {key:<4} macro-F1 {s[key]['f1_macro']:.4f} at {s['threshold']:g}, "
                       f"{s[key]['f1_macro_tuned']:.4f} with dev-tuned thresholds{note}")
    typer.echo(f"model: {result.best_dir}  (goemo evaluate --model {result.best_dir} --thresholds tuned; "
               f"goemo report {result.run_dir})")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # python -m goemo.cli
    main()
