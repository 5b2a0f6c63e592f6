import errno
import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from goemo.core.errors import WriteError
from goemo.core.fileio import (
    append_jsonl,
    atomic_directory,
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    pid_alive,
    remove_stale_temps,
)


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path) -> None:
    target = tmp_path / "a" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temp files left


def test_failed_directory_build_keeps_the_old_one(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    with atomic_directory(folder) as tmp:
        (tmp / "w").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_directory(folder) as tmp:
            (tmp / "w").write_text("half")
            raise RuntimeError("killed mid-save")
    assert (folder / "w").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_json_and_jsonl(tmp_path) -> None:
    atomic_write_json(tmp_path / "x.json", {"é": 1})
    assert (tmp_path / "x.json").read_text(encoding="utf-8").strip() == '{\n  "é": 1\n}'
    append_jsonl(tmp_path / "m.jsonl", {"a": 1})
    append_jsonl(tmp_path / "m.jsonl", {"a": 2})
    assert (tmp_path / "m.jsonl").read_text().splitlines() == ['{"a": 1}', '{"a": 2}']


# ---------------------------------------------------------------- what a killed writer leaves behind


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_temp_names_carry_the_writers_pid(tmp_path) -> None:
    target = tmp_path / "out.csv"
    with atomic_open(target) as f:
        f.write("a")
        (temp,) = [p.name for p in tmp_path.iterdir()]
    assert re.fullmatch(rf"\.out\.csv\.{os.getpid()}\.[a-z0-9_]+\.tmp", temp)
    with atomic_directory(tmp_path / "last") as tmp:
        assert re.fullmatch(rf"\.last\.{os.getpid()}\.[a-z0-9_]+\.tmp", tmp.name)


def test_remove_stale_temps_takes_only_what_dead_writers_left(tmp_path) -> None:
    dead, me = _dead_pid(), os.getpid()
    target = tmp_path / "out.csv"
    (tmp_path / f".out.csv.{dead}.k2j4_x.tmp").write_text("half")  # predict --output, killed
    (tmp_path / f".out.csv.{me}.abcdef.tmp").write_text("being written")  # a live writer
    (tmp_path / f".other.csv.{dead}.abcdef.tmp").write_text("another file's")
    (tmp_path / ".out.csv.notes").write_text("not a temp")
    removed = remove_stale_temps(target)
    assert removed == [tmp_path / f".out.csv.{dead}.k2j4_x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".out.csv.{me}.abcdef.tmp", f".other.csv.{dead}.abcdef.tmp", ".out.csv.notes"]
    )
    assert remove_stale_temps(tmp_path / "missing" / "x") == []


def test_writers_clear_stale_temps_of_their_target_first(tmp_path) -> None:
    dead = _dead_pid()
    (tmp_path / f".f.txt.{dead}.aaaaaa.tmp").write_text("half")
    (tmp_path / f".last.{dead}.bbbbbb.tmp").mkdir()
    (tmp_path / f".last.{dead}.bbbbbb.tmp" / "model.safetensors").write_bytes(b"\0" * 10)
    atomic_write_text(tmp_path / "f.txt", "whole")
    with atomic_directory(tmp_path / "last") as tmp:
        (tmp / "w").write_text("v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "last"]


def test_a_folder_moved_aside_by_a_killed_swap_is_put_back_or_dropped(tmp_path) -> None:
    dead = _dead_pid()
    # killed between moving last/ aside and moving the new one in: the old one comes back
    old = tmp_path / f".last.{dead}.old"
    old.mkdir()
    (old / "w").write_text("v1")
    (tmp_path / f".last.{dead}.cccccc.tmp").mkdir()
    remove_stale_temps(tmp_path / "last")
    assert (tmp_path / "last" / "w").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # killed after the swap, before deleting the old one (also goemo's older, pid-less name)
    for name in (f".last.{dead}.old", ".last.old"):
        (tmp_path / name).mkdir()
        assert remove_stale_temps(tmp_path / "last") == [tmp_path / name]
        assert (tmp_path / "last" / "w").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_an_unreaped_child_counts_as_dead(tmp_path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while pid_alive(child.pid) and time.time() < deadline:  # a zombie once it exits: not alive
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    (tmp_path / f".x.{child.pid}.aaaaaa.tmp").write_text("")
    assert remove_stale_temps(tmp_path / "x") == [tmp_path / f".x.{child.pid}.aaaaaa.tmp"]
    child.wait()
    assert pid_alive(os.getpid())


def test_a_folder_gets_the_umask_modes_whatever_its_writers_chose(tmp_path) -> None:
    """safetensors writes model files 0600; a mkdtemp inside stays 0700: all become the umask's."""
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "best") as tmp:
            os.close(os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600))
            (tmp / "sub").mkdir(mode=0o700)
            os.close(os.open(tmp / "sub" / "run.sh", os.O_WRONLY | os.O_CREAT, 0o700))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "best", *(tmp_path / "best").rglob("*")]}
    assert modes == {"best": 0o750, "model.safetensors": 0o640, "sub": 0o750, "run.sh": 0o750}


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_naming_the_target_and_the_old_version_stays(tmp_path, monkeypatch) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1})
    folder = tmp_path / "last"
    with atomic_directory(folder) as tmp:
        (tmp / "w").write_text("old")
    monkeypatch.setattr(os, "fsync", _full_disk)  # the data reaches the disk at fsync
    with pytest.raises(WriteError) as refused:
        atomic_write_json(target, {"v": 2})
    assert str(refused.value) == (
        f"cannot write {target}: No space left on device (what was written before is intact); "
        "free some space or write elsewhere"
    )
    assert isinstance(refused.value, OSError) and refused.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"v": 1}
    with pytest.raises(WriteError, match=rf"^cannot write {folder}: No space left on device"):
        with atomic_directory(folder) as tmp:
            atomic_write_json(tmp / "state.json", {})  # a file inside: the folder is named
    assert (folder / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "last"]  # no temps left


def test_library_writers_that_say_so_in_words_and_other_errors(tmp_path) -> None:
    class SafetensorError(Exception):  # safetensors' Rust writer raises its own type
        pass

    with pytest.raises(WriteError, match="No space left on device"):
        with atomic_directory(tmp_path / "best"):
            raise SafetensorError('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    with pytest.raises(
        WriteError, match=r"Read-only file system \(what was written before is intact\); write elsewhere$"
    ):
        with atomic_open(tmp_path / "x.txt"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(OSError) as other:  # not the disk's doing: left as it is
        with atomic_open(tmp_path / "x.txt"):
            raise OSError(errno.EACCES, "Permission denied")
    assert not isinstance(other.value, WriteError)


def test_a_full_disk_when_appending_a_record(tmp_path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"a": 1})

    class FullFile:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        write = flush = _full_disk

    monkeypatch.setattr("goemo.core.fileio.open", lambda *a, **k: FullFile(), raising=False)
    with pytest.raises(WriteError, match=rf"^cannot write {path}: No space left on device"):
        append_jsonl(path, {"a": 2})
