"""The CLI's shared pieces: the console its tables are printed with is never cut to 80 columns
when stdout is a job's log file or a pipe, keeps the terminal's width on a terminal, and
honours ``$COLUMNS``."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import types
from typing import Any

import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.cli.common import LOG_WIDTH, make_console

COLS = ("f1_macro", "f1_macro_tuned", "f1_macro_xtuned", "f1_micro", "auc_score", "auc_micro", "val_loss")
SUMMARY: dict[str, Any] = {
    "run_dir": "runs/a-rather-long-run-folder-name-as-sweeps-write-them/trials/0007",
    "dev": dict.fromkeys(COLS, 0.51234),
    "test": dict.fromkeys(COLS, 0.49876),
    "threshold": 0.5,
    "best_epoch": 2,
    "select_metric": "f1_macro",
    "epochs": [{"examples_per_s": 812.0}],
    "resources": {
        "wall_time_s": 95.0,
        "peak_rss_mb": 2048.0,
        "time_to_save_s": 1.5,
        "precision": "bf16",
        "hardware": {"cpu": "Some CPU", "cpu_cores": 16, "gpus": ["NVIDIA H200"], "torch": "2.x", "cuda": "12.6"},
        "epoch_time_s": [47.0, 48.0],
        "gpu_memory": [{"device": 0, "name": "NVIDIA H200", "peak_allocated_mb": 3000.0, "peak_reserved_mb": 3500.0}],
    },
}


def test_goemo_train_summary_in_a_log_is_not_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """`goemo train`'s table, with stdout not a terminal (CliRunner): every column name whole."""
    monkeypatch.delenv("COLUMNS", raising=False)
    fake = types.ModuleType("goemo.training.loop")
    fake.train = lambda config: types.SimpleNamespace(is_main_process=True, summary=SUMMARY)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "goemo.training.loop", fake)
    result = CliRunner().invoke(app, ["train", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    for name in (*COLS, SUMMARY["run_dir"]):
        assert name in result.stdout, name
    assert "…" not in result.stdout
    # the same table on an 80-column console loses its names: what the wide console is for
    monkeypatch.setenv("COLUMNS", "80")
    narrow = CliRunner().invoke(app, ["train", "--epochs", "1"])
    assert narrow.exit_code == 0 and "…" in narrow.stdout


def _width_in_child(env: dict[str, str], stdout: int | None = subprocess.PIPE, **kw) -> subprocess.CompletedProcess:
    code = "from goemo.cli.common import make_console; import sys; print(make_console().width, file=sys.stderr)"
    return subprocess.run([sys.executable, "-c", code], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, **kw)


def test_a_pipe_gets_the_log_width_or_columns() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    assert _width_in_child(env).stderr.strip() == str(LOG_WIDTH)
    assert _width_in_child({**env, "COLUMNS": "132"}).stderr.strip() == "132"
    assert _width_in_child({**env, "COLUMNS": "junk"}).stderr.strip() == str(LOG_WIDTH)


def test_a_terminal_keeps_its_own_width() -> None:
    leader, follower = pty.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 97, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        result = _width_in_child(env, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "97"


def test_stderr_console_looks_at_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console(stderr=True)
    assert console.stderr and console.width == LOG_WIDTH  # pytest captures stderr: not a terminal


def test_a_disk_that_refuses_a_write_is_one_line_and_exit_1() -> None:
    """An OSError ENOSPC from a write outside goemo's own writers: one line naming the file; others stay tracebacks."""
    import errno

    from goemo.cli.common import command, sub_app

    group = sub_app("test commands")

    @command("full", group=group)
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "out/predictions.csv")

    @command("other", group=group)
    def other() -> None:
        raise OSError(errno.EACCES, "Permission denied", "out/predictions.csv")

    refused = CliRunner().invoke(group, ["full"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.splitlines() == [
        "goemo: error: out/predictions.csv: No space left on device; free some space or write elsewhere"
    ]
    assert isinstance(CliRunner().invoke(group, ["other"]).exception, PermissionError)  # not the disk: as it was
