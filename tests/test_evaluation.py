"""`goemo.evaluation.evaluate` and `goemo evaluate` on a tiny trained run.

Expected values are computed independently of goemo's code path: probabilities by a plain
tokenizer + model forward pass (no length bucketing, no token cache), scores with
scikit-learn directly, group probabilities with an explicit max over the official mapping.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, roc_auc_score
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.errors import EvaluationError, ThresholdLeakError
from goemo.data.io import load_goemotions
from goemo.data.source import DataSource
from goemo.data.split import Split
from goemo.evaluation import evaluate as evaluation
from goemo.evaluation.evaluate import evaluate, write_evaluation
from goemo.predict.cache import model_fingerprint, predict_split
from goemo.predict.classifier import EmotionClassifier

N = 200  # test texts scored per evaluation: enough labels with positives, fast on a CPU


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session's tiny run, so caches written here touch nobody else."""
    dest = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(tiny_model_dir.parent, dest, ignore=shutil.ignore_patterns("last", "predictions"))
    return dest


@pytest.fixture(scope="module")
def test_sample(shared_data: Path) -> Split:
    return load_goemotions(shared_data, splits=["test"])["test"].sample(N, seed=0)


@pytest.fixture(scope="module")
def reference_probs(run: Path, test_sample: Split) -> np.ndarray:
    """Probabilities from a plain padded forward pass, one batch, no goemo batching code."""
    import torch

    from goemo.models.modeling import load_model

    loaded = load_model(run / "best")
    meta = json.loads((run / "best" / "goemo.json").read_text())
    enc = loaded.tokenizer(
        test_sample.texts, truncation=True, max_length=meta["max_length"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = loaded.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return torch.sigmoid(logits.double()).numpy()


def _meta(run: Path) -> dict:
    return json.loads((run / "best" / "goemo.json").read_text())


# --------------------------------------------------------------------------- predictions and metrics


def test_probabilities_match_a_plain_forward_pass(run, test_sample, reference_probs, tmp_path):
    preds = predict_split(run / "best", test_sample, cache_dir=tmp_path)
    assert preds.probs.shape == (N, 28) and preds.probs.dtype == np.float64
    np.testing.assert_allclose(preds.probs, reference_probs, atol=2e-5)
    assert preds.label_names == tuple(test_sample.label_names)
    assert not preds.from_cache and preds.cache_path.parent == tmp_path


def test_fixed_threshold_metrics_match_sklearn(run, test_sample, shared_data, tmp_path):
    result = evaluate(
        run / "best", "test", max_samples=N, thresholds=0.3, source=DataSource.folder(shared_data), cache=tmp_path
    )
    probs = result.predictions.probs  # checked against a plain forward pass above
    y = test_sample.labels
    pred = (probs > 0.3).astype(int)
    defined = y.sum(axis=0) > 0
    f1 = f1_score(y, pred, average=None, zero_division=0)
    got = np.array([np.nan if m.f1 is None else m.f1 for m in result.report.per_label])
    np.testing.assert_allclose(got[defined], f1[defined], atol=1e-6)
    assert np.isnan(got[~defined]).all()  # labels without positives are undefined, not 0
    assert result.report.macro.f1 == pytest.approx(f1[defined].mean(), abs=1e-6)
    assert result.report.micro.precision == pytest.approx(precision_score(y, pred, average="micro", zero_division=0))
    j = int(np.argmax(y.sum(axis=0)))  # the most frequent label has both classes
    assert result.report.per_label[j].auc == pytest.approx(roc_auc_score(y[:, j], probs[:, j]), abs=1e-9)
    assert [r.threshold for r in result.report.at_thresholds] == [
        0.0,
        0.1,
        0.2,
        0.3,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        0.95,
        0.99,
    ]
    assert result.thresholds.mode == "fixed" and "0.3" in result.thresholds.description
    assert result.split == "test" and result.report.n_examples == N


def test_default_threshold_is_the_models_global_one(run, shared_data, tmp_path):
    result = evaluate(run / "best", "test", max_samples=N, source=DataSource.folder(shared_data), cache=tmp_path)
    assert result.thresholds.value == _meta(run)["thresholds"]["global"] == 0.3


def test_tuned_thresholds_are_read_from_goemo_json_and_applied(run, test_sample, shared_data, tmp_path):
    result = evaluate(
        run / "best", "test", max_samples=N, thresholds="tuned", source=DataSource.folder(shared_data), cache=tmp_path
    )
    stored = _meta(run)["thresholds"]["per_label"]
    assert result.thresholds.value.by_label() == stored
    assert result.thresholds.tuned_on == "dev" and "tuned on dev" in result.thresholds.description
    t = np.array([stored[n] for n in test_sample.label_names])
    expected = (result.predictions.probs > t).sum(axis=0)
    assert [m.predicted for m in result.report.per_label] == expected.tolist()
    assert result.to_dict()["thresholds"]["mode"] == "tuned"
    assert result.report.threshold_tuning["split"] == "dev"


def test_tuned_thresholds_are_refused_on_the_split_they_were_tuned_on(run, shared_data, tmp_path):
    with pytest.raises(ThresholdLeakError, match="tuned on 'dev'"):
        evaluate(run / "best", "dev", thresholds="tuned", source=DataSource.folder(shared_data), cache=tmp_path)
    # the same texts under another name are caught by the data checksum stored in goemo.json
    config = _meta(run)["training_config"]
    dev = load_goemotions(shared_data, splits=["dev"])["dev"].sample(config["max_eval_samples"], seed=config["seed"])
    renamed = Split(dev.texts, dev.ids, dev.labels, dev.label_names, "holdout")
    with pytest.raises(ThresholdLeakError):
        evaluate(run / "best", renamed, thresholds="tuned", cache=tmp_path)
    # a fixed threshold on dev is fine
    assert evaluate(run / "best", renamed, thresholds=0.3, cache=tmp_path).report.n_examples == len(dev)


def test_missing_tuned_thresholds_are_a_clear_error(run, tmp_path, shared_data):
    model = tmp_path / "model"
    shutil.copytree(run / "best", model)
    meta = _meta(run)
    meta["thresholds"] = {"global": 0.3, "per_label": None, "tuned_on": None, "tuning": None}
    (model / "goemo.json").write_text(json.dumps(meta))
    with pytest.raises(EvaluationError, match="no tuned per-label thresholds"):
        evaluate(
            model, "test", max_samples=N, thresholds="tuned", source=DataSource.folder(shared_data), cache=tmp_path
        )


# --------------------------------------------------------------------------- taxonomy


def test_ekman_projection_takes_the_max_over_group_members(run, test_sample, shared_data, tmp_path):
    result = evaluate(
        run / "best", "test", max_samples=N, taxonomy="ekman", source=DataSource.folder(shared_data), cache=tmp_path
    )
    groups = json.loads((shared_data / "ekman_mapping.json").read_text())
    groups["neutral"] = ["neutral"]
    assert [m.name for m in result.report.per_label] == list(groups)
    assert result.projected and result.model_taxonomy == "goemotions"
    index = {n: j for j, n in enumerate(test_sample.label_names)}
    for group, members in groups.items():
        cols = [index[m] for m in members]
        y = test_sample.labels[:, cols].max(axis=1)
        p = result.predictions.probs[:, cols].max(axis=1)
        m = result.report.label(group)
        assert m.support == int(y.sum())
        if m.support:
            assert m.f1 == pytest.approx(f1_score(y, p > 0.3, zero_division=0), abs=1e-6)


def test_sentiment_projection_with_tuned_thresholds_decides_before_projecting(run, test_sample, shared_data, tmp_path):
    result = evaluate(
        run / "best",
        "test",
        max_samples=N,
        taxonomy="sentiment",
        thresholds="tuned",
        source=DataSource.folder(shared_data),
        cache=tmp_path,
    )
    stored = _meta(run)["thresholds"]["per_label"]
    fine = result.predictions.probs > np.array([stored[n] for n in test_sample.label_names])
    groups = json.loads((shared_data / "sentiment_dict.json").read_text())
    index = {n: j for j, n in enumerate(test_sample.label_names)}
    for group, members in groups.items():
        said = fine[:, [index[m] for m in members]].any(axis=1)
        assert result.report.label(group).predicted == int(said.sum())
    assert any("before projecting" in n for n in result.report.notes)


def test_model_trained_on_a_grouping_is_evaluated_natively(run, shared_data, tmp_path):
    from goemo.data.taxonomy import load_taxonomy
    from goemo.models.modeling import build_tiny_model, load_tokenizer, save_model

    ekman = list(load_taxonomy("ekman").labels)
    folder = tmp_path / "ekman-model"
    save_model(
        build_tiny_model(ekman),
        load_tokenizer("tiny-random-bert"),
        folder,
        {"label_names": ekman, "taxonomy": "ekman", "max_length": 32, "thresholds": {"global": 0.3}},
    )
    result = evaluate(folder, "test", max_samples=50, source=DataSource.folder(shared_data), cache=tmp_path)
    assert result.taxonomy == result.model_taxonomy == "ekman" and not result.projected
    assert [m.name for m in result.report.per_label] == ekman
    with pytest.raises(EvaluationError, match="trained on the 'ekman' taxonomy"):
        evaluate(
            folder, "test", max_samples=50, taxonomy="sentiment", source=DataSource.folder(shared_data), cache=tmp_path
        )


# --------------------------------------------------------------------------- predictions cache


def _counting(monkeypatch) -> list[int]:
    """Counts the predictor's runs over a split (the one place a model runs for evaluation)."""
    calls: list[int] = []
    original = EmotionClassifier.split_logits

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(EmotionClassifier, "split_logits", counted)
    return calls


def test_second_evaluation_reads_the_cache_and_never_loads_the_model(run, shared_data, tmp_path, monkeypatch):
    first = evaluate(run / "best", "test", max_samples=N, source=DataSource.folder(shared_data))
    assert not first.predictions.from_cache
    assert first.predictions.cache_path.parent == run / "predictions"  # the run folder's own cache

    def boom(*args, **kwargs):
        raise AssertionError("the model must not run on a cache hit")

    monkeypatch.setattr(EmotionClassifier, "load", boom)
    monkeypatch.setattr(EmotionClassifier, "split_logits", boom)
    again = evaluate(
        run / "best", "test", max_samples=N, thresholds="tuned", taxonomy="ekman", source=DataSource.folder(shared_data)
    )
    assert again.predictions.from_cache
    np.testing.assert_array_equal(again.predictions.probs, first.predictions.probs)
    with np.load(first.predictions.cache_path, allow_pickle=False) as z:  # plain arrays, no pickle
        assert z["probs"].shape == (N, 28)


def test_changed_weights_or_data_invalidate_the_cache(run, test_sample, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(run / "best", model)
    calls = _counting(monkeypatch)
    cache = tmp_path / "cache"
    before = predict_split(model, test_sample, cache_dir=cache)
    assert predict_split(model, test_sample, cache_dir=cache).from_cache and len(calls) == 1

    fingerprint = model_fingerprint(model)
    weights = load_file(str(model / "model.safetensors"))
    bias = next(k for k in weights if k.endswith("classifier.bias"))
    weights[bias] = weights[bias] + 1.0
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    assert model_fingerprint(model) != fingerprint
    after = predict_split(model, test_sample, cache_dir=cache)
    assert not after.from_cache and len(calls) == 2
    assert (after.probs > before.probs).all()  # a larger bias raises every probability

    edited = Split(
        ["something else entirely", *test_sample.texts[1:]],
        test_sample.ids,
        test_sample.labels,
        test_sample.label_names,
        "test",
    )
    assert not predict_split(model, edited, cache_dir=cache).from_cache and len(calls) == 3
    assert len(list(cache.glob("test-*.npz"))) == 3


def test_unreadable_cache_is_replaced(run, test_sample, tmp_path, monkeypatch):
    first = predict_split(run / "best", test_sample, cache_dir=tmp_path)
    first.cache_path.write_bytes(b"not an npz")
    calls = _counting(monkeypatch)
    again = predict_split(run / "best", test_sample, cache_dir=tmp_path)
    assert not again.from_cache and len(calls) == 1
    np.testing.assert_allclose(again.probs, first.probs, atol=1e-6)
    assert predict_split(run / "best", test_sample, cache_dir=tmp_path).from_cache


def test_a_recorded_prediction_without_long_text_reads_as_truncate(run, test_sample, tmp_path):
    """A model trained before long texts were scored in pieces: its cached numbers still count, as truncation."""
    from goemo.core.run_settings import RunSettings
    from goemo.predict.cache import store_predictions

    best = tmp_path / "run" / "best"
    shutil.copytree(run / "best", best)
    meta = json.loads((best / "goemo.json").read_text())
    old = {k: v for k, v in meta["prediction"].items() if k != "long_text"}
    meta["prediction"] = old
    (best / "goemo.json").write_text(json.dumps(meta))
    probs = np.full((len(test_sample), 28), 0.25)
    store_predictions(best, old, [(test_sample, probs)])
    cached = predict_split(best, test_sample)
    assert cached.from_cache and cached.settings == {**old, "long_text": "truncate"}
    np.testing.assert_array_equal(cached.probs, probs)
    asked = predict_split(best, test_sample, RunSettings(long_text="pieces"), cache=False)
    assert not asked.from_cache and asked.settings["long_text"] == "pieces"


def test_no_cache_runs_the_model_and_stores_nothing(run, test_sample, tmp_path):
    preds = predict_split(run / "best", test_sample, cache_dir=tmp_path, cache=False)
    assert preds.cache_path is None and not list(tmp_path.iterdir())


def test_evaluate_writes_json_csv_markdown(run, shared_data, tmp_path):
    out = tmp_path / "out"
    result = evaluate(run / "best", "test", max_samples=N, source=DataSource.folder(shared_data), cache=tmp_path)
    write_evaluation(result, out)
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["metrics"]["macro"]["f1"] == pytest.approx(result.report.macro.f1)
    rows = list(csv.DictReader(io.StringIO((out / "evaluation.csv").read_text())))
    assert [r["label"] for r in rows][-4:] == ["macro", "micro", "weighted", "samples"]
    assert len(rows) == 32 and {r["threshold"] for r in rows} == {"0.3"}
    assert "| label | precision |" in (out / "evaluation.md").read_text()


# --------------------------------------------------------------------------- CLI


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_formats(run, shared_data, tmp_path):
    base = ["evaluate", "--model", str(run / "best"), "--data-dir", str(shared_data), "--max-samples", str(N)]
    reference = evaluate(run / "best", "test", max_samples=N, thresholds="tuned", source=DataSource.folder(shared_data))

    res = _cli(*base, "--thresholds", "tuned", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["thresholds"]["mode"] == "tuned" and doc["thresholds"]["tuned_on"] == "dev"
    assert doc["metrics"]["macro"]["f1"] == pytest.approx(reference.report.macro.f1)
    assert len(doc["metrics"]["per_label"]) == 28 and len(doc["metrics"]["at_thresholds"]) == 12

    res = _cli(*base, "--format", "csv", "--taxonomy", "sentiment")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["label"] for r in rows] == [
        "positive",
        "negative",
        "ambiguous",
        "neutral",
        "macro",
        "micro",
        "weighted",
        "samples",
    ]

    res = _cli(*base, "--format", "markdown", "--threshold", "0.5")
    assert res.exit_code == 0, res.output
    assert "global threshold 0.5" in res.stdout and "| admiration |" in res.stdout

    res = _cli(*base, "--thresholds", "tuned")
    assert res.exit_code == 0, res.output
    assert "gratitude" in res.stdout and "macro" in res.stdout and "tuned on dev" in res.stdout


def test_cli_errors(run, shared_data, tmp_path):
    base = ["evaluate", "--model", str(run / "best"), "--data-dir", str(shared_data)]
    res = _cli(*base, "--threshold", "0.4", "--thresholds", "tuned")
    assert res.exit_code == 2
    res = _cli(*base, "--split", "dev", "--thresholds", "tuned")
    assert res.exit_code == 1
    assert res.stderr.strip().startswith("goemo: error:") and "tuned on 'dev'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = _cli("evaluate", "--model", str(tmp_path / "nope"))
    assert res.exit_code == 1 and "no such model folder" in res.stderr
    res = _cli(*base, "--split", "validation")
    assert res.exit_code == 1 and "train, dev, test" in res.stderr


def test_evaluate_is_public_api():
    import goemo

    assert goemo.evaluate is evaluation.evaluate


@pytest.mark.parametrize("damage", ["truncated", "emptied", "not probabilities"])
def test_damaged_cache_costs_one_warning_line_and_is_rebuilt(run, shared_data, tmp_path, damage, monkeypatch):
    """`goemo evaluate` on a run whose cached predictions were damaged: one warning, a model run, a repaired file."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("predictions"))
    base = ["evaluate", "--model", str(copy / "best"), "--data-dir", str(shared_data), "--max-samples", str(N)]
    first = _cli(*base)
    assert first.exit_code == 0, first.output
    (path,) = (copy / "predictions").glob("test-*.npz")
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "emptied":
        path.write_bytes(b"")
    else:
        with np.load(path, allow_pickle=False) as z:
            arrays = dict(z)
        arrays["probs"] = np.full_like(arrays["probs"], np.nan)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    calls = _counting(monkeypatch)
    second = _cli(*base)
    assert second.exit_code == 0, second.output
    assert "Traceback" not in second.output and len(calls) == 1
    warnings = [line for line in second.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "predictions cache" in warnings[0] and str(path) in warnings[0], second.stderr
    assert second.stdout == first.stdout
    with np.load(path, allow_pickle=False) as z:  # rewritten whole
        assert np.isfinite(z["probs"]).all()
    third = _cli(*base)  # and read back: the model does not run again
    assert third.exit_code == 0 and len(calls) == 1 and "WARNING" not in third.stderr


def test_sort_lists_the_problem_classes_first(run, shared_data):
    """`goemo evaluate --sort auc` (the W&B page's command): the lowest AUC first, undefined last."""
    res = _cli(
        "evaluate",
        "--model",
        str(run / "best"),
        "--data-dir",
        str(shared_data),
        "--max-samples",
        str(N),
        "--sort",
        "auc",
        "--format",
        "csv",
    )
    assert res.exit_code == 0, res.output
    rows = [
        r
        for r in csv.DictReader(io.StringIO(res.stdout))
        if r["label"] not in ("macro", "micro", "weighted", "samples")
    ]
    aucs = [float(r["auc"]) for r in rows if r["auc"]]
    assert aucs == sorted(aucs) and len(aucs) >= 2
    assert all(r["auc"] for r in rows[: len(aucs)])  # undefined ones last
    bad = _cli("evaluate", "--model", str(run / "best"), "--data-dir", str(shared_data), "--sort", "colour")
    assert bad.exit_code == 2 and "'colour': expected one of label" in bad.output


def test_cli_gives_bootstrap_intervals_for_macro_f1_auc_and_each_label(run, shared_data):
    """`goemo evaluate` prints 95% intervals (1,000 seeded resamples by default), the same as
    `goemo.scoring.bootstrap` gives on the same probabilities; `--resamples 0` leaves them out."""
    from goemo.scoring.bootstrap import Resampling, bootstrap_scores

    base = ["evaluate", "--model", str(run / "best"), "--data-dir", str(shared_data), "--max-samples", str(N)]
    res = _cli(*base, "--thresholds", "tuned", "--resamples", "300", "--format", "json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["intervals"]
    result = evaluate(run / "best", "test", source=DataSource.folder(shared_data), max_samples=N, thresholds="tuned")
    names = list(result.predictions.label_names)
    want = bootstrap_scores(
        result.labels, result.predictions.probs, result.thresholds.value.values, names, Resampling(n_resamples=300)
    )
    assert got == json.loads(json.dumps(want.to_dict()))
    assert got["n_resamples"] == 300 and got["f1_macro"]["estimate"] == pytest.approx(result.report.macro.f1)
    assert got["f1_macro"]["low"] < got["f1_macro"]["estimate"] < got["f1_macro"]["high"]
    table = _cli(*base, "--resamples", "300")
    assert table.exit_code == 0 and "F1 95% CI" in table.stdout and "bootstrap intervals (300 resamples" in table.stdout
    csv_out = _cli(*base, "--thresholds", "tuned", "--resamples", "300", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(csv_out)))
    macro = next(r for r in rows if r["label"] == "macro")
    assert float(macro["f1_low"]) == pytest.approx(got["f1_macro"]["low"])
    none = _cli(*base, "--resamples", "0", "--format", "json")
    assert json.loads(none.stdout)["intervals"] is None
    # calibration: ECE (15 bins) of the scores, and of the raw model's (the tiny model is calibrated)
    cal = json.loads(none.stdout)["calibration"]
    assert cal["ece_bins"] == 15 and cal["macro_ece_after"] == pytest.approx(result.add_calibration().macro_ece_after)
    assert f"macro ECE (15 bins) {cal['macro_ece_after']:.4f}; the raw model's scores: " in table.stdout
