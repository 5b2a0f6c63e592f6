"""Atomic writes: a crash or Ctrl-C never leaves a half-written file or folder behind.

Every file goemo writes (data downloads, checkpoints, reports, metrics) goes through here:
write to a temporary sibling, flush and fsync, then `os.replace`, which is atomic on POSIX
and Windows when source and target are on the same filesystem.

Temporary siblings are named ``.NAME.<pid>.<random>.tmp`` (a folder being swapped out,
``.NAME.<pid>.old``), so whatever a killed writer (``kill -9``, power loss) left behind can be
told apart from the work of a live one and removed by `remove_stale_temps`, which every writer
here calls before it writes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from goemo.core.errors import DISK_ERRNOS, WriteError

log = logging.getLogger(__name__)

# How libraries that do not raise OSError (safetensors' Rust writer) say the disk refused a write.
_DISK_TEXTS = {
    "no space left on device": errno.ENOSPC,
    "os error 28": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "os error 122": errno.EDQUOT,
    "read-only file system": errno.EROFS,
}

# ``.NAME.<pid>.<random>.tmp`` (tempfile's random part is [a-z0-9_]) and ``.NAME.<pid>.old``;
# ``.NAME.old`` is the pid-less name goemo < 0.x used for a folder being swapped out.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")
_OLD = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+))?\.old$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plain ``mkdir()`` gives a new folder: 0777 less the umask."""
    return 0o777 & ~_umask()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (an unreaped dead child).

    >>> pid_alive(os.getpid())
    True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _stale(folder: Path, name: str | None) -> Iterator[tuple[Path, str, bool]]:
    """(entry, target name, is_old) for every temp in ``folder`` whose writer is dead."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        for pattern, is_old in ((_TEMP, False), (_OLD, True)):
            m = pattern.match(entry.name)
            if m is None or (name is not None and m["name"] != name):
                continue
            if m["pid"] is not None and pid_alive(int(m["pid"])):
                break
            yield Path(entry.path), m["name"], is_old
            break


def _clean(folder: Path, name: str | None) -> list[Path]:
    removed = []
    for p, target_name, is_old in sorted(_stale(folder, name), key=lambda t: not t[2]):
        target = folder / target_name
        if is_old and not os.path.lexists(target):
            # killed between moving the old folder aside and moving the new one in: the new one
            # was complete, but which temp it is cannot be told, so put back the old, complete one
            os.replace(p, target)
            log.info("restored %s from %s left by an interrupted write", target, p.name)
            continue
        _remove(p)
        removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write in %s", len(removed), folder)
    return removed


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writers that are no longer alive.

    Only temps whose writer's pid is dead on this host are touched; those of a live writer
    (another process writing the same file now) are left alone. A folder swapped out by an
    `atomic_directory` that was killed before moving the new one in is put back at ``path``.
    Returns the paths removed.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".out.csv.999999999.abc123.tmp").write_text("half")
    >>> [p.name for p in remove_stale_temps(d / "out.csv")]
    ['.out.csv.999999999.abc123.tmp']
    """
    path = Path(path)
    return _clean(path.parent, path.name)


def remove_stale_temps_in(folder: str | Path) -> list[Path]:
    """`remove_stale_temps` for every entry of ``folder`` and of its sub-folders (a run folder)."""
    folder = Path(folder)
    removed = _clean(folder, None)
    for root, dirs, _ in os.walk(folder):
        for d in dirs:
            removed += _clean(Path(root) / d, None)
    return removed


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def write_failure(error: BaseException, path: str | Path) -> WriteError | None:
    """The one-line `WriteError` for ``error`` raised while writing ``path``, when the disk refused the
    write (full, over quota, read-only: `goemo.core.errors.DISK_ERRNOS`); None for any other error.

    >>> str(write_failure(OSError(errno.ENOSPC, "No space left on device"), "out.csv")).split(" (")[0]
    'cannot write out.csv: No space left on device'
    >>> write_failure(ValueError("bad"), "out.csv") is None
    True
    """
    code = error.errno if isinstance(error, OSError) else None  # a WriteError of a file inside: named by the folder
    if code not in DISK_ERRNOS:
        text = str(error).lower()
        code = next((c for marker, c in _DISK_TEXTS.items() if marker in text), None)
        if code is None:
            return None
    return WriteError(path, code)


@contextmanager
def reporting_disk_errors(path: str | Path) -> Iterator[None]:
    """Turn a write the disk refuses inside the block into a `WriteError` naming ``path``.

    A full disk in the middle of a checkpoint otherwise ends a run with the writer's traceback
    (torch, safetensors, json), although nothing was lost; this says in one line what happened.
    """
    try:
        yield
    except Exception as e:
        failure = write_failure(e, path)
        if failure is None:
            raise
        raise failure from e


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """A stream whose file appears at ``path`` only when the block succeeds.

    For output written piece by piece (predictions over a large file); the whole-content
    writers below use it too. The file gets the mode a plain ``open()`` would give (0666
    less the umask), not mkstemp's private 0600, so reports and models stay readable by a
    web server or a group.
    """
    path = Path(path)
    with reporting_disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, file_mode())
            text = "b" not in mode
            with os.fdopen(fd, mode, encoding=encoding if text else None, newline="" if text else None) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """`atomic_write_bytes` for a JSON document (keys kept in insertion order)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def _normalise_modes(folder: Path) -> None:
    """Give everything under ``folder`` the umask's modes, whatever its writer chose (some
    libraries write through private temp files, which keep mkstemp's 0600)."""
    fmode, dmode = file_mode(), dir_mode()
    os.chmod(folder, dmode)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), dmode)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):  # an executable stays one: 0777 less the umask
                os.chmod(p, dmode if os.stat(p).st_mode & 0o111 else fmode)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it into place only when the block succeeds.

    Used for checkpoints: an interrupted save leaves the previous ``last/`` intact.
    The old folder is renamed aside first and deleted after the swap, so at every instant one
    complete version exists on disk. Files and folders inside get the umask's modes (0666 / 0777
    less the umask), like anything else goemo writes.
    """
    path = Path(path)
    with reporting_disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            _normalise_modes(tmp)  # also undoes mkdtemp's private 0700
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it, so a killed run keeps every event logged so far."""
    path = Path(path)
    with reporting_disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
