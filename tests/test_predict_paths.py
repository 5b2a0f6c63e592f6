"""One prediction path: evaluate and predict agree exactly, exports are evaluated, and ONNX needs no torch.

Every command gets probabilities from `EmotionClassifier` (through the prediction cache for
labelled splits), with precision, batch size and max length as explicit settings in the
cache key. These tests hold the promises that follow from that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.data.io import load_goemotions
from goemo.evaluation.evaluate import evaluate
from goemo.predict.classifier import EmotionClassifier
from goemo.training.loop import train

pytest.importorskip("onnxruntime", reason="ONNX tests need the onnx extra")

SEED = 7


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory, tiny_run_config) -> Path:
    """A tiny run trained under bf16 autocast: its cached dev probabilities are bf16 ones."""
    root = tmp_path_factory.mktemp("bf16-run")
    # Uncalibrated: a calibration folded into bf16 weights moves the probabilities by up to 4e-4
    # from the ones training cached (a known gap, in the session notes).
    config = tiny_run_config(
        root,
        max_train_samples=300,
        max_eval_samples=120,
        eval_batch_size=16,
        precision="bf16",
        seed=SEED,
        calibrate=False,
    )
    return Path(train(config).best_dir)


@pytest.fixture(scope="module")
def int8_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")
    from goemo.export import export_onnx

    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("exports") / "int8", quantize="int8").path


def _dev_as_trained(shared_data: Path, n: int = 120):
    return load_goemotions(shared_data, splits=["dev"])["dev"].sample(n, seed=SEED)


def test_training_records_the_settings_of_its_cached_predictions(bf16_run: Path) -> None:
    settings = ModelFolder.open(bf16_run).prediction_settings
    assert settings == {
        "backend": "torch",
        "device": "cpu",
        "precision": "bf16",
        "batch_size": 16,
        "max_length": 48,
        "long_text": "pieces",  # no dev or test text it scored is over 48 tokens: truncation cut nothing
    }


def test_evaluate_and_predict_give_identical_probabilities(bf16_run: Path, shared_data: Path) -> None:
    dev = _dev_as_trained(shared_data)
    evaluated = evaluate(bf16_run, dev, thresholds=0.3)
    assert evaluated.predictions.from_cache  # training's own numbers
    assert evaluated.predictions.settings["precision"] == "bf16"
    same = EmotionClassifier.load(bf16_run, precision="bf16", batch_size=16).predict_proba(dev.texts)
    np.testing.assert_array_equal(evaluated.predictions.probs.astype(np.float32), same)

    # In another precision both paths move together, and the cache keeps the two apart.
    fp32 = evaluate(bf16_run, dev, thresholds=0.3, settings=RunSettings(batch_size=16, precision="fp32"))
    assert not fp32.predictions.from_cache and fp32.predictions.cache_path != evaluated.predictions.cache_path
    predicted = EmotionClassifier.load(bf16_run, precision="fp32", batch_size=16).predict_proba(dev.texts)
    np.testing.assert_array_equal(fp32.predictions.probs.astype(np.float32), predicted)
    assert not np.array_equal(fp32.predictions.probs, evaluated.predictions.probs)
    assert evaluate(
        bf16_run, dev, thresholds=0.3, settings=RunSettings(batch_size=16, precision="fp32")
    ).predictions.from_cache


def test_evaluate_keeps_the_folders_own_backend(tiny_model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """Evaluation runs ``auto`` (the folder's weights), never the fastest backend's int8 export."""
    import shutil

    from goemo.predict.fastest import EXPORT_DIR

    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns(".*"))
    result = evaluate(folder, _dev_as_trained(shared_data, 40), thresholds=0.3, cache=tmp_path / "predictions")
    assert result.predictions.settings["backend"] == "torch" and result.predictions.settings["precision"] == "fp32"
    assert not (folder / EXPORT_DIR).exists()


def test_goemo_evaluate_scores_an_int8_export(int8_export: Path, tiny_model_dir: Path, shared_data: Path) -> None:
    folder = ModelFolder.open(int8_export)
    assert folder.kind == "onnx" and folder.onnx_quantize == "int8"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(int8_export),
            "--split",
            "dev",
            "--data-dir",
            str(shared_data),
            "--max-samples",
            "80",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "macro" in res.stdout.lower()
    dev = load_goemotions(shared_data, splits=["dev"])["dev"].sample(80, seed=0)
    result = evaluate(int8_export, dev, thresholds=0.3)
    assert result.predictions.settings["backend"] == "onnx" and result.predictions.settings["precision"] == "int8"
    direct = EmotionClassifier.load(int8_export).predict_proba(dev.texts)
    np.testing.assert_array_equal(result.predictions.probs.astype(np.float32), direct)
    torch_probs = evaluate(
        tiny_model_dir, dev, thresholds=0.3, cache=False, settings=RunSettings(precision="fp32")
    ).predictions.probs
    assert np.abs(result.predictions.probs - torch_probs).max() < 0.1  # int8 is close to, not equal to, fp32


def _python_without_torch(tmp_path: Path) -> str:
    """A Python whose site-packages are this venv's, less torch: what `pip install goemo[onnx,serve]` gives."""
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    shadow = tmp_path / "site"
    shadow.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("torch", "functorch", "torchgen", "nvidia", "triton")):
            (shadow / entry.name).symlink_to(entry)
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    env_site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (env_site / "shadow.pth").write_text(f"import site; site.addsitedir({str(shadow)!r})\n")
    return str(py)


@pytest.mark.slow
def test_an_onnx_export_predicts_and_serves_without_torch(int8_export: Path, tmp_path: Path) -> None:
    py = _python_without_torch(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    missing = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr

    texts = ["thank you so much!", "this is awful", ""]
    cli = subprocess.run(
        [py, "-m", "goemo", "predict", "--model", str(int8_export), "--all-scores", *texts],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    expected = EmotionClassifier.load(int8_export).predict_proba(texts)
    names = EmotionClassifier.load(int8_export).label_names
    for row, probs in zip(rows, expected):
        assert [row["scores"][n] for n in names] == pytest.approx(probs.tolist(), abs=1e-6)

    served = subprocess.run(
        [
            py,
            "-c",
            textwrap.dedent(f"""
        import json, sys
        from fastapi.testclient import TestClient
        from goemo.predict.classifier import EmotionClassifier
        from goemo.serve.app import create_app
        clf = EmotionClassifier.load({str(int8_export)!r})
        with TestClient(create_app(clf), base_url="http://127.0.0.1") as client:
            r = client.post("/predict", json={{"texts": {texts!r}}})
        assert r.status_code == 200, r.text
        assert "torch" not in sys.modules
        print(json.dumps(r.json()))
    """),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert served.returncode == 0, served.stderr[-2000:]
    body = json.loads(served.stdout)
    assert len(body["results"]) == len(texts)
