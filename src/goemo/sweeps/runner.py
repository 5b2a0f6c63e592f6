"""Hyperparameter sweeps: a W&B sweep config run by Optuna, from one laptop to many machines.

The config (`goemo.sweeps.config`) is the one W&B users have; parameter names may be W&B's or
goemo's (`goemo.core.config.ALIASES`) and the metric is a key of goemo's per-epoch record
(`METRIC_ALIASES` maps other spellings). ``grid``/``random``/``bayes`` -> Optuna's
`GridSampler`/`RandomSampler`/`TPESampler`; ``early_terminate: hyperband`` -> `HyperbandPruner`
fed the sweep metric once per epoch. A trial keeps its best epoch by its ``select_metric``; its
objective is the sweep metric at that epoch (`goemo.sweeps.objective`).

How trials are shared out and survive crashes (Optuna's public API throughout):

* Creating the study puts ``count`` *slots* in its queue (`Study.enqueue_trial`; a grid puts one
  point in each, so it is covered exactly). A worker runs `Study.optimize` one trial at a time
  (Optuna takes the next waiting trial atomically and keeps its heartbeat) and stops when the
  queue is empty, so any number of workers on any machines share one storage and run ``count``.
* A trial that raises is recorded FAIL with its error (user attribute ``error``, traceback in
  ``trials/<n>/error.txt``) and the worker goes on. The next start of the command queues every
  slot holding only failures again, so fixing the cause and rerunning retries them.
  ``goemo sweep`` exits non-zero when none of the trials it ran succeeded (`SweepResult.verdict`).
* A trial whose worker died is found RUNNING: on the same host its process is gone and it is
  failed at once; elsewhere its heartbeat stops and `optuna.storages.fail_stale_trials` fails
  it. Optuna's retry callback then queues it again (at most ``MAX_RETRIES`` times) and the retry
  resumes from its last checkpoint in the same run folder; Ctrl-C does the same.
* Looking for a slot happens under a lock (a lock file beside SQLite, an advisory lock on
  PostgreSQL and MySQL) until Optuna has taken the trial: with an empty queue `Study.optimize`
  makes a new trial, so two workers must never both see the last slot free.

Files: ``SWEEP/sweep.yaml`` (the config), ``SWEEP/sweep.json`` (what was resolved),
``SWEEP/study.db`` (default storage), ``SWEEP/trials/<n>/`` (run folders, plus ``dev_metrics.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import gc
import hashlib
import json
import logging
import math
import multiprocessing
import operator
import os
import re
import socket
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from goemo.core.config import (
    DATA_FIELDS,
    PRESETS,
    RUNTIME_FIELDS,
    TrainConfig,
    load_yaml,
    normalize_keys,
    resolve_config,
)
from goemo.core.errors import ConfigError, GoemoError, RunFolderError
from goemo.core.fileio import atomic_write_json, atomic_write_text
from goemo.core.run_folder import RunFolder
from goemo.predict.cache import predict_split
from goemo.report.run_data import epoch_records
from goemo.scoring.metrics import compute_metrics
from goemo.sweeps.config import (  # noqa: F401  (re-exported: the sweep API in one place)
    METRIC_ALIASES,
    ParamSpec,
    SweepSpec,
    load_sweep_config,
    parse_sweep_config,
)
from goemo.sweeps.objective import best_epoch_by, kept_value, metric_value
from goemo.training import loop  # loop.train looked up per call: tests patch it
from goemo.training.data import load_training_data
from goemo.training.tracking import build_trackers, check_trackers, close_trackers

log = logging.getLogger(__name__)

HEARTBEAT_S = 30
GRACE_S = 120
MAX_RETRIES = 2  # a trial whose worker died is queued again at most this many times (e.g. the OOM killer)


# ---------------------------------------------------------------- storage, study and lock


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# Optuna 4.9 renamed the retry callback and the storage's keyword for it (the old names still
# work, with a FutureWarning, until 6.0); the project allows Optuna 4.0 and up.
_NEW_RETRY = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
_RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)
_STALE_CALLBACK_KW = "heartbeat_stale_trial_callback" if _NEW_RETRY else "failed_trial_callback"


# Optuna's heartbeat and retry API is marked experimental; say so once in the docs, not per call.
_quiet_experimental = functools.partial(
    warnings.catch_warnings, action="ignore", category=optuna.exceptions.ExperimentalWarning
)


def retried_trial(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries (the first of its series), or None.

    >>> retried_trial(optuna.trial.create_trial(value=0.5))  # a trial that is no retry
    """
    with _quiet_experimental():
        return _RetryCallback.retried_trial_number(trial)


def _retry_history(trial: FrozenTrial) -> list[int]:
    with _quiet_experimental():
        return list(_RetryCallback.retry_history(trial))


def _retry(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """Queue a FAIL trial again through Optuna's retry callback (same parameters, slot and run
    folder), unless it was retried ``MAX_RETRIES`` times already: something keeps killing it."""
    attempts = len(_retry_history(trial)) + 1
    if attempts > MAX_RETRIES:
        log.warning("trial %d %s; not queued again (interrupted %d times)", trial.number, reason, attempts)
        return
    with _quiet_experimental():
        _RetryCallback(max_retry=MAX_RETRIES)(study, trial)
    log.warning("trial %d %s; its parameters are queued again", trial.number, reason)


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage that tolerates several worker processes.

    With ``heartbeat``, a trial silent for ``GRACE_S`` seconds is failed by the next worker's
    `optuna.storages.fail_stale_trials` and queued again. SQLite waits up to 2 minutes for a
    lock instead of failing at once; creating the tables is retried, since two workers starting
    together may both try.
    """
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    kwargs: dict[str, Any] = {}
    if heartbeat:
        stale = functools.partial(_retry, reason="lost its heartbeat (worker gone)")
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S, _STALE_CALLBACK_KW: stale}
    for attempt in range(5):
        try:
            with _quiet_experimental():
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
    """Mutual exclusion between the workers of one study, wherever they run: a lock file beside
    SQLite, an advisory lock on PostgreSQL and MySQL (released by the server if the holder dies);
    other databases get none, and a warning."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            yield
            return
        with open(u.database + ".lock", "a+") as f:  # closing the file releases the lock
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield
        return
    if backend not in ("postgresql", "mysql", "mariadb"):
        warnings.warn(f"no cross-worker lock for {backend}: start one worker before the others", stacklevel=2)
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    key = int.from_bytes(hashlib.sha256(f"goemo-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)
    try:
        with engine.connect() as conn:
            params: dict[str, Any]
            if backend == "postgresql":
                conn.execute(text(f"SET lock_timeout = '{int(timeout)}s'"))
                unlock, params = "SELECT pg_advisory_unlock(:k)", {"k": key}
                conn.execute(text("SELECT pg_advisory_lock(:k)"), params)
            else:
                unlock, params = "SELECT RELEASE_LOCK(:k)", {"k": str(key)}
                if conn.execute(text("SELECT GET_LOCK(:k, :t)"), {**params, "t": int(timeout)}).scalar() != 1:
                    raise ConfigError(f"could not lock study {study_name} within {timeout:.0f}s")
            try:
                yield
            finally:
                conn.execute(text(unlock), params)
    finally:
        engine.dispose()


def worker_gone(trial: FrozenTrial) -> bool:
    """True when a RUNNING trial was taken by a process on this host that no longer exists
    (killed, or stopped with SIGTERM): nothing will finish it until a worker starts again."""
    pid = trial.user_attrs.get("pid")
    if trial.user_attrs.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, but another user's
        pass
    return False


def recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Mark RUNNING trials whose worker is gone as FAIL and queue them again; call under the lock.

    Same host: the process id is gone (found at once, without waiting for the heartbeat's grace
    period); other hosts: `optuna.storages.fail_stale_trials`. A dead worker's trial is no
    `optuna.Trial` here, so its ``error`` is written through ``storage`` (the study's).
    """
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        started = t.datetime_start.timestamp() if t.datetime_start else time.time()
        dead = worker_gone(t)
        orphan = pid is None and time.time() - started > GRACE_S  # died between taking and labelling it
        if not (dead or orphan):
            continue
        reason = f"was interrupted (worker {pid} on {host} is gone)" if dead else "was interrupted (no worker recorded)"
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), t.number
            )
            storage.set_trial_user_attr(trial_id, "error", f"interrupted: worker process {pid} on {host} ended")
            failed = study.tell(t.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue  # finished meanwhile (by its worker or another one)
        _retry(study, failed, reason)
    with _quiet_experimental():
        optuna.storages.fail_stale_trials(study)


# ---------------------------------------------------------------- sweep folder


@dataclass(frozen=True)
class BaseOptions:
    """The training options every trial starts from (``goemo sweep``'s ``--preset``,
    ``--base-config``, training options and ``--set``; None values in ``overrides`` are ignored).

    >>> BaseOptions(preset="fast", overrides={"epochs": 1}).preset
    'fast'
    """

    preset: str | None = None
    config_file: str | Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


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
        """What ``sweep.json`` records (the storage without its password)."""
        return {
            "study": self.study_name,
            "storage": _hide_password(self.storage_url),
            "method": self.spec.method,
            "metric": self.spec.metric,
            "metric_name": self.spec.metric_name,
            "direction": self.spec.direction,
            "select_metric": self.base.select_metric,
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
    base: BaseOptions | None = None,
    trackers: list[str] | tuple[str, ...] = (),
) -> Sweep:
    """Resolve everything a worker needs and write ``sweep.yaml`` and ``sweep.json``.

    Base training options, lowest to highest: defaults < ``base.preset`` < ``base.config_file``
    YAML < the sweep config's fixed ``value:`` entries < ``base.overrides`` (the command line).
    Running again on an existing folder checks that it is the same sweep (so the same command
    resumes it). When none of them sets ``select_metric``, it is the sweep metric: the trial
    then keeps the epoch it is ranked by.
    """
    config_path = Path(config_path)
    spec = load_sweep_config(config_path)
    base = base or BaseOptions()
    overrides = {k: v for k, v in normalize_keys(dict(base.overrides), "option").items() if v is not None}
    if clash := sorted(set(overrides) & set(spec.params)):
        raise ConfigError(
            f"{', '.join(clash)} searched by {config_path} and also given as an option; remove one of them"
        )
    if blocked := sorted(set(overrides) & {"output", "overwrite", "resume", "trackers"}):
        raise ConfigError(f"{', '.join(blocked)}: set by the sweep for each trial, not as a base option")
    fixed = {**spec.fixed, **({"select_metric": spec.select_metric} if spec.select_metric else {})}
    config = resolve_config(base.preset, base.config_file, {**fixed, **overrides})
    chosen = "select_metric" in {**fixed, **overrides} or _base_selects(base.preset, base.config_file, overrides)
    # A sweep chooses on dev; test scores beside every trial only invite choosing on test, so
    # trials skip test unless the command line asks for it (--eval-test).
    config = config.replace(
        select_metric=config.select_metric if chosen else spec.metric,
        trackers=[],
        overwrite=False,
        resume=False,
        eval_test=bool(overrides.get("eval_test", False)),
    )
    tracker_names = check_trackers(list(trackers))

    saved_meta = Path(output) / "sweep.json" if output else None
    if study_name is None and saved_meta is not None and saved_meta.is_file():
        study_name = json.loads(saved_meta.read_text(encoding="utf-8")).get("study")  # resuming that folder
    study_name = study_name or spec.name or config_path.stem
    sweep_dir = Path(output) if output else Path("runs") / "sweeps" / study_name
    storage_url = storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    n = count if count is not None else spec.default_count()
    if n < 1:
        raise ConfigError(f"--count {n}: expected an integer >= 1")
    if spec.method == "grid" and n > len(spec.grid()):
        raise ConfigError(f"--count {n}: the grid has only {len(spec.grid())} points")
    sweep = Sweep(sweep_dir, spec, study_name, storage_url, n, config, tracker_names, config.seed)

    sweep_dir.mkdir(parents=True, exist_ok=True)
    meta_path = sweep_dir / "sweep.json"
    if meta_path.is_file():
        _check_same_sweep(json.loads(meta_path.read_text(encoding="utf-8")), sweep, meta_path)
    atomic_write_text(sweep_dir / "sweep.yaml", config_path.read_text(encoding="utf-8"))
    atomic_write_json(meta_path, sweep.meta())
    return sweep


def _base_selects(preset: str | None, base_config: str | Path | None, overrides: dict[str, Any]) -> bool:
    """Whether the preset or the base config file names a ``select_metric`` (as `resolve_config` picks them)."""
    file_values = load_yaml(base_config) if base_config else {}
    name = overrides.get("preset") or preset or file_values.get("preset")
    return "select_metric" in file_values or "select_metric" in PRESETS.get(str(name), {})


def _check_same_sweep(saved: dict[str, Any], sweep: Sweep, path: Path) -> None:
    now = json.loads(json.dumps(sweep.meta()))  # compare as stored (tuples are lists in JSON)
    keys = ("study", "method", "metric", "direction", "parameters", "fixed", "early_terminate")
    diffs = [k for k in keys if saved.get(k) != now[k]]
    old_base, new_base = saved.get("base_config", {}), now["base_config"]
    diffs += [  # runtime options (device, threads, ...) may change between a sweep and its resumption
        f"base {k}"
        for k in sorted(set(old_base) | set(new_base))
        if k not in RUNTIME_FIELDS and k != "output" and old_base.get(k) != new_base.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"{path.parent} holds another sweep (differs in: {', '.join(diffs)}); "
            f"run the same command to resume it, or choose another --output"
        )


def open_study(
    sweep: Sweep, storage: optuna.storages.BaseStorage | None = None, retry_failed: bool = True
) -> optuna.Study:
    """Create or load the study and top its queue up to ``sweep.count`` slots (under the lock).

    Each slot is an enqueued trial with user attribute ``slot`` (retries carry it too). With
    ``retry_failed``, slots whose trials all failed are queued again: rerunning retries them.
    """
    storage = storage if storage is not None else open_storage(sweep.storage_url)
    with study_lock(sweep.storage_url, sweep.study_name):
        study = optuna.create_study(
            storage=storage,
            study_name=sweep.study_name,
            direction=sweep.spec.direction,
            sampler=sweep.spec.sampler(sweep.seed),
            pruner=sweep.spec.pruner(),
            load_if_exists=True,
        )
        if study.direction.name.lower() != sweep.spec.direction:
            raise ConfigError(
                f"study {sweep.study_name} in {_hide_password(sweep.storage_url)} was created to "
                f"{study.direction.name.lower()}, not {sweep.spec.direction}: use another --study"
            )
        recorded = study.user_attrs.get("goemo_metric")
        if recorded is None:
            study.set_user_attr("goemo_metric", sweep.spec.metric)
            study.set_user_attr("goemo_select_metric", sweep.base.select_metric)
            study.set_user_attr("goemo_method", sweep.spec.method)
            study.set_user_attr("goemo_sweep_dir", str(sweep.sweep_dir.resolve()))
        elif recorded != sweep.spec.metric:
            raise ConfigError(
                f"study {sweep.study_name} optimises {recorded}, not {sweep.spec.metric}: use another --study"
            )
        failed = _failed_slots(study) if retry_failed else []
        with _quiet_experimental():
            for trial in failed:  # Optuna's retry callback: same parameters, slot and run folder
                _RetryCallback(max_retry=None)(study, trial)
        if failed:
            numbers = ", ".join(str(t.number) for t in failed)
            log.info("study %s: %d failed trial(s) queued again (%s)", sweep.study_name, len(failed), numbers)
        queued = {t.user_attrs["slot"] for t in study.get_trials(deepcopy=False) if "slot" in t.user_attrs}
        planned = sweep.spec.slot_params(sweep.count, sweep.seed)
        missing = [i for i in range(sweep.count) if i not in queued]
        for i in missing:
            study.enqueue_trial(planned[i], user_attrs={"slot": i})
        if missing:
            log.info("study %s: %d trial(s) queued (%d in all)", sweep.study_name, len(missing), sweep.count)
    return study


def _failed_slots(study: optuna.Study) -> list[FrozenTrial]:
    """The last trial of each slot that has only failed trials: no result and nobody on it.

    A new start retries it with no limit (`MAX_RETRIES` bounds retries within a run).
    """
    last: dict[int, FrozenTrial] = {}
    settled = set()
    for t in study.get_trials(deepcopy=False):
        slot = t.user_attrs.get("slot")
        if slot is None:
            continue
        if t.state != TrialState.FAIL:
            settled.add(slot)
        elif slot not in last or t.number > last[slot].number:
            last[slot] = t
    return [t for slot, t in sorted(last.items()) if slot not in settled]


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


class _QueueEmpty(Exception):
    """`Study.optimize` found no waiting trial and made a new one (a worker without the study lock took the last)."""


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


class Worker:
    """Takes slots from the study until none is left, training each as a run folder.

    The data is read once per worker and shared by its trials (unless a trial changes the
    data options, e.g. ``taxonomy``). ``storage`` is the one ``study`` was opened with.
    """

    def __init__(self, sweep: Sweep, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        self.sweep = sweep
        self.study = study
        self.storage = storage
        self._data: dict[tuple, dict] = {}

    def run(self) -> list[TrialOutcome]:
        """Train trials until the queue is empty."""
        return list(iter(self.run_next, None))

    def run_next(self) -> TrialOutcome | None:
        """Take the next waiting trial and train it; None when the queue is empty.

        The study lock is held until Optuna has taken the trial (the objective releases it),
        because `Study.optimize` makes a new trial when none is waiting. `Study.optimize` keeps
        the heartbeat and records the value, PRUNED or FAIL (`catch` lets the worker go on).
        """
        ran: list[TrialOutcome] = []
        taken: list[int] = []
        with contextlib.ExitStack() as lock:  # closed early by the objective, once Optuna has taken the trial
            lock.enter_context(study_lock(self.sweep.storage_url, self.sweep.study_name))
            recover_interrupted(self.study, self.storage)
            if not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None

            def objective(trial: optuna.Trial) -> float:
                taken.append(trial.number)
                return self._objective(trial, lock, ran)

            try:
                self.study.optimize(objective, n_trials=1, catch=(Exception,))
            except KeyboardInterrupt:
                lock.close()
                if taken:
                    with study_lock(self.sweep.storage_url, self.sweep.study_name):
                        failed = _frozen(self.study, taken[0])
                        if failed.state == TrialState.FAIL:
                            _retry(self.study, failed, "was interrupted (Ctrl-C)")
                raise
            except Exception as e:  # recording the result failed (e.g. another worker closed the trial)
                if not ran:
                    raise
                log.warning("trial %d: its result could not be recorded (%s: %s)", ran[0].number, type(e).__name__, e)
                ran[0] = dataclasses.replace(ran[0], state=_frozen(self.study, ran[0].number).state.name)
        if not ran:  # the queue was empty after all (`_QueueEmpty`)
            return None
        if ran[0].state == "FAIL":  # after an out-of-memory error the next trial needs the memory back
            gc.collect()
            torch.cuda.empty_cache()  # a no-op where CUDA was never initialised
        return ran[0]

    def _splits(self, config: TrainConfig) -> dict:
        key = tuple(getattr(config, f) for f in DATA_FIELDS)
        if key not in self._data:
            self._data = {key: load_training_data(config)}  # keep one data set in memory
        return dict(self._data[key])

    def _objective(self, trial: optuna.Trial, lock: contextlib.ExitStack, ran: list[TrialOutcome]) -> float:
        """Train one trial taken by `Study.optimize`; its outcome goes into ``ran``."""
        number = trial.number
        run_dir = Path(trial.user_attrs.get("run_dir") or self.sweep.trials_dir / str(number))
        # Label the trial before releasing the lock: `recover_interrupted` judges RUNNING trials by it.
        for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "run_dir": str(run_dir)}.items():
            trial.set_user_attr(key, value)
        if "slot" not in trial.user_attrs and "retry_of" not in trial.user_attrs:  # no slot: stop this worker
            lock.close()
            trial.set_user_attr("error", f"{_QueueEmpty.__name__}: {_QueueEmpty.__doc__}")
            log.warning("trial %d: %s; this worker stops", number, _QueueEmpty.__doc__)
            raise _QueueEmpty(_QueueEmpty.__doc__)
        frozen = _frozen(self.study, number)
        retry_of = retried_trial(frozen)
        if retry_of is not None:  # user attributes come from the trial retried: this attempt's own start clean
            trial.set_user_attr("retry_of", retry_of)
            trial.set_user_attr("retries", len(_retry_history(frozen)))
            if trial.user_attrs.get("error") is not None:
                trial.set_user_attr("error", None)
        lock.close()
        # One sampler seed per trial number: reproducible, and workers do not repeat each other.
        # (Optuna's samplers sample when a parameter is suggested, so this one draws this trial.)
        self.study.sampler = self.sweep.spec.sampler(self.sweep.seed * 100_003 + number)
        started = time.perf_counter()
        trackers: list = []
        outcome: TrialOutcome | None = None
        try:
            params = {name: p.suggest(trial) for name, p in self.sweep.spec.params.items()}
            log.info("trial %d: %s", number, _describe(params))
            value, summary, epochs = self._train(trial, params, run_dir, trackers)
            for key in ("dev", "test"):
                if key in summary:
                    trial.set_user_attr(key, summary[key])
            metric, kept, select = self.sweep.spec.metric, summary.get("best_epoch"), self.sweep.base.select_metric
            trial.set_user_attr("best_epoch", kept)  # the epoch kept as best/, by select_metric
            trial.set_user_attr("select_metric", select)
            trial.set_user_attr(
                "metric_best_epoch", best_epoch_by(epochs, metric, self.sweep.spec.direction == "maximize")
            )
            trial.set_user_attr("wall_time_s", round(time.perf_counter() - started, 2))
            if value is None or not math.isfinite(value):
                raise ValueError(
                    f"{metric} at the kept epoch {kept} (best {select}) is {value} (undefined on this dev data)"
                )
            outcome = TrialOutcome(number, "COMPLETE", value, params, str(run_dir))
            log.info("trial %d: %s %.4f (epoch %s, kept by %s)", number, metric, value, kept, select)
            return value
        except optuna.TrialPruned as e:
            outcome = TrialOutcome(number, "PRUNED", None, dict(trial.params), str(run_dir), str(e) or None)
            log.info("trial %d pruned: %s", number, e)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted: Ctrl-C")
            raise
        except Exception as e:
            outcome = self._failed(trial, number, run_dir, e)
            raise
        finally:
            if outcome is not None:
                ran.append(outcome)
            close_trackers(trackers, failed=outcome is None or outcome.state != "COMPLETE")

    def _train(
        self, trial: optuna.Trial, params: dict[str, Any], run_dir: Path, trackers: list
    ) -> tuple[float | None, dict, list[dict[str, Any]]]:
        """Train one trial: its objective (`kept_value`), its summary, and its epoch records.

        Each epoch reports the sweep metric to Optuna, whose pruner judges the trial on it.
        """
        config = self.sweep.base.replace(**params, output=str(run_dir))
        resume = RunFolder(run_dir).has_checkpoint()
        config = config.replace(resume=resume, overwrite=not resume)
        splits = self._splits(config)
        metric = self.sweep.spec.metric
        opened: list[bool] = []
        seen: list[dict[str, Any]] = []

        def report(record: dict[str, Any]) -> None:
            if not opened:  # open the trackers once train() has prepared (emptied) the run folder
                opened.append(True)
                trackers.extend(build_trackers(self.sweep.trackers, run_dir, config.to_dict()))
            for tracker in trackers:
                tracker.log(record)
            if record.get("event") != "epoch":
                return
            seen.append(record)
            value = metric_value(record, metric)
            if value is not None:
                trial.report(value, step=int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} ({metric} {value:.4f})")

        try:
            result = loop.train(config, splits=splits, callbacks=[report])
        except RunFolderError as e:  # the checkpoint belongs to other settings: start over
            if not resume:
                raise
            log.warning("trial %d: cannot resume (%s); training from the start", trial.number, e)
            config = config.replace(resume=False, overwrite=True)
            splits = self._splits(config)
            result = loop.train(config, splits=splits, callbacks=[report])
        summary = result.summary
        for tracker in trackers:
            final = {f"{k}/{m}": v for k in ("dev", "test") if k in summary for m, v in summary[k].items()}
            tracker.log({"event": "summary", **final})
        # dev as train sampled it
        write_dev_metrics(result.best_dir, splits["dev"], config, run_dir / "dev_metrics.json")
        # metrics.jsonl holds every epoch, also those before a resume (the callback saw only the later ones)
        epochs = epoch_records(run_dir / "metrics.jsonl") or seen
        return kept_value(epochs, metric, summary.get("best_epoch")), summary, epochs

    def _failed(self, trial: optuna.Trial, number: int, run_dir: Path, e: Exception) -> TrialOutcome:
        """Record why a trial failed; `Study.optimize` then marks it FAIL."""
        message = f"{type(e).__name__}: {e}"[:2000]
        log.warning("trial %d failed: %s", number, failure_line(e))  # Optuna's traceback: at DEBUG
        with contextlib.suppress(OSError):
            atomic_write_text(run_dir / "error.txt", "".join(traceback.format_exception(e)))
        try:
            trial.set_user_attr("error", message)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was already closed by another worker", number)
        return TrialOutcome(number, "FAIL", None, dict(trial.params), str(run_dir), message)


def failure_line(e: BaseException) -> str:
    """One line saying why a trial failed: a `GoemoError`'s message (written for the user), else
    the exception's type and the first line of its message.

    >>> failure_line(ConfigError("dropout=1.5: expected a number in [0, 1)")), failure_line(MemoryError())
    ('dropout=1.5: expected a number in [0, 1)', 'MemoryError')
    """
    if isinstance(e, GoemoError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def write_dev_metrics(best_dir: Path, dev, config: TrainConfig, path: Path) -> dict[str, Any]:
    """Per-label dev scores of a trial's best model, for the sweep report's per-class AUC.

    ``dev`` is the dev sample the trial was evaluated on; `predict_split` also caches the
    probabilities in the trial's ``predictions/`` for a later ``goemo report`` of it.
    """
    preds = predict_split(best_dir, dev, config.scoring_settings(), token_cache_dir=config.cache_dir)
    out = compute_metrics(
        dev.labels, preds.probs, dev.label_names, thresholds=config.threshold, sweep=None, split="dev"
    ).to_dict()
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
    outcomes: list[TrialOutcome]  # this process's worker
    ran: list[TrialOutcome] = field(default_factory=list)  # every local worker's (--workers K)

    def failure_reasons(self) -> list[tuple[str, int]]:
        """The first line of each failed trial's error among `ran` (the exception and its
        message; tracebacks stay in ``trials/N/error.txt``), counted, most frequent first."""
        errors = [(o.error or "").strip() for o in self.ran if o.state == "FAIL"]
        return Counter((e.splitlines() or ["(no error recorded)"])[0][:200] for e in errors).most_common()

    def verdict(self) -> tuple[int, list[str]]:
        """The worker's exit status and the lines that explain it.

        1 when every trial run here failed (pruned is success: the search working), so a job
        array does not report success for a sweep that only crashed, or when nothing ran and
        the study holds only failures; else 0.
        """
        if not self.ran:
            total = sum(self.counts.values())
            if not any(self.counts.get(s) for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")):
                return 1, [f"the study's {total} trial(s) all failed and none was left to retry"]
            return 0, [
                f"nothing to run: the study's {total} trial(s) were already taken (it is complete or other workers have the rest)"
            ]
        failed = [o for o in self.ran if o.state == "FAIL"]
        lines = [f"  {n} x {reason}" for reason, n in self.failure_reasons()]
        if len(failed) == len(self.ran):
            return 1, [f"none of the {len(self.ran)} trial(s) this run took succeeded; errors:", *lines]
        if failed:
            return 0, [f"{len(failed)} of the {len(self.ran)} trial(s) this run took failed:", *lines]
        return 0, []


def summarize(
    sweep: Sweep, study: optuna.Study, outcomes: Sequence[TrialOutcome] = (), ran: Sequence[TrialOutcome] | None = None
) -> SweepResult:
    """The study's state counts and best trial, with the outcomes of this machine's workers."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pick = max if sweep.spec.direction == "maximize" else min
    best = pick(complete, key=operator.attrgetter("value"), default=None)
    return SweepResult(
        sweep.sweep_dir,
        sweep.study_name,
        _hide_password(sweep.storage_url),
        dict(Counter(t.state.name for t in trials)),
        best.number if best else None,
        best.value if best else None,
        dict(best.params) if best else {},
        best.user_attrs.get("run_dir") if best else None,
        list(outcomes),
        list(outcomes if ran is None else ran),
    )


def _outcomes_of(study: optuna.Study, pids: set[int], since: float) -> list[TrialOutcome]:
    """The trials (slots and retries, not `_QueueEmpty` ones) that worker processes ``pids`` on
    this host took since ``since`` (a timestamp)."""
    host, out = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("host") != host or a.get("pid") not in pids or not ("slot" in a or "retry_of" in a):
            continue
        started = t.datetime_start is not None and t.datetime_start.timestamp() >= since - 2
        if started and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            out.append(TrialOutcome(t.number, t.state.name, t.value, dict(t.params), a.get("run_dir"), a.get("error")))
    return out


_OPTUNA_TRIAL_FAILED = re.compile(r"Trial \d+ failed\b")


class _OptunaRecords(logging.Handler):
    """Passes Optuna's log records to the root logger's handlers, as propagation would, but the
    two warnings Optuna logs per failed trial (one a traceback) at DEBUG: the worker says why in
    one line (`failure_line`), and the traceback is in ``trials/<n>/error.txt``."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING and _OPTUNA_TRIAL_FAILED.match(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        root = logging.getLogger()
        if root.isEnabledFor(record.levelno):
            root.handle(record)


def route_optuna_logging() -> None:
    """Send Optuna's messages (warnings and up) through `logging` instead of its own stderr handler."""
    optuna.logging.disable_default_handler()
    optuna.logging.disable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    library = logging.getLogger("optuna")  # the logger Optuna's own loggers are children of
    if not any(isinstance(h, _OptunaRecords) for h in library.handlers):
        library.addHandler(_OptunaRecords())


def _worker_process(sweep: Sweep, env: dict[str, str]) -> None:
    """Entry point of an extra local worker (``--workers K``), started with the spawn method."""
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s worker {os.getpid()}: %(message)s")
    route_optuna_logging()
    storage = open_storage(sweep.storage_url)
    Worker(sweep, open_study(sweep, storage, retry_failed=False), storage).run()  # run_sweep retried them


def run_sweep(sweep: Sweep, workers: int = 1) -> SweepResult:
    """Run this machine's share of the sweep: ``workers`` local worker processes.

    Other machines join by running the same command against the same ``--storage``.

        sweep = prepare_sweep("examples/wandb_report_sweep.yaml", count=6,
                              overrides={"data_dir": "data/goemotions", "model": "minilm"})
        run_sweep(sweep).best_params
        # -> {'lr': 5e-05, 'batch_size': 32, 'dropout': 0.3}
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected an integer >= 1")
    since = time.time()
    storage = open_storage(sweep.storage_url)
    study = open_study(sweep, storage)
    procs = []
    if workers > 1:
        base = sweep.base
        if base.num_threads is None and base.device != "cuda":
            # CPU workers share the cores instead of each taking all of them.
            base = base.replace(num_threads=max(1, (os.cpu_count() or 1) // workers))
        sweep = dataclasses.replace(sweep, base=base)
        gpus = torch.cuda.device_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        ctx = multiprocessing.get_context("spawn")
        for i in range(1, workers):  # this process is worker 0 on the first GPU; the others spread out
            env = {"CUDA_VISIBLE_DEVICES": ids[i % gpus]} if gpus > 1 else {}
            procs.append(ctx.Process(target=_worker_process, args=(sweep, env), name=f"goemo-sweep-worker-{i}"))
            procs[-1].start()
    try:
        outcomes = Worker(sweep, study, storage).run()
    finally:
        for p in procs:
            p.join()
    if failed := [p.name for p in procs if p.exitcode not in (0, None)]:
        log.warning("worker process(es) %s ended with an error; run the command again to finish", ", ".join(failed))
    ran = list(outcomes)
    if procs:
        mine = {o.number for o in outcomes}
        children = {p.pid for p in procs if p.pid is not None}
        ran += [o for o in _outcomes_of(study, children, since) if o.number not in mine]
    return summarize(sweep, study, outcomes, sorted(ran, key=lambda o: o.number))


def load_sweep(
    sweep_dir: str | Path, storage: str | None = None, study_name: str | None = None
) -> tuple[dict[str, Any], optuna.Study]:
    """``sweep.json`` and the study of an existing sweep folder (read-only use: reports, tests)."""
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
