"""Calibrating a model folder (`goemo.evaluation.calibration`, ``goemo calibrate``) and at the end of training.

Calibration changes every score and no decision: the tests compare the predictor's decisions on
the same texts before and after, through torch, ONNX and plain transformers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.calibration import Calibration
from goemo.core.folder import CPU_EXPORT_KEY, ModelFolder, write_calibration, write_meta
from goemo.core.run_settings import RunSettings
from goemo.evaluation.calibration import calibrate_model
from goemo.evaluation.evaluate import evaluate
from goemo.predict.cache import predict_split
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.fastest import EXPORT_DIR, read_cpu_export
from goemo.scoring.calibration import CalibrationSettings

runner = CliRunner()


def _uncalibrated_copy(source: Path, root: Path) -> Path:
    """A copy of ``source`` in a run folder of its own, with no calibration record: a raw model."""
    run = root / "run"
    shutil.copytree(source, run / "best", ignore=shutil.ignore_patterns(EXPORT_DIR, "*.lock"))
    (run / "config.yaml").write_text("model: tiny-random-bert\n")
    write_calibration(run / "best", None)
    return run / "best"


@pytest.fixture(scope="module")
def texts(goemotions_splits) -> list[str]:
    return goemotions_splits["test"].sample(400, seed=3).texts


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> dict:
    """A raw copy of the tiny model, scored, then calibrated with ``goemo calibrate --split test``."""
    folder = _uncalibrated_copy(tiny_model_dir, tmp_path_factory.mktemp("calibrate"))
    stale = folder / EXPORT_DIR
    stale.mkdir()
    write_meta(stale, {CPU_EXPORT_KEY: {"version": 1, "source_fingerprint": ModelFolder.open(folder).fingerprint}})
    (stale / "model.onnx").write_bytes(b"stale")
    clf = EmotionClassifier.load(folder, backend="torch", device="cpu")
    before = {
        "probs": clf.predict_proba(texts),
        "decisions": clf.decide(clf.predict_proba(texts))[2],
        "logits": clf.predict_logits(texts),
        "fingerprint": ModelFolder.open(folder).fingerprint,
        "tuned": evaluate(folder, "test", thresholds="tuned").report,
        "config": json.loads((folder / "config.json").read_text()),
    }
    result = runner.invoke(app, ["calibrate", str(folder.parent), "--split", "test"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"folder": folder, "before": before, "output": result.output}


def test_the_cli_reports_ece_before_and_after(calibrated: dict) -> None:
    out = calibrated["output"]
    assert "calibrated on dev (5,426 texts; written; affine maps folded into the classifier's last layer)" in out
    ece = {line.split(":")[0]: line for line in out.splitlines() if line.startswith("macro ECE on ")}
    assert set(ece) == {"macro ECE on dev", "macro ECE on test"}
    before, after = (float(v) for v in ece["macro ECE on test"].split(": ")[1].split(" (")[0].split(" -> "))
    assert after < before
    assert "admiration" in out and "every decision stays the same" in out


def test_calibration_changes_scores_but_no_decision(calibrated: dict, texts: list[str]) -> None:
    folder, before = calibrated["folder"], calibrated["before"]
    clf = EmotionClassifier.load(folder, backend="torch", device="cpu")
    probs = clf.predict_proba(texts)
    assert np.abs(probs - before["probs"]).max() > 0.05
    assert np.array_equal(clf.decide(probs)[2], before["decisions"])
    # evaluation at the (re-expressed) tuned thresholds: the same scores
    after = evaluate(folder, "test", thresholds="tuned").report
    assert after.macro.f1 == before["tuned"].macro.f1 and after.micro.f1 == before["tuned"].micro.f1
    # the same ranking, up to float32 rounding of near-ties (the tiny model's scores are close together)
    assert after.macro.auc == pytest.approx(before["tuned"].macro.auc, abs=1e-3)


def test_the_folder_records_its_calibration_beside_the_thresholds(calibrated: dict) -> None:
    folder = ModelFolder.open(calibrated["folder"])
    cal = folder.calibration
    assert isinstance(cal, Calibration) and cal.folded and cal.info["fitted_on"] == "dev"
    assert cal.info["dev"]["macro_ece_after"] < cal.info["dev"]["macro_ece_before"]
    raw = np.array(cal.info["raw_thresholds"])
    assert np.allclose(raw, np.asarray(calibrated["before"]["config"]["thresholds"]), atol=1e-6)
    assert np.array_equal(folder.thresholds(np.float64), cal.map_thresholds(raw))
    assert folder.tuned is not None and np.array_equal(np.asarray(folder.tuned), cal.map_thresholds(raw))
    assert not np.allclose(folder.thresholds(np.float64), raw)
    config = folder.config
    assert config["thresholds"] == [round(float(t), 6) for t in folder.thresholds()]
    assert config["calibration"]["labels"]["admiration"]["method"] in ("identity", "temperature", "platt", "isotonic")


def test_plain_transformers_returns_the_calibrated_scores(calibrated: dict, texts: list[str]) -> None:
    folder = calibrated["folder"]
    cal = ModelFolder.open(folder).calibration
    assert cal is not None and "isotonic" not in cal.methods  # so transformers alone gives the calibrated scores
    clf = EmotionClassifier.load(folder, backend="torch", device="cpu")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = clf.tokenizer(texts[:8], padding=True, truncation=True, max_length=clf.max_length, return_tensors="pt")
    with torch.no_grad():
        plain = torch.sigmoid(model(**batch).logits).numpy()
    assert np.allclose(plain, clf.predict_proba(texts[:8]), atol=1e-5)
    # the folded logits are the raw ones under the recorded affine maps
    assert np.allclose(clf.predict_logits(texts), calibrated["before"]["logits"] * cal.scale + cal.shift, atol=1e-4)


def test_the_next_evaluation_runs_the_calibrated_weights(calibrated: dict, goemotions_splits) -> None:
    """Nothing is cached for the new weights by `goemo calibrate`: a cached probability is always what
    the model gives in its settings, so evaluation and prediction agree to the last bit."""
    folder = calibrated["folder"]
    test = goemotions_splits["test"].sample(300, seed=2)
    settings = RunSettings(backend="torch", device="cpu", precision="fp32", batch_size=128)
    preds = predict_split(folder, test, settings)
    assert not preds.from_cache and preds.model_fingerprint != calibrated["before"]["fingerprint"]
    clf = EmotionClassifier.load(folder, settings)
    assert np.array_equal(preds.probs.astype(np.float32), clf.predict_proba(test.texts))


def test_the_stale_cpu_export_is_gone(calibrated: dict) -> None:
    folder = ModelFolder.open(calibrated["folder"])
    assert not (folder.path / EXPORT_DIR).exists()
    # and had it stayed, its fingerprint would not have matched the new weights
    assert read_cpu_export(folder.path / EXPORT_DIR, folder.fingerprint) is None


def test_calibrating_twice_changes_nothing(calibrated: dict) -> None:
    folder = calibrated["folder"]
    files = {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json", "goemo.json")}
    outcome = calibrate_model(folder)
    assert outcome.already and not outcome.written
    assert {name: (folder / name).read_bytes() for name in files} == files
    result = runner.invoke(app, ["calibrate", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0 and "is already calibrated on dev" in result.output


def test_a_dry_run_writes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _uncalibrated_copy(tiny_model_dir, tmp_path)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = runner.invoke(app, ["calibrate", str(folder), "--dry-run", "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (
        doc["written"] is False and doc["splits"]["dev"]["macro_ece_after"] < doc["splits"]["dev"]["macro_ece_before"]
    )
    assert len(doc["splits"]["dev"]["reliability"]["after"]["centres"]) == 15
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == files


def test_isotonic_maps_are_applied_by_the_predictor_on_every_backend(
    tiny_model_dir: Path, tmp_path: Path, texts: list[str]
) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX part needs the onnx extra")
    from goemo.export import export_onnx

    folder = _uncalibrated_copy(tiny_model_dir, tmp_path)
    raw = EmotionClassifier.load(folder, backend="torch", device="cpu")
    raw_logits, raw_decisions = raw.predict_logits(texts), raw.decide(raw.predict_proba(texts))[2]
    outcome = calibrate_model(folder, settings=CalibrationSettings(method="isotonic"))
    cal = outcome.calibration
    assert "isotonic" in cal.methods and cal.folded  # nothing affine: the weights are unchanged
    clf = EmotionClassifier.load(folder, backend="torch", device="cpu")
    assert np.array_equal(clf.predict_logits(texts), raw_logits)  # the raw logits stay available
    probs = clf.predict_proba(texts)
    assert np.allclose(probs, cal.probabilities(raw_logits), atol=1e-6)
    assert np.array_equal(clf.decide(probs)[2], raw_decisions)
    export = export_onnx(folder, tmp_path / "onnx").path
    assert ModelFolder.open(export).calibration == ModelFolder.open(folder).calibration
    onnx = EmotionClassifier.load(export)
    onnx_probs = onnx.predict_proba(texts)
    assert onnx.backend == "onnx"
    assert np.array_equal(onnx_probs, cal.backend_probabilities(onnx.predict_logits(texts), np.float32))
    assert np.array_equal(onnx.decide(onnx_probs)[2], raw_decisions)


def test_training_calibrates_without_changing_a_decision(
    tiny_model_dir: Path, tiny_run_config, tmp_path: Path, texts: list[str]
) -> None:
    """The session's tiny model is calibrated (``calibrate`` defaults to true); its twin trained
    with ``--no-calibrate`` has the same tuned F1, ROC-AUC and decisions, and other scores."""
    from goemo.training.loop import train

    twin = train(tiny_run_config(tmp_path, calibrate=False))
    calibrated_summary = json.loads((tiny_model_dir.parent / "summary.json").read_text())
    raw_summary = twin.summary
    assert "calibration" in calibrated_summary and "calibration" not in raw_summary
    assert set(calibrated_summary["calibration"]) >= {"methods", "rule", "dev", "test"}
    for split in ("dev", "test"):
        assert calibrated_summary[split]["f1_macro_tuned"] == raw_summary[split]["f1_macro_tuned"]
        assert calibrated_summary[split]["auc_macro"] == pytest.approx(raw_summary[split]["auc_macro"], abs=1e-3)
        assert calibrated_summary[split]["val_loss"] < raw_summary[split]["val_loss"]
    assert ModelFolder.open(twin.best_dir).calibration is None
    assert ModelFolder.open(tiny_model_dir).calibration.folded
    a = EmotionClassifier.load(tiny_model_dir, backend="torch", device="cpu")
    b = EmotionClassifier.load(twin.best_dir, backend="torch", device="cpu")
    pa, pb = a.predict_proba(texts), b.predict_proba(texts)
    assert np.abs(pa - pb).max() > 0.05
    assert np.array_equal(a.decide(pa)[2], b.decide(pb)[2])
    # the probabilities training cached (dev and test) are keyed by the saved, calibrated weights
    fingerprint = ModelFolder.open(tiny_model_dir).fingerprint
    cached = []
    for path in sorted((tiny_model_dir.parent / "predictions").glob("*.npz")):
        with np.load(path) as z:
            if str(z["model_fingerprint"]) == fingerprint:
                cached.append(path.name.split("-")[0])
    assert sorted(cached) == ["dev", "test"]


def test_uncalibrate_probs_undoes_the_affine_maps() -> None:
    """What evaluate and the report show as the raw model's scores: `calibrate_probs` undone."""
    from goemo.core.calibration import LabelMap

    cal = Calibration(
        ("joy", "anger", "fear"),
        (LabelMap("platt", scale=0.7, shift=-0.4), LabelMap("temperature", scale=1.8), LabelMap("identity")),
    )
    raw = np.random.default_rng(0).uniform(0.001, 0.999, size=(50, 3))
    assert np.allclose(cal.uncalibrate_probs(cal.calibrate_probs(raw)), raw, atol=1e-9)
    iso = Calibration(("joy",), (LabelMap("isotonic", x=(0.1, 0.9), y=(0.2, 0.8)),))
    assert np.isnan(iso.uncalibrate_probs(raw[:, :1])).all()  # a step function has no inverse
