"""``goemo train``, ``goemo reproduce`` and ``goemo baseline tfidf``: making models.

``goemo train`` has one option per `TrainConfig` field (`goemo.cli.options`), each defaulting to
"not given", so that `resolve_config` keeps defaults < --preset < --config YAML < the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from goemo.cli.common import Opt, app, command, make_console, sub_app
from goemo.cli.options import plain, with_options
from goemo.core.config import TrainConfig, resolve_config
from goemo.core.errors import ConfigError
from goemo.core.run_folder import RunFolder, launched_as_main
from goemo.reproduce import reproduce

# ---------------------------------------------------------------- train


@command(
    "train",
    epilog="Example: goemo train --preset fast --data-dir data/goemotions --output runs/fast",
)
@with_options(TrainConfig, order=lambda f: f.name != "preset")  # --preset first: where the other values come from
def train_command(
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of options; the command line wins."),
    cuda: bool = typer.Option(False, "--cuda", help="Same as --device cuda (the cluster guide's flag)."),
    **fields: Any,
) -> None:
    """Fine-tune an encoder for multi-label emotion classification.

    Options come from defaults < --preset < --config YAML < the command line. The run
    folder gets config.yaml, metrics.jsonl, best/, last/ and summary.json.
    """
    if cuda:
        if fields.get("device") not in (None, "cuda"):
            raise ConfigError(f"--cuda and --device {fields['device']}: give one of them")
        fields["device"] = "cuda"
    preset = fields.pop("preset")
    overrides = {name: plain(value) for name, value in fields.items()}  # None: not given
    config = resolve_config(preset, config_file, overrides)
    if launched_as_main():  # a folder in use (or holding another run) is refused before torch is imported
        RunFolder(config.output).check_start(config)

    from goemo.training.loop import train  # torch, transformers

    result = train(config)
    if result.is_main_process:
        _print_train_summary(result.summary)


def _print_train_summary(summary: dict) -> None:
    """One screen: where the model is, dev/test headline metrics, time and memory."""
    table = Table(title=f"goemo train: {summary['run_dir']}", show_header=True)
    table.add_column("split")
    cols = ("f1_macro", "f1_macro_tuned", "f1_macro_xtuned", "f1_micro", "auc_score", "auc_micro", "val_loss")
    for col in cols:
        table.add_column(col, justify="right")
    for split in ("dev", "test"):
        if split in summary:
            m = summary[split]
            table.add_row(split, *(f"{m[c]:.4f}" if isinstance(m.get(c), float) else "" for c in cols))
    res = summary["resources"]
    console = make_console()
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
        console.print(
            f"GPU {gpu['device']} {gpu['name']}: peak allocated {gpu['peak_allocated_mb']:.0f} MiB, reserved {gpu['peak_reserved_mb']:.0f} MiB"
        )
    band = summary.get("f1_macro_tuned_interval")  # training's, on its scored split at the tuned thresholds
    if band and band.get("low") is not None:
        console.print(
            f"{band['confidence']:.0%} interval of f1_macro_tuned on {band['split']}: {band['low']:.4f} to "
            f"{band['high']:.4f} ({band['n_resamples']:,} bootstrap resamples of {band['texts']:,} texts)"
        )
    console.print(f"model: {summary['run_dir']}/best")


# ---------------------------------------------------------------- reproduce


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
    overrides = {
        "epochs": epochs,
        "seed": seed,
        "distill_alpha": distill_alpha,
        "num_threads": num_threads,
        "holdout_fold": holdout_fold,
        "num_folds": num_folds,
        "teachers": [str(t) for t in teachers] if teachers else None,
    }
    result = reproduce(preset, out, data_dir, source, overrides)
    table = Table(title=f"goemo reproduce --preset {preset}: test split, macro averages")
    for col in ("taxonomy", "thresholds", "P", "R", "F1", "F1 95% CI", "paper F1"):
        table.add_column(col, justify="left" if col in ("taxonomy", "thresholds") else "right")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for row in result.rows:
        band = row["macro_f1_interval"]
        table.add_row(
            row["taxonomy"],
            row["thresholds"],
            fmt(row["macro_precision"]),
            fmt(row["macro_recall"]),
            fmt(row["macro_f1"]),
            "" if band is None or None in band else f"{band[0]:.3f}–{band[1]:.3f}",
            f"{row['paper_macro_f1']:.2f}",
        )
    console = make_console()
    console.print(table)
    res = result.train_summary["resources"]
    console.print(f"trained in {res['wall_time_s'] / 60:.1f} min ({res['precision']}); report: {result.report_html}")


# ---------------------------------------------------------------- baselines (TF-IDF + logistic regression)

baseline_app = sub_app("Fast CPU-only reference models, scored, reported and served like a fine-tuned model.")
app.add_typer(baseline_app, name="baseline")


@command(
    "tfidf",
    group=baseline_app,
    epilog="Example: goemo baseline tfidf --data-dir data/goemotions --out runs/tfidf   then: goemo report runs/tfidf",
)
def baseline_tfidf_command(
    data_dir: Path = Opt(
        Path("data/goemotions"), "--data-dir", help="GoEmotions folder (train/dev/test.tsv, emotions.txt)."
    ),
    taxonomy: str = Opt("goemotions", help="goemotions | ekman | sentiment | grouping.json"),
    out: Path = Opt(Path("runs/tfidf"), "--out", help="Run folder: config.yaml, metrics.jsonl, summary.json, best/."),
    max_features: Optional[int] = Opt(
        None, min=1, help="Keep the most frequent terms of each block (default: all seen in >= --min-df texts)."
    ),
    min_df: int = Opt(2, min=1, help="Drop terms seen in fewer training texts."),
    ngram_max: int = Opt(2, min=1, help="Word n-grams from 1 to this."),
    char: bool = Opt(
        True, "--char/--no-char", help="Add character 2-5-grams within words (better; --no-char fits ~10x faster)."
    ),
    c: float = Opt(2.0, "--c", min=0.0, help="Inverse L2 regularisation strength of each logistic regression."),
    balanced: bool = Opt(
        True, "--balanced/--no-balanced", help="Weight each label's classes inversely to their frequency."
    ),
    threshold: float = Opt(0.3, min=0.0, max=1.0, help="Global threshold for the fixed-threshold scores."),
    max_train_samples: Optional[int] = Opt(
        None, min=1, help="Fit on a random sample (quick runs; default $GOEMO_MAX_TRAIN_SAMPLES, else all)."
    ),
    n_jobs: int = Opt(1, help="Labels fitted in parallel (-1: all cores)."),
    seed: int = Opt(0, help="Seed of the sample and of liblinear."),
    overwrite: bool = Opt(False, "--overwrite", help="Replace the run in --out."),
) -> None:
    """TF-IDF (word 1-2-grams, char 2-5-grams) + one logistic regression per label, thresholds tuned on dev; CPU, minutes.

    The model folder OUT/best works with goemo evaluate, report, predict and serve. Saved as
    plain arrays and JSON (no pickle).
    """
    from goemo.training.tfidf import TfidfConfig, fit_tfidf_baseline  # numpy, scikit-learn

    # not given: TfidfConfig's default, $GOEMO_MAX_TRAIN_SAMPLES or every text
    sample: dict[str, Any] = {} if max_train_samples is None else {"max_train_samples": max_train_samples}
    config = TfidfConfig(
        data_dir=str(data_dir),
        taxonomy=taxonomy,
        output=str(out),
        ngram_max=ngram_max,
        char_ngrams=char,
        min_df=min_df,
        max_features=max_features,
        c=c,
        class_weight="balanced" if balanced else None,
        threshold=threshold,
        seed=seed,
        n_jobs=n_jobs,
        overwrite=overwrite,
        **sample,
    )
    result = fit_tfidf_baseline(config)
    s = result.summary
    terms = " + ".join(f"{n:,} {name}" for name, n in s["terms"].items())
    typer.echo(
        f"TF-IDF + logistic regression: {terms} terms, {s['train_texts']:,} training texts, "
        f"fitted in {s['fit_time_s']:.1f}s"
    )
    for key in ("dev", "test"):
        if key in s:
            note = " (thresholds tuned on this split: optimistic)" if key == "dev" else ""
            typer.echo(
                f"  {key:<4} macro-F1 {s[key]['f1_macro']:.4f} at {s['threshold']:g}, "
                f"{s[key]['f1_macro_tuned']:.4f} with dev-tuned thresholds{note}"
            )
    typer.echo(
        f"model: {result.best_dir}  (goemo evaluate --model {result.best_dir} --thresholds tuned; "
        f"goemo report {result.run_dir})"
    )
