"""`goemo download` through the real Typer app: summary on success, one line and exit 1 on error."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from goemo.cli import app
from goemo.data.download import CHECKSUMS, sha256_file

runner = CliRunner()


def test_download_from_local_folder_then_again(shared_data: Path, tmp_path: Path) -> None:
    dest = tmp_path / "goemotions"
    first = runner.invoke(app, ["download", "--dest", str(dest), "--from", str(shared_data)])
    assert first.exit_code == 0, first.output
    assert "6 fetched, 0 already valid" in first.stdout
    assert all(sha256_file(dest / name) == digest for name, digest in CHECKSUMS.items())
    second = runner.invoke(app, ["download", "--dest", str(dest), "--from", str(shared_data)])
    assert second.exit_code == 0 and "0 fetched, 6 already valid" in second.stdout


def test_download_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(
        app, ["download", "--dest", str(tmp_path / "d"), "--from", f"http://127.0.0.1:{port}/", "--retries", "0"]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goemo: error: ")
    assert "--from" in lines[0]
    assert "Traceback" not in result.output


def test_download_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["download", "--dest", str(tmp_path / "d"), "--from", str(tmp_path / "absent")])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "no such folder" in result.stderr


def test_download_help_has_an_example() -> None:
    result = runner.invoke(app, ["download", "--help"])
    assert result.exit_code == 0
    assert "--from" in result.stdout and "Example: goemo download" in result.stdout
