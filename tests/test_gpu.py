"""goemo's CUDA paths on a real GPU: bf16/fp16 steps, resume, --compile, evaluation, predictor and server.

Marked ``gpu``: skipped where CUDA is not available (this repository's CI), run by
``benchmarks/gpu_check.sh`` on a lent GPU (``pytest -m gpu tests/test_gpu.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from goemo.core.folder import ModelFolder
from goemo.data.io import load_goemotions
from goemo.evaluation.evaluate import evaluate
from goemo.predict.classifier import EmotionClassifier
from goemo.training.loop import train

pytestmark = pytest.mark.gpu


@pytest.fixture()
def cuda_config(tiny_config):
    return tiny_config.replace(device="cuda", max_train_samples=600, max_eval_samples=150, epochs=1)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(cuda_config, precision) -> None:
    result = train(cuda_config.replace(precision=precision))
    res = result.summary["resources"]
    assert res["precision"] == precision and res["gpu_memory"] and res["gpu_memory"][0]["peak_allocated_mb"] > 0
    assert np.isfinite(result.summary["dev"]["val_loss"])
    assert ModelFolder.open(result.best_dir).prediction_settings["device"] == "cuda"


def test_resume_after_an_interruption_reaches_the_same_weights_on_cuda(cuda_config, tmp_path) -> None:
    """Two epochs straight, against one epoch, a stop, and --resume. CUDA's atomic adds (embedding
    backward) are not bitwise reproducible, so equality is within 1e-4."""
    config = cuda_config.replace(epochs=2, precision="bf16", save_every=5)
    whole = train(config.replace(output=str(tmp_path / "whole")))

    class Stop(Exception):
        pass

    def stop_after_first_epoch(record):
        if record.get("event") == "epoch" and record["epoch"] == 1:
            raise Stop

    cut = config.replace(output=str(tmp_path / "cut"))
    with pytest.raises(Stop):
        train(cut, callbacks=[stop_after_first_epoch])
    resumed = train(cut.replace(resume=True))
    a = load_file(str(Path(whole.run_dir) / "last" / "model.safetensors"))
    b = load_file(str(Path(resumed.run_dir) / "last" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=0)


def test_compile_trains_on_cuda(cuda_config) -> None:
    result = train(cuda_config.replace(compile=True, precision="bf16"))
    assert np.isfinite(result.summary["dev"]["f1_macro"])


def test_evaluate_and_predict_agree_on_cuda(cuda_config, shared_data) -> None:
    result = train(cuda_config.replace(precision="bf16"))
    dev = load_goemotions(shared_data, splits=["dev"])["dev"].sample(150, seed=cuda_config.seed)
    evaluated = evaluate(result.best_dir, dev, thresholds=0.3)
    assert evaluated.predictions.from_cache and evaluated.predictions.settings["device"] == "cuda"
    clf = EmotionClassifier.load(
        result.best_dir, device="cuda", precision="bf16", batch_size=cuda_config.eval_batch_size
    )
    assert clf.device.startswith("cuda") and clf.precision == "bf16"
    np.testing.assert_array_equal(evaluated.predictions.probs.astype(np.float32), clf.predict_proba(dev.texts))


def test_serve_on_cuda(tiny_model_dir) -> None:
    testclient = pytest.importorskip("fastapi.testclient", reason="the serve extra (fastapi) is not installed")
    from goemo.serve.app import create_app

    clf = EmotionClassifier.load(tiny_model_dir, device="cuda", backend="auto")
    assert clf.precision in ("bf16", "fp16")  # auto on a GPU
    with testclient.TestClient(create_app(clf)) as client:
        r = client.post("/predict", json={"texts": ["thank you!", "this is awful"]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_onnx_export_runs_on_cuda(tiny_model_dir, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not installed)")
    from goemo.export import export_onnx

    folder = export_onnx(tiny_model_dir, tmp_path / "onnx").path
    gpu = EmotionClassifier.load(folder, device="cuda", backend="auto")
    cpu = EmotionClassifier.load(folder, device="cpu", backend="auto")
    texts = ["so happy for you", "why would you do that?"]
    np.testing.assert_allclose(gpu.predict_proba(texts), cpu.predict_proba(texts), atol=1e-4)
    assert json.loads((folder / "goemo.json").read_text())["onnx"]["quantize"] is None
