"""A goemo model folder is a standard Hugging Face model: it loads in a process that never imports goemo.

Both heads: the architecture's own (``cls``) with plain transformers, goemo's mean-pooling head
(the ``fast`` preset's) with ``trust_remote_code=True`` and the ``modeling_goemo.py`` saved beside
its weights. goemo itself loads both without ``trust_remote_code`` and never runs a folder's copy
of the code. ``config.json`` carries the thresholds goemo decides by.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from goemo.core.config import resolve_config
from goemo.core.folder import ModelFolder
from goemo.data.taxonomy import load_taxonomy
from goemo.models.card import EXAMPLE_TEXT
from goemo.models.modeling import build_tiny_model, load_model, load_tokenizer, save_model
from goemo.predict.classifier import EmotionClassifier
from goemo.training.loop import train

PY = sys.executable
TEXTS = ["so happy for you!", "This is the worst day ever and I am furious.", "what?", ""]


def _config(root: Path, shared_data: Path, pooling: str):
    """The tiny BERT with the ``fast`` preset's head settings (mean) or BERT's own head (cls)."""
    overrides = {
        "data_dir": str(shared_data),
        "model": "tiny-random-bert",
        "pooling": pooling,
        "epochs": 1,
        "lr": 1e-3,
        "batch_size": 32,
        "max_length": 48,
        "max_train_samples": 300,
        "max_eval_samples": 80,
        "output": str(root / pooling),
        "cache_dir": str(root / "cache"),
        "precision": "fp32",
    }
    return resolve_config("fast" if pooling == "mean" else None, overrides=overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """Run folders of one tiny training per head, and a folder written by `save_model` alone."""
    root = tmp_path_factory.mktemp("standard")
    out = {pooling: train(_config(root, shared_data, pooling)).run_dir for pooling in ("mean", "cls")}
    names = list(load_taxonomy("goemotions").labels)
    saved = root / "saved" / "best"
    save_model(build_tiny_model(names, "mean").eval(), load_tokenizer("minilm"), saved, {"label_names": names})
    out["saved"] = saved.parent
    return out


def _fresh(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter that must never import goemo; its stdout."""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    guard = "\nimport sys\nassert 'goemo' not in sys.modules, sorted(m for m in sys.modules if 'goemo' in m)\n"
    done = subprocess.run(
        [PY, "-c", textwrap.dedent(code) + guard], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_mean_run_used_the_fast_preset_head(runs: dict[str, Path]) -> None:
    mean = ModelFolder.open(runs["mean"] / "best")
    assert mean.training_config["preset"] == "fast" and mean.config["model_type"] == "goemo-mean-pool"
    assert ModelFolder.open(runs["cls"] / "best").config["model_type"] == "bert"


def test_every_folder_loads_without_goemo(runs: dict[str, Path], tmp_path: Path) -> None:
    """best/ and last/ of both heads, and a `save_model` folder: AutoModel and pipeline, no goemo."""
    folders = {
        "mean-best": (runs["mean"] / "best", True),
        "mean-last": (runs["mean"] / "last", True),
        "cls-best": (runs["cls"] / "best", False),
        "cls-last": (runs["cls"] / "last", False),
        "saved": (runs["saved"] / "best", True),
    }
    expected = {
        key: EmotionClassifier.load(folder, backend="torch", device="cpu", precision="fp32").predict_proba(TEXTS)
        for key, (folder, _) in folders.items()
    }
    spec = {k: (str(f), r) for k, (f, r) in folders.items()}
    out = _fresh(
        f"""
        import json
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

        out = {{}}
        for key, (folder, remote) in {spec!r}.items():
            model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote).eval()
            tok = AutoTokenizer.from_pretrained(folder)
            enc = tok({TEXTS!r}, padding=True, truncation=True, max_length=48, return_tensors="pt")
            with torch.no_grad():
                direct = torch.sigmoid(model(**enc).logits).tolist()
            clf = pipeline("text-classification", model=folder, top_k=None, trust_remote_code=remote)
            names = [clf.model.config.id2label[i] for i in range(clf.model.config.num_labels)]
            rows = clf({TEXTS!r}, truncation=True, max_length=48)
            piped = [[{{r["label"]: r["score"] for r in row}}[n] for n in names] for row in rows]
            out[key] = {{"module": type(model).__module__, "direct": direct, "pipeline": piped}}
        print("RESULT " + json.dumps(out))
        """,
        tmp_path,
    )
    got = json.loads(out.rpartition("RESULT ")[2])
    for key, (_, remote) in folders.items():
        module = got[key]["module"]
        assert module.startswith("transformers_modules.") if remote else module.startswith("transformers.models.bert")
        assert module.endswith("modeling_goemo") == remote
        for way in ("direct", "pipeline"):
            np.testing.assert_allclose(np.array(got[key][way]), expected[key], atol=1e-5, err_msg=f"{key} {way}")


def test_the_cards_snippet_runs_without_goemo_and_decides_as_goemo(runs: dict[str, Path], tmp_path: Path) -> None:
    for pooling in ("mean", "cls"):
        best = runs[pooling] / "best"
        snippet = re.search(r"```python\n(.*?)```", (best / "README.md").read_text(), re.S)
        assert snippet is not None and "from transformers import pipeline" in snippet.group(1)
        assert ("trust_remote_code=True" in snippet.group(1)) == (pooling == "mean")
        printed = _fresh(snippet.group(1), tmp_path).strip()
        labels = sorted(ast.literal_eval(printed[printed.rindex("[") :]))  # the snippet prints a list of labels
        assert labels == sorted(
            d["label"] for d in EmotionClassifier.load(best, backend="auto").predict([EXAMPLE_TEXT])[0]
        )


def test_config_json_carries_the_thresholds_goemo_decides_by(runs: dict[str, Path]) -> None:
    for pooling in ("mean", "cls"):
        best, last = ModelFolder.open(runs[pooling] / "best"), ModelFolder.open(runs[pooling] / "last")
        config = best.config
        assert config["problem_type"] == "multi_label_classification"
        assert config["thresholds"] == pytest.approx(best.thresholds().tolist(), abs=1e-6)
        assert len(config["thresholds"]) == 28 and config["thresholds_tuned_on"] == "dev"
        assert config["threshold_convention"] == "prob > threshold"
        assert best.tuned is not None and config["thresholds"] == pytest.approx(list(best.tuned.values), abs=1e-6)
        # last/ holds no tuned thresholds: the run's global one, repeated
        assert last.config["thresholds"] == [0.3] * 28 and last.config["thresholds_tuned_on"] is None
    saved = ModelFolder.open(runs["saved"] / "best").config
    assert saved["thresholds"] == [0.5] * 28 and saved["thresholds_tuned_on"] is None  # no goemo thresholds: 0.5


def test_mean_head_folders_ship_their_code_and_auto_map(runs: dict[str, Path]) -> None:
    for folder in (runs["mean"] / "best", runs["mean"] / "last", runs["saved"] / "best"):
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": "modeling_goemo.GoemoConfig",
            "AutoModelForSequenceClassification": "modeling_goemo.GoemoForSequenceClassification",
        }
        code = (folder / "modeling_goemo.py").read_text()
        imports = {m.split(".")[0] for m in re.findall(r"^(?:from|import) ([\w.]+)", code, re.M)}
        assert imports <= {"__future__", "typing", "torch", "transformers"}, imports
    cls = runs["cls"] / "best"
    assert not (cls / "modeling_goemo.py").exists() and "auto_map" not in json.loads((cls / "config.json").read_text())


def test_goemo_loads_both_heads_without_running_the_folders_code(runs: dict[str, Path], tmp_path: Path) -> None:
    """goemo's registered classes win over a folder's auto_map, with or without trust_remote_code."""
    copy = tmp_path / "mean-best"
    shutil.copytree(runs["mean"] / "best", copy)
    marker = tmp_path / "ran"
    (copy / "modeling_goemo.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('folder code ran')\n"
    )
    for trust in (False, True):
        loaded = load_model(copy, trust_remote_code=trust)
        assert type(loaded.model).__module__ == "goemo.models.modeling_goemo"
    clf = EmotionClassifier.load(copy, backend="torch", device="cpu")
    np.testing.assert_allclose(
        clf.predict_proba(TEXTS), EmotionClassifier.load(runs["mean"] / "best", backend="auto").predict_proba(TEXTS)
    )
    assert type(load_model(runs["cls"] / "best").model).__name__ == "BertForSequenceClassification"
    assert not marker.exists()
