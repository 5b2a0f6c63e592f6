"""`goemo push`: what --dry-run lists, the folders it refuses, the offline failure, the Hub calls made."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import goemo.models.hub as hub
from goemo.cli import app
from goemo.core.errors import ConfigError, ModelError

PY = sys.executable
TOKEN = "hf_goemoTestTokenThatMustNeverBePrinted"


@pytest.fixture()
def folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of a trained best/, plus what must not be uploaded: resume state, hidden files, caches."""
    out = tmp_path / "run" / "best"
    shutil.copytree(tiny_model_dir, out)
    (out / "training_state.pt").write_bytes(b"optimizer")
    (out / "trainer_state.json").write_text("{}")
    (out / ".lock").write_text("")
    (out / "__pycache__").mkdir()
    (out / "__pycache__" / "modeling_goemo.cpython-311.pyc").write_bytes(b"x")
    return out


def _expected(folder: Path) -> list[tuple[str, int]]:
    keep = {"README.md", "config.json", "goemo.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.name in keep)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dry_run_lists_exactly_the_files_and_uploads_nothing(folder: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub, "HfApi", None)  # any use of the Hub client would fail
    result = CliRunner().invoke(app, ["push", str(folder), "me/goemo-tiny", "--private", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"dry run: would push {folder} to me/goemo-tiny (private, revision main) on https://huggingface.co; "
        "token: found"
    )
    files = [line.strip().rsplit("  ", 1) for line in lines[1:-1]]
    assert [(path, int(size.removesuffix(" bytes"))) for path, size in files] == _expected(folder)
    assert lines[-1].startswith(f"{len(files)} files, ") and lines[-1].endswith("nothing uploaded")
    assert TOKEN not in result.output


def test_what_only_resuming_needs_is_not_pushed(folder: Path) -> None:
    """Accelerate's state files in last/ (optimizer, scheduler, gradient scaler, RNG of each process)."""
    for name in ("optimizer.bin", "scheduler.bin", "scaler.pt", "random_states_0.pkl", "random_states_1.pkl"):
        (folder / name).write_bytes(b"state")
    assert [(f.path, f.size) for f in hub.files_to_push(folder)] == _expected(folder)


def test_dry_run_says_when_no_token_is_found(folder: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    cmd = [PY, "-m", "goemo", "push", str(folder), "me/x", "--revision", "v1", "--dry-run"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "(public, revision v1)" in done.stdout and "token: not found (set HF_TOKEN" in done.stdout


def test_refuses_what_is_not_a_model_folder(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    plain = tmp_path / "notes"
    plain.mkdir()
    (plain / "notes.txt").write_text("hello")
    for target, needle in (
        (plain, "not a model folder"),
        (tmp_path / "missing", "no such model folder"),
    ):
        result = runner.invoke(app, ["push", str(target), "me/x", "--dry-run"])
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("goemo: error: ") and needle in result.stderr
    (folder / "README.md").unlink()
    result = runner.invoke(app, ["push", str(folder), "me/x", "--dry-run"])
    assert result.exit_code == 1 and "no README.md" in result.stderr and result.stderr.count("\n") == 1
    with pytest.raises(ModelError, match="no config.json"):
        shutil.copy(folder / "goemo.json", folder / "README.md")
        (folder / "config.json").unlink()
        hub.push_model(folder, "me/x", dry_run=True)
    with pytest.raises(ConfigError, match="repo id"):
        hub.push_model(folder, "not a/valid/repo id", dry_run=True)


def test_offline_push_fails_in_one_line_without_the_token(folder: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_TOKEN": TOKEN}
    env.pop("HF_HUB_OFFLINE", None)
    cmd = [PY, "-m", "goemo", "push", str(folder), "me/goemo-tiny"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("goemo: error: cannot reach the Hugging Face Hub at http://127.0.0.1:")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_push_without_a_token_stops_before_the_network(folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub, "get_token", lambda: None)
    monkeypatch.setattr(hub, "HfApi", None)
    with pytest.raises(hub.HubError, match="no Hugging Face token found: set HF_TOKEN"):
        hub.push_model(folder, "me/x")


def test_push_creates_the_repo_and_uploads_the_listed_files(folder: Path, monkeypatch) -> None:
    calls: list[tuple[str, dict]] = []

    class FakeApi:
        def __init__(self, endpoint: str) -> None:
            calls.append(("init", {"endpoint": endpoint}))

        def create_repo(self, repo_id: str, **kw):
            calls.append(("create_repo", {"repo_id": repo_id, **kw}))

        def create_branch(self, repo_id: str, **kw):
            calls.append(("create_branch", {"repo_id": repo_id, **kw}))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return type("Commit", (), {"commit_url": "https://hub.test/me/x/commit/abc"})()

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub, "get_token", lambda: TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    result = CliRunner().invoke(
        app, ["push", str(folder), "me/x", "--private", "--revision", "v1", "--commit-message", "first"]
    )
    assert result.exit_code == 0, result.output
    assert "commit: https://hub.test/me/x/commit/abc" in result.stdout and TOKEN not in result.output
    names = [name for name, _ in calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    assert calls[1][1] == {"repo_id": "me/x", "private": True, "exist_ok": True}
    assert calls[2][1] == {"repo_id": "me/x", "branch": "v1", "exist_ok": True}
    upload = calls[3][1]
    assert upload["repo_id"] == "me/x" and upload["revision"] == "v1" and upload["commit_message"] == "first"
    assert Path(upload["folder_path"]) == folder
    assert sorted(upload["allow_patterns"]) == [name for name, _ in _expected(folder)]
