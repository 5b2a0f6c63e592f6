"""Experiment trackers (TensorBoard, MLflow, W&B), all optional, on Accelerate's tracker API.

Training always writes ``metrics.jsonl`` itself (the ``jsonl`` tracker). The dashboards are
Accelerate's own integrations: the loop builds them with `make_trackers`, hands them to
``Accelerator(log_with=...)``, starts them with ``init_trackers``, logs with ``accelerator.log``
and ends them with `close_trackers`. `GoemoTracker` wraps each one so that every dashboard gets
the same metric names (`metric_items`; the table is in docs/training.md, "Tracking"), sweep
trials are grouped under their sweep, a failing tracker is dropped with one warning instead of
ending training, and a failed run is marked failed where the backend records it. The sweep
runner and ``goemo stats`` open trackers without an Accelerator (`build_trackers`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker

from goemo.core.errors import ConfigError
from goemo.training.grad_stats import Histogram

log = logging.getLogger(__name__)

TRACKERS = ("jsonl", "tensorboard", "mlflow", "wandb")
INSTALL_HINT = "pip install 'goemo[track]'"

_SKIP_KEYS = {"event", "global_step", "best"}
_STEP_KEYS = {"train_loss": "step/train_loss", "lr": "step/lr"}


# ---------------------------------------------------------------- names and checks


def check_trackers(names: list[str] | tuple[str, ...]) -> list[str]:
    """The trackers to build besides ``jsonl``; checked before training, so a typo costs seconds, not an epoch.

    >>> check_trackers(["jsonl"])
    []
    >>> check_trackers(["tensorbord"])
    Traceback (most recent call last):
    ...
    goemo.core.errors.ConfigError: unknown tracker 'tensorbord' (available: jsonl, tensorboard, mlflow, wandb)
    """
    wanted: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {raw!r} (available: {', '.join(TRACKERS)})")
        if name != "jsonl" and name not in wanted:
            wanted.append(name)
    for name in wanted:
        if importlib.util.find_spec(name) is None:  # each tracker's package has its name
            raise ConfigError(f"tracker {name!r} needs the {name} package: {INSTALL_HINT}")
    return wanted


def metric_items(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one training event, under the names every tracker uses.

    >>> metric_items({"event": "epoch", "epoch": 1, "global_step": 9, "val_loss": 0.2, "best": True})
    {'epoch': 1.0, 'val_loss': 0.2}
    >>> metric_items({"event": "step", "global_step": 9, "train_loss": 0.3, "lr": 1e-4})
    {'step/train_loss': 0.3, 'step/lr': 0.0001}
    """
    event = record.get("event")
    if event == "resume":
        return {}
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _SKIP_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key == "epoch" and event != "epoch":  # the epoch curve comes from epoch events only
            continue
        if event == "step":
            key = _STEP_KEYS.get(key, f"step/{key}")
        out[key] = float(value)
    return out


def sweep_folder(run_dir: Path) -> Path | None:
    """The sweep folder when ``run_dir`` is a sweep trial (``SWEEP/trials/N``): its trials share one store."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == "trials" and (run_dir.parent.parent / "sweep.yaml").is_file():
        return run_dir.parent.parent
    return None


def sweep_name(sweep_dir: Path) -> str:
    """The sweep's study name (from ``sweep.json``), which names its MLflow experiment and W&B group."""
    try:
        return json.loads((Path(sweep_dir) / "sweep.json").read_text(encoding="utf-8"))["study"]
    except (OSError, ValueError, KeyError):
        return Path(sweep_dir).name


def mlflow_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite store beside the run (or its sweep): one ``mlflow ui`` shows them all."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = sweep_folder(run_dir) or Path(run_dir).resolve().parent
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def wandb_logged_in() -> bool:
    """Whether W&B credentials are available (``WANDB_API_KEY``, or ``wandb login``'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    """The config as strings (lists comma-joined): what TensorBoard's hparams and MLflow's params take."""
    return {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)) for k, v in config.items()}


# ---------------------------------------------------------------- the fault-tolerant wrapper


class GoemoTracker(GeneralTracker):
    """One of Accelerate's trackers, fed goemo's events, that never ends a training run.

    ``Accelerator.log`` lets a tracker's exception through, which would end training for a
    dashboard's hiccup; here its first failure becomes one warning and the tracker is dropped.
    """

    requires_logging_directory = False  # each is built with its own folder
    takes_histograms = False  # whether `log_histograms` draws anything here (the loop computes them only then)

    def __init__(self, inner: GeneralTracker) -> None:
        self.name = inner.name
        super().__init__()
        self.inner = inner
        self.step = 0  # the last global step seen: a summary event is logged there
        self.started = self.broken = self.finished = False

    @property
    def tracker(self) -> Any:
        """The backend's own object (the SummaryWriter, the W&B run, the MLflow run)."""
        return self.inner.tracker

    def start(self) -> None:
        self.started = self._guard("start", self._start)

    def store_init_configuration(self, values: dict) -> None:
        self._guard("store the config", self._store, values)

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        """Log a goemo event record (its `metric_items` at its ``global_step``), or plain ``values`` at ``step``."""
        event = values.get("event")
        if event is not None:
            if isinstance(values.get("global_step"), int):
                self.step = values["global_step"]
            values, step = metric_items(values), self.step
        if values:
            self._guard("log", self._log, event, values, step, kwargs)

    def log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        """One histogram per tag at ``step``, where the backend draws them."""
        if histograms and self.takes_histograms:
            self._guard("log histograms", self._log_histograms, histograms, step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int = 0) -> None:
        """A table of ``rows`` under ``name``, where the backend shows tables."""
        self._guard("log a table", self._log_table, name, columns, rows, step)

    def finish(self, failed: bool = False) -> None:
        """End the run, marked failed where the backend records it; once, and never raising."""
        if self.finished:
            return
        self.finished = True
        if not self.started:
            return
        try:
            self._finish(failed)
        except Exception as e:
            if not self.broken:  # a tracker already dropped has had its warning
                log.warning("%s tracker could not close cleanly: %s", self.name, e)

    def _guard(self, what: str, fn: Any, *args: Any) -> bool:
        if self.broken or self.finished:
            return False
        try:
            fn(*args)
            return True
        except Exception as e:  # ImportError included: a dashboard must not end a training run
            self.broken = True
            log.warning(
                "%s tracker failed to %s and is dropped for this run (training goes on): %s", self.name, what, e
            )
            return False

    def _start(self) -> None:
        self.inner.start()

    def _store(self, values: dict) -> None:
        self.inner.store_init_configuration(_flat_params(values))

    def _log(self, event: str | None, values: dict, step: int | None, kwargs: dict) -> None:
        self.inner.log(values, step=step, **kwargs)

    def _log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        pass

    def _log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        pass

    def _finish(self, failed: bool) -> None:
        self.inner.finish()


class _TensorBoard(GoemoTracker):
    """Accelerate's TensorBoard tracker, plus histograms (already binned: no tensor held) and tables as markdown text."""

    takes_histograms = True

    def _log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        for tag, h in histograms.items():
            self.tracker.add_histogram_raw(
                tag,
                min=h.min,
                max=h.max,
                num=h.num,
                sum=h.sum,
                sum_squares=h.sum_squares,
                bucket_limits=h.edges[1:].tolist(),  # each bucket's upper edge; the first starts at min
                bucket_counts=h.counts.tolist(),
                global_step=step,
            )
        self.tracker.flush()

    def _log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.tracker.add_text(name, markdown_table(columns, rows), global_step=step)
        self.tracker.flush()


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (pipes and backslashes escaped, line breaks as spaces).

    >>> print(markdown_table(["text", "labels"], [["a|b", "joy"]]))
    | text | labels |
    |---|---|
    | a\\|b | joy |
    """

    def cell(value: Any) -> str:
        text = str(value).replace("\\", "\\\\").replace("|", "\\|")
        return " ".join(text.split())

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


class _Mlflow(GoemoTracker):
    """Accelerate's MLflow tracker, pointed at goemo's store for the run's lifetime only.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI``: left set, the next run in the
    process would log into this run's store, so it is unset at the end (unless the user chose one).
    """

    def __init__(self, inner: MLflowTracker, uri: str, run_dir: Path) -> None:
        super().__init__(inner)
        self.uri, self.run_dir = uri, run_dir
        self.scoped = False

    def _start(self) -> None:
        import mlflow  # noqa: PLC0415  (the optional track extra, imported where it is used)

        self.scoped = not os.environ.get("MLFLOW_TRACKING_URI")
        if self.scoped:
            mlflow.set_tracking_uri(self.uri)
        try:
            try:
                self.inner.start()
            except Exception:  # another sweep worker created the experiment between Accelerate's look-up and create
                self.inner.start()
            mlflow.set_tag("goemo.run_dir", str(self.run_dir.resolve()))
        except Exception:
            self._unscope()
            raise

    def _finish(self, failed: bool) -> None:
        import mlflow  # noqa: PLC0415  (the optional track extra, imported where it is used)

        try:
            if failed:
                mlflow.end_run(status="FAILED")  # Accelerate's finish() always ends it FINISHED
            else:
                self.inner.finish()
        finally:
            self._unscope()

    def _unscope(self) -> None:
        import mlflow  # noqa: PLC0415  (the optional track extra, imported where it is used)

        if self.scoped:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None unsets it (and the environment variable)
            self.scoped = False


class _Wandb(GoemoTracker):
    """Accelerate's W&B tracker, writing to its own run (``reinit="create_new"``), so config and summary go there.

    The module-level ``wandb.config`` Accelerate would use is not this run's. Final scores go to
    the run's summary, not its history.
    """

    takes_histograms = True

    def __init__(self, inner: WandBTracker, offline_note: str | None) -> None:
        super().__init__(inner)
        self.offline_note = offline_note

    def _start(self) -> None:
        if self.offline_note:
            log.info(self.offline_note)
        self.inner.start()

    def _store(self, values: dict) -> None:
        self.tracker.config.update(values, allow_val_change=True)

    def _log(self, event: str | None, values: dict, step: int | None, kwargs: dict) -> None:
        if event == "summary":
            self.tracker.summary.update({k: v for k, v in values.items() if math.isfinite(v)})
        else:
            self.inner.log(values, step=step, **kwargs)

    def _log_histograms(self, histograms: Mapping[str, Histogram], step: int) -> None:
        """What ``wandb.watch`` logs, logged to this run: ``run.watch``'s hooks log to the global
        ``wandb.run``, which this run never becomes, so its first hooked pass would raise."""
        import wandb  # noqa: PLC0415  (optional extra: track)

        values = {
            tag: wandb.Histogram(np_histogram=(h.counts.tolist(), h.edges.tolist())) for tag, h in histograms.items()
        }
        self.tracker.log(values, step=step)

    def _log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.inner.log_table(name, columns=columns, data=rows, step=step)  # a wandb.Table

    def _finish(self, failed: bool) -> None:
        self.tracker.finish(exit_code=1 if failed else 0)  # Accelerate's finish() takes no exit code


# ---------------------------------------------------------------- building, starting, closing


def _mlflow(run_dir: Path, sweep: Path | None, run_name: str) -> GoemoTracker:
    """One MLflow run per training run, in experiment ``goemo`` or the sweep's (``MLFLOW_EXPERIMENT_NAME`` wins)."""
    own_store = not os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = ((sweep or run_dir.parent) / "mlartifacts").resolve().as_uri() if own_store else None
    experiment = sweep_name(sweep) if sweep else "goemo"
    return _Mlflow(MLflowTracker(experiment, logging_dir=artifacts, run_name=run_name), mlflow_uri(run_dir), run_dir)


def _wandb(run_dir: Path, sweep: Path | None, run_name: str) -> GoemoTracker:
    """A W&B run; files in ``RUN/wandb/``. Offline runs upload later with ``wandb sync``."""
    mode = os.environ.get("WANDB_MODE")
    note = None
    if not mode and not wandb_logged_in():
        mode = "offline"
        note = f"wandb: not logged in, logging offline to {run_dir}/wandb (upload later with `wandb sync`)"
    inner = WandBTracker(
        os.environ.get("WANDB_PROJECT", "goemo"),
        name=run_name,
        group=sweep_name(sweep) if sweep else None,
        dir=str(run_dir),
        mode=mode,
        reinit="create_new",
        settings={"console": "off", "silent": True},
    )
    return _Wandb(inner, note)


_BUILDERS = {  # (run_dir, sweep, run_name) -> tracker; TensorBoard writes RUN/tensorboard/
    "tensorboard": lambda run_dir, sweep, run_name: _TensorBoard(TensorBoardTracker("tensorboard", run_dir)),
    "mlflow": _mlflow,
    "wandb": _wandb,
}


def make_trackers(names: Sequence[str], run_dir: Path) -> list[GoemoTracker]:
    """The named trackers for ``run_dir``, not started (no file touched): for ``Accelerator(log_with=...)``."""
    run_dir = Path(run_dir)
    sweep = sweep_folder(run_dir)
    run_name = f"trial-{run_dir.name}" if sweep else run_dir.name
    return [_BUILDERS[name](run_dir, sweep, run_name) for name in check_trackers(list(names))]


def build_trackers(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[GoemoTracker]:
    """Start the named trackers without an Accelerator, as ``init_trackers`` would, storing ``config``.

    Accelerate's logger raises until its process state exists, so ``PartialState()`` makes it
    (else W&B's tracker fails to start).
    """
    trackers = make_trackers(names, run_dir)
    if trackers:
        PartialState()  # the state Accelerate's logger needs; the same one an Accelerator would use
    for tracker in trackers:
        tracker.start()
        tracker.store_init_configuration(config)
    return trackers


def draws_histograms(trackers: Sequence[GeneralTracker]) -> bool:
    """Whether any tracker draws histograms: the loop computes them only then (they cost a CPU copy)."""
    return any(isinstance(t, GoemoTracker) and t.takes_histograms and not t.broken for t in trackers)


def log_histograms(trackers: Sequence[GeneralTracker], histograms: Mapping[str, Histogram], step: int) -> None:
    """Hand ``--watch``'s histograms to every tracker (``accelerator.log`` takes numbers only); main process only."""
    for tracker in trackers:
        if isinstance(tracker, GoemoTracker):
            tracker.log_histograms(histograms, step)


def log_dataset(
    names: Sequence[str],
    out_dir: Path,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    figures: Mapping[str, float],
    config: dict[str, Any],
    table: str = "data_sample",
) -> list[str]:
    """``goemo stats --tracker``: ``rows`` as a table and ``figures`` as scalars at step 0, as one run in ``out_dir``.

    Returns the names of the trackers that took it (a failing one is dropped, as in training).
    """
    trackers = build_trackers(list(names), Path(out_dir), config)
    failed = True
    try:
        for tracker in trackers:
            tracker.log({k: float(v) for k, v in figures.items()}, step=0)
            tracker.log_table(table, list(columns), [list(r) for r in rows], step=0)
        failed = False
    finally:
        close_trackers(trackers, failed=failed)
    return [t.name for t in trackers if t.started and not t.broken]


def close_trackers(trackers: Sequence[GeneralTracker], failed: bool = False) -> None:
    """Finish every tracker, marking failed runs; unlike ``end_training()`` it keeps the process group."""
    for tracker in trackers:
        if isinstance(tracker, GoemoTracker):
            tracker.finish(failed=failed)
        else:
            tracker.finish()
