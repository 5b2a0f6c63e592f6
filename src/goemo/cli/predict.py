"""``goemo predict``, ``goemo export`` and ``goemo serve``: using a trained model."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from goemo.cli.common import Opt, command
from goemo.cli.options import gather, with_options
from goemo.core.errors import ConfigError
from goemo.core.run_settings import RunSettings


@command(
    "predict",
    epilog=(
        "Example: goemo predict --model runs/goemo/best 'I love it!' 'Why would you do that?'   "
        "or: goemo predict --model runs/goemo/best --input comments.csv --text-column body --id-column id --output labels.jsonl"
    ),
)
@with_options(RunSettings)
def predict_command(
    texts: Optional[list[str]] = typer.Argument(
        None, help="Texts to label (default: --input, else one text per stdin line)."
    ),
    model: Path = Opt(..., "--model", help="Model folder: runs/NAME/best, or an ONNX export of one."),
    input_file: Optional[Path] = Opt(
        None, "--input", help="A .txt (one text per line), .csv or .jsonl file; streamed."
    ),
    text_column: str = Opt("text", help="Text column of a .csv/.jsonl input."),
    id_column: Optional[str] = Opt(None, help="Id column of a .csv/.jsonl input (default: row numbers)."),
    output: Optional[Path] = Opt(
        None,
        "--output",
        help="Write .jsonl or .csv here instead of JSON Lines on stdout: whole records only; a rerun resumes.",
    ),
    top_k: Optional[int] = Opt(
        None, min=1, help="The K highest-scoring labels per text (with --threshold: at most K above it)."
    ),
    threshold: Optional[float] = Opt(
        None, min=0.0, max=1.0, help="One threshold for every label (default: the model's own, tuned on dev)."
    ),
    taxonomy: Optional[str] = Opt(
        None, help="Group labels: ekman | sentiment | grouping.json (a group's score: max of its members)."
    ),
    all_scores: bool = Opt(False, "--all-scores", help="Also write every label's probability."),
    no_text: bool = Opt(False, "--no-text", help="Leave the text out of the output (ids only)."),
    spans: bool = Opt(
        False,
        "--spans",
        help="Also write the pieces the model read: each one's characters [start, end) and its own labels "
        "(JSON Lines only; a text longer than --max-length has several).",
    ),
    shard: Optional[str] = Opt(
        None,
        "--shard",
        metavar="K/N",
        help="Label only shard K of N (1-based, e.g. $SGE_TASK_ID/8) into OUT.shard-K-of-N.EXT; then goemo merge-predictions.",
    ),
    overwrite: bool = Opt(
        False, "--overwrite", help="Replace an existing --output (default: resume it when it is this job's)."
    ),
    **options: Any,
) -> None:
    """Label texts with a trained model: one JSON line (or CSV row) per text, in input order, with its id.

    Each text gets the emotions above their thresholds, highest score first. A text longer than
    the model's max length is scored piece by piece (sentences, else token windows), each
    emotion's score its highest in any piece (--long-text truncate: its start only); --spans
    shows the pieces and their emotions. Files are read
    and labelled a chunk (4,096 texts) at a time, reading and writing overlapped with the
    model, so any size fits in memory; a progress bar shows on a terminal. --output is
    written in place by whole records, with OUT.goemo-progress.json beside it: run the same
    command again after an interruption and it resumes where the output ends (a complete
    output: nothing to do).
    """
    from goemo.data.records import Record
    from goemo.predict.classifier import EmotionClassifier  # numpy, and torch or onnxruntime when loaded
    from goemo.predict.files import BulkOptions, predict_file, write_predictions
    from goemo.predict.prediction_writer import Labelling, output_format
    from goemo.predict.shards import parse_shard
    from goemo.predict.stream import predict_records

    if texts and input_file is not None:
        raise ConfigError("give texts as arguments or --input FILE, not both")
    if not texts and input_file is None and sys.stdin.isatty():
        raise ConfigError("no texts: give them as arguments, with --input FILE, or on stdin (one per line)")
    fmt = output_format(output)  # a bad --output name fails before the model loads
    if spans and fmt != "jsonl":
        raise ConfigError("--spans writes JSON Lines: give a .jsonl --output (or none: stdout)")
    shard_k_n = parse_shard(shard) if shard is not None else None
    if shard_k_n is not None and (input_file is None or output is None):
        raise ConfigError("--shard needs --input FILE and --output FILE")
    labelling = Labelling(top_k, threshold, taxonomy, all_scores, not no_text, spans)
    clf = EmotionClassifier.load(model, gather(RunSettings, options))
    start = time.perf_counter()
    written, total = output, None
    if texts:
        records = [Record(str(i), t) for i, t in enumerate(texts, start=1)]
        if output is None:
            writer = labelling.writer(sys.stdout, fmt, clf.label_names_for(taxonomy))
            count = predict_records(clf, records, writer, labelling)
        else:
            count = write_predictions(clf, records, output, labelling, overwrite=overwrite)
    else:
        result = predict_file(
            clf,
            input_file,
            output,
            labelling,
            BulkOptions(columns=(text_column, id_column), shard=shard_k_n, overwrite=overwrite),
            notify=lambda line: typer.echo(line, err=True),
        )
        if result.already_complete:
            return
        count, written = result.labelled, result.output
        total = result.records if result.resumed_at else None
    if written is not None:
        seconds = time.perf_counter() - start
        typer.echo(
            f"{count:,} texts labelled in {seconds:.1f}s ({count / max(seconds, 1e-9):,.0f} texts/s, "
            f"{clf.backend} on {clf.device}): {written}"
            + (f" ({total:,} records in all)" if total is not None else ""),
            err=True,
        )


@command(
    "merge-predictions",
    epilog="Example: goemo merge-predictions --output labels.jsonl --shards 8   (after goemo predict --shard K/8, K = 1..8)",
)
def merge_predictions_command(
    output: Path = Opt(..., "--output", help="The --output the shards were labelled for (labels.jsonl or .csv)."),
    shards: int = Opt(..., "--shards", min=1, help="N of --shard K/N: how many shard files to merge."),
    remove_shards: bool = Opt(False, "--remove-shards", help="Remove the shard files once the merge is written."),
    overwrite: bool = Opt(False, "--overwrite", help="Replace an existing OUT that is not this merge."),
) -> None:
    """Merge the shard files of `goemo predict --shard K/N` into OUT, in input order, atomically.

    Reads OUT.shard-1-of-N.EXT ... OUT.shard-N-of-N.EXT; each must be complete and of the same
    job, else one line names the first missing or incomplete shard (rerun its array task: it
    resumes). OUT appears whole or not at all; running it again after a merge does nothing.
    """
    from goemo.predict.shards import merge_predictions

    result = merge_predictions(output, shards, remove_shards=remove_shards, overwrite=overwrite)
    removed = f"; removed {result.removed} shard files" if result.removed else ""
    if result.already_merged:
        typer.echo(f"{output} is already merged from {shards} shards ({result.records:,} records){removed}", err=True)
    else:
        typer.echo(f"merged {shards} shards ({result.records:,} records) into {output}{removed}", err=True)


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
    quantize: Optional[Quantize] = Opt(
        None, help="int8: dynamic int8 quantisation of the weights (smaller, faster on CPU)."
    ),
    out: Optional[Path] = Opt(None, "--out", help="Output folder (default: MODEL_DIR-onnx, or MODEL_DIR-onnx-int8)."),
    opset: Optional[int] = Opt(None, help="ONNX opset (default: the exporter's recommended one)."),
    overwrite: bool = Opt(False, "--overwrite", help="Replace a non-empty output folder."),
) -> None:
    """Export a model to ONNX (dynamic batch and sequence axes) for `goemo predict/serve --backend onnx`.

    The output folder holds model.onnx, the tokenizer, config.json and goemo.json (labels,
    thresholds); its fp32 probabilities are checked against PyTorch's before it is written.
    """
    from goemo.export import export_onnx  # torch, onnx

    result = export_onnx(
        model_dir, out, quantize=quantize.value if quantize else None, opset=opset, overwrite=overwrite
    )
    typer.echo(
        f"exported {model_dir} -> {result.path} ({fmt.value}{', ' + result.quantize if result.quantize else ''}, "
        f"{result.size_bytes / 2**20:.1f} MiB, max |Δp| vs PyTorch {result.max_abs_prob_diff:.1e}, {result.seconds:.0f}s)"
    )
    typer.echo(f"use: goemo predict --model {result.path} 'some text'")


# ---------------------------------------------------------------- serving


@command(
    "serve",
    epilog="Example: goemo serve --model runs/goemo/best --port 8000   (then open http://127.0.0.1:8000/)",
)
@with_options(RunSettings)
def serve_command(
    model: Path = Opt(..., "--model", help="Model folder (runs/NAME/best, or an ONNX export)."),
    host: str = Opt(
        "127.0.0.1",
        help="Address to listen on; the API has no authentication, keep it on loopback (others log a warning).",
    ),
    port: int = Opt(8000, min=0, max=65535, help="Port (0: any free port, shown in the log)."),
    workers: Optional[int] = Opt(
        None,
        min=1,
        max=256,
        help="Server processes sharing the port, each with its own model (default: one per CPU core, at most 4; "
        "one on a GPU).",
    ),
    max_batch: int = Opt(64, min=1, help="Most texts merged into one model call (1 turns micro-batching off)."),
    max_wait_ms: float = Opt(
        5.0,
        min=0,
        max=10_000,
        help="Under load, longest wait for callers on their way back before a model call "
        "(a request that finds the model idle runs at once).",
    ),
    max_texts: int = Opt(64, min=1, help="Most texts in one request (422 above)."),
    max_chars: int = Opt(
        10_000, min=1, help="Most characters in one text (422 above); a long text is scored whole, in pieces."
    ),
    max_tokens: int = Opt(
        8192,
        min=1,
        help="Most tokens in one request, all its texts together (422 above), and in one model call.",
    ),
    max_body_bytes: int = Opt(1_000_000, min=1, help="Largest request body (413 above)."),
    max_queue: int = Opt(4096, min=1, help="Most texts waiting for the model (503 with Retry-After above)."),
    body_timeout: float = Opt(
        10.0, min=0.001, max=3600, help="Seconds for a request body to arrive in full (408, connection closed)."
    ),
    header_timeout: float = Opt(
        10.0, min=0.001, max=3600, help="Seconds for a request line and headers to arrive (connection closed)."
    ),
    max_connections: Optional[int] = Opt(
        None,
        min=1,
        help="Most open connections; more get a 503 with Retry-After (default: what fits under the open-file limit).",
    ),
    limit_concurrency: Optional[int] = Opt(
        None, min=1, help="Uvicorn's limit on connections and requests at once (plain 503 above; default: off)."
    ),
    timeout_keep_alive: int = Opt(5, min=0, help="Seconds an idle kept-alive connection stays open."),
    drain_timeout: float = Opt(
        10.0, min=0, max=3600, help="On SIGTERM, seconds to answer the requests in flight before exiting."
    ),
    backlog: Optional[int] = Opt(
        None,
        min=1,
        help="Connections the kernel queues before they are accepted (default: 1/16 of the open-file limit, 16 to 2048).",
    ),
    allowed_host: Optional[list[str]] = Opt(
        None,
        "--allowed-host",
        help="A Host name to accept besides loopback ones (repeatable; '*' accepts any). Needed with --host 0.0.0.0.",
    ),
    access_log: bool = Opt(True, "--access-log/--no-access-log", help="Log one line per request."),
    **options: Any,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /labels, GET /health, a web page at /, docs at /docs.

    Requests from concurrent clients are merged into batches (continuous micro-batching:
    a lone request runs at once; under load a batch is what queued during the previous
    model call). More than --max-queue texts waiting get a 503 with Retry-After. Slow,
    abandoned and surplus clients are cut off by the timeouts and --max-connections
    (docs/predict-and-serve.md, "Limits and failure behaviour"). Stop with Ctrl-C or
    SIGTERM (exit 0 after a clean shutdown). --num-threads is per worker (default: all cores but
    one with one worker, cores / workers with several).
    """
    from goemo.serve import ServeLimits, run_server  # numpy, the web server

    limits = ServeLimits(
        max_texts=max_texts,
        max_chars=max_chars,
        max_tokens=max_tokens,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        body_timeout_s=body_timeout,
        header_timeout_s=header_timeout,
        max_connections=max_connections,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive_s=timeout_keep_alive,
        drain_timeout_s=drain_timeout,
        backlog=backlog,
        allowed_hosts=tuple(allowed_host or ()),
    )
    run_server(
        model, host, port, settings=gather(RunSettings, options), limits=limits, access_log=access_log, workers=workers
    )
