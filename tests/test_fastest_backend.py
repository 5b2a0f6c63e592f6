"""``backend="fastest"``: the int8 CPU export, made once, checked on dev, cached, locked; the fallbacks."""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

pytest.importorskip("onnxruntime", reason="the CPU export needs the onnx extra: pip install 'goemo[onnx]'")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (the onnx extra)")

from goemo.core.folder import ModelFolder, write_meta  # noqa: E402
from goemo.predict import fastest, onnx_export  # noqa: E402
from goemo.predict.classifier import EmotionClassifier  # noqa: E402
from goemo.predict.fastest import EXPORT_DIR, choose_fastest, ensure_cpu_export, find_dev_split, macro_f1  # noqa: E402

TEXTS = ["thank you so much!", "I hate this", "", "what is going on here? I am so confused and a bit scared"]


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny model: its CPU export must not leak into other tests."""
    folder = tmp_path / "run" / "best"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns(".*"))
    return folder


@pytest.fixture()
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Counts the ONNX exports made (each call of `build_graphs`)."""
    made: list[Path] = []
    real = onnx_export.build_graphs

    def counting(*args, **kwargs):
        made.append(kwargs["target"])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "build_graphs", counting)
    return made


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "goemo.json").read_text())
    for key, value in changes.items():
        if key == "data_dir":  # where the training data is recorded: the data source, found from any folder
            meta["data_source"]["data_dir"] = value
        else:
            meta[key] = value
    write_meta(folder, meta)


def test_int8_kept_within_tolerance_then_loaded_and_described(
    model_copy: Path, builds: list[Path], caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="goemo")
    bars: list[tqdm] = []

    def counting_bar(total: int) -> tqdm:  # the dev check's bar shows on a terminal only: here one that counts
        bars.append(tqdm(total=total, file=io.StringIO()))
        return bars[-1]

    monkeypatch.setattr(fastest, "_check_progress", counting_bar)
    export = ensure_cpu_export(ModelFolder.open(model_copy), max_f1_drop=1.0)
    assert [(bar.n, bar.total) for bar in bars] == [(2 * 5426, 2 * 5426)]  # both graphs over every dev text
    assert export.made and export.precision == "int8" and export.in_model_folder
    assert export.path == model_copy / EXPORT_DIR and builds == [export.path]
    check = export.dev_check
    assert check["texts"] == 5426 and check["thresholds"] in ("tuned", "global")  # the whole dev split
    assert 0.0 <= check["int8_macro_f1"] <= 1.0 and 0.0 <= check["fp32_macro_f1"] <= 1.0
    record = ModelFolder.open(export.path).cpu_export
    assert record["source_fingerprint"] == ModelFolder.open(model_copy).fingerprint
    assert record["precision"] == "int8" and ModelFolder.open(export.path).onnx_quantize == "int8"
    said = [r.getMessage() for r in caplog.records if "building the int8 ONNX export once" in r.getMessage()]
    assert len(said) == 1 and "(about 1-2 min on a CPU; " in said[0]  # said once, with how long it takes
    assert any(r.getMessage() == "checking the int8 graph against fp32 on 5426 dev texts" for r in caplog.records)

    stamp = (export.path / "model.onnx").stat().st_mtime_ns
    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu")
    assert (clf.backend, clf.precision, clf.device) == ("onnx", "int8", "cpu")
    assert builds == [export.path] and (export.path / "model.onnx").stat().st_mtime_ns == stamp  # reused
    assert clf.choice is not None and clf.choice.export is not None and not clf.choice.export.made
    assert not [p for p in model_copy.iterdir() if p.name.endswith(".tmp")]  # no temp folders left
    assert clf.path == model_copy and clf.runs_from == export.path
    assert clf.num_threads >= 1
    line = clf.describe()
    assert line.startswith(f"onnx int8 on cpu, {clf.num_threads} thread")
    assert str(export.path) in line and f"dev macro-F1 {check['int8_macro_f1']:.3f} vs fp32" in line
    assert any(r.getMessage() == line for r in caplog.records)  # load logs it
    assert clf.settings["backend"] == "onnx" and clf.settings["precision"] == "int8"  # the cache key says so
    torch_probs = EmotionClassifier.load(model_copy, backend="torch", device="cpu").predict_proba(TEXTS)
    assert np.abs(clf.predict_proba(TEXTS) - torch_probs).max() < 0.1

    itself = EmotionClassifier.load(export.path, backend="fastest")  # an ONNX folder runs as itself
    assert (itself.backend, itself.precision) == ("onnx", "int8") and itself.runs_from == export.path
    assert len(builds) == 1 and itself.choice is None


def test_int8_rejected_falls_back_to_fp32_onnx(model_copy: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="goemo")
    export = ensure_cpu_export(ModelFolder.open(model_copy), max_f1_drop=-1.0)  # nothing can pass
    assert export.precision == "fp32" and export.verdict.startswith("int8 rejected")
    assert "fp32 ONNX" in export.verdict and export.dev_check["max_drop"] == -1.0
    assert ModelFolder.open(export.path).onnx_quantize is None
    assert any("int8 rejected" in r.getMessage() for r in caplog.records)
    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu")
    assert (clf.backend, clf.precision) == ("onnx", "fp32") and "int8 rejected" in clf.describe()
    torch_probs = EmotionClassifier.load(model_copy, backend="torch", device="cpu").predict_proba(TEXTS)
    assert np.abs(clf.predict_proba(TEXTS) - torch_probs).max() < 1e-4  # exact within float error


def test_changed_weights_are_exported_again(model_copy: Path, builds: list[Path]) -> None:
    from safetensors.numpy import load_file, save_file

    old = ensure_cpu_export(ModelFolder.open(model_copy))
    weights = load_file(str(model_copy / "model.safetensors"))
    name = next(k for k in weights if k.endswith("classifier.bias"))
    weights[name] = weights[name] + np.float32(0.5)
    save_file(weights, str(model_copy / "model.safetensors"), metadata={"format": "pt"})
    new_fingerprint = ModelFolder.open(model_copy).fingerprint
    assert ModelFolder.open(old.path).cpu_export["source_fingerprint"] != new_fingerprint

    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu")
    assert len(builds) == 2 and clf.choice is not None and clf.choice.export is not None and clf.choice.export.made
    assert ModelFolder.open(clf.runs_from).cpu_export["source_fingerprint"] == new_fingerprint
    torch_probs = EmotionClassifier.load(model_copy, backend="torch", device="cpu").predict_proba(TEXTS)
    tol = 0.1 if clf.precision == "int8" else 1e-4
    assert np.abs(clf.predict_proba(TEXTS) - torch_probs).max() < tol  # the new weights' scores


def test_no_dev_split_means_fp32_onnx(model_copy: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="goemo")
    _edit_meta(model_copy, data_dir=str(tmp_path / "gone"))
    split, why = find_dev_split(ModelFolder.open(model_copy))
    assert split is None and "gone/dev.tsv is not there" in why
    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu")
    assert (clf.backend, clf.precision) == ("onnx", "fp32")
    assert "no dev split to check int8 against" in clf.describe() and clf.choice is not None
    assert clf.choice.export is not None and clf.choice.export.dev_check == {}
    assert any("no dev split to check int8 against" in r.getMessage() for r in caplog.records)


def test_a_dev_split_that_changed_since_training_is_not_used(model_copy: Path) -> None:
    meta = json.loads((model_copy / "goemo.json").read_text())
    split, where = find_dev_split(ModelFolder.open(model_copy))
    assert split is not None and where.endswith("dev.tsv")  # the recorded sample's checksum matched
    _edit_meta(model_copy, data_checksums={**meta["data_checksums"], "dev": "0" * 64})
    split, why = find_dev_split(ModelFolder.open(model_copy))
    assert split is None and "checksum differs" in why


def test_explicit_backends_and_precision_are_honoured(model_copy: Path, builds: list[Path]) -> None:
    for backend in ("torch", "auto"):
        clf = EmotionClassifier.load(model_copy, backend=backend, device="cpu")
        assert (clf.backend, clf.precision) == ("torch", "fp32") and clf.choice is None
    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu", precision="fp32")
    assert clf.backend == "torch" and "precision fp32 asked for" in clf.describe()
    assert builds == [] and not (model_copy / EXPORT_DIR).exists()
    with pytest.raises(Exception, match="no model.onnx"):
        EmotionClassifier.load(model_copy, backend="onnx")


def test_without_onnxruntime_torch_fp32(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastest, "missing_onnx_tools", lambda: ["onnxruntime"])
    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu")
    assert (clf.backend, clf.precision, clf.device) == ("torch", "fp32", "cpu")
    assert "onnxruntime not installed" in clf.describe() and not (model_copy / EXPORT_DIR).exists()


def test_the_first_load_says_what_it_builds_before_the_slow_part(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """The export and the dev check take the minutes: the line, with how long, comes before them."""
    caplog.set_level(logging.INFO, logger="goemo")
    said_before: list[str] = []

    def build_graphs(*args, **kwargs):
        said_before.extend(r.getMessage() for r in caplog.records if r.name == "goemo.predict.fastest")
        raise RuntimeError("stop here")

    monkeypatch.setattr(onnx_export, "build_graphs", build_graphs)
    with pytest.raises(RuntimeError, match="stop here"):
        ensure_cpu_export(ModelFolder.open(model_copy))
    assert said_before == [
        f"{model_copy} has no CPU export from these weights yet: building the int8 ONNX export once, in "
        f"{model_copy / EXPORT_DIR} (about 1-2 min on a CPU; then checked against fp32 on 5426 dev texts); "
        "later loads reuse it"
    ]


def test_a_failed_export_falls_back_to_torch(model_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from goemo.core.errors import ModelError

    def broken(*args, **kwargs):
        raise ModelError("ONNX export of Weird failed: it is weird")

    monkeypatch.setattr(onnx_export, "build_graphs", broken)
    clf = EmotionClassifier.load(model_copy, backend="fastest", device="cpu")
    assert clf.backend == "torch" and "it is weird" in clf.describe()
    assert any(r.levelno == logging.WARNING and "it is weird" in r.getMessage() for r in caplog.records)
    assert [p.name for p in model_copy.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")] == []


def test_on_a_gpu_torch_in_bf16(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastest, "cuda_available", lambda: True)
    choice = choose_fastest(ModelFolder.open(model_copy))
    assert (choice.backend, choice.device, choice.precision) == ("torch", "cuda", "auto")  # auto: bf16 on CUDA
    assert "bf16" in choice.note and choice.export is None


def test_read_only_model_folder_exports_under_the_cache(
    model_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fastest._writable
    monkeypatch.setattr(fastest, "_writable", lambda where: where.name != EXPORT_DIR and real(where))
    folder = ModelFolder.open(model_copy)
    export = ensure_cpu_export(folder, cache_root=tmp_path / "cache")
    assert not export.in_model_folder and export.path == tmp_path / "cache" / folder.fingerprint[:32]
    assert not (model_copy / EXPORT_DIR).exists()
    again = ensure_cpu_export(ModelFolder.open(model_copy), cache_root=tmp_path / "cache")
    assert again.path == export.path and not again.made


def test_two_processes_starting_together_export_once(model_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The second waits on the lock while the first exports, then reuses its export (flock is per open file)."""
    caplog.set_level(logging.INFO, logger="goemo")
    waiting, results, errors = threading.Event(), {}, []
    real = onnx_export.build_graphs
    calls = []

    class SeesWaiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for it" in record.getMessage():
                waiting.set()

    handler = SeesWaiting()
    logging.getLogger("goemo.predict.fastest").addHandler(handler)

    def slow_build(*args, **kwargs):
        calls.append(1)
        second.start()  # the second starts while the first holds the lock, mid-export...
        waiting.wait(timeout=120)  # ...and the first goes on once the second is blocked on the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "build_graphs", slow_build)

    def worker(name: str) -> None:
        try:
            results[name] = ensure_cpu_export(ModelFolder.open(model_copy))
        except Exception as e:  # reported below
            errors.append(e)

    first = threading.Thread(target=worker, args=("first",))
    second = threading.Thread(target=worker, args=("second",))
    try:
        first.start()
        first.join(timeout=300)
        second.join(timeout=300)
    finally:
        logging.getLogger("goemo.predict.fastest").removeHandler(handler)
    assert not errors and waiting.is_set() and len(calls) == 1
    assert results["first"].made and not results["second"].made
    assert results["first"].path == results["second"].path


def test_macro_f1_matches_the_scoring_module() -> None:
    from goemo.scoring.metrics import compute_metrics

    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.2).astype(np.uint8)
    y[:, 5] = 0  # a label without positives is left out of the mean
    probs = np.clip(y * 0.4 + rng.random((200, 6)) * 0.6, 0, 1)
    pred = (probs > 0.5).astype(np.uint8)
    report = compute_metrics(y, probs, list("abcdef"), thresholds=0.5, sweep=None)
    assert macro_f1(y, pred) == pytest.approx(report.macro.f1)
    assert macro_f1(y, np.zeros_like(y)) == 0.0
