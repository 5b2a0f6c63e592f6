"""``goemo compare`` (`goemo.evaluation.compare`): two models on the same texts, paired bootstrap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.folder import ModelFolder, write_calibration, write_meta
from goemo.evaluation.compare import compare_models, resolve_model_dir
from goemo.models.folding import fold_logit_affine
from goemo.scoring.bootstrap import Resampling

runner = CliRunner()


@pytest.fixture(scope="module")
def shifted_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every logit lowered by 1.5: the same ranking, fewer labels above a fixed threshold."""
    folder = tmp_path_factory.mktemp("shifted") / "best"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns(".onnx-cpu*"))
    write_calibration(folder, None)
    n = ModelFolder.open(folder).num_labels
    fold_logit_affine(folder, np.ones(n), np.full(n, -1.5))
    return folder


def test_compare_prints_who_wins_with_interval_and_p_value(tiny_model_dir: Path, shifted_model: Path) -> None:
    result = runner.invoke(
        app,
        ["compare", str(tiny_model_dir.parent), str(shifted_model), "--split", "test", "--fixed", "--resamples", "200"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"A = {tiny_model_dir}, B = {shifted_model} on test (5,427 texts)" in out
    assert "paired bootstrap over the texts, 200 resamples, seed 0" in out
    assert "macro F1" in out and "macro ROC-AUC" in out and "95% CI of A - B" in out
    # a shift of every logit keeps each label's ranking (up to float32 rounding): no difference in ROC-AUC
    assert "no clear difference in macro ROC-AUC: A - B = " in out
    assert "on macro-F1 by " in out  # at the fixed threshold, the lower scores predict fewer labels


def test_compare_as_a_library_agrees_with_evaluate(tiny_model_dir: Path, shifted_model: Path) -> None:
    c = compare_models(
        tiny_model_dir, shifted_model, "test", thresholds="fixed", resampling=Resampling(n_resamples=100, seed=1)
    )
    f1 = c.paired["f1_macro"]
    assert f1.a == pytest.approx(c.a.report.macro.f1) and f1.b == pytest.approx(c.b.report.macro.f1)
    assert f1.difference == pytest.approx(c.a.report.macro.f1 - c.b.report.macro.f1)
    assert f1.difference != 0 and f1.low <= f1.difference <= f1.high
    assert c.paired["auc_macro"].difference == pytest.approx(0.0, abs=1e-3) and not c.paired["auc_macro"].significant
    assert c.scores_a.f1_macro.estimate == pytest.approx(c.a.report.macro.f1)
    doc = c.to_dict()
    assert doc["texts"] == 5427 and doc["n_resamples"] == 100 and set(doc["paired"]) == {"f1_macro", "auc_macro"}


def test_a_model_against_itself_is_no_different(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["compare", str(tiny_model_dir), str(tiny_model_dir), "--resamples", "50", "--format", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    f1 = doc["paired"]["f1_macro"]
    assert f1["difference"] == 0.0 and f1["p_value"] == 1.0 and f1["significant"] is False
    assert doc["thresholds"]["a"]["mode"] == "tuned"


def test_models_scored_on_other_texts_are_refused(tiny_model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    other_data = tmp_path / "data"
    other_data.mkdir()
    shutil.copy(shared_data / "emotions.txt", other_data)
    lines = (shared_data / "test.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (other_data / "test.tsv").write_text("".join(lines[:60]), encoding="utf-8")
    other = tmp_path / "other" / "best"
    shutil.copytree(tiny_model_dir, other, ignore=shutil.ignore_patterns(".onnx-cpu*"))
    meta = dict(ModelFolder.open(other).meta)
    meta["data_source"] = {**meta["data_source"], "data_dir": str(other_data)}
    write_meta(other, meta)
    result = runner.invoke(app, ["compare", str(tiny_model_dir), str(other), "--fixed", "--resamples", "10"])
    assert result.exit_code == 1
    assert "were scored on different texts for 'test'" in result.output and "give --data-dir" in result.output


def test_a_run_folder_means_its_best_model(tiny_model_dir: Path) -> None:
    assert resolve_model_dir(tiny_model_dir.parent) == tiny_model_dir
    assert resolve_model_dir(tiny_model_dir) == tiny_model_dir
