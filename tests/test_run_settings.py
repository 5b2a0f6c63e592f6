"""`RunSettings`: one declaration of how a model runs, the same defaults behind every door."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import goemo
from goemo.cli import app
from goemo.core.errors import ConfigError
from goemo.core.run_settings import DataOptions, RunSettings
from goemo.predict.classifier import EmotionClassifier

RUN_OPTIONS = ("--backend", "--device", "--precision", "--batch-size", "--max-length", "--num-threads")
VERBS = ("evaluate", "predict", "serve", "report", "ensemble")


def _options(verb: str) -> dict[str, Any]:
    sub = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]  # a group: goemo's verbs
    return {name: p for p in sub.params if p.param_type_name == "option" for name in p.opts}


def test_values_are_checked_at_the_boundary() -> None:
    with pytest.raises(ConfigError, match="backend='gpu'"):
        RunSettings(backend="gpu")
    with pytest.raises(ConfigError, match="batch_size=0"):
        RunSettings(batch_size=0)
    with pytest.raises(ConfigError, match="device='tpu'"):
        RunSettings(device="tpu")
    assert RunSettings(device="cuda:1").device == "cuda:1"
    assert RunSettings.of(RunSettings(precision="fp32"), batch_size=8, backend=None) == RunSettings(
        precision="fp32", batch_size=8
    )
    with pytest.raises(TypeError, match="unknown run settings: colour"):
        RunSettings.of(colour="red")


def test_each_verb_has_every_run_option_with_one_help_text() -> None:
    helps: dict[str, set[str]] = {}
    for verb in VERBS:
        options = _options(verb)
        for name in RUN_OPTIONS:
            assert name in options, f"goemo {verb} has no {name}"
            helps.setdefault(name, set()).add(options[name].help or "")
    assert all(len(texts) == 1 for texts in helps.values()), helps


def test_scoring_verbs_share_the_data_options() -> None:
    for verb in ("evaluate", "report", "ensemble"):
        options = _options(verb)
        for f in ("--data-dir", "--dataset", "--dataset-config", "--text-column", "--label-column"):
            assert f in options, f"goemo {verb} has no {f}"
    assert not DataOptions().given and DataOptions(dataset="x").given


def test_python_and_the_command_line_give_one_answer_for_one_text(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The README's two lines, `EmotionClassifier.load(folder)` and `goemo predict`, run the same backend."""
    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder)
    text = "thank you so much, this is wonderful"
    clf = EmotionClassifier.load(folder, device="cpu")
    assert clf.backend == "onnx"  # fastest on a CPU, as the command line
    res = CliRunner().invoke(app, ["predict", "--model", str(folder), "--device", "cpu", "--all-scores", text])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    cli_scores = np.array([line["scores"][name] for name in clf.label_names], dtype=np.float32)
    np.testing.assert_allclose(clf.predict_proba([text])[0], cli_scores, atol=1e-5)


def _library_functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, list[str]]]:
    """Every function of src/goemo outside cli/, with the names of its parameters (self and cls left out)."""
    src = Path(goemo.__file__).parent
    out = []
    for path in sorted(src.rglob("*.py")):
        if "cli" in path.relative_to(src).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                out.append(
                    (f"{path.relative_to(src)}:{node.name}", node, [n for n in names if n not in ("self", "cls")])
                )
    return out


def test_how_a_model_runs_is_one_value_not_loose_parameters() -> None:
    """Issue 28: ``device`` in at most 5 library signatures; at most 3 functions take more than 8
    parameters, each saying why in its docstring (the count is written out there)."""
    functions = _library_functions()
    with_device = [name for name, _, params in functions if "device" in params]
    assert len(with_device) <= 5, with_device
    long = [(name, node, params) for name, node, params in functions if len(params) > 8]
    assert len(long) <= 3, [name for name, _, _ in long]
    words = {9: "Nine", 10: "Ten", 11: "Eleven", 12: "Twelve"}
    for name, node, params in long:
        assert f"{words.get(len(params), len(params))} parameters" in (ast.get_docstring(node) or ""), name
