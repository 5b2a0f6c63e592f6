"""The run folder's layout, and the rules that keep one run from clobbering another.

``runs/NAME/``: ``config.yaml`` (resolved), ``metrics.jsonl``, ``summary.json``, ``best/``
(model folder), ``last/`` (model folder + optimizer/scheduler/RNG state for ``--resume``).

While a run trains, its main process holds ``.lock`` (an exclusive advisory lock, `RunLock`), so
a second ``goemo train`` on the same folder stops at once instead of writing every record twice.
A folder that holds no checkpoint and no ``best/`` (a run that failed or was killed before its
first checkpoint left only ``config.yaml``, a ``metrics.jsonl`` without an epoch record, …) has
nothing in it worth protecting: it is reused as if it were empty, so a cluster job that failed at
start (out of memory) can be resubmitted with the same command; the new start says so in one log
line, naming the settings that differ from the failed attempt's. (A model not fetched or bad data
is refused before the folder is touched: `goemo.training.preflight`.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from goemo.core.config import RESUMABLE_FIELDS
from goemo.core.errors import RunFolderError
from goemo.core.fileio import file_mode, remove_stale_temps_in

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded against each other there
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from goemo.core.config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"  # in last/: the weight average's count (torch.save, loaded weights_only)
# In last/, from Accelerate's save_state: optimizer, scheduler, fp16 gradient scaler, each process's RNG state.
ACCELERATE_STATE_FILES = ("optimizer.bin", "scheduler.bin", "scaler.pt", "random_states_*.pkl")
TRAINER_STATE_FILE = "trainer_state.json"  # in last/: the loop's position (goemo.training.loop.TrainState)
WEIGHTS_FILE = "model.safetensors"  # in best/ and last/
LOCK_FILE = ".lock"  # held (flock) by the main process of the run training in the folder
# What a run that failed before its first checkpoint may leave behind: nothing trained is lost
# by starting over in a folder that holds only these (and its dashboards' folders).
_UNTRAINED = frozenset({"config.yaml", "metrics.jsonl", LOCK_FILE, "tensorboard", "wandb"})
CHECKPOINT_FIX = "remove last/ or use --overwrite"  # the way out of a damaged last/
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock's errors when another process holds the lock
# Where a launcher (torchrun, accelerate launch, MPI) puts a process's global rank: Accelerate's
# main process is rank 0, and it alone takes the run folder's lock.
_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK")

# Fields that may change between an interrupted run and its resumption (a different machine,
# more threads, …) without changing what is trained: those marked ``resumable`` in TrainConfig.
_RESUMABLE_CHANGES = frozenset(RESUMABLE_FIELDS)


def corrupt_checkpoint(path: str | Path, problem: str) -> RunFolderError:
    """The one-line error for a damaged file in ``last/``, saying how to get going again.

    >>> str(corrupt_checkpoint("runs/x/last/training_state.pt", "truncated or not a goemo checkpoint"))
    'runs/x/last/training_state.pt: truncated or not a goemo checkpoint; remove last/ or use --overwrite'
    """
    return RunFolderError(f"{path}: {problem}; {CHECKPOINT_FIX}")


class RunLock:
    """An exclusive, non-blocking advisory lock (``flock``) on ``RUN/.lock``, naming its holder.

    The file holds the holder's pid and host, for the message the next run gets. The kernel
    drops the lock when its holder dies (even by ``kill -9``), so a stale file never blocks a
    run; on release the file is removed (a contender re-checks, after locking, that the file it
    locked is still the one in the folder).

    >>> import tempfile
    >>> with RunLock(Path(tempfile.mkdtemp()) / ".lock") as lock:
    ...     RunLock(lock.path).acquire()
    Traceback (most recent call last):
    goemo.core.errors.RunFolderError: ... is in use by another goemo run (pid ... on ...); ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise `RunFolderError` at once, naming the process that holds it."""
        if fcntl is None:
            return self
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise RunFolderError(f"{self.path.parent} is a file, not a run folder; choose another --output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in _HELD:
                    raise self._in_use(holder) from None
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                    log.warning("%s: this filesystem has no locks; nothing stops a second run here", self.path)
                    return self
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the new one
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def check_free(self) -> None:
        """Raise `RunFolderError`, as `acquire` would, when another process holds the lock; take and write nothing.

        For a caller about to do slow work before it takes the lock (``goemo train`` imports torch
        and reads the data first): a folder in use is refused at once. No ``.lock`` file means
        no holder (a holder keeps its file until it releases). Where the lock cannot be tested,
        `acquire` decides later.
        """
        if fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file (no holder), or none readable here: acquire decides
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while a holder has it exclusively
        except OSError as e:
            if e.errno in _HELD:
                raise self._in_use(_read_holder(fd)) from None
        finally:
            os.close(fd)  # also drops the shared lock, if it was taken

    def _in_use(self, holder: str) -> RunFolderError:
        return RunFolderError(
            f"{self.path.parent} is in use by another goemo run ({holder}); "
            f"wait for it to finish or choose another --output"
        )

    def release(self) -> None:
        """Remove the file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    self.path.unlink()
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()


def launched_as_main() -> bool:
    """Whether this process will be training's main process (rank 0, or no launcher at all), read
    from the launcher's environment before Accelerate is imported.

        launched_as_main()
        # -> True
    """
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value == "0"
    return True


def read_trainer_state(last_dir: str | Path) -> dict[str, Any]:
    """``last/trainer_state.json``, checked to be a JSON object (`RunFolderError` naming it if not)."""
    path = Path(last_dir) / TRAINER_STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise corrupt_checkpoint(path, "missing") from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise corrupt_checkpoint(path, "truncated or not JSON") from None
    if not isinstance(state, dict):
        raise corrupt_checkpoint(path, f"expected a JSON object, found {type(state).__name__}")
    return state


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(holder['pid'])} on {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "held by a process that has not said who it is yet"


def _has_epoch_record(metrics: Path) -> bool:
    try:
        lines = metrics.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a kill
            continue
        if isinstance(record, dict) and record.get("event") == "epoch":
            return True
    return False


class RunFolder:
    """Paths inside one run folder.

    >>> RunFolder("runs/x").best_dir.as_posix()
    'runs/x/best'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    best_dir = property(lambda self: self.path / "best")
    last_dir = property(lambda self: self.path / "last")
    predictions_dir = property(lambda self: self.path / "predictions")
    lock_path = property(lambda self: self.path / LOCK_FILE)

    def lock(self) -> RunLock:
        """The folder's lock (`RunLock`), taken for the lifetime of a run with ``with run.lock():``;
        entering raises `RunFolderError` at once when another run holds it."""
        return RunLock(self.lock_path)

    def has_checkpoint(self) -> bool:
        """Whether ``last/`` exists (written whole or not at all, so it is a checkpoint, or damaged)."""
        return self.last_dir.is_dir()

    def is_occupied(self) -> bool:
        """Whether the folder holds anything a new run would destroy: a checkpoint, ``best/``,
        an epoch's record, or files that are not a run's. A run that failed before its first
        checkpoint leaves nothing that counts."""
        if not self.path.is_dir():
            return False
        names = {p.name for p in self.path.iterdir()}
        return bool(names - _UNTRAINED) or _has_epoch_record(self.metrics_path)

    def rewind_metrics(self, size: int | None) -> None:
        """Cut ``metrics.jsonl`` back to ``size`` bytes, its length when the checkpoint being
        resumed was written: the records after it (and a line torn by a kill) are written again
        by the resumed run, so each is in the file once."""
        if size is None:
            return
        with contextlib.suppress(FileNotFoundError), open(self.metrics_path, "r+b") as f:
            if f.seek(0, os.SEEK_END) > size:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())

    def check_checkpoint(self) -> None:
        """Raise `RunFolderError` naming the file when ``last/`` lacks one, or its position is unreadable.

        The weights and the optimizer state are checked as they are loaded
        (`goemo.training.checkpoint.load_checkpoint`).
        """
        for name in (WEIGHTS_FILE, STATE_FILE, TRAINER_STATE_FILE):
            if not (self.last_dir / name).is_file():
                raise corrupt_checkpoint(self.last_dir / name, "missing")
        read_trainer_state(self.last_dir)

    def check_start(self, config: TrainConfig) -> None:
        """The refusals of `prepare` that cost nothing to find, made at once, reading only.

        Call it on the main process before slow work done ahead of the lock (imports, the data,
        the encoder): a folder another run holds, ``--resume`` with ``--overwrite``, a folder
        holding a trained run with neither flag, ``--resume`` with other settings. `prepare`,
        under the lock, decides again.

            RunFolder("runs/nothing-here").check_start(TrainConfig())
        """
        if config.resume and config.overwrite:
            raise RunFolderError("--resume and --overwrite contradict each other; choose one")
        if not self.path.is_dir():
            return
        RunLock(self.lock_path).check_free()
        if config.resume and self.has_checkpoint():
            self._check_same_run(config)
        elif not (config.resume or config.overwrite) and (
            self.has_checkpoint() or self.best_dir.exists() or _has_epoch_record(self.metrics_path)
        ):
            raise self._holds_a_run()

    def prepare(self, config: TrainConfig, is_main: bool = True) -> Path | None:
        """Check the folder against --resume/--overwrite; return ``last/`` when resuming.

        Raises `RunFolderError` when the folder holds another run and neither flag is given,
        when ``--resume`` would continue a run trained with different settings, or when
        ``last/`` is damaged. The main process (holding `lock`) also removes what killed
        writers left (`goemo.core.fileio.remove_stale_temps_in`) and, when starting from the
        beginning, the records of the attempt that trained nothing; call it there first
        (``main_process_first``) so that every process sees the same folder.
        """
        if config.resume and config.overwrite:
            raise RunFolderError("--resume and --overwrite contradict each other; choose one")
        if not is_main:
            # The main process has decided (it ran first) and may already be writing the new
            # run's config.yaml: checking the folder again here would race with it and could
            # find "another run". Its checkpoint, checked there, is untouched until all step.
            return self.last_dir if config.resume and self.has_checkpoint() else None
        remove_stale_temps_in(self.path)
        if not self.is_occupied():
            self._note_restart(config)
            self._forget_untrained()
            self.path.mkdir(parents=True, exist_ok=True)
            return None
        if config.resume:
            if not self.has_checkpoint():
                log.info("%s has no checkpoint yet: starting from the beginning", self.path)
                self._forget_untrained()
                return None
            self._check_same_run(config)
            self.check_checkpoint()
            return self.last_dir
        if config.overwrite:
            for child in self.path.iterdir():
                if child.name != LOCK_FILE:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            return None
        raise self._holds_a_run()

    def _holds_a_run(self) -> RunFolderError:
        return RunFolderError(
            f"output folder {self.path} already holds a run; pass --resume to continue it, "
            f"--overwrite to replace it, or choose another --output"
        )

    def _note_restart(self, config: TrainConfig) -> None:
        """One log line when an attempt that trained nothing is started over (it left ``config.yaml``),
        naming what changed: nothing of it is kept, so other settings are fine, but the user should
        know the folder had been used."""
        if not self.config_path.is_file():
            return
        note = f"{self.path}: previous attempt stopped before its first checkpoint; starting again"
        try:
            changed = self.changed_settings(config)
        except RunFolderError:  # an unreadable config of an attempt that trained nothing: replaced anyway
            changed = None
        if changed:
            note += f" with other settings ({changed})"
        log.info(note)

    def _forget_untrained(self) -> None:
        """The records of an attempt that reached no checkpoint: the new start writes them again."""
        self.metrics_path.unlink(missing_ok=True)

    def _check_same_run(self, config: TrainConfig) -> None:
        details = self.changed_settings(config)
        if details:
            raise RunFolderError(
                f"cannot resume {self.path}: settings differ from the saved run ({details}); "
                f"use the same settings or --overwrite"
            )

    def changed_settings(self, config: TrainConfig) -> str:
        """``"lr: 1e-05 -> 3e-05, ..."``: the saved config's settings that ``config`` changes, less the
        resumable ones; empty when none (or no config was saved). `RunFolderError` when unreadable.
        ``goemo audit`` asks it before reusing a finished fold."""
        if not self.config_path.is_file():
            return ""
        try:
            saved = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            raise RunFolderError(f"{self.config_path}: not a readable config; use --overwrite") from None
        if not isinstance(saved, dict):
            raise RunFolderError(f"{self.config_path}: not a goemo config; use --overwrite")
        current = config.to_dict()
        changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k, current[k]) != current[k])
        return ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
