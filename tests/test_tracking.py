"""Trackers: names and checks, TensorBoard / MLflow / W&B (offline) logs read back after a real run, and
what goemo adds to Accelerate's trackers (a failing one is dropped, sweep trials grouped, failed runs marked),
``--watch`` (histograms and per-group numbers) and ``--select-metric auc_score``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.tracking import GeneralTracker
from torch import nn

from goemo.core.errors import ConfigError
from goemo.training.grad_stats import grad_norms, watch_stats
from goemo.training.tracking import (
    GoemoTracker,
    build_trackers,
    check_trackers,
    close_trackers,
    metric_items,
    mlflow_uri,
    sweep_folder,
)

EPOCH_KEYS = ("train_loss", "val_loss", "auc_micro", "auc_macro", "auc_score", "f1_micro", "f1_macro", "lr")
WATCH_STEPS = [3, 4, 6, 8]  # 4 steps an epoch, 2 epochs, --watch-every 3: steps 3 and 6, and each epoch's last


def test_metric_names_are_the_same_for_every_tracker():
    assert metric_items(
        {"event": "epoch", "epoch": 2, "global_step": 8, "val_loss": 0.5, "f1_macro": 0.1, "best": True}
    ) == {
        "epoch": 2.0,
        "val_loss": 0.5,
        "f1_macro": 0.1,
    }
    assert metric_items({"event": "step", "epoch": 1, "global_step": 3, "train_loss": 0.7, "lr": 1e-3}) == {
        "step/train_loss": 0.7,
        "step/lr": 1e-3,
    }
    assert metric_items({"event": "grad_norms", "epoch": 1, "global_step": 3, "grad_norm/head": 0.2}) == {
        "grad_norm/head": 0.2
    }
    assert metric_items({"event": "resume", "epoch": 1, "global_step": 3}) == {}


def test_unknown_and_missing_trackers_fail_fast_with_the_extra_to_install(monkeypatch):
    assert check_trackers(["jsonl", "JSONL"]) == []
    with pytest.raises(
        ConfigError, match="unknown tracker 'neptune' \\(available: jsonl, tensorboard, mlflow, wandb\\)"
    ):
        check_trackers(["neptune"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracker 'mlflow' needs the mlflow package: pip install 'goemo\[track\]'"):
        check_trackers(["mlflow"])


def test_mlflow_store_is_beside_the_run_or_in_its_sweep(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(tmp_path / "runs" / "a") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    sweep = tmp_path / "sweeps" / "s"
    (sweep / "trials" / "3").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("method: grid\n")
    assert sweep_folder(sweep / "trials" / "3") == sweep
    assert mlflow_uri(sweep / "trials" / "3") == f"sqlite:///{sweep / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow_uri(tmp_path / "runs" / "a") == "http://mlflow.example:5000"


@pytest.fixture(scope="module")
def tracked_run(shared_data, tmp_path_factory):
    """One tiny training run with all three trackers (W&B offline), ``--watch all`` and ``--select-metric auc_score``."""
    for package in ("tensorboard", "mlflow", "wandb"):
        pytest.importorskip(package, reason="the track extra is not installed: pip install 'goemo[track]'")
    from goemo.core.config import TrainConfig
    from goemo.training.loop import train

    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        config = TrainConfig(
            data_dir=str(shared_data),
            model="tiny-random-bert",
            epochs=2,
            lr=1e-3,
            batch_size=16,
            max_length=32,
            max_train_samples=64,
            max_eval_samples=64,
            output=str(root / "runs" / "tracked"),
            cache_dir=str(root / "cache"),
            log_every=2,
            watch="all",
            watch_every=3,
            select_metric="auc_score",
            precision="fp32",
            eval_test=False,
            trackers=["jsonl", "tensorboard", "mlflow", "wandb"],
        )
        result = train(config)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return result, records


def _epochs(records):
    return [r for r in records if r["event"] == "epoch"]


def test_tensorboard_event_files_hold_the_logged_values(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, records = tracked_run
    acc = EventAccumulator(str(result.run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {*EPOCH_KEYS, "step/train_loss", "step/lr", "grad_norm/head", "grad_norm/embeddings", "dev/f1_macro"} <= tags
    epochs = _epochs(records)
    assert len(epochs) == 2
    for key in EPOCH_KEYS:
        logged = [(s.step, s.value) for s in acc.Scalars(key)]
        assert [step for step, _ in logged] == [r["global_step"] for r in epochs]
        assert [v for _, v in logged] == pytest.approx([r[key] for r in epochs], rel=1e-5)
    grads = [r for r in records if r["event"] == "grad_norms"]
    assert [s.value for s in acc.Scalars("grad_norm/head")] == pytest.approx(
        [r["grad_norm/head"] for r in grads], rel=1e-5
    )
    assert acc.Scalars("dev/f1_macro")[0].value == pytest.approx(result.summary["dev"]["f1_macro"], rel=1e-5)


def test_mlflow_run_holds_the_logged_values(tracked_run):
    from mlflow.tracking import MlflowClient

    result, records = tracked_run
    store = result.run_dir.parent / "mlflow.db"
    assert store.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("goemo").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["trackers"] == "jsonl,tensorboard,mlflow,wandb"
    epochs = _epochs(records)
    for key in EPOCH_KEYS:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [r["global_step"] for r in epochs]
        assert [m.value for m in history] == pytest.approx([r[key] for r in epochs])
    assert run.data.metrics["dev/auc_macro"] == pytest.approx(result.summary["dev"]["auc_macro"])
    assert not (Path.cwd() / "mlruns").exists()


def _wandb_records(path: Path):
    """Records of a W&B offline run file: LevelDB-log framing (32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full/first start a record; middle/last extend it
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def test_wandb_offline_writes_a_run_with_the_logged_values(tracked_run):
    result, records = tracked_run
    run_files = list((result.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    history, exit_code, name = [], None, None
    for record in _wandb_records(run_files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "run":
            name = record.run.display_name
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert name == "tracked" and exit_code == 0
    epoch_rows = [h for h in history if "val_loss" in h]
    epochs = _epochs(records)
    assert [h["_step"] for h in epoch_rows] == [r["global_step"] for r in epochs]
    for key in EPOCH_KEYS:
        assert [h[key] for h in epoch_rows] == pytest.approx([r[key] for r in epochs])
    assert any("grad_norm/layer_0" in h for h in history)
    # --watch all: a wandb.Histogram per parameter tensor at each grad_norms step, logged to this run
    # (a histogram's fields are stored as nested keys: gradients/<name>/_type, …/bins, …/values)
    head = "gradients/classifier.weight"
    rows = [h for h in history if f"{head}/_type" in h]
    assert [h["_step"] for h in rows] == WATCH_STEPS
    assert all(h[f"{head}/_type"] == "histogram" and len(h[f"{head}/bins"]) == 65 for h in rows)
    assert all(h["parameters/bert.embeddings.word_embeddings.weight/_type"] == "histogram" for h in rows)


# ---------------------------------------------------------------- what goemo adds to Accelerate's trackers


class _Flaky(GeneralTracker):
    """A tracker whose backend fails at ``fail_at`` ("start", "log" or None)."""

    name = "flaky"
    requires_logging_directory = False

    def __init__(self, fail_at=None):
        super().__init__()
        self.fail_at, self.logged, self.config, self.finished = fail_at, [], None, False

    @property
    def tracker(self):
        return self

    def start(self):
        if self.fail_at == "start":
            raise ImportError("No module named 'flaky_backend'")

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        if self.fail_at == "log":
            raise ConnectionError("the tracking server went away")
        self.logged.append((values, step))

    def finish(self):
        self.finished = True


def test_a_failing_tracker_is_dropped_with_one_warning_and_the_others_go_on(caplog):
    """Through Accelerate's own interface: ``Accelerator(log_with=...)``, ``init_trackers``, ``log``."""
    from goemo.core.config import TrainConfig
    from goemo.training.accelerator import make_accelerator

    good, bad_log, bad_start = GoemoTracker(_Flaky()), GoemoTracker(_Flaky("log")), GoemoTracker(_Flaky("start"))
    accelerator = make_accelerator(TrainConfig(device="cpu", precision="fp32"), [bad_start, bad_log, good])
    with caplog.at_level("WARNING", logger="goemo.training.tracking"):
        accelerator.init_trackers("goemo", config={"lr": 1e-3, "trackers": ["jsonl", "wandb"]})
        accelerator.log({"event": "epoch", "epoch": 1, "global_step": 4, "val_loss": 0.5, "best": True})
        accelerator.log({"event": "epoch", "epoch": 2, "global_step": 8, "val_loss": 0.4, "best": True})
        accelerator.log({"event": "summary", "dev/f1_macro": 0.3})
        assert accelerator.get_tracker("flaky") is bad_start  # Accelerate's look-up finds goemo's wrapper
        close_trackers(accelerator.trackers)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # one line per broken tracker, however many events follow
    assert "flaky tracker failed to start and is dropped" in warnings[0] and "flaky_backend" in warnings[0]
    assert "flaky tracker failed to log and is dropped" in warnings[1] and "went away" in warnings[1]
    # the healthy tracker got every event, under goemo's names, at the event's step (the summary at the last one)
    assert good.inner.logged == [
        ({"epoch": 1.0, "val_loss": 0.5}, 4),
        ({"epoch": 2.0, "val_loss": 0.4}, 8),
        ({"dev/f1_macro": 0.3}, 8),
    ]
    assert good.inner.config == {"lr": "0.001", "trackers": "jsonl,wandb"} and good.inner.finished
    assert not bad_start.inner.finished  # never started, so never finished


def test_a_tracker_failing_in_a_real_run_never_stops_training(tiny_config, monkeypatch, caplog):
    pytest.importorskip("tensorboard", reason="the track extra is not installed: pip install 'goemo[track]'")
    import accelerate.tracking

    from goemo.training.loop import train

    def broken(self, values, step=None, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(accelerate.tracking.TensorBoardTracker, "log", broken)
    config = tiny_config.replace(
        epochs=2, max_train_samples=100, max_eval_samples=50, log_every=2, trackers=["jsonl", "tensorboard"]
    )
    with caplog.at_level("WARNING", logger="goemo.training.tracking"):
        result = train(config)
    warnings = [r.getMessage() for r in caplog.records if r.name == "goemo.training.tracking"]
    assert len(warnings) == 1 and "tensorboard tracker failed to log" in warnings[0], warnings
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in _epochs(records)] == [1, 2]  # metrics.jsonl, goemo's own tracker, is complete
    assert (result.best_dir / "model.safetensors").is_file() and "dev" in result.summary


def test_unknown_tracker_fails_before_the_run_folder_is_touched(tiny_config):
    from goemo.training.loop import train

    with pytest.raises(ConfigError, match="unknown tracker 'neptune'"):
        train(tiny_config.replace(trackers=["jsonl", "neptune"]))
    assert not Path(tiny_config.output).exists()


def test_sweep_trials_group_under_the_sweep_and_a_failed_trial_is_marked_failed(tmp_path, monkeypatch):
    """What the sweep runner does, without an Accelerator: `build_trackers`, ``log(record)``, `close_trackers`."""
    for package in ("mlflow", "wandb"):
        pytest.importorskip(package, reason="the track extra is not installed: pip install 'goemo[track]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweeps" / "s"
    trial = sweep / "trials" / "3"
    trial.mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("method: grid\n")
    (sweep / "sweep.json").write_text(json.dumps({"study": "lr-grid"}))

    trackers = build_trackers(["jsonl", "mlflow", "wandb"], trial, {"lr": 0.001, "teachers": []})
    assert [t.name for t in trackers] == ["mlflow", "wandb"]
    for tracker in trackers:
        tracker.log({"event": "epoch", "epoch": 1, "global_step": 5, "val_loss": 0.25})
    close_trackers(trackers, failed=True)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the next run in this process picks its own store

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lr-grid").experiment_id])
    assert run.info.run_name == "trial-3" and run.info.status == "FAILED"
    assert run.data.tags["goemo.run_dir"] == str(trial.resolve())
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == [(5, 0.25)]
    assert not (Path.cwd() / "mlruns").exists()

    (run_file,) = (trial / "wandb").glob("offline-run-*/run-*.wandb")
    runs = [r.run for r in _wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
    exits = [r.exit.exit_code for r in _wandb_records(run_file) if r.WhichOneof("record_type") == "exit"]
    assert (runs[0].display_name, runs[0].run_group, exits) == ("trial-3", "lr-grid", [1])


def test_stats_logs_its_table_to_wandb_alone_in_a_fresh_process(shared_data, tmp_path):
    """``goemo stats --tracker wandb`` as docs/coming-from-wandb-report.md writes it: W&B alone, no Accelerator.

    A fresh process, so no earlier test's Accelerate state hides a tracker that needs it.
    """
    pytest.importorskip("wandb", reason="the track extra is not installed: pip install 'goemo[track]'")
    out = tmp_path / "data-analysis"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = ["stats", "--data-dir", str(shared_data), "--out", str(out), "--no-tokens", "--tracker", "wandb"]
    done = subprocess.run(
        [sys.executable, "-m", "goemo", *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "tracker failed" not in done.stderr and "logged to wandb" in done.stdout + done.stderr, done.stderr
    (table_file,) = out.glob("wandb/offline-run-*/files/media/table/data_sample_*.table.json")
    table = json.loads(table_file.read_text(encoding="utf-8"))
    assert table["columns"] == ["text", "label_ids", "labels"] and len(table["data"]) == 1000
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    logged = {  # a table is logged as a reference to its file, under nested keys (data_sample/path, …)
        item.key or "/".join(item.nested_key): json.loads(item.value_json)
        for record in _wandb_records(run_file)
        if record.WhichOneof("record_type") == "history"
        for item in record.history.item
    }
    assert table_file.as_posix().endswith(logged["data_sample/path"]) and logged["data_sample/nrows"] == 1000
    assert logged["data/dev/texts"] == 5426  # the table and the key figures, in the run


# ---------------------------------------------------------------- --select-metric auc_score, --watch


def test_auc_score_is_recorded_every_epoch_and_selects_the_best_one(tracked_run):
    result, records = tracked_run
    epochs = _epochs(records)
    assert all(r["auc_score"] == r["auc_macro"] for r in epochs)  # the W&B report's name for macro ROC-AUC
    scores = [r["auc_score"] for r in epochs]
    best = max(range(len(scores)), key=scores.__getitem__)  # the first of equal scores: a later tie is no better
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["select_metric"] == "auc_score"
    assert (summary["best_epoch"], summary["best_metric"]) == (best + 1, scores[best])
    assert [r["best"] for r in epochs] == [i == 0 or scores[i] > max(scores[:i]) for i in range(len(scores))]
    assert summary["dev"]["auc_score"] == summary["dev"]["auc_macro"]


def test_watch_logs_numbers_to_jsonl_and_histograms_to_tensorboard(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, records = tracked_run
    grads = [r for r in records if r["event"] == "grad_norms"]
    assert [r["global_step"] for r in grads] == WATCH_STEPS
    for r in grads:
        for group in ("embeddings", "layer_0", "layer_1", "head"):
            assert {f"grad_stats/{group}/{k}" for k in ("min", "max", "mean", "std")} <= r.keys()
            assert {f"param_stats/{group}/{k}" for k in ("min", "max", "mean", "std")} <= r.keys()
            assert r[f"param_norm/{group}"] > 0 and r[f"grad_stats/{group}/std"] >= 0
    # metrics.jsonl gets numbers only, never a histogram
    assert not [k for r in records for k in r if k.startswith(("gradients/", "parameters/"))]

    acc = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"histograms": 0})
    acc.Reload()
    tags = set(acc.Tags()["histograms"])
    expected = {
        "gradients/classifier.weight",
        "parameters/classifier.bias",
        "gradients/bert.encoder.layer.1.output.dense.weight",
    }
    assert expected <= tags
    assert all(t.startswith(("gradients/", "parameters/")) for t in tags)
    weights = acc.Histograms("parameters/classifier.weight")
    assert [e.step for e in weights] == WATCH_STEPS
    model = json.loads((result.best_dir / "config.json").read_text())
    # the same moments as metrics.jsonl: the head's weight histogram lies within the head group's range
    for event, r in zip(weights, grads):
        h = event.histogram_value
        assert r["param_stats/head/min"] <= h.min <= h.max <= r["param_stats/head/max"]
        assert h.num == model["hidden_size"] * len(model["id2label"]) and sum(h.bucket) == h.num


def test_without_watch_gradient_norms_are_logged_once_an_epoch_in_a_short_run(tiny_config):
    """3 steps an epoch and the default --log-every 100: the epochs' last steps still log the norms."""
    from goemo.training.loop import train

    config = tiny_config.replace(epochs=2, max_train_samples=48, max_eval_samples=32, log_every=100, trackers=["jsonl"])
    result = train(config)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    grads = [r for r in records if r["event"] == "grad_norms"]
    assert [(r["epoch"], r["global_step"]) for r in grads] == [(1, 3), (2, 6)]
    assert {k for r in grads for k in r} == {
        "event",
        "epoch",
        "global_step",
        "grad_norm/embeddings",
        "grad_norm/layer_0",
        "grad_norm/layer_1",
        "grad_norm/head",
    }  # without --watch: the norms only
    assert not [r for r in records if r["event"] == "step"]  # --log-every 100 is not reached


def test_watch_numbers_match_numpy_on_a_known_layer():
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]]))
        head.bias.copy_(torch.tensor([2.0, -4.0]))
    head(torch.tensor([[1.0, 2.0, -1.0]])).sum().backward()
    weights = np.array([1.0, -2.0, 3.0, 0.5, 0.0, -1.0, 2.0, -4.0])
    grads = np.array([1.0, 2.0, -1.0, 1.0, 2.0, -1.0, 1.0, 1.0])

    out = watch_stats(head, "all")
    assert out.scalars["param_norm/head"] == pytest.approx(np.linalg.norm(weights))
    for prefix, values in (("param_stats/head", weights), ("grad_stats/head", grads)):
        got = [out.scalars[f"{prefix}/{k}"] for k in ("min", "max", "mean", "std")]
        assert got == pytest.approx([values.min(), values.max(), values.mean(), values.std()])
    assert grad_norms(head)["grad_norm/head"] == pytest.approx(np.linalg.norm(grads))
    assert sorted(out.histograms) == ["gradients/bias", "gradients/weight", "parameters/bias", "parameters/weight"]
    h = out.histograms["parameters/weight"]
    assert (h.num, int(h.counts.sum()), len(h.edges)) == (6, 6, 65) and (h.min, h.max) == (-2.0, 3.0)
    assert sorted(watch_stats(head, "gradients").histograms) == ["gradients/bias", "gradients/weight"]
    assert watch_stats(head, "parameters", histograms=False).histograms == {}
    assert watch_stats(head, None).scalars == {}
