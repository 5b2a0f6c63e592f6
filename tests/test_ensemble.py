"""`goemo.evaluation.ensemble` and `goemo ensemble`: members scored alone, their spread, and the average.

Expected values are recomputed here from each member's own probabilities (a plain
`predict_split` per member) with scikit-learn and `tune_thresholds` on dev, so the test
checks the averaging and the threshold protocol, not only that numbers come out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.errors import ConfigError, ThresholdLeakError
from goemo.core.thresholds import binarize
from goemo.data.source import DataSource
from goemo.evaluation.ensemble import evaluate_ensemble, write_ensemble
from goemo.predict.cache import predict_split
from goemo.scoring.bootstrap import bootstrap_scores
from goemo.scoring.metrics import tune_thresholds
from goemo.training.loop import train

N = 300


@pytest.fixture(scope="module")
def data_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official files with dev and test cut to their first N lines (fast to score)."""
    dest = tmp_path_factory.mktemp("ens-data")
    for f in shared_data.iterdir():
        if f.is_file():
            shutil.copy(f, dest / f.name)
    for name in ("dev.tsv", "test.tsv"):
        lines = (shared_data / name).read_text(encoding="utf-8").splitlines(keepends=True)[:N]
        (dest / name).write_text("".join(lines), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def members(tiny_model_dir: Path, tiny_run_config, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The session's tiny run and a second one trained with another seed."""
    root = tmp_path_factory.mktemp("ens-members")
    first = root / "a"
    shutil.copytree(tiny_model_dir.parent, first, ignore=shutil.ignore_patterns("last", "predictions"))
    config = tiny_run_config(root, output=str(root / "b"), seed=7)
    return [first / "best", Path(train(config).best_dir)]


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    defined = y.sum(axis=0) > 0
    return float(f1_score(y[:, defined], pred[:, defined], average="macro", zero_division=0))


def test_ensemble_averages_probabilities_and_tunes_on_dev(members, data_dir):
    result = evaluate_ensemble(members, source=DataSource.folder(data_dir))
    names = json.loads((members[0] / "goemo.json").read_text())["label_names"]
    dev, test = (DataSource.folder(data_dir).split(s, names) for s in ("dev", "test"))
    probs = {
        s: [predict_split(m, split).probs.astype(np.float64) for m in members]
        for s, split in (("dev", dev), ("test", test))
    }
    for i, member in enumerate(result.members):
        tuned = tune_thresholds(dev.labels, probs["dev"][i], split_name="dev")
        assert member["f1_macro"] == pytest.approx(_macro_f1(test.labels, binarize(probs["test"][i], 0.3)))
        assert member["f1_macro_tuned"] == pytest.approx(_macro_f1(test.labels, binarize(probs["test"][i], tuned)))
    mean_dev, mean_test = np.mean(probs["dev"], axis=0), np.mean(probs["test"], axis=0)
    tuned = tune_thresholds(dev.labels, mean_dev, split_name="dev")
    assert result.ensemble["f1_macro"] == pytest.approx(_macro_f1(test.labels, binarize(mean_test, 0.3)))
    assert result.ensemble["f1_macro_tuned"] == pytest.approx(_macro_f1(test.labels, binarize(mean_test, tuned)))
    assert 0.0 <= result.ensemble["ekman_f1_macro"] <= 1.0 and 0.0 <= result.ensemble["sentiment_f1_macro"] <= 1.0
    # Ekman with tuned thresholds: decide per fine label, then a group is on when any member is.
    mapping = json.loads((data_dir / "ekman_mapping.json").read_text())
    groups = [*mapping, "neutral"]
    members_of = {g: [names.index(m) for m in mapping.get(g, ["neutral"])] for g in groups}
    decided = binarize(mean_test, tuned)
    y_g = np.stack([test.labels[:, members_of[g]].max(axis=1) for g in groups], axis=1)
    pred_g = np.stack([decided[:, members_of[g]].max(axis=1) for g in groups], axis=1)
    assert result.ensemble["ekman_f1_macro_tuned"] == pytest.approx(_macro_f1(y_g, pred_g))
    spread = result.spread["f1_macro_tuned"]
    values = [m["f1_macro_tuned"] for m in result.members]
    assert spread["mean"] == pytest.approx(np.mean(values)) and spread["sd"] == pytest.approx(np.std(values, ddof=1))
    # the ensemble's 95% intervals: goemo.scoring.bootstrap on the mean probabilities at its tuned thresholds
    b = bootstrap_scores(test.labels, mean_test, tuned.values, names)
    assert result.ensemble["intervals"] == {
        "f1_macro_tuned": [b.f1_macro.low, b.f1_macro.high],
        "auc_macro": [b.auc_macro.low, b.auc_macro.high],
    }
    assert b.f1_macro.low <= result.ensemble["f1_macro_tuned"] <= b.f1_macro.high
    assert (
        f"{result.ensemble['f1_macro_tuned']:.4f} ({b.f1_macro.low:.4f}–{b.f1_macro.high:.4f})" in result.to_markdown()
    )


def test_shrink_comes_from_the_members_training_unless_given(members, data_dir):
    names = json.loads((members[0] / "goemo.json").read_text())["label_names"]
    dev, test = (DataSource.folder(data_dir).split(s, names) for s in ("dev", "test"))
    p_dev, p_test = (predict_split(members[0], s).probs.astype(np.float64) for s in (dev, test))
    default = evaluate_ensemble(members[:1], source=DataSource.folder(data_dir))
    assert default.shrink == 0.0  # the tiny members were trained without shrink
    result = evaluate_ensemble(members[:1], shrink=1.0, source=DataSource.folder(data_dir))
    tuned = tune_thresholds(dev.labels, p_dev, split_name="dev", shrink=1.0)
    assert result.shrink == 1.0 and result.to_dict()["shrink"] == 1.0 and "shrunk 1" in result.to_markdown()
    assert result.members[0]["f1_macro_tuned"] == pytest.approx(_macro_f1(test.labels, binarize(p_test, tuned)))


def test_one_model_twice_is_that_model(members, data_dir):
    result = evaluate_ensemble([members[0], members[0]], source=DataSource.folder(data_dir))
    for key in ("f1_macro", "f1_macro_tuned", "auc_macro"):
        assert result.ensemble[key] == pytest.approx(result.members[0][key])
    assert result.spread["f1_macro"]["sd"] == 0.0


def test_thresholds_are_never_tuned_on_the_scored_or_test_split(members, data_dir):
    with pytest.raises(ConfigError, match="tuned on 'dev'"):
        evaluate_ensemble(members, tune_split="dev", eval_split="dev", source=DataSource.folder(data_dir))
    with pytest.raises(ThresholdLeakError):
        evaluate_ensemble(members, tune_split="test", eval_split="dev", source=DataSource.folder(data_dir))


def test_models_with_other_labels_are_refused(members, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    meta = json.loads((other / "goemo.json").read_text())
    meta["label_names"] = meta["label_names"][::-1]
    (other / "goemo.json").write_text(json.dumps(meta))
    config = json.loads((other / "config.json").read_text())  # a model of the same labels in another order
    config["id2label"] = {str(i): n for i, n in enumerate(meta["label_names"])}
    config["label2id"] = {n: i for i, n in enumerate(meta["label_names"])}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="label set"):
        evaluate_ensemble([members[0], other])


def test_cli_prints_the_table_and_writes_files(members, data_dir, tmp_path):
    out = tmp_path / "ens"
    res = CliRunner().invoke(app, ["ensemble", *map(str, members), "--data-dir", str(data_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "ensemble of 2" in res.output and "mean ± sd" in res.output
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["tune_split"] == "dev" and saved["eval_split"] == "test" and len(saved["members"]) == 2
    assert (out / "ensemble.md").read_text().startswith("| model |")
    write_ensemble(
        evaluate_ensemble(members[:1], source=DataSource.folder(data_dir)), tmp_path / "one"
    )  # one member: no spread
    assert json.loads((tmp_path / "one" / "ensemble.json").read_text())["spread"] == {}


def test_cli_error_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["ensemble", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no such model folder" in res.output
