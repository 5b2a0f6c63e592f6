"""Hyperparameter sweeps: a W&B sweep config run by Optuna, from one laptop to many machines.

The config file (read by `goemo.sweeps.config`) is the one W&B users already have
(``method``, ``metric``, ``parameters``, ``early_terminate``); parameter names may be W&B's
or goemo's (`goemo.core.config.ALIASES`: ``learning_rate`` -> ``lr``, ``tokenizer_max_len`` ->
``max_length``, …) and the metric names map to the keys of goemo's per-epoch record
(`METRIC_ALIASES`: ``auc_score`` -> ``auc_micro``). Optuna is the engine: ``grid`` -> `GridSampler`, ``random`` ->
`RandomSampler`, ``bayes`` -> `TPESampler`, ``early_terminate: hyperband`` ->
`HyperbandPruner` fed one report per epoch.

How the trials are shared out, and why it survives crashes:

* When the study is created, ``count`` *slots* are put in its queue (Optuna's WAITING
  trials; for a grid each slot holds one grid point, so the grid is covered exactly). A
  worker takes a slot atomically, trains it as a normal run folder ``SWEEP/trials/<n>/``,
  and records the result; it stops when the queue is empty. Any number of workers on any
  number of machines can run the same command against one storage: they split the slots and
  the total is exactly ``count``.
* A trial that raises (bad hyperparameters, out of memory, …) is recorded as FAIL with its
  error (user attribute ``error``, traceback in ``trials/<n>/error.txt``); the worker goes on.
* A trial whose worker died (SIGKILL, power cut) is found RUNNING by the next worker that
  starts: on the same host its process id is gone, elsewhere its heartbeat stops. It is
  marked FAIL (``interrupted``) and its parameters are queued again; the retry resumes from
  the trial's last checkpoint. So a killed sweep finishes with the same command.
* Taking a slot and re-queueing happen under a lock (a lock file beside a SQLite database,
  an advisory lock on PostgreSQL and MySQL), so two workers never take the same slot.

Files: ``SWEEP/sweep.yaml`` (the config, verbatim), ``SWEEP/sweep.json`` (what was resolved:
study, storage, metric, base training config), ``SWEEP/study.db`` (default storage),
``SWEEP/trials/<n>/`` (run folders, plus ``dev_metrics.json`` with per-label dev scores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from goemo.core.config import TrainConfig, normalize_keys
from goemo.core.errors import ConfigError
from goemo.core.fileio import atomic_write_json, atomic_write_text
from goemo.sweeps.config import (  # noqa: F401  (re-exported: the sweep API in one place)
    METRIC_ALIASES,
    ParamSpec,
    SweepSpec,
    load_sweep_config,
    parse_sweep_config,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# Options that may change between a sweep and its resumption without changing what is trained.
RUNTIME_OPTIONS = ("device", "precision", "compile", "num_threads", "log_every", "save_every", "cache_dir", "eval_batch_size")
HEARTBEAT_S = 30
GRACE_S = 120
MAX_RETRIES = 2  # a trial killed this many times (e.g. by the OOM killer) is not queued again
_DATA_FIELDS = ("data_dir", "train_file", "dev_file", "test_file", "labels_file", "text_column", "label_column", "taxonomy")


# ---------------------------------------------------------------- storage, study and lock


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, heartbeat: bool = True) -> "optuna.storages.RDBStorage":
    """An Optuna RDB storage that tolerates several worker processes.

    SQLite waits up to 2 minutes for a lock instead of failing at once; creating the tables
    is retried, since two workers starting together may both try.
    """
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
            "heartbeat_stale_trial_callback": _requeue_callback,
        }
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except ImportError as e:
            raise ConfigError(
                f"storage {_hide_password(url)}: database driver missing ({e}); "
                f"for PostgreSQL: pip install psycopg2-binary"
            ) from None
        except Exception as e:
            if attempt == 4:
                raise ConfigError(f"cannot open the study storage {_hide_password(url)}: {e}") from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def study_lock(url: str, study_name: str, timeout: float = 300.0) -> Iterator[None]:
    """Mutual exclusion between the workers of one study, wherever they run.

    A lock file beside a SQLite database; an advisory lock for PostgreSQL and MySQL (released
    by the server if the holder dies). Other databases get no lock and a warning.
    """
    from sqlalchemy.engine import make_url

    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            yield
            return
        lock_path = Path(u.database + ".lock")
        with open(lock_path, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return
    if backend not in ("postgresql", "mysql", "mariadb"):
        warnings.warn(f"no cross-worker lock for {backend}: start one worker before the others", stacklevel=2)
        yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    key = int.from_bytes(hashlib.sha256(f"goemo-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f"SET lock_timeout = '{int(timeout)}s'"))
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            else:
                got = conn.execute(text("SELECT GET_LOCK(:k, :t)"), {"k": str(key), "t": int(timeout)}).scalar()
                if got != 1:
                    raise ConfigError(f"could not lock study {study_name} within {timeout:.0f}s")
                try:
                    yield
                finally:
                    conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": str(key)})
    finally:
        engine.dispose()


def _requeue(study: "optuna.Study", trial: "optuna.trial.FrozenTrial", reason: str) -> None:
    """Queue a dead trial's parameters again (called under the study lock)."""
    retries = int(trial.user_attrs.get("retries", 0)) + 1
    if retries > MAX_RETRIES:
        log.warning("trial %d %s; not queued again (interrupted %d times)", trial.number, reason, retries)
        return
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    attrs = {"retry_of": trial.number, "retries": retries}
    if "run_dir" in trial.user_attrs:
        attrs["run_dir"] = trial.user_attrs["run_dir"]
    study.enqueue_trial(params, user_attrs=attrs)
    log.warning("trial %d %s; its parameters are queued again", trial.number, reason)


def _requeue_callback(study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
    _requeue(study, trial, "lost its heartbeat (worker gone)")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_gone(trial: "optuna.trial.FrozenTrial") -> bool:
    """True when a RUNNING trial was taken by a process on this host that no longer exists
    (killed, or stopped with SIGTERM): nothing will finish it until a worker starts again."""
    pid = trial.user_attrs.get("pid")
    here = trial.user_attrs.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid()
    return here and not _process_alive(pid)


def recover_interrupted(study: "optuna.Study") -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL and queue them again; call under the lock.

    Same host: the recorded process id no longer exists (found at once). Other hosts: the
    storage heartbeat is older than the grace period (`optuna.storages.fail_stale_trials`).
    """
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        started = t.datetime_start.timestamp() if t.datetime_start else time.time()
        dead = worker_gone(t)
        orphan = pid is None and time.time() - started > GRACE_S  # died between taking and labelling it
        if not (dead or orphan):
            continue
        reason = f"was interrupted (worker {pid} on {host} is gone)" if dead else "was interrupted (no worker recorded)"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", f"interrupted: worker process {pid} on {host} ended")
            if not study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        _requeue(study, t, reason)
        recovered.append(t.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return recovered


def _take_slot(study: "optuna.Study") -> int | None:
    """Atomically move one WAITING trial to RUNNING (under the lock); its id, or None."""
    import optuna
    from optuna.trial import TrialState

    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    # Interrupted trials first: the sweep picks up where it was before taking new slots.
    for t in sorted(waiting, key=lambda t: ("retry_of" not in t.user_attrs, t.number)):
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


# ---------------------------------------------------------------- sweep folder


@dataclass
class Sweep:
    """A resolved sweep: its folder, study, storage and the base training config of every trial."""

    sweep_dir: Path
    spec: SweepSpec
    study_name: str
    storage_url: str
    count: int
    base: TrainConfig
    trackers: list[str]
    seed: int

    @property
    def trials_dir(self) -> Path:
        return self.sweep_dir / "trials"

    def meta(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": _hide_password(self.storage_url),
            "method": self.spec.method,
            "metric": self.spec.metric,
            "metric_name": self.spec.metric_name,
            "direction": self.spec.direction,
            "count": self.count,
            "parameters": {n: {"source": p.source, "search": p.describe()} for n, p in self.spec.params.items()},
            "fixed": self.spec.fixed,
            "early_terminate": self.spec.early_terminate,
            "trackers": self.trackers,
            "seed": self.seed,
            "base_config": self.base.to_dict(),
            "notes": self.spec.notes,
        }


def prepare_sweep(
    config_path: str | Path,
    *,
    output: str | Path | None = None,
    count: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    preset: str | None = None,
    base_config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    trackers: list[str] | tuple[str, ...] = (),
) -> Sweep:
    """Resolve everything a worker needs and write ``sweep.yaml`` and ``sweep.json``.

    Base training options, lowest to highest: defaults < ``preset`` < ``base_config`` YAML <
    the sweep config's fixed ``value:`` entries < ``overrides`` (the command line). A searched
    parameter cannot also be given in ``overrides``. Running again on an existing folder checks
    that it is the same sweep (so the same command resumes it).
    """
    from goemo.core.config import resolve_config
    from goemo.train.tracking import check_trackers

    config_path = Path(config_path)
    spec = load_sweep_config(config_path)
    overrides = {k: v for k, v in normalize_keys(dict(overrides or {}), "option").items() if v is not None}
    clash = sorted(set(overrides) & set(spec.params))
    if clash:
        raise ConfigError(
            f"{', '.join(clash)} searched by {config_path} and also given as an option; remove one of them"
        )
    blocked = sorted(set(overrides) & {"output", "overwrite", "resume", "select_metric", "trackers"})
    if blocked:
        raise ConfigError(f"{', '.join(blocked)}: set by the sweep for each trial, not as a base option")
    base = resolve_config(preset, base_config, {**spec.fixed, **overrides})
    # A sweep chooses on dev; test scores beside every trial only invite choosing on test, so
    # trials skip test unless the command line asks for it (--eval-test).
    base = base.replace(select_metric=spec.metric, trackers=[], overwrite=False, resume=False,
                        eval_test=bool(overrides.get("eval_test", False)))
    tracker_names = check_trackers(list(trackers))

    saved_meta = Path(output) / "sweep.json" if output else None
    if study_name is None and saved_meta is not None and saved_meta.is_file():
        study_name = json.loads(saved_meta.read_text(encoding="utf-8")).get("study")  # resuming that folder
    study_name = study_name or spec.name or config_path.stem
    sweep_dir = Path(output) if output else Path("runs") / "sweeps" / study_name
    storage_url = storage or default_storage(sweep_dir)
    n = count if count is not None else spec.default_count()
    if n < 1:
        raise ConfigError(f"--count {n}: expected an integer >= 1")
    if spec.method == "grid" and n > len(spec.grid()):
        raise ConfigError(f"--count {n}: the grid has only {len(spec.grid())} points")
    sweep = Sweep(sweep_dir, spec, study_name, storage_url, n, base, tracker_names, base.seed)

    sweep_dir.mkdir(parents=True, exist_ok=True)
    meta_path = sweep_dir / "sweep.json"
    if meta_path.is_file():
        _check_same_sweep(json.loads(meta_path.read_text(encoding="utf-8")), sweep, meta_path)
    atomic_write_text(sweep_dir / "sweep.yaml", config_path.read_text(encoding="utf-8"))
    atomic_write_json(meta_path, sweep.meta())
    return sweep


def _check_same_sweep(saved: dict[str, Any], sweep: Sweep, path: Path) -> None:
    now = sweep.meta()
    now = json.loads(json.dumps(now))  # compare as stored (tuples are lists in JSON)
    keys = ("study", "method", "metric", "direction", "parameters", "fixed", "early_terminate")
    diffs = [k for k in keys if saved.get(k) != now[k]]
    old_base, new_base = saved.get("base_config", {}), now["base_config"]
    diffs += [
        f"base {k}" for k in sorted(set(old_base) | set(new_base))
        if k not in RUNTIME_OPTIONS and k != "output" and old_base.get(k) != new_base.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"{path.parent} holds another sweep (differs in: {', '.join(diffs)}); "
            f"run the same command to resume it, or choose another --output"
        )


def open_study(sweep: Sweep) -> "optuna.Study":
    """Create or load the study and top its queue up to ``sweep.count`` slots (under the lock)."""
    import optuna

    storage = open_storage(sweep.storage_url)
    with study_lock(sweep.storage_url, sweep.study_name):
        study = optuna.create_study(
            storage=storage, study_name=sweep.study_name, direction=sweep.spec.direction,
            sampler=sweep.spec.sampler(sweep.seed), pruner=sweep.spec.pruner(), load_if_exists=True,
        )
        if study.direction.name.lower() != sweep.spec.direction:
            raise ConfigError(
                f"study {sweep.study_name} in {_hide_password(sweep.storage_url)} was created to "
                f"{study.direction.name.lower()}, not {sweep.spec.direction}: use another --study"
            )
        recorded = study.user_attrs.get("goemo_metric")
        if recorded is None:
            study.set_user_attr("goemo_metric", sweep.spec.metric)
            study.set_user_attr("goemo_method", sweep.spec.method)
            study.set_user_attr("goemo_sweep_dir", str(sweep.sweep_dir.resolve()))
        elif recorded != sweep.spec.metric:
            raise ConfigError(f"study {sweep.study_name} optimises {recorded}, not {sweep.spec.metric}: use another --study")
        slots = sum(1 for t in study.get_trials(deepcopy=False) if "slot" in t.user_attrs)
        planned = sweep.spec.slot_params(sweep.count, sweep.seed)
        for i in range(slots, sweep.count):
            study.enqueue_trial(planned[i], user_attrs={"slot": i})
        if sweep.count > slots:
            log.info("study %s: %d trial(s) queued (%d in all)", sweep.study_name, sweep.count - slots, sweep.count)
    return study


# ---------------------------------------------------------------- one worker


@dataclass
class TrialOutcome:
    """How one trial trained by this worker ended."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_dir: str | None
    error: str | None = None


class _Heartbeat:
    """Records the trial's heartbeat in the storage so workers elsewhere see it is alive."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.enabled = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"goemo-heartbeat-{trial_id}")

    def _run(self) -> None:
        while not self._stop.wait(self.storage.get_heartbeat_interval()):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # a missed beat is retried; the trial goes on
                log.debug("heartbeat of trial %d failed: %s", self.trial_id, e)

    def __enter__(self) -> "_Heartbeat":
        if self.enabled:
            self.storage.record_heartbeat(self.trial_id)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)


class Worker:
    """Takes slots from the study until none is left, training each as a run folder.

    The data is read once per worker and shared by its trials (unless a trial changes the
    data options, e.g. ``taxonomy``).
    """

    def __init__(self, sweep: Sweep, study: "optuna.Study") -> None:
        self.sweep = sweep
        self.study = study
        self._data: dict[tuple, dict] = {}
        self.outcomes: list[TrialOutcome] = []

    def run(self, max_trials: int | None = None) -> list[TrialOutcome]:
        """Train trials until the queue is empty (or ``max_trials`` were trained here)."""
        while max_trials is None or len(self.outcomes) < max_trials:
            with study_lock(self.sweep.storage_url, self.sweep.study_name):
                recover_interrupted(self.study)
                trial_id = _take_slot(self.study)
            if trial_id is None:
                break
            self.outcomes.append(self.run_trial(trial_id))
        return self.outcomes

    def _splits(self, config: TrainConfig) -> dict:
        from goemo.train.loop import load_training_data

        key = tuple(getattr(config, f) for f in _DATA_FIELDS)
        if key not in self._data:
            self._data = {key: load_training_data(config)}  # keep one data set in memory
        return dict(self._data[key])

    def run_trial(self, trial_id: int) -> TrialOutcome:
        import optuna

        study = self.study
        frozen = study._storage.get_trial(trial_id)
        # One sampler seed per trial number: reproducible, and workers do not repeat each other.
        study.sampler = self.sweep.spec.sampler(self.sweep.seed * 100_003 + frozen.number)
        trial = optuna.Trial(study, trial_id)
        run_dir = Path(frozen.user_attrs.get("run_dir") or self.sweep.trials_dir / str(frozen.number))
        for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "run_dir": str(run_dir)}.items():
            trial.set_user_attr(key, value)
        started = time.perf_counter()
        trackers: list = []
        outcome: TrialOutcome | None = None
        with _Heartbeat(study._storage, trial_id):
            try:
                params = {name: p.suggest(trial) for name, p in self.sweep.spec.params.items()}
                log.info("trial %d: %s", frozen.number, _describe(params))
                value, summary = self._train(trial, params, run_dir, trackers)
                for key in ("dev", "test"):
                    if key in summary:
                        trial.set_user_attr(key, summary[key])
                trial.set_user_attr("best_epoch", summary.get("best_epoch"))
                trial.set_user_attr("wall_time_s", round(time.perf_counter() - started, 2))
                if value is None or not math.isfinite(value):
                    raise ValueError(f"{self.sweep.spec.metric} is {value} (undefined on this dev data)")
                study.tell(trial, value)
                outcome = TrialOutcome(frozen.number, "COMPLETE", value, params, str(run_dir))
                log.info("trial %d: %s %.4f", frozen.number, self.sweep.spec.metric, value)
            except optuna.TrialPruned as e:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                outcome = TrialOutcome(frozen.number, "PRUNED", None, trial.params, str(run_dir), str(e) or None)
                log.info("trial %d pruned: %s", frozen.number, e)
            except KeyboardInterrupt:
                with study_lock(self.sweep.storage_url, self.sweep.study_name):
                    trial.set_user_attr("error", "interrupted: Ctrl-C")
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    _requeue(study, study._storage.get_trial(trial_id), "was interrupted (Ctrl-C)")
                raise
            except Exception as e:
                outcome = self._failed(trial, frozen.number, run_dir, e)
            finally:
                from goemo.train.tracking import close_trackers

                close_trackers(trackers, failed=outcome is None or outcome.state != "COMPLETE")
        return outcome

    def _train(self, trial: "optuna.Trial", params: dict[str, Any], run_dir: Path, trackers: list) -> tuple[float | None, dict]:
        import optuna

        from goemo.core.errors import RunFolderError
        from goemo.core.run_folder import RunFolder
        from goemo.train.tracking import build_trackers
        from goemo.train.loop import train

        config = self.sweep.base.replace(**params, output=str(run_dir))
        resume = RunFolder(run_dir).has_checkpoint()
        config = config.replace(resume=resume, overwrite=not resume)
        splits = self._splits(config)
        metric = self.sweep.spec.metric
        opened = []

        def report(record: dict[str, Any]) -> None:
            if not opened:  # open the trackers once train() has prepared (emptied) the run folder
                opened.append(True)
                trackers.extend(build_trackers(self.sweep.trackers, run_dir, config.to_dict()))
            for tracker in trackers:
                tracker.log(record)
            if record.get("event") != "epoch":
                return
            value = record.get(metric)
            if value is not None and math.isfinite(value):
                trial.report(value, step=int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} ({metric} {value:.4f})")

        try:
            result = train(config, splits=splits, callbacks=[report])
        except RunFolderError as e:  # the checkpoint belongs to other settings: start over
            if not resume:
                raise
            log.warning("trial %d: cannot resume (%s); training from the start", trial.number, e)
            config = config.replace(resume=False, overwrite=True)
            splits = self._splits(config)
            result = train(config, splits=splits, callbacks=[report])
        summary = result.summary
        for tracker in trackers:
            final = {f"{k}/{m}": v for k in ("dev", "test") if k in summary for m, v in summary[k].items()}
            tracker.log({"event": "summary", **final})
        write_dev_metrics(result.best_dir, splits["dev"], config, run_dir / "dev_metrics.json")  # dev as train sampled it
        return summary.get("best_metric"), summary

    def _failed(self, trial: "optuna.Trial", number: int, run_dir: Path, e: Exception) -> TrialOutcome:
        import optuna

        message = f"{type(e).__name__}: {e}"[:2000]
        log.warning("trial %d failed: %s", number, message)
        try:
            atomic_write_text(run_dir / "error.txt", "".join(traceback.format_exception(e)))
        except OSError:
            pass
        try:
            trial.set_user_attr("error", message)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was already closed by another worker", number)
        gc.collect()  # after an out-of-memory error the next trial needs the memory back
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return TrialOutcome(number, "FAIL", None, dict(trial.params), str(run_dir), message)


def write_dev_metrics(best_dir: Path, dev, config: TrainConfig, path: Path) -> dict[str, Any]:
    """Per-label dev scores of a trial's best model, for the sweep report's per-class AUC.

    ``dev`` is the exact dev sample the trial was evaluated on (as `train` left it). The
    probabilities go through `goemo.evaluate.evaluation.predict_split`, so they are also cached in the
    trial's ``predictions/`` for a later ``goemo report`` of that trial.
    """
    from goemo.evaluate.evaluation import predict_split
    from goemo.scoring.metrics import compute_metrics

    device = config.device if config.device in ("cpu", "cuda", "mps") else "auto"
    preds = predict_split(best_dir, dev, batch_size=config.eval_batch_size, device=device, token_cache_dir=config.cache_dir)
    report = compute_metrics(dev.labels, preds.probs, dev.label_names, thresholds=config.threshold, sweep=None, split="dev")
    out = report.to_dict()
    atomic_write_json(path, out)
    return out


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@dataclass
class SweepResult:
    """What `run_sweep` hands back."""

    sweep_dir: Path
    study_name: str
    storage: str
    counts: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_run_dir: str | None
    outcomes: list[TrialOutcome]


def summarize(sweep: Sweep, study: "optuna.Study", outcomes: list[TrialOutcome] = ()) -> SweepResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        pick = max if sweep.spec.direction == "maximize" else min
        best = pick(complete, key=lambda t: t.value)
    return SweepResult(
        sweep.sweep_dir, sweep.study_name, _hide_password(sweep.storage_url), counts,
        best.number if best else None, best.value if best else None, dict(best.params) if best else {},
        best.user_attrs.get("run_dir") if best else None, list(outcomes),
    )


def route_optuna_logging() -> None:
    """Send Optuna's messages through `logging` (warnings and up) instead of its own stderr handler."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _worker_process(sweep: Sweep, env: dict[str, str]) -> None:
    """Entry point of an extra local worker (``--workers K``), started with the spawn method."""
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s worker {os.getpid()}: %(message)s")
    route_optuna_logging()
    Worker(sweep, open_study(sweep)).run()


def run_sweep(sweep: Sweep, workers: int = 1) -> SweepResult:
    """Run this machine's share of the sweep: ``workers`` local worker processes.

    Other machines join by running the same command against the same ``--storage``.

    >>> sweep = prepare_sweep("examples/wandb_report_sweep.yaml", count=6,  # doctest: +SKIP
    ...                       overrides={"data_dir": "data/goemotions", "model": "minilm"})
    >>> run_sweep(sweep).best_params  # doctest: +SKIP
    {'lr': 5e-05, 'batch_size': 32, 'dropout': 0.3}
    """
    import multiprocessing

    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected an integer >= 1")
    study = open_study(sweep)
    procs = []
    if workers > 1:
        base = sweep.base
        if base.num_threads is None and base.device != "cuda":
            # CPU workers share the cores instead of each taking all of them.
            base = base.replace(num_threads=max(1, (os.cpu_count() or 1) // workers))
        gpus = _gpu_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        ctx = multiprocessing.get_context("spawn")
        for i in range(1, workers):  # this process is worker 0 on the first GPU; the others spread out
            env = {"CUDA_VISIBLE_DEVICES": ids[i % gpus]} if gpus > 1 else {}
            p = ctx.Process(
                target=_worker_process, args=(dataclasses.replace(sweep, base=base), env), name=f"goemo-sweep-worker-{i}"
            )
            p.start()
            procs.append(p)
        sweep = dataclasses.replace(sweep, base=base)
    try:
        outcomes = Worker(sweep, study).run()
    finally:
        for p in procs:
            p.join()
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed:
        log.warning("worker process(es) %s ended with an error; run the command again to finish", ", ".join(failed))
    return summarize(sweep, study, outcomes)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def load_sweep(sweep_dir: str | Path, storage: str | None = None, study_name: str | None = None) -> tuple[dict[str, Any], "optuna.Study"]:
    """``sweep.json`` and the study of an existing sweep folder (read-only use: reports, tests)."""
    import optuna

    sweep_dir = Path(sweep_dir)
    meta_path = sweep_dir / "sweep.json"
    if not meta_path.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no sweep.json); run goemo sweep first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    url = storage or meta["storage"]
    if "***" in url:
        raise ConfigError(f"{meta_path}: the storage URL's password is not stored; pass --storage URL")
    name = study_name or meta["study"]
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    except KeyError:
        raise ConfigError(f"no study named {name!r} in {_hide_password(url)}") from None
    return meta, study
