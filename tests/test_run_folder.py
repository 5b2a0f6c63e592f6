"""The run folder: a damaged ``last/`` is named in one line, one run at a time holds the folder, what a
killed run left is tidied, a run that trained nothing does not block its rerun, and file modes follow
the umask."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.config import TrainConfig, save_config
from goemo.core.errors import ModelError, RunFolderError
from goemo.core.run_folder import (
    LOCK_FILE,
    STATE_FILE,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    RunFolder,
    RunLock,
    launched_as_main,
)

PY = sys.executable


def _args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-dir",
        str(data),
        "--model",
        "tiny-random-bert",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--max-train-samples",
        "100",
        "--max-eval-samples",
        "40",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--ema-decay",
        "0.9",
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
    ]


def _error_line(result) -> str:
    """The one ``goemo: error:`` line of a failed command, checked to come without a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # the CLI handled it
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("goemo: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _dead_pid() -> int:
    done = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


# ---------------------------------------------------------------- 1. a damaged last/ on --resume


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finished")
    result = CliRunner().invoke(app, _args(shared_data, root / "run", root / "cache"))
    assert result.exit_code == 0, result.output
    return root / "run", root / "cache"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign_weights(path: Path) -> None:
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 4)}, str(path))


CORRUPTIONS: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("state-truncated", "training_state.pt", _truncate, "truncated or not a goemo checkpoint"),
    ("state-missing", "training_state.pt", Path.unlink, "missing"),
    ("state-foreign", "training_state.pt", lambda p: torch.save({"x": 1}, p), "truncated or not a goemo checkpoint"),
    ("weights-truncated", "model.safetensors", _truncate, "truncated or not a goemo checkpoint"),
    ("weights-foreign", "model.safetensors", _foreign_weights, "does not fit this run's model or optimizer"),
    ("trainer-state-bad-json", "trainer_state.json", _truncate, "truncated or not JSON"),
    ("trainer-state-missing", "trainer_state.json", Path.unlink, "missing"),
    (
        "trainer-state-wrong-fields",
        "trainer_state.json",
        lambda p: p.write_text('{"epoch": "two"}'),
        "not a goemo trainer state",
    ),
    ("ema-missing", "ema.safetensors", Path.unlink, "missing, so the weight average cannot resume"),
    ("ema-truncated", "ema.safetensors", _truncate, "truncated or not a goemo checkpoint"),
    # Accelerate's files (save_state); load_state alone would skip a damaged RNG state and resume another run
    ("optimizer-truncated", "optimizer.bin", _truncate, "truncated or not a goemo checkpoint"),
    ("scheduler-missing", "scheduler.bin", Path.unlink, "missing"),
    ("rng-truncated", "random_states_0.pkl", _truncate, "truncated or not a goemo checkpoint"),
    (
        "state-of-an-older-goemo",
        "training_state.pt",
        lambda p: torch.save({"optimizer": {}, "scheduler": {}, "rng": []}, p),
        "written by an older goemo",
    ),
]


@pytest.mark.parametrize(("name", "file", "damage", "problem"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_damaged_last_folder_is_named_in_one_line(
    finished_run, tmp_path, shared_data, name, file, damage, problem
) -> None:
    source, cache = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    damage(run / "last" / file)
    result = CliRunner().invoke(app, _args(shared_data, run, cache, "--resume"))
    line = _error_line(result)
    assert f"{run / 'last' / file}: {problem}" in line, line
    assert line.endswith("remove last/ or use --overwrite"), line
    assert not (run / LOCK_FILE).exists()  # released on the way out


# ---------------------------------------------------------------- 2. one run at a time


def test_the_lock_names_its_holder_and_is_gone_after_release(tmp_path) -> None:
    lock = RunFolder(tmp_path).lock()
    with lock:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(RunFolderError, match=rf"{tmp_path} is in use by another goemo run \(pid {os.getpid()} on "):
            RunFolder(tmp_path).lock().acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunFolder(tmp_path).lock():  # free again
        pass


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path) -> None:
    holder = subprocess.Popen(
        [PY, "-c", "import sys; from goemo.core.run_folder import RunLock; RunLock(sys.argv[1]).acquire(); input()"]
        + [str(tmp_path / LOCK_FILE)],
        stdin=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not (tmp_path / LOCK_FILE).is_file() or not (tmp_path / LOCK_FILE).read_text():
        assert time.time() < deadline and holder.poll() is None
        time.sleep(0.05)
    with pytest.raises(RunFolderError, match=rf"pid {holder.pid} on "):
        RunLock(tmp_path / LOCK_FILE).acquire()
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK_FILE).is_file()  # the file stays, the lock went with its holder
    with RunLock(tmp_path / LOCK_FILE):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_check_free_refuses_a_held_lock_and_takes_and_writes_nothing(tmp_path) -> None:
    lock = RunLock(tmp_path / "run" / LOCK_FILE)
    lock.check_free()  # no folder, no lock file: free
    assert not (tmp_path / "run").exists()
    with RunFolder(tmp_path / "run").lock():
        with pytest.raises(RunFolderError, match=rf"is in use by another goemo run \(pid {os.getpid()} on "):
            lock.check_free()
    lock.check_free()  # released: free again
    with lock:  # and check_free took nothing: the lock is there to take
        pass


@pytest.mark.parametrize(
    ("variables", "main"),
    [({}, True), ({"RANK": "0"}, True), ({"RANK": "1"}, False), ({"PMI_RANK": "3"}, False)],
)
def test_the_main_process_is_known_from_the_launchers_environment(monkeypatch, variables, main) -> None:
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert launched_as_main() is main


def test_check_start_makes_preparations_refusals_reading_only(tmp_path) -> None:
    run = RunFolder(tmp_path / "run")
    config = TrainConfig(output=str(run.path))
    run.check_start(config)  # no folder yet
    with pytest.raises(RunFolderError, match="contradict"):
        run.check_start(config.replace(resume=True, overwrite=True))
    (run.path / "best").mkdir(parents=True)
    with pytest.raises(RunFolderError, match="already holds a run"):
        run.check_start(config)
    run.check_start(config.replace(overwrite=True))
    run.check_start(config.replace(resume=True))  # no checkpoint to compare with: prepare starts over
    assert sorted(p.name for p in run.path.iterdir()) == ["best"]  # nothing written


def test_goemo_train_refuses_a_folder_in_use_before_importing_torch(tmp_path) -> None:
    """The second run into a locked folder stops before its slow imports: here torch cannot even be imported."""
    run = tmp_path / "run"
    script = "import sys; sys.modules['torch'] = None; from goemo.cli import main; sys.argv = ['goemo', *sys.argv[1:]]; main()"
    with RunFolder(run).lock():
        done = subprocess.run(
            [PY, "-c", script, "train", "--output", str(run), "--model", "tiny-random-bert"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"goemo: error: {run} is in use by another goemo run (pid {os.getpid()} on {socket.gethostname()}); "
        "wait for it to finish or choose another --output"
    ]


# Imports goemo's training code, says "ready", then waits for a line before running the command
# line it was given: two runs can then be started within a fraction of a second of each other.
_WARM = (
    "import sys; import goemo.training.loop; from goemo.cli import main;"
    "print('ready', flush=True); sys.stdin.readline(); sys.argv = ['goemo', *sys.argv[1:]]; main()"
)


@pytest.mark.slow
def test_a_second_run_on_a_locked_folder_stops_at_once(tmp_path, shared_data) -> None:
    run = tmp_path / "run"
    argv = _args(shared_data, run, tmp_path / "cache", "--resume", "--epochs", "2", "--max-train-samples", "300")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a, b = (
        subprocess.Popen(
            [PY, "-c", _WARM, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    )
    for p in (a, b):
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    assert a.stdin is not None and b.stdin is not None
    a.stdin.write("go\n")
    a.stdin.flush()
    deadline = time.time() + 120
    while True:  # until the first run holds the folder
        try:
            if json.loads((run / LOCK_FILE).read_text())["pid"] == a.pid:
                break
        except (OSError, ValueError):
            pass
        assert time.time() < deadline and a.poll() is None, a.communicate()[1][-3000:]
        time.sleep(0.01)
    b.stdin.write("go\n")
    b.stdin.flush()
    _, b_err = b.communicate(timeout=300)
    _, a_err = a.communicate(timeout=300)
    assert a.returncode == 0, a_err[-3000:]
    assert b.returncode == 1, b_err[-3000:]
    (line,) = [x for x in b_err.splitlines() if x.startswith("goemo: error:")]
    assert f"{run} is in use by another goemo run (pid {a.pid} on " in line and "Traceback" not in b_err
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["event"], r["epoch"], r["global_step"]) for r in records]
    assert len(keys) == len(set(keys))  # every record once
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert not (run / LOCK_FILE).exists()


# ---------------------------------------------------------------- 3. what killed writers left


def test_prepare_removes_what_killed_writers_left(tmp_path) -> None:
    dead, me = _dead_pid(), os.getpid()
    run = RunFolder(tmp_path / "run")
    (run.path / "best" / "predictions").mkdir(parents=True)
    (run.last_dir).mkdir()
    for name in ("training_state.pt", "model.safetensors", "trainer_state.json"):
        (run.last_dir / name).write_text("{}")
    stale = [
        run.path / f".last.{dead}.a1b2c3.tmp",  # an interrupted checkpoint (a folder)
        run.path / f".best.{dead}.a1b2c3.tmp",
        run.path / ".last.old",
        run.path / f".summary.json.{dead}.zz9_00.tmp",
        run.path / "best" / "predictions" / f".dev-1.npz.{dead}.qqqqqq.tmp",
    ]
    for p in stale[:3]:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"\0" * 100)
    for p in stale[3:]:
        p.write_text("half")
    live = run.path / f".summary.json.{me}.abcdef.tmp"
    live.write_text("being written")
    assert run.prepare(TrainConfig(output=str(run.path), resume=True)) == run.last_dir
    assert not any(p.exists() for p in stale) and live.exists()


# ---------------------------------------------------------------- 4. a run that trained nothing


@pytest.mark.parametrize(
    ("leftovers", "occupied"),
    [
        ({"config.yaml": "lr: 1\n"}, False),
        (
            {"config.yaml": "", "metrics.jsonl": '{"event": "step", "epoch": 1, "global_step": 3}\n{"ev', ".lock": ""},
            False,
        ),
        ({"config.yaml": "", "metrics.jsonl": '{"event": "epoch", "epoch": 1, "global_step": 3}\n'}, True),
        ({"config.yaml": "", "best/goemo.json": "{}"}, True),
        ({"config.yaml": "", "last/trainer_state.json": "{}"}, True),
        ({"notes.txt": "mine"}, True),
    ],
)
def test_only_a_trained_run_occupies_its_folder(tmp_path, leftovers, occupied) -> None:
    run = RunFolder(tmp_path / "run")
    for name, text in leftovers.items():
        (run.path / name).parent.mkdir(parents=True, exist_ok=True)
        (run.path / name).write_text(text)
    assert run.is_occupied() is occupied
    if occupied:
        with pytest.raises(RunFolderError, match="already holds a run"):
            run.prepare(TrainConfig(output=str(run.path)))
    else:
        assert run.prepare(TrainConfig(output=str(run.path))) is None
        assert not run.metrics_path.exists()  # the failed attempt's records go; the new run writes its own


def test_other_processes_follow_the_main_process_decision(tmp_path) -> None:
    """With several processes the main one prepares first and then writes the new run's files;
    another process checking the folder after it must not take them for another run (a race
    that failed the two-process test under load)."""
    run = RunFolder(tmp_path / "run")
    (run.path / "best").mkdir(parents=True)
    (run.path / "best" / "goemo.json").write_text("{}")  # what the main process may be writing already
    assert run.prepare(TrainConfig(output=str(run.path)), is_main=False) is None
    assert run.prepare(TrainConfig(output=str(run.path), resume=True), is_main=False) is None  # no checkpoint
    run.last_dir.mkdir()
    for name in (WEIGHTS_FILE, STATE_FILE, TRAINER_STATE_FILE):
        (run.last_dir / name).write_text("{}")
    assert run.prepare(TrainConfig(output=str(run.path), resume=True), is_main=False) == run.last_dir
    assert (run.path / "best" / "goemo.json").exists()  # only the main process tidies


RESTART = "previous attempt stopped before its first checkpoint; starting again"


def test_starting_over_an_untrained_attempt_says_so_and_names_changed_settings(tmp_path, caplog) -> None:
    run = RunFolder(tmp_path / "run")
    first = TrainConfig(output=str(run.path), lr=2e-5)
    with caplog.at_level("INFO", logger="goemo.core.run_folder"):
        assert run.prepare(first) is None  # a new folder: nothing to say
        assert caplog.messages == []
        save_config(first, run.config_path)  # what a start that failed next leaves
        assert run.prepare(first) is None  # the same command, resubmitted
        assert caplog.messages == [f"{run.path}: {RESTART}"]
        caplog.clear()
        assert run.prepare(TrainConfig(output=str(run.path), lr=3e-5, num_threads=2)) is None
        # another config is fine (nothing was trained), but named; resumable fields such as threads are not
        assert caplog.messages == [f"{run.path}: {RESTART} with other settings (lr: 2e-05 -> 3e-05)"]
        caplog.clear()
        run.config_path.write_text("{{not yaml", encoding="utf-8")
        assert run.prepare(first) is None  # an unreadable config of an attempt that trained nothing
        assert caplog.messages == [f"{run.path}: {RESTART}"]


def _small_data(root: Path, shared_data: Path) -> Path:
    root.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (root / name).write_text("".join((shared_data / name).read_text(encoding="utf-8").splitlines(True)[:200]))
    for name in ("emotions.txt", "ekman_mapping.json", "sentiment_dict.json"):
        shutil.copy(shared_data / name, root / name)
    return root


def test_a_run_refused_before_its_first_step_writes_nothing(tmp_path, shared_data, monkeypatch) -> None:
    """Bad data, a model never fetched, a max length the encoder cannot take: refused before the folder is touched."""
    data = _small_data(tmp_path / "data", shared_data)
    good = (data / "train.tsv").read_text(encoding="utf-8")
    (data / "train.tsv").write_text(good + "a bad line\t99\tzzz\n", encoding="utf-8")
    args = _args(data, tmp_path / "run", tmp_path / "cache")
    assert "train.tsv" in _error_line(CliRunner().invoke(app, args))  # bad data
    (data / "train.tsv").write_text(good, encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "fetch-model" in _error_line(CliRunner().invoke(app, [*args, "--model", "bert-base-cased"]))
    too_long = _error_line(CliRunner().invoke(app, [*args, "--max-length", "4000"]))
    assert too_long == (
        "goemo: error: max_length=4000: tiny-random-bert takes at most 512 tokens "
        "(its config.json max_position_embeddings 512); give --max-length 512 or less"
    )
    assert not (tmp_path / "run").exists()


def test_a_run_that_failed_before_its_first_checkpoint_can_be_rerun(tmp_path, shared_data, monkeypatch) -> None:
    import goemo.training.loop

    data = _small_data(tmp_path / "data", shared_data)
    args = _args(data, tmp_path / "run", tmp_path / "cache")

    def out_of_memory(*args, **kwargs):
        raise ModelError("the model does not fit in memory")  # fails after the folder was prepared

    with monkeypatch.context() as m:
        m.setattr(goemo.training.loop, "build_model", out_of_memory)
        assert "fit in memory" in _error_line(CliRunner().invoke(app, [*args, "--seed", "7"]))
        assert (tmp_path / "run" / "config.yaml").is_file()
        same = CliRunner().invoke(app, [*args, "--seed", "7"])  # the job resubmitted as it was
        assert "fit in memory" in _error_line(same)  # refused for the model, not the folder
        assert f"{RESTART}\n" in same.stderr and "other settings" not in same.stderr
    result = CliRunner().invoke(app, args)  # the fixed command, no --overwrite needed
    assert result.exit_code == 0, result.output
    assert f"{RESTART} with other settings (seed: 7 -> 42)" in result.stderr
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    again = CliRunner().invoke(app, args)  # now it holds a trained run
    assert "already holds a run" in _error_line(again)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_what_was_written(
    tmp_path, shared_data, monkeypatch
) -> None:
    """It was the writer's ~60-line traceback; the run folder was safe all along (atomic checkpoints)."""
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)  # last/training_state.pt, after best/ was written
    run = tmp_path / "run"
    result = CliRunner().invoke(app, _args(shared_data, run, tmp_path / "cache"))
    assert _error_line(result) == (
        f"goemo: error: cannot write {run / 'last'}: No space left on device (what was written before is intact); "
        "free some space or write elsewhere"
    )
    assert not (run / "last").exists() and (run / "best" / WEIGHTS_FILE).is_file()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # no half checkpoint left


# ---------------------------------------------------------------- 5. modes


def test_everything_a_run_writes_follows_the_umask(tmp_path, shared_data) -> None:
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, _args(shared_data, tmp_path / "run", tmp_path / "cache", "--save-every", "3"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert (run / "last" / "training_state.pt").is_file() and (run / "best" / "model.safetensors").is_file()
    wrong = {
        str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in [run, *run.rglob("*")]
        if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)
    }
    assert not wrong
