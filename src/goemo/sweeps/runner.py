"""Hyperparameter sweeps: a W&B sweep config run by Optuna, from one laptop to many machines.

The config file (read by `goemo.sweeps.config`) is the one W&B users already have
(``method``, ``metric``, ``parameters``, ``early_terminate``); parameter names may be W&B's
or goemo's (`goemo.core.config.ALIASES`: ``learning_rate`` -> ``lr``, ``tokenizer_max_len`` ->
``max_length``, …) and the metric is a key of goemo's per-epoch record (``auc_score`` is one;
`METRIC_ALIASES` maps other spellings). Optuna is the engine: ``grid`` -> `GridSampler`, ``random`` ->
`RandomSampler`, ``bayes`` -> `TPESampler`, ``early_terminate: hyperband`` ->
`HyperbandPruner` fed the sweep metric once per epoch.

A trial keeps its best epoch by its own ``select_metric`` (``parameters.select_metric:
{value: val_loss}``, else the base options', else the sweep metric); its objective, the value
Optuna ranks, is the sweep metric at that kept epoch (`goemo.sweeps.objective`).

How the trials are shared out, and why it survives crashes (all through Optuna's public API):

* When the study is created, ``count`` *slots* are put in its queue with `Study.enqueue_trial`
  (Optuna's WAITING trials; for a grid each slot holds one grid point, so the grid is covered
  exactly). A worker runs `Study.optimize` for one trial at a time: Optuna takes the next
  waiting trial atomically and keeps its heartbeat while it trains as a normal run folder
  ``SWEEP/trials/<n>/``. The worker stops when the queue is empty. Any number of workers on
  any number of machines can run the same command against one storage: they split the slots
  and the total is exactly ``count``.
* A trial that raises (bad hyperparameters, out of memory, …) is recorded as FAIL with its
  error (user attribute ``error``, traceback in ``trials/<n>/error.txt``); the worker logs
  one line and goes on. The next start of the command queues every slot that holds only
  failures again (`RetryHeartbeatStaleTrialCallback`, the same parameters and run folder),
  so fixing the cause and running the same command retries them.
  `SweepResult.ran` lists what this machine's workers ran; ``goemo sweep`` exits non-zero
  when none of those succeeded (an array job must not report success for a sweep that only
  crashed) and 0 when some did, or when nothing was left to run (other workers hold the rest,
  or the study is complete).
* A trial whose worker died (SIGKILL, power cut) is found RUNNING by the next worker that
  looks for a slot. On the same host its process id is gone: it is marked FAIL
  (``interrupted``) at once. Elsewhere its Optuna heartbeat stops, and after the grace period
  `optuna.storages.fail_stale_trials` marks it FAIL. Either way Optuna's retry callback
  (`RetryHeartbeatStaleTrialCallback`) queues its parameters again, up to ``MAX_RETRIES``
  times, and the retry resumes from the trial's last checkpoint in the same run folder. So a
  killed sweep finishes with the same command. Ctrl-C fails the running trial and queues it
  again the same way.
* Looking for a slot happens under a lock (a lock file beside a SQLite database, an advisory
  lock on PostgreSQL and MySQL), held until Optuna has taken the waiting trial: when the
  queue is empty `Study.optimize` would make a new trial instead, so two workers must never
  both see the last slot free.

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
import multiprocessing
import os
import re
import socket
import time
import traceback
import warnings
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


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# Optuna 4.9 renamed the retry callback and the storage's keyword for it (the old names still
# work, with a FutureWarning, until 6.0); the project allows Optuna 4.0 and up.
_RetryCallback: type[optuna.storages.RetryHeartbeatStaleTrialCallback] | type[optuna.storages.RetryFailedTrialCallback]
if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
    _RetryCallback = optuna.storages.RetryHeartbeatStaleTrialCallback
    _STALE_CALLBACK_KW = "heartbeat_stale_trial_callback"
else:  # pragma: no cover - Optuna < 4.9
    _RetryCallback = optuna.storages.RetryFailedTrialCallback
    _STALE_CALLBACK_KW = "failed_trial_callback"


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Optuna's heartbeat and retry API is marked experimental; say so once in the docs, not per call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


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
    """Queue a trial that ended without a result (FAIL) again, through Optuna's retry callback.

    The callback adds a WAITING trial with the same parameters and user attributes (so the
    same slot and run folder) and records the series (`retried_trial`). A trial already
    retried ``MAX_RETRIES`` times is not queued again: something (e.g. the OOM killer) keeps
    killing it.
    """
    attempts = len(_retry_history(trial)) + 1
    if attempts > MAX_RETRIES:
        log.warning("trial %d %s; not queued again (interrupted %d times)", trial.number, reason, attempts)
        return
    with _quiet_experimental():
        _RetryCallback(max_retry=MAX_RETRIES)(study, trial)
    log.warning("trial %d %s; its parameters are queued again", trial.number, reason)


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """The storage's heartbeat-stale callback: `fail_stale_trials` has just marked ``trial`` FAIL."""
    _retry(study, trial, "lost its heartbeat (worker gone)")


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage that tolerates several worker processes.

    With ``heartbeat``, Optuna records each running trial's heartbeat every ``HEARTBEAT_S``
    seconds while `Study.optimize` runs it; a trial silent for ``GRACE_S`` seconds is failed by
    the next worker's `optuna.storages.fail_stale_trials` and queued again (`_retry_stale`).
    SQLite waits up to 2 minutes for a lock instead of failing at once; creating the tables
    is retried, since two workers starting together may both try.
    """
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S, _STALE_CALLBACK_KW: _retry_stale}
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
    """Mutual exclusion between the workers of one study, wherever they run.

    A lock file beside a SQLite database; an advisory lock for PostgreSQL and MySQL (released
    by the server if the holder dies). Other databases get no lock and a warning.
    """
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_gone(trial: FrozenTrial) -> bool:
    """True when a RUNNING trial was taken by a process on this host that no longer exists
    (killed, or stopped with SIGTERM): nothing will finish it until a worker starts again."""
    pid = trial.user_attrs.get("pid")
    if trial.user_attrs.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    return not _process_alive(pid)


def recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL and queue them again; call under the lock.

    Same host: the recorded process id no longer exists (found at once, without waiting for
    the heartbeat's grace period). Other hosts: the Optuna heartbeat is older than the grace
    period (`optuna.storages.fail_stale_trials`, which runs the storage's retry callback).
    ``storage`` is the one the study was opened with: a dead worker's trial is not this
    process's `optuna.Trial`, so its ``error`` attribute is written through the storage.
    """
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
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), t.number
            )
            storage.set_trial_user_attr(trial_id, "error", f"interrupted: worker process {pid} on {host} ended")
            failed = study.tell(t.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue  # finished meanwhile (by its worker or another one)
        _retry(study, failed, reason)
        recovered.append(t.number)
    with _quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    return recovered


# ---------------------------------------------------------------- sweep folder


@dataclass(frozen=True)
class BaseOptions:
    """The training options every trial starts from, lowest to highest: defaults < ``preset`` <
    the ``config_file`` YAML < ``overrides`` (option names as ``goemo train``'s; None values are
    ignored), as `goemo.core.config.resolve_config` merges them. ``goemo sweep``'s ``--preset``,
    ``--base-config``, and its training options and ``--set``.

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

    Base training options (`BaseOptions`), lowest to highest: defaults < ``base.preset`` <
    ``base.config_file`` YAML < the sweep config's fixed ``value:`` entries < ``base.overrides``
    (the command line). A searched parameter cannot also be given in ``overrides``. Running
    again on an existing folder checks that it is the same sweep (so the same command resumes it).

    ``select_metric`` (what picks each trial's kept epoch) follows the same order, but when
    none of them sets it, it is the sweep metric: the trial then keeps the epoch it is ranked by.
    """
    config_path = Path(config_path)
    spec = load_sweep_config(config_path)
    base = base or BaseOptions()
    preset, base_config = base.preset, base.config_file
    overrides = {k: v for k, v in normalize_keys(dict(base.overrides), "option").items() if v is not None}
    clash = sorted(set(overrides) & set(spec.params))
    if clash:
        raise ConfigError(
            f"{', '.join(clash)} searched by {config_path} and also given as an option; remove one of them"
        )
    blocked = sorted(set(overrides) & {"output", "overwrite", "resume", "trackers"})
    if blocked:
        raise ConfigError(f"{', '.join(blocked)}: set by the sweep for each trial, not as a base option")
    fixed = {**spec.fixed, **({"select_metric": spec.select_metric} if spec.select_metric else {})}
    config = resolve_config(preset, base_config, {**fixed, **overrides})
    chosen = "select_metric" in fixed or "select_metric" in overrides or _base_selects(preset, base_config, overrides)
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
    storage_url = storage or default_storage(sweep_dir)
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
    now = sweep.meta()
    now = json.loads(json.dumps(now))  # compare as stored (tuples are lists in JSON)
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

    Each slot is a `Study.enqueue_trial` with user attribute ``slot`` (its index); a retry
    carries its trial's ``slot`` too, so the slots already queued are the distinct indices.
    With ``retry_failed``, a slot whose trials all failed is queued again (`_failed_slots`):
    running the same command after fixing what made trials fail retries them.
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
            log.info(
                "study %s: %d failed trial(s) queued again (%s)",
                sweep.study_name,
                len(failed),
                ", ".join(str(t.number) for t in failed),
            )
        queued = {t.user_attrs["slot"] for t in study.get_trials(deepcopy=False) if "slot" in t.user_attrs}
        planned = sweep.spec.slot_params(sweep.count, sweep.seed)
        missing = [i for i in range(sweep.count) if i not in queued]
        for i in missing:
            study.enqueue_trial(planned[i], user_attrs={"slot": i})
        if missing:
            log.info("study %s: %d trial(s) queued (%d in all)", sweep.study_name, len(missing), sweep.count)
    return study


def _failed_slots(study: optuna.Study) -> list[FrozenTrial]:
    """The last trial of each slot that has only failed trials (none completed, pruned, running or waiting).

    Such a slot holds no result and nobody is working on it: a new start of the sweep command
    retries it, with no limit (`MAX_RETRIES` bounds retries of interrupted trials within a run).
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
    data options, e.g. ``taxonomy``). ``storage`` is the one ``study`` was opened with
    (`recover_interrupted` writes a dead worker's trial through it).
    """

    def __init__(self, sweep: Sweep, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        self.sweep = sweep
        self.study = study
        self.storage = storage
        self._data: dict[tuple, dict] = {}
        self.outcomes: list[TrialOutcome] = []

    def run(self, max_trials: int | None = None) -> list[TrialOutcome]:
        """Train trials until the queue is empty (or ``max_trials`` were trained here)."""
        while max_trials is None or len(self.outcomes) < max_trials:
            outcome = self.run_next()
            if outcome is None:
                break
            self.outcomes.append(outcome)
        return self.outcomes

    def run_next(self) -> TrialOutcome | None:
        """Take the next waiting trial and train it; None when the queue is empty.

        The study lock is held from looking at the queue until Optuna has taken the trial
        (the objective releases it first thing), because `Study.optimize` makes a new trial
        when none is waiting: two workers must not both see the last one. `Study.optimize`
        keeps the trial's heartbeat while it trains, and records how it ended: the value,
        PRUNED (`optuna.TrialPruned`) or FAIL (any other exception: the objective records it
        in the ``error`` user attribute and `catch` lets the worker go on).
        """
        lock = contextlib.ExitStack()
        lock.enter_context(study_lock(self.sweep.storage_url, self.sweep.study_name))
        ran: list[TrialOutcome] = []
        taken: list[int] = []
        try:
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
        finally:
            lock.close()
        if not ran:  # the queue was empty after all (`_QueueEmpty`)
            return None
        if ran[0].state == "FAIL":
            gc.collect()  # after an out-of-memory error the next trial needs the memory back
            with contextlib.suppress(Exception):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
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

        Each epoch reports the sweep metric to Optuna (the pruner judges the trial on it);
        the objective is the sweep metric at the epoch training kept by ``select_metric``.
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
        write_dev_metrics(
            result.best_dir, splits["dev"], config, run_dir / "dev_metrics.json"
        )  # dev as train sampled it
        # metrics.jsonl holds every epoch, also those before a resume (the callback saw only the later ones)
        epochs = epoch_records(run_dir / "metrics.jsonl") or seen
        return kept_value(epochs, metric, summary.get("best_epoch")), summary, epochs

    def _failed(self, trial: optuna.Trial, number: int, run_dir: Path, e: Exception) -> TrialOutcome:
        """Record why a trial failed; `Study.optimize` then marks it FAIL."""
        message = f"{type(e).__name__}: {e}"[:2000]
        log.warning("trial %d failed: %s", number, failure_line(e))  # Optuna's traceback: at DEBUG
        try:
            atomic_write_text(run_dir / "error.txt", "".join(traceback.format_exception(e)))
        except OSError:
            pass
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

    ``dev`` is the exact dev sample the trial was evaluated on (as `train` left it). The
    probabilities go through `goemo.predict.cache.predict_split`, so they are also cached in the
    trial's ``predictions/`` for a later ``goemo report`` of that trial.
    """
    preds = predict_split(best_dir, dev, config.scoring_settings(), token_cache_dir=config.cache_dir)
    report = compute_metrics(
        dev.labels, preds.probs, dev.label_names, thresholds=config.threshold, sweep=None, split="dev"
    )
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
    outcomes: list[TrialOutcome]  # this process's worker
    ran: list[TrialOutcome] = field(default_factory=list)  # every local worker's (--workers K)

    def failure_reasons(self) -> list[tuple[str, int]]:
        """The first line of each failed trial's error among `ran`, counted, most frequent first.

        The first line names the exception and its message (``ConfigError: dropout=1.5: ...``,
        ``OutOfMemoryError: CUDA out of memory ...``); tracebacks stay in ``trials/N/error.txt``.
        """
        counts: dict[str, int] = {}
        for o in self.ran:
            if o.state == "FAIL":
                line = ((o.error or "").strip().splitlines() or ["(no error recorded)"])[0][:200]
                counts[line] = counts.get(line, 0) + 1
        return sorted(counts.items(), key=lambda kv: -kv[1])

    def verdict(self) -> tuple[int, list[str]]:
        """The worker's exit status and the lines that explain it.

        0 when at least one of the trials run here succeeded (completed or pruned: pruning is
        the search working) or when nothing was left to run; 1 when every one failed, so a
        job array or a CI step does not report success for a sweep that only crashed, and 1
        when nothing ran and the study holds only failures.
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


def _objective_value(trial: FrozenTrial) -> float:
    """The value of a COMPLETE trial (Optuna records one for each in a single-objective study)."""
    if trial.value is None:
        raise RuntimeError(f"trial {trial.number} is COMPLETE but has no value (a multi-objective study?)")
    return trial.value


def summarize(
    sweep: Sweep, study: optuna.Study, outcomes: Sequence[TrialOutcome] = (), ran: Sequence[TrialOutcome] | None = None
) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        pick = max if sweep.spec.direction == "maximize" else min
        best = pick(complete, key=_objective_value)
    return SweepResult(
        sweep.sweep_dir,
        sweep.study_name,
        _hide_password(sweep.storage_url),
        counts,
        best.number if best else None,
        best.value if best else None,
        dict(best.params) if best else {},
        best.user_attrs.get("run_dir") if best else None,
        list(outcomes),
        list(outcomes if ran is None else ran),
    )


def _outcomes_of(study: optuna.Study, pids: set[int], since: float) -> list[TrialOutcome]:
    """The trials that worker processes ``pids`` on this host took since ``since`` (a timestamp).

    Only slots and retries count: a trial `Study.optimize` made when the queue was empty
    (`_QueueEmpty`) is no trial of the sweep.
    """
    host, out = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("host") != host or a.get("pid") not in pids or not ("slot" in a or "retry_of" in a):
            continue
        if t.datetime_start is None or t.datetime_start.timestamp() < since - 2:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            out.append(TrialOutcome(t.number, t.state.name, t.value, dict(t.params), a.get("run_dir"), a.get("error")))
    return out


_OPTUNA_TRIAL_FAILED = re.compile(r"Trial \d+ failed\b")


class _OptunaRecords(logging.Handler):
    """Passes Optuna's log records to the root logger's handlers, as propagation would, except
    the two warnings Optuna logs for each failed trial (one with the full traceback): those go
    at DEBUG. The worker says why a trial failed in one line of its own (`failure_line`), and
    the traceback is also in ``trials/<n>/error.txt``."""

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
        gpus = _gpu_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        ctx = multiprocessing.get_context("spawn")
        for i in range(1, workers):  # this process is worker 0 on the first GPU; the others spread out
            env = {"CUDA_VISIBLE_DEVICES": ids[i % gpus]} if gpus > 1 else {}
            p = ctx.Process(
                target=_worker_process,
                args=(dataclasses.replace(sweep, base=base), env),
                name=f"goemo-sweep-worker-{i}",
            )
            p.start()
            procs.append(p)
        sweep = dataclasses.replace(sweep, base=base)
    try:
        outcomes = Worker(sweep, study, storage).run()
    finally:
        for p in procs:
            p.join()
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed:
        log.warning("worker process(es) %s ended with an error; run the command again to finish", ", ".join(failed))
    ran = list(outcomes)
    if procs:
        mine = {o.number for o in outcomes}
        children = {p.pid for p in procs if p.pid is not None}
        ran += [o for o in _outcomes_of(study, children, since) if o.number not in mine]
    return summarize(sweep, study, outcomes, sorted(ran, key=lambda o: o.number))


def _gpu_count() -> int:
    try:
        return torch.cuda.device_count()
    except Exception:
        return 0


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
