"""Training engine: a tiny random BERT learns on a GoEmotions sample, checkpoints, resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError, ModelError, RunFolderError
from goemo.core.folder import ModelFolder
from goemo.data.source import DataSource
from goemo.models.modeling import load_model
from goemo.training.loop import train

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _epochs(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "epoch"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """One 3-epoch run of the tiny model, shared by the checks below."""
    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = TrainConfig(
        data_dir=str(shared_data),
        model="tiny-random-bert",
        epochs=3,
        lr=1e-3,
        batch_size=16,
        max_length=48,
        max_train_samples=2000,
        max_eval_samples=300,
        output=str(out),
        log_every=20,
        precision="fp32",
        cache_dir=str(out.parent / "cache"),
    )
    return train(cfg)


def test_dev_loss_falls_and_records_are_complete(trained) -> None:
    epochs = _epochs(trained.run_dir)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    for e in epochs:
        assert {
            "auc_micro",
            "auc_macro",
            "f1_micro",
            "f1_macro",
            "f1_macro_xtuned",
            "epoch_time_s",
            "examples_per_s",
            "lr",
        } <= e.keys()
        assert 0.0 <= e["f1_macro_xtuned"] <= 1.0
        assert e["examples_per_s"] > 0
    steps = [json.loads(x) for x in (trained.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "step" for r in steps) and any(r["event"] == "grad_norms" for r in steps)


def test_run_folder_and_summary(trained) -> None:
    run = trained.run_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "best/model.safetensors", "last/training_state.pt"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] in (1, 2, 3)
    res = summary["resources"]
    assert res["peak_rss_mb"] > 100 and res["wall_time_s"] > 0 and len(res["epoch_time_s"]) == 3
    assert res["hardware"]["cpu_cores"] >= 1 and res["hardware"]["torch"] == torch.__version__
    assert set(summary["test"]) >= {"f1_macro", "auc_macro", "f1_macro_tuned", "val_loss"}
    # The cross-tuned F1 tunes thresholds on half of its split: reported for dev, never for test.
    assert "f1_macro_xtuned" in summary["dev"] and "f1_macro_xtuned" not in summary["test"]
    # best/ is the epoch with the best dev macro-F1
    best = max(_epochs(run), key=lambda e: e["f1_macro"])
    assert summary["best_epoch"] == best["epoch"]


def test_recorded_long_text_says_pieces_only_when_truncation_cut_nothing(tiny_config) -> None:
    """Training scores truncated ids; when no scored text was longer, those are the pieces' numbers too."""
    from accelerate import Accelerator

    from goemo.models.modeling import load_tokenizer
    from goemo.predict.runner import encode_texts
    from goemo.training.epoch_metrics import LiveScorer

    tokenizer = load_tokenizer("minilm")
    config = tiny_config.replace(max_length=8)
    scorer = LiveScorer(Accelerator(cpu=True), tokenizer, ["joy", "anger"], config)
    short, long = ["so happy", "ugh"], ["one two three four five six seven eight nine"]
    model = torch.nn.Linear(1, 1)

    def scored(*groups):
        return {f"s{i}": (texts, encode_texts(texts, tokenizer, 8)) for i, texts in enumerate(groups)}

    assert scorer.recorded_settings(model, scored(short, short))["long_text"] == "pieces"
    recorded = scorer.recorded_settings(model, scored(short, short + long))
    assert recorded["long_text"] == "truncate" and recorded["max_length"] == 8


def test_best_reloads_with_thresholds_tuned_on_dev(trained) -> None:
    loaded = load_model(trained.best_dir)
    assert len(loaded.label_names) == 28 and loaded.label_names[0] == "admiration"
    assert loaded.model.config.problem_type == "multi_label_classification"
    meta = ModelFolder.open(trained.best_dir).meta
    th = meta["thresholds"]
    assert th["global"] == 0.3 and th["tuned_on"] == "dev" and len(th["per_label"]) == 28
    # the reloaded weights are the best epoch's: same logits as the training-time evaluation
    assert meta["metrics"]["best_epoch"] == json.loads((trained.run_dir / "summary.json").read_text())["best_epoch"]


def test_pipeline_loads_best_without_goemo(trained) -> None:
    """The standard head needs no goemo code: a fresh interpreter with only transformers."""
    code = (
        "import sys; from transformers import pipeline;"
        f"p = pipeline('text-classification', model={str(trained.best_dir)!r}, top_k=None);"
        "out = p('thank you so much')[0];"
        "assert len(out) == 28 and all(0 < r['score'] < 1 for r in out), out;"
        "assert 'goemo' not in sys.modules; print('ok')"
    )
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_mean_pool_head_loads_in_pipeline_with_trust_remote_code_without_goemo(tmp_path, tiny_config) -> None:
    """goemo's head ships its own code (modeling_goemo.py + auto_map): plain transformers runs it
    with trust_remote_code=True, in a process that never imports goemo; goemo loads it without."""
    result = train(tiny_config.replace(pooling="mean", epochs=1, max_train_samples=300, max_eval_samples=100))
    code = (
        "import sys; from transformers import pipeline;"
        f"p = pipeline('text-classification', model={str(result.best_dir)!r}, top_k=None, trust_remote_code=True);"
        "out = p('so happy for you')[0]; assert len(out) == 28, out;"
        "assert type(p.model).__module__.endswith('modeling_goemo'), type(p.model);"
        "assert 'goemo' not in sys.modules; print('ok')"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
    config = json.loads((result.best_dir / "config.json").read_text())
    assert config["model_type"] == "goemo-mean-pool" and config["problem_type"] == "multi_label_classification"
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_goemo.GoemoForSequenceClassification"
    # goemo itself: its registered class, no trust_remote_code
    assert type(load_model(result.best_dir).model).__module__ == "goemo.models.modeling_goemo"


def _train_cmd(shared_data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "goemo",
        "train",
        "--data-dir",
        str(shared_data),
        "--model",
        "tiny-random-bert",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--max-length",
        "48",
        "--max-train-samples",
        "800",
        "--max-eval-samples",
        "100",
        "--precision",
        "fp32",
        "--save-every",
        "20",
        "--log-every",
        "10",
        "--num-threads",
        "1",
        "--ema-decay",
        "0.9",
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_weights(tmp_path, shared_data) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cache = tmp_path / "cache"
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(shared_data, ref, cache), check=True, capture_output=True, timeout=600, env=env)

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(shared_data, run, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    state = run / "last" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["global_step"] >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())
    assert killed_at["global_step"] < 2 * 100  # really interrupted before the end (100 steps per epoch)

    # without --resume the folder is protected
    refused = subprocess.run(_train_cmd(shared_data, run, cache), capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    subprocess.run(
        _train_cmd(shared_data, run, cache, "--resume"), check=True, capture_output=True, timeout=600, env=env
    )

    # the weight average (--ema-decay) resumes too: last/ema.safetensors, and best/ holds it
    for folder, weights in (("last", "model.safetensors"), ("last", "ema.safetensors"), ("best", "model.safetensors")):
        a = load_file(str(ref / folder / weights))
        b = load_file(str(run / folder / weights))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{folder}/{key} differs after resume"
    assert (
        json.loads((run / "summary.json").read_text())["best_epoch"]
        == json.loads((ref / "summary.json").read_text())["best_epoch"]
    )


@pytest.mark.slow
def test_two_cpu_processes_train_data_parallel(tmp_path, shared_data) -> None:
    """torchrun with 2 gloo processes: half the steps each, every dev example evaluated once."""
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous (0 is not accepted there)
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    out = tmp_path / "ddp"
    cmd = [
        PY,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        port,
        "-m",
        "goemo",
        "train",
        "--data-dir",
        str(shared_data),
        "--model",
        "tiny-random-bert",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--batch-size",
        "16",
        "--max-train-samples",
        "800",
        "--max-eval-samples",
        "301",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--log-every",
        "5",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in done.stderr.splitlines() if "goemo: error" in line or "Error:" in line]
    assert done.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + done.stderr[-2000:]  # every rank's one line
    epochs = _epochs(out)
    assert len(epochs) == 1  # one set of records: only the main process writes
    batches = -(-800 // 16)  # 50 global batches, split over 2 processes -> 25 steps
    assert epochs[0]["global_step"] == -(-batches // 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resources"]["num_processes"] == 2
    assert done.stdout.count("goemo train:") == 1  # the summary is printed once, by the main process
    # dev metrics gathered from both processes equal a single-process evaluation of best/
    from goemo.data.batching import encode_split
    from goemo.data.io import load_goemotions
    from goemo.predict.classifier import EmotionClassifier
    from goemo.training.epoch_metrics import evaluate_logits

    clf = EmotionClassifier.load(out / "best", batch_size=64, precision="fp32", backend="auto")
    dev = load_goemotions(shared_data)["dev"].sample(301, seed=42)
    enc = encode_split(dev, clf.tokenizer, 128, tmp_path / "c")
    single = evaluate_logits(clf.logits_for_encoded(enc), enc.labels, 0.3)
    assert summary["dev"]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    assert summary["dev"]["f1_macro"] == pytest.approx(single["f1_macro"], abs=1e-6)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best", "config.yaml", "last", "metrics.jsonl", "predictions", "summary.json"]
    assert sorted(p.name.split("-")[0] for p in (out / "predictions").iterdir()) == ["dev", "test"]


# ---------------------------------------------------------------- errors


def test_output_folder_of_another_run_is_protected(trained, tiny_config) -> None:
    with pytest.raises(RunFolderError, match="--resume .* --overwrite"):
        train(tiny_config.replace(output=str(trained.run_dir)))


def test_resume_with_other_settings_is_refused(trained) -> None:
    from goemo.core.config import resolve_config

    cfg = resolve_config(config_file=trained.run_dir / "config.yaml", overrides={"lr": 0.5, "resume": True})
    with pytest.raises(RunFolderError, match=r"lr: 0.001 -> 0.5"):
        train(cfg)


def test_unknown_model_offline_says_how_to_fetch(tiny_config, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="goemo fetch-model bert-base-cased"):
        train(tiny_config.replace(model="bert-base-cased"))


def test_cuda_asked_for_but_missing(tiny_config) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(tiny_config.replace(device="cuda"))


def test_label_count_mismatch_with_checkpoint(trained, tiny_config) -> None:
    """A 28-label checkpoint cannot continue on the 7-label Ekman data."""
    with pytest.raises(ModelError, match="has 28 labels .* the data has 7"):
        train(tiny_config.replace(model=str(trained.best_dir), taxonomy="ekman"))


def test_continue_from_checkpoint_with_same_labels(trained, tiny_config) -> None:
    result = train(
        tiny_config.replace(model=str(trained.best_dir), epochs=1, max_train_samples=200, max_eval_samples=50)
    )
    assert (result.best_dir / "model.safetensors").is_file()


def test_callbacks_see_every_epoch_and_can_stop(tiny_config) -> None:
    seen: list[int] = []

    class Stop(Exception):
        pass

    def cb(record: dict) -> None:
        if record["event"] == "epoch":
            seen.append(record["epoch"])
            raise Stop

    with pytest.raises(Stop):
        train(tiny_config.replace(epochs=3, max_train_samples=200, max_eval_samples=50), callbacks=[cb])
    assert seen == [1]
    # the epoch's checkpoints were written before the callback stopped the run
    assert (Path(tiny_config.output) / "last" / "training_state.pt").is_file()


def test_grouped_taxonomy_trains_natively(tiny_config) -> None:
    result = train(tiny_config.replace(taxonomy="sentiment", epochs=1, max_train_samples=300, max_eval_samples=80))
    meta = json.loads((result.best_dir / "goemo.json").read_text())
    assert meta["label_names"] == ["positive", "negative", "ambiguous", "neutral"]
    assert meta["taxonomy"] == "sentiment"


def test_splits_from_python_and_pos_weight_focal(small_splits, tiny_config) -> None:
    cfg = tiny_config.replace(data_dir=None, epochs=1, pos_weight="auto", loss="focal", label_smoothing=0.05)
    result = train(cfg, splits=dict(small_splits))
    losses = [e["train_loss"] for e in _epochs(result.run_dir)]
    assert np.isfinite(losses).all()


def test_weight_average_is_what_gets_evaluated_and_saved(tiny_config) -> None:
    # no calibration: it would fold its maps into the classifier's weights compared below
    config = tiny_config.replace(epochs=1, max_train_samples=300, max_eval_samples=80, ema_decay=0.9, calibrate=False)
    result = train(config)
    (record,) = _epochs(result.run_dir)
    assert {"raw_f1_macro", "raw_f1_macro_xtuned", "raw_val_loss", "raw_auc_macro"} <= record.keys()
    assert record["raw_val_loss"] != record["val_loss"]  # two different sets of weights were scored
    best = load_file(str(result.best_dir / "model.safetensors"))
    average = load_file(str(result.run_dir / "last" / "ema.safetensors"))
    raw = load_file(str(result.run_dir / "last" / "model.safetensors"))
    key = next(k for k in best if k.endswith("classifier.weight"))
    assert torch.equal(best[key], average[key]) and not torch.equal(best[key], raw[key])


def test_weight_average_ramps_up_from_the_first_steps() -> None:
    from goemo.training.ema import ema_update

    update = ema_update(0.99)
    avg, new = [torch.zeros(3)], [torch.ones(3)]
    update(avg, new, torch.tensor(0))  # decay min(0.99, 1/10): the average moves 90% at once
    assert torch.allclose(avg[0], torch.full((3,), 0.9))
    update(avg, new, torch.tensor(10**6))  # later the full decay: 1% of the way
    assert torch.allclose(avg[0], torch.full((3,), 0.901))


def test_an_average_cannot_be_added_on_resume(tiny_config) -> None:
    small = dict(epochs=1, max_train_samples=100, max_eval_samples=50)
    train(tiny_config.replace(**small))
    with pytest.raises(RunFolderError, match="ema_decay: None -> 0.9"):
        train(tiny_config.replace(**small, ema_decay=0.9, resume=True))


def test_a_folder_from_before_ema_decay_cannot_resume_an_average(tiny_config) -> None:
    """A run folder written before the option existed has no ema_decay in config.yaml."""
    small = dict(epochs=1, max_train_samples=100, max_eval_samples=50)
    train(tiny_config.replace(**small))
    saved = Path(tiny_config.output) / "config.yaml"
    saved.write_text("".join(line for line in saved.read_text().splitlines(True) if not line.startswith("ema_decay:")))
    with pytest.raises(RunFolderError, match=r"last/ema.safetensors: missing, so the weight average cannot resume"):
        train(tiny_config.replace(**small, ema_decay=0.9, resume=True))


def test_a_weight_average_resumes_on_an_indexed_cpu_device(tiny_config, monkeypatch) -> None:
    """Each of several CPU processes trains on device ``cpu:0``, which safetensors refuses as a
    place to load to (found by killing and resuming a two-process run)."""
    from accelerate import Accelerator

    small = dict(epochs=1, max_train_samples=100, max_eval_samples=50, ema_decay=0.9, save_every=3)
    train(tiny_config.replace(**small))
    monkeypatch.setattr(Accelerator, "device", property(lambda self: torch.device("cpu", 0)))
    resumed = train(tiny_config.replace(**small, resume=True))
    assert resumed.summary["best_epoch"] == 1


def test_two_runs_in_one_process_may_use_different_precisions(tiny_config) -> None:
    """Sweeps and notebooks train many times in one process; Accelerate's state must not stick."""
    small = dict(epochs=1, max_train_samples=100, max_eval_samples=50)
    train(tiny_config.replace(precision="fp32", output=tiny_config.output + "-a", **small))
    second = train(tiny_config.replace(precision="bf16", output=tiny_config.output + "-b", **small))
    assert second.summary["resources"]["precision"] == "bf16"


def test_evaluation_scores_the_probabilities_training_reported(tiny_config) -> None:
    """`goemo evaluate`/`ensemble` read the dev and test probabilities training scored (bf16
    here), not an fp32 re-run: the same model must not get two scores from two commands."""
    from goemo.evaluation.evaluate import evaluate
    from goemo.predict.cache import predict_split
    from goemo.scoring.metrics import tune_thresholds

    # no calibration: re-tuning below gives back the saved thresholds on the raw scale only
    # (tests/test_calibrate.py checks a calibrated run's scores against evaluation)
    config = tiny_config.replace(
        precision="bf16", epochs=1, max_train_samples=300, max_eval_samples=None, calibrate=False
    )
    result = train(config)
    meta = json.loads((result.best_dir / "goemo.json").read_text())
    test = evaluate(
        result.best_dir, "test", thresholds="tuned", source=DataSource.folder(config.data_dir)
    )  # the CLI's loading path
    assert test.predictions.from_cache
    assert test.report.macro.f1 == pytest.approx(result.summary["test"]["f1_macro_tuned"], abs=1e-12)

    from goemo.data.io import load_goemotions

    dev = load_goemotions(config.data_dir, splits=["dev"])["dev"]
    cached = predict_split(result.best_dir, dev)
    assert cached.from_cache
    retuned = tune_thresholds(
        dev.labels, cached.probs, split_name="dev", label_names=dev.label_names, shrink=config.threshold_shrink
    )
    assert retuned.to_dict() == meta["thresholds"]["tuning"]  # re-tuning on dev gives back the saved thresholds
    rerun = predict_split(result.best_dir, dev, cache=False)  # fp32 on a CPU: close, not equal
    assert not rerun.from_cache
    np.testing.assert_allclose(rerun.probs, cached.probs, atol=0.05)
    assert not np.array_equal(rerun.probs, cached.probs)


def test_cli_train_prints_the_one_screen_summary(tmp_path, shared_data) -> None:
    from typer.testing import CliRunner

    from goemo.cli import app

    args = [
        "train",
        "--data-dir",
        str(shared_data),
        "--model",
        "tiny-random-bert",
        "--epochs",
        "1",
        "--max-train-samples",
        "200",
        "--max-eval-samples",
        "50",
        "--precision",
        "fp32",
        "--output",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--loss",
        "focal",
        "--focal-gamma",
        "1.5",
        "--label-smoothing",
        "0.05",
        "--sentiment-reg",
        "0.5",
        "--correlation-reg",
        "0.25",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["loss"], saved["focal_gamma"], saved["label_smoothing"]) == ("focal", 1.5, 0.05)
    assert (saved["sentiment_reg"], saved["correlation_reg"]) == (0.5, 0.25)
    for needle in ("f1_macro", "best epoch 1", "train examples/s", "peak", "RSS", "hardware:", "cores", "model:"):
        assert needle in result.output, needle
    bands = json.loads((tmp_path / "run" / "best" / "goemo.json").read_text())["card"]["intervals"]["f1_macro"]
    assert f"95% interval of f1_macro_tuned on test: {bands['low']:.4f} to {bands['high']:.4f}" in result.output
    (epoch_line,) = [line for line in result.output.splitlines() if "epoch 1: train_loss" in line]
    assert " auc_score " in epoch_line and "auc_macro" not in result.output  # the name --select-metric takes
    again = CliRunner().invoke(app, args)  # the same folder again: one line, exit 1
    assert again.exit_code == 1 and "already holds a run" in again.output


def test_teachers_probabilities_are_their_mean_on_the_train_split(trained, tiny_config) -> None:
    from goemo.data.io import load_goemotions
    from goemo.predict.cache import predict_split
    from goemo.training.distill import teacher_probabilities

    train_split = load_goemotions(tiny_config.data_dir, splits=["train"])["train"].sample(300, seed=1)
    other = train(tiny_config.replace(epochs=1, max_train_samples=200, max_eval_samples=50))
    teachers = [str(trained.best_dir), str(other.best_dir)]
    soft = teacher_probabilities(tiny_config.replace(teachers=teachers), train_split)
    each = [predict_split(t, train_split).probs for t in teachers]
    assert soft.shape == (300, 28) and np.allclose(soft, (each[0] + each[1]) / 2, atol=1e-6)
    assert not np.allclose(each[0], each[1])  # two different teachers, so the mean is not trivial
    assert teacher_probabilities(tiny_config, train_split) is None


def test_distillation_trains_towards_the_teachers(trained, tiny_config) -> None:
    """alpha 0 ignores the teacher (same weights as no teacher); alpha 1 learns from it alone."""
    small = dict(epochs=1, max_train_samples=200, max_eval_samples=50)

    def weights(**changes) -> dict[str, torch.Tensor]:
        out = tiny_config.output + "-" + "-".join(f"{k}{v}" for k, v in changes.items() if k != "teachers")
        result = train(tiny_config.replace(**small, output=out, **changes))
        return load_file(str(result.run_dir / "last" / "model.safetensors"))

    plain = weights()
    ignored = weights(teachers=[str(trained.best_dir)], distill_alpha=0.0)
    distilled = weights(teachers=[str(trained.best_dir)], distill_alpha=1.0)
    key = next(k for k in plain if k.endswith("classifier.weight"))
    assert torch.equal(plain[key], ignored[key])
    assert not torch.equal(plain[key], distilled[key])
    saved = yaml.safe_load((Path(tiny_config.output + "-distill_alpha1.0") / "config.yaml").read_text())
    assert saved["teachers"] == [str(trained.best_dir)] and saved["distill_alpha"] == 1.0


def test_a_holdout_fold_is_never_trained_on(tiny_config) -> None:
    from goemo.data.folds import fold_of
    from goemo.data.io import load_goemotions

    result = train(
        tiny_config.replace(
            epochs=1,
            max_train_samples=150,
            max_eval_samples=50,
            holdout_fold=1,
            num_folds=2,
            output=tiny_config.output + "-fold1",
        )
    )
    full = load_goemotions(tiny_config.data_dir, splits=["train"])["train"]
    kept = full.subset(np.flatnonzero(fold_of(full.ids, 2) != 1)).sample(150, seed=tiny_config.seed)
    meta = json.loads((result.best_dir / "goemo.json").read_text())
    assert meta["data_checksums"]["train"] == kept.checksum()
    assert meta["training_config"]["holdout_fold"] == 1 and meta["training_config"]["num_folds"] == 2
    assert not set(kept.ids) & {i for i, f in zip(full.ids, fold_of(full.ids, 2), strict=True) if f == 1}


def test_cross_fitted_teachers_predict_only_the_fold_they_never_saw(tiny_config) -> None:
    from goemo.data.folds import fold_of
    from goemo.data.io import load_goemotions
    from goemo.predict.cache import predict_split
    from goemo.training.distill import teacher_probabilities

    small = dict(epochs=1, max_train_samples=150, max_eval_samples=50, num_folds=2)
    fold_teachers = [
        str(train(tiny_config.replace(**small, holdout_fold=k, output=f"{tiny_config.output}-t{k}")).best_dir)
        for k in (0, 1)
    ]
    split = load_goemotions(tiny_config.data_dir, splits=["train"])["train"].sample(300, seed=1)
    folds = fold_of(split.ids, 2)
    soft = teacher_probabilities(tiny_config.replace(teachers=fold_teachers), split)
    own = [predict_split(t, split).probs for t in fold_teachers]  # each teacher on every text
    assert np.allclose(soft[folds == 0], own[0][folds == 0], atol=1e-6)
    assert np.allclose(soft[folds == 1], own[1][folds == 1], atol=1e-6)
    assert not np.allclose(own[0][folds == 1], own[1][folds == 1])  # so the choice of teacher matters

    with pytest.raises(ConfigError, match="no teacher held out fold.*1 of 2"):
        teacher_probabilities(tiny_config.replace(teachers=fold_teachers[:1]), split)
    everything = str(
        train(
            tiny_config.replace(
                epochs=1, max_train_samples=150, max_eval_samples=50, output=f"{tiny_config.output}-all"
            )
        ).best_dir
    )
    with pytest.raises(ConfigError, match="trained on every fold"):
        teacher_probabilities(tiny_config.replace(teachers=[*fold_teachers, everything]), split)


def test_a_teacher_with_other_labels_is_refused(trained, tiny_config) -> None:
    with pytest.raises(ConfigError, match="teacher .* labels"):
        train(
            tiny_config.replace(
                taxonomy="sentiment",
                teachers=[str(trained.best_dir)],
                epochs=1,
                max_train_samples=100,
                max_eval_samples=50,
            )
        )


def test_cli_teachers_reach_the_config_and_a_missing_one_is_named(tmp_path, shared_data) -> None:
    from typer.testing import CliRunner

    from goemo.cli import app

    args = [
        "train",
        "--data-dir",
        str(shared_data),
        "--model",
        "tiny-random-bert",
        "--epochs",
        "1",
        "--max-train-samples",
        "100",
        "--max-eval-samples",
        "50",
        "--output",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--teacher",
        str(tmp_path / "t1"),
        "--teacher",
        str(tmp_path / "t2"),
        "--distill-alpha",
        "0.7",
        "--holdout-fold",
        "2",
        "--num-folds",
        "5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and f"{tmp_path / 't1'}: no such model folder" in result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["teachers"] == [str(tmp_path / "t1"), str(tmp_path / "t2")] and saved["distill_alpha"] == 0.7
    assert (saved["holdout_fold"], saved["num_folds"]) == (2, 5)


def test_a_cleaned_model_records_what_cleaned_it(tiny_config, goemotions_splits, tmp_path) -> None:
    """--exclude and --corrections change the training texts (only those) and say so in goemo.json and the card."""
    from goemo.data.download import sha256_file
    from goemo.training.data import clean_train, prepare_splits

    full = goemotions_splits["train"]
    config = tiny_config.replace(epochs=1, max_train_samples=100, max_eval_samples=50)
    kept = full.sample(100, seed=config.seed)  # the sample is drawn after cleaning: put the changes inside it
    drop = tmp_path / "drop.txt"
    drop.write_text(f"{kept.ids[0]}\n{kept.ids[1]}\n", encoding="utf-8")
    fixes = tmp_path / "fixes.csv"
    first = full.label_names[int(np.flatnonzero(kept.labels[2])[0])]  # a label text 2 carries
    fixes.write_text(f"id,label,action\n{kept.ids[2]},{first},remove\n{kept.ids[3]},grief,add\n", encoding="utf-8")
    cleaned = config.replace(exclude=str(drop), corrections=str(fixes), output=tiny_config.output + "-clean")
    result = train(cleaned)
    meta = json.loads((result.best_dir / "goemo.json").read_text())
    record = meta["cleaning"]
    grief = full.label_names.index("grief")
    assert record["texts_excluded"] == 2 and record["labels_changed"] == 1 + int(kept.labels[3, grief] == 0)
    assert record["exclude"] == {"file": str(drop.resolve()), "sha256": sha256_file(drop)}
    assert record["corrections"]["sha256"] == sha256_file(fixes)
    assert meta["training_config"]["exclude"] == str(drop) and meta["training_config"]["corrections"] == str(fixes)
    splits = {"train": full, "dev": goemotions_splits["dev"]}
    clean_train(cleaned, splits)
    assert meta["data_checksums"]["train"] == prepare_splits(cleaned, splits)["train"].checksum()
    assert meta["data_checksums"]["dev"] == goemotions_splits["dev"].sample(50, seed=config.seed).checksum()
    card = (result.best_dir / "README.md").read_text(encoding="utf-8")
    assert f"Cleaned with: 2 texts excluded, {record['labels_changed']} labels changed" in card
    assert f"`{drop.resolve()}` sha256 `{sha256_file(drop)}`" in card and sha256_file(fixes) in card
    plain = train(config.replace(output=tiny_config.output + "-plain"))
    assert json.loads((plain.best_dir / "goemo.json").read_text())["cleaning"] is None
    assert "Cleaned with" not in (plain.best_dir / "README.md").read_text(encoding="utf-8")


def test_cli_train_exclude_and_corrections_errors_are_one_line(tmp_path, shared_data) -> None:
    from typer.testing import CliRunner

    from goemo.cli import app

    fixes = tmp_path / "fixes.csv"
    fixes.write_text("id,label,action\neew5j0j,joy,add\nnot-an-id,joy,add\n", encoding="utf-8")
    args = ["train", "--data-dir", str(shared_data), "--model", "tiny-random-bert", "--epochs", "1"]
    args += ["--output", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"), "--corrections", str(fixes)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"goemo: error: {fixes}:3: id: unknown id 'not-an-id': no training text has it"
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before the run folder is touched


def test_focal_loss_is_the_textbook_formula() -> None:
    """Focal loss (Lin et al. 2017), written out per class of target: y(1-p)^γ·(-log p) + (1-y)p^γ·(-log(1-p))."""
    from goemo.training.losses import loss_function

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=gen) * 3
    targets = (torch.rand(8, 5, generator=gen) > 0.6).float()
    labels = targets.numpy()
    for gamma in (0.0, 2.0):
        loss = loss_function(TrainConfig(loss="focal", focal_gamma=gamma), labels, list("abcde"))
        p = torch.sigmoid(logits.double())
        expected = -(targets * (1 - p) ** gamma * torch.log(p) + (1 - targets) * p**gamma * torch.log(1 - p)).mean()
        assert loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
