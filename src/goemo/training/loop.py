"""The training loop: one readable Accelerate loop for CPU, one GPU and many.

Read `train` top to bottom: checks before the run folder is touched (`.preflight`), then
tokenise, build the model, and per epoch train, evaluate on dev and checkpoint (``best/`` by the
selection metric, ``last/`` to resume); finally score the best weights and write
``summary.json``. Each part lives in its own module beside it, so the loop stays the order of
events. Resuming replays an uninterrupted run exactly: batch order is a function of (seed,
epoch), and ``last/`` holds the optimizer, scheduler, RNG and position.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from goemo.core.config import TrainConfig, save_config
from goemo.core.errors import ModelError
from goemo.core.fileio import append_jsonl, atomic_write_json
from goemo.core.folder import ModelFolder
from goemo.core.run_folder import TRAINER_STATE_FILE, RunFolder, corrupt_checkpoint
from goemo.data.batching import collate, encode_split
from goemo.data.split import Split
from goemo.models.modeling import build_from_folder, build_model, load_tokenizer, model_pooling
from goemo.training.accelerator import make_accelerator, mean_over_processes, plain_model
from goemo.training.card_facts import card_facts
from goemo.training.checkpoint import (
    finish_best,
    init_record,
    load_best_weights,
    load_checkpoint,
    model_meta,
    save_checkpoint,
)
from goemo.training.data import clean_train, load_training_data, prepare_splits, train_batches
from goemo.training.distill import batch_targets, soft_targets
from goemo.training.ema import weight_average
from goemo.training.epoch_metrics import LiveScorer, dev_metrics, final_evaluation, is_better
from goemo.training.grad_stats import grad_norms, watch_stats
from goemo.training.losses import loss_function
from goemo.training.optim import make_optimizer, optimizer_step
from goemo.training.preflight import check_encoder
from goemo.training.resources import Stopwatch
from goemo.training.summary import resources_used, run_summary
from goemo.training.tracking import close_trackers, draws_histograms, log_histograms, make_trackers

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]


@dataclass
class TrainState:
    """Where training stands; saved in ``last/trainer_state.json``."""

    epoch: int = 0  # epochs fully done
    batch_in_epoch: int = 0  # this process's batches done in the current epoch
    global_step: int = 0  # optimiser steps
    best_metric: float | None = None
    best_epoch: int | None = None
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics_bytes: int | None = None  # metrics.jsonl's length at this checkpoint: resuming cuts it back to this

    @classmethod
    def restore(cls, saved: dict[str, Any], folder: Path) -> TrainState:
        """The state `save_checkpoint` wrote, checked field by field (`RunFolderError` naming the file)."""
        known = {f.name for f in fields(cls)}
        ints = ("epoch", "batch_in_epoch", "global_step", "loss_count")
        unknown = sorted(set(saved) - known)
        wrong = [k for k in ints if not isinstance(saved.get(k), int) or saved[k] < 0]
        if unknown or wrong or not isinstance(saved.get("history", []), list):
            what = f"unknown fields {unknown}" if unknown else f"bad or missing {wrong or ['history']}"
            raise corrupt_checkpoint(folder / TRAINER_STATE_FILE, f"not a goemo trainer state ({what})")
        return cls(**saved)


@dataclass
class TrainResult:
    """What `train` hands back: where things are and the headline numbers."""

    run_dir: Path
    best_dir: Path
    summary: dict[str, Any]
    is_main_process: bool = True


def train(
    config: TrainConfig,
    splits: dict[str, Split] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Fine-tune ``config.model`` on the config's data and write a run folder.

    ``splits`` (``{"train": …, "dev": …, "test"?: …}``) replaces reading files. ``callbacks``
    get every record written to metrics.jsonl (sweep pruning); one that raises ends training.
    """
    started, watch = time.perf_counter(), Stopwatch()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    # Before the run folder is touched: the trackers, the folder, the encoder, the data.
    accelerator = make_accelerator(config, make_trackers(config.trackers, Path(config.output)))
    run = RunFolder(config.output)
    if accelerator.is_main_process:
        run.check_start(config)
    check_encoder(config)
    splits = load_training_data(config) if splits is None else splits
    cleaning = clean_train(config, splits)  # before any fold is held out: the files name the whole split's ids
    if cleaning is not None and accelerator.is_main_process:
        log.info(cleaning.describe())
    splits = prepare_splits(config, splits)
    cleaned = None if cleaning is None else cleaning.to_record()
    # One run per folder: the main process holds RUN/.lock until the run ends, however it ends.
    with run.lock() if accelerator.is_main_process else nullcontext():
        return _train(config, splits, callbacks, accelerator, run, started, watch, cleaned)


def _train(
    config: TrainConfig,
    splits: dict[str, Split],
    callbacks: Sequence[Callback],
    accelerator,
    run: RunFolder,
    started: float,
    watch: Stopwatch,
    cleaned: dict[str, Any] | None = None,
) -> TrainResult:
    """`train` once the run is checked, its ``splits`` prepared (and cleaned: ``cleaned`` records how) and its folder locked."""
    main = accelerator.is_main_process
    with accelerator.main_process_first():  # the main process tidies the folder first; all then see the same one
        resume_from = run.prepare(config, is_main=main)
    if main:
        save_config(config, run.config_path)

    # ---- data: the splits (read before the folder was taken), the teachers' probabilities, the tokens
    label_names = splits["train"].label_names
    checksums = {k: s.checksum() for k, s in splits.items()}
    with accelerator.main_process_first():  # one process predicts, the others read its cache
        soft = soft_targets(config, splits["train"])
    tokenizer = load_tokenizer(config.encoder_source, config.trust_remote_code)  # --init-from's own tokenizer
    with accelerator.main_process_first():  # one process fills the token cache, the others read it
        encoded = {k: encode_split(s, tokenizer, config.max_length, config.cache_dir) for k, s in splits.items()}

    # ---- model, batches, optimiser, loss, weight average
    set_seed(config.seed)
    if config.init_from:
        model, labels_kept = build_from_folder(config.init_from, label_names, config.dropout, config.trust_remote_code)
        init = init_record(config.init_from, labels_kept)
        if main:
            kept = (
                "its encoder and head (the same labels)"
                if labels_kept
                else "its encoder, with a new head for these labels"
            )
            log.info("starting from %s: %s", init["path"], kept)
    else:
        model = build_model(config.model, label_names, config.pooling, config.dropout, config.trust_remote_code)
        init = None
    if model.config.num_labels != len(label_names):
        raise ModelError(f"model has {model.config.num_labels} labels but the data has {len(label_names)}")
    pooling = model_pooling(model)  # the head built (--init-from's may differ from --pooling), before DDP wraps it
    sampler = train_batches(encoded["train"], config, accelerator.process_index, accelerator.num_processes)
    batches_per_epoch = len(sampler)
    total_batches = math.ceil(config.epochs * batches_per_epoch)
    num_epochs = math.ceil(total_batches / batches_per_epoch)
    total_steps = math.ceil(total_batches / config.grad_accum)
    optimizer, scheduler = make_optimizer(model, config, total_steps)
    if config.compile:
        model = torch.compile(model, dynamic=True)  # type: ignore[assignment]  # same interface, compiled
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)  # saved by save_state
    loss_fn = loss_function(config, splits["train"].labels, label_names)
    ema = weight_average(plain_model(accelerator, model), config.ema_decay)  # evaluated and saved as best/
    scorer = LiveScorer(accelerator, tokenizer, label_names, config)

    def write(record: dict[str, Any]) -> None:
        if main:
            append_jsonl(run.metrics_path, record)

    def notify(record: dict[str, Any]) -> None:
        if main:
            accelerator.log(record)
            for cb in callbacks:
                cb(record)

    def emit(record: dict[str, Any]) -> None:
        write(record)
        notify(record)

    def log_gradients(epoch: int, step: int) -> None:
        """``grad_norms`` and ``--watch``'s numbers and histograms, before the optimiser step clips the gradients."""
        plain = plain_model(accelerator, model)
        watched = watch_stats(plain, config.watch, histograms=draws_histograms(accelerator.trackers))
        emit({"event": "grad_norms", "epoch": epoch, "global_step": step, **grad_norms(plain), **watched.scalars})
        log_histograms(accelerator.trackers, watched.histograms, step)

    def meta_of(metrics: dict[str, Any], tuned: dict[str, Any] | None = None) -> dict[str, Any]:
        return model_meta(config, label_names, checksums, metrics, tuned, cleaned, pooling=pooling, init_from=init)

    def checkpoint(folder: Path, with_state: bool, metrics: dict[str, Any]) -> None:
        """``last/`` (with state) holds the raw weights training continues from; ``best/`` the weights evaluated."""
        if with_state and main:  # the records this checkpoint has seen; a resumed run writes the later ones again
            state.metrics_bytes = run.metrics_path.stat().st_size if run.metrics_path.is_file() else 0
        training = {"state": state, "ema": ema} if with_state else None
        weights = model if with_state or ema is None else ema.module
        with watch("save"):
            save_checkpoint(folder, accelerator, weights, tokenizer, meta_of(metrics), training)

    state = TrainState()
    accelerator.init_trackers("goemo", config=config.to_dict())  # on the main process; see goemo.training.tracking
    try:
        if resume_from is not None:
            state = TrainState.restore(load_checkpoint(resume_from, accelerator, model, ema), resume_from)
            if main:
                run.rewind_metrics(state.metrics_bytes)
            pos = (state.epoch + 1, state.batch_in_epoch, state.global_step)
            log.info("resuming %s at epoch %d, batch %d (step %d)", run.path, *pos)
            emit({"event": "resume", "epoch": state.epoch, "global_step": state.global_step})
        if main:
            _log_start(config, accelerator, len(splits["train"]), len(label_names), num_epochs, batches_per_epoch)

        # ---- epochs
        model.train()
        watch_every = config.watch_every or config.log_every
        epoch_times: list[float] = []
        for epoch in range(state.epoch, num_epochs):
            epoch_batches = min(batches_per_epoch, total_batches - epoch * batches_per_epoch)
            sampler.set_epoch(epoch, start=state.batch_in_epoch)
            if state.batch_in_epoch == 0:
                state.loss_sum, state.loss_count = 0.0, 0
            bar = tqdm(
                total=epoch_batches,
                initial=state.batch_in_epoch,
                desc=f"epoch {epoch + 1}/{num_epochs}",
                disable=not accelerator.is_local_main_process,
                dynamic_ncols=True,
                leave=False,
            )
            t0, seen = time.perf_counter(), 0
            for batch_idx in sampler:
                if state.batch_in_epoch >= epoch_batches:
                    break
                batch = collate(encoded["train"], batch_idx)
                state.batch_in_epoch += 1
                sync = state.batch_in_epoch % config.grad_accum == 0 or state.batch_in_epoch == epoch_batches
                with nullcontext() if sync else accelerator.no_sync(model):
                    logits = model(
                        input_ids=torch.from_numpy(batch["input_ids"]).to(accelerator.device),
                        attention_mask=torch.from_numpy(batch["attention_mask"]).to(accelerator.device),
                    ).logits
                    loss = loss_fn(logits, batch_targets(batch, soft, config.distill_alpha).to(accelerator.device))
                    accelerator.backward(loss / config.grad_accum)
                state.loss_sum += float(loss.detach())
                state.loss_count += 1
                seen += len(batch_idx)
                bar.update(1)
                if not sync:
                    continue
                # every watch_every steps and at each epoch's last, so even a short run logs them
                if main and ((state.global_step + 1) % watch_every == 0 or state.batch_in_epoch == epoch_batches):
                    log_gradients(epoch + 1, state.global_step + 1)
                optimizer_step(accelerator, model, optimizer, scheduler, config.max_grad_norm)
                if ema is not None:
                    ema.update_parameters(plain_model(accelerator, model))
                state.global_step += 1
                if state.global_step % config.log_every == 0:
                    running = state.loss_sum / state.loss_count
                    bar.set_postfix(loss=f"{running:.4f}")
                    at = {"event": "step", "epoch": epoch + 1, "global_step": state.global_step}
                    emit({**at, "train_loss": running, "lr": scheduler.get_last_lr()[0]})
                save_now = config.save_every and state.global_step % config.save_every == 0
                if save_now and state.batch_in_epoch < epoch_batches:  # the end of an epoch checkpoints anyway
                    checkpoint(run.last_dir, True, {})
            bar.close()
            epoch_time = time.perf_counter() - t0
            epoch_times.append(epoch_time)

            # ---- evaluate on dev (the average, when one is kept), select, checkpoint
            with watch("eval"):
                metrics, raw = dev_metrics(scorer, model, None if ema is None else ema.module, encoded["dev"], config)
            train_loss = mean_over_processes(accelerator, state.loss_sum / max(1, state.loss_count))
            improved = is_better(config.select_metric, metrics[config.select_metric], state.best_metric)
            if improved:
                state.best_metric, state.best_epoch = metrics[config.select_metric], epoch + 1
            record = {
                "event": "epoch",
                "epoch": epoch + 1,
                "global_step": state.global_step,
                "train_loss": train_loss,
                **metrics,
                **raw,
                "lr": scheduler.get_last_lr()[0],
                "epoch_time_s": round(epoch_time, 3),
                "examples_per_s": round(seen * accelerator.num_processes / max(epoch_time, 1e-9), 2),
                "best": improved,
            }
            state.history.append(record)
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            if main:
                _log_epoch(record, epoch_time)
            write(record)  # before last/, which then counts it as written: a kill before last/ writes it again
            if improved:
                checkpoint(run.best_dir, False, {"dev": metrics, "epoch": epoch + 1})
            checkpoint(run.last_dir, True, {"dev": metrics, "epoch": epoch + 1})
            notify(record)  # after the checkpoints: a callback that stops the run (pruning) loses nothing

        if resume_from is not None and state.epoch >= num_epochs and run.summary_path.is_file():
            # a finished run resumed: summary.json is written last, so its final phase ran to the end
            summary = json.loads(run.summary_path.read_text(encoding="utf-8"))
            if main:
                log.info("%s finished already; its best/ and summary.json are kept as they are", run.path)
            close_trackers(accelerator.trackers)
            accelerator.wait_for_everyone()
            return TrainResult(run.path, run.best_dir, summary, main)
        # ---- the best weights on dev and test, thresholds tuned and a calibration fitted on dev, summary.json
        load_best_weights(run.best_dir, accelerator, model)
        if ModelFolder.open(run.best_dir).calibration is not None:  # a finish cut short after calibrating
            config = replace(config, calibrate=False)  # its weights give calibrated scores: tune on those
        final = final_evaluation(scorer, model, encoded, config, checksums.get("dev"))
        resources = resources_used(started, epoch_times, watch, accelerator.mixed_precision, accelerator.num_processes)
        summary = run_summary(config, run.path, state.best_epoch, state.best_metric, state.history, final, resources)
        if main:
            headline = {"best_epoch": state.best_epoch, **final.metrics}
            meta = meta_of(headline, None if final.tuned is None else final.tuned.to_dict())
            facts = card_facts(splits, final.probs, final.tuned, summary, config.threshold, config.to_dict())
            if facts.intervals is not None:  # the headline's interval, in the summary a terminal shows
                bands = facts.intervals
                summary["f1_macro_tuned_interval"] = {
                    "split": facts.per_label_split,
                    **bands["f1_macro"],
                    **{k: bands[k] for k in ("confidence", "n_resamples", "texts")},
                }
            scored = {k: (splits[k].texts, encoded[k]) for k in final.probs}
            settings = scorer.recorded_settings(model, scored)
            finish_best(
                run.best_dir,
                meta,
                settings,
                [(splits[k], probs) for k, probs in final.probs.items()],
                facts,
                summary,
                calibration=final.calibration,
            )
            atomic_write_json(run.summary_path, summary)  # last: it marks the run finished
            accelerator.log({"event": "summary", **final.flat()})
    except BaseException:
        close_trackers(accelerator.trackers, failed=True)
        raise
    close_trackers(accelerator.trackers)
    accelerator.wait_for_everyone()
    return TrainResult(run.path, run.best_dir, summary, main)


def _log_start(config: TrainConfig, accelerator, texts: int, labels: int, epochs: int, batches_per_epoch: int) -> None:
    log.info(
        "training %s on %d texts (%d labels): %d epochs x %d steps, %s, precision %s, %d process(es)",
        config.model,
        texts,
        labels,
        epochs,
        math.ceil(batches_per_epoch / config.grad_accum),
        accelerator.device,
        accelerator.mixed_precision,
        accelerator.num_processes,
    )


def _log_epoch(record: dict[str, Any], seconds: float) -> None:
    log.info(
        "epoch %d: train_loss %.4f val_loss %.4f f1_macro %.4f f1_macro_xtuned %.4f auc_score %.4f (%.0fs)%s",
        record["epoch"],
        record["train_loss"],
        record["val_loss"],
        record["f1_macro"],
        record["f1_macro_xtuned"],
        record["auc_score"],  # macro ROC-AUC, under the name sweeps and --select-metric use
        seconds,
        " *" if record["best"] else "",
    )
    if "raw_f1_macro" in record:
        log.info(
            "epoch %d, raw weights (not the average): f1_macro %.4f f1_macro_xtuned %.4f",
            record["epoch"],
            record["raw_f1_macro"],
            record["raw_f1_macro_xtuned"],
        )
