"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, all optional.

Training always writes ``metrics.jsonl`` itself (the ``jsonl`` tracker); the others receive
the same event dicts (`goemo.train.loop.train` calls `build_trackers` and then ``log`` for every
event and ``close`` at the end) and store them under the same metric names, so a curve is
called ``val_loss`` in every dashboard:

=================  =======================================================  ===========
event              metric names                                             step
=================  =======================================================  ===========
``epoch``          ``train_loss val_loss auc_micro auc_macro f1_micro        global step
                   f1_macro lr epoch epoch_time_s examples_per_s``
``step``           ``step/train_loss step/lr`` (every ``log_every`` steps)   global step
``grad_norms``     ``grad_norm/embeddings grad_norm/layer_0 … grad_norm/head``  global step
``summary``        ``dev/f1_macro test/auc_micro …`` (final, best weights)   last step
=================  =======================================================  ===========

Where they write, by default: TensorBoard to ``RUN/tensorboard/``; MLflow to the SQLite
store ``runs/mlflow.db`` beside the run folder (``SWEEP/mlflow.db`` for sweep trials) or to
``MLFLOW_TRACKING_URI``; W&B online when logged in (``wandb login`` or ``WANDB_API_KEY``) and
offline into ``RUN/wandb/`` otherwise or with ``WANDB_MODE=offline``. A tracker whose
package is missing is refused up front with the extra to install. A tracker that fails in
the middle of a run logs a warning and stops logging; it never ends the training.
"""

from __future__ import annotations

import atexit
import logging
import math
import netrc
import os
import time
from pathlib import Path
from typing import Any, Protocol

from goemo.core.errors import ConfigError

log = logging.getLogger(__name__)

TRACKERS = ("jsonl", "tensorboard", "mlflow", "wandb")
INSTALL_HINT = "pip install 'goemo[track]'"
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
_SKIP_KEYS = {"event", "global_step", "best"}
_STEP_KEYS = {"train_loss": "step/train_loss", "lr": "step/lr"}


class Tracker(Protocol):
    """What `goemo.train.loop.train` needs from a tracker."""

    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- names and checks


def check_trackers(names: list[str] | tuple[str, ...]) -> list[str]:
    """The trackers to build besides ``jsonl``, after checking names and packages.

    Called before any training starts (by `build_trackers` and by sweeps before their
    first trial), so a typo or a missing package costs seconds, not an epoch.

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
    import importlib.util

    for name in wanted:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ConfigError(f"tracker {name!r} needs the {_PACKAGES[name]} package: {INSTALL_HINT}")
    return wanted


def metric_items(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one training event, under the names every tracker uses (table above).

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
    """The sweep folder when ``run_dir`` is a sweep trial (``SWEEP/trials/N``), else None.

    Trials of one sweep share one MLflow store and experiment and one W&B group.
    """
    run_dir = Path(run_dir)
    if run_dir.parent.name == "trials" and (run_dir.parent.parent / "sweep.yaml").is_file():
        return run_dir.parent.parent
    return None


def sweep_name(sweep_dir: Path) -> str:
    """The sweep's study name (from ``sweep.json``), which names its MLflow experiment and W&B group."""
    import json

    try:
        return json.loads((Path(sweep_dir) / "sweep.json").read_text(encoding="utf-8"))["study"]
    except (OSError, ValueError, KeyError):
        return Path(sweep_dir).name


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    return {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)) for k, v in config.items()}


class _Base:
    """Keeps the current step and turns a failing backend into one warning."""

    name = "tracker"

    def __init__(self) -> None:
        self.step = 0
        self._broken = False
        self._closed = False

    def log(self, record: dict[str, Any]) -> None:
        if self._broken or self._closed:
            return
        if isinstance(record.get("global_step"), int):
            self.step = record["global_step"]
        metrics = metric_items(record)
        if not metrics:
            return
        try:
            self._write(record.get("event"), metrics)
        except Exception as e:  # a dashboard hiccup must not end a training run
            self._broken = True
            log.warning("%s tracker failed and stops logging for this run: %s", self.name, e)

    def close(self, failed: bool = False) -> None:
        """Finish the run; ``failed`` marks it failed where the backend has such a state."""
        if self._closed:
            return
        self._closed = True
        try:
            self._finish(failed)
        except Exception as e:
            log.warning("%s tracker could not close cleanly: %s", self.name, e)

    def _write(self, event: str | None, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def _finish(self, failed: bool) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- TensorBoard


class TensorBoardTracker(_Base):
    """Event files in ``RUN/tensorboard/``: ``tensorboard --logdir runs`` shows every run."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.path))
        text = "\n".join(f"    {k}: {v}" for k, v in _flat_params(config).items())
        self.writer.add_text("config", text, 0)

    def _write(self, event: str | None, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, self.step)
        if event in ("epoch", "summary"):  # the writer flushes every 2 minutes by itself
            self.writer.flush()

    def _finish(self, failed: bool) -> None:
        self.writer.close()


# ---------------------------------------------------------------- MLflow


def mlflow_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store beside the run (or in its sweep).

    One store per folder of runs means one ``mlflow ui`` shows them all side by side:
    ``runs/a`` and ``runs/b`` both log to ``sqlite:///…/runs/mlflow.db``.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = sweep_folder(run_dir) or Path(run_dir).resolve().parent
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


class MlflowTracker(_Base):
    """One MLflow run per training run, written through `MlflowClient` (no global state).

    Sweep trials go to the experiment named after the sweep; other runs to
    ``MLFLOW_EXPERIMENT_NAME`` or ``goemo``. View with
    ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
    """

    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__()
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir)
        sweep = sweep_folder(run_dir)
        self.uri = mlflow_uri(run_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = sweep_name(sweep) if sweep else os.environ.get("MLFLOW_EXPERIMENT_NAME", "goemo")
        self.experiment_id = self._experiment(experiment, (sweep or run_dir.parent) / "mlartifacts")
        run_name = f"trial-{run_dir.name}" if sweep else run_dir.name
        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags={"goemo.run_dir": str(run_dir.resolve())}
        )
        self.run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in _flat_params(config).items()]
        self.client.log_batch(self.run_id, params=params)
        atexit.register(self._at_exit)

    def _experiment(self, name: str, artifacts: Path) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None if os.environ.get("MLFLOW_TRACKING_URI") else artifacts.resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another worker of the sweep created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _write(self, event: str | None, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, self.step) for k, v in metrics.items()])

    def _finish(self, failed: bool) -> None:
        atexit.unregister(self._at_exit)
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")

    def _at_exit(self) -> None:
        """A process that dies in training never calls close: do not leave the run RUNNING."""
        self.close(failed=True)


# ---------------------------------------------------------------- Weights & Biases


def wandb_logged_in() -> bool:
    """Whether W&B credentials are available (``WANDB_API_KEY``, or ``wandb login``'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(_Base):
    """A W&B run; files in ``RUN/wandb/``. Offline runs upload later with ``wandb sync``."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__()
        import wandb

        run_dir = Path(run_dir)
        sweep = sweep_folder(run_dir)
        mode = os.environ.get("WANDB_MODE")
        if not mode and not wandb_logged_in():
            mode = "offline"
            log.info("wandb: not logged in, logging offline to %s/wandb (upload later with `wandb sync`)", run_dir)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "goemo"),
            name=f"trial-{run_dir.name}" if sweep else run_dir.name,
            group=sweep_name(sweep) if sweep else None,
            dir=str(run_dir),
            config=config,
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.path = Path(self.run.dir).parent  # RUN/wandb/<offline-run-…>/

    def _write(self, event: str | None, metrics: dict[str, float]) -> None:
        if event == "summary":
            self.run.summary.update({k: v for k, v in metrics.items() if math.isfinite(v)})
        else:
            self.run.log(metrics, step=self.step)

    def _finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_BUILDERS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker, "wandb": WandbTracker}


def build_trackers(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[Tracker]:
    """Open the named trackers for one run (``jsonl`` needs nothing: training writes it).

    >>> trackers = build_trackers(["jsonl", "tensorboard"], Path("runs/x"), {"lr": 1e-4})  # doctest: +SKIP
    >>> trackers[0].log({"event": "epoch", "epoch": 1, "global_step": 10, "val_loss": 0.12})  # doctest: +SKIP
    >>> for t in trackers: t.close()  # doctest: +SKIP
    """
    built: list[Tracker] = []
    try:
        for name in check_trackers(names):
            built.append(_BUILDERS[name](Path(run_dir), config))
    except ConfigError:
        raise
    except Exception as e:
        for tracker in built:
            tracker.close()
        raise ConfigError(f"could not start the {name} tracker: {e}") from e
    return built


def close_trackers(trackers: list[Tracker], failed: bool = False) -> None:
    """Close every tracker, marking the runs failed where the backend records it."""
    for tracker in trackers:
        if isinstance(tracker, _Base):
            tracker.close(failed=failed)
        else:
            tracker.close()
