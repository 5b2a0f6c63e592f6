import os
import stat

import pytest

from goemo.core.fileio import append_jsonl, atomic_directory, atomic_write_json, atomic_write_text


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
