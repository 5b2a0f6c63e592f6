"""The TF-IDF + logistic regression baseline: fit, files without pickle, and the shared predict/evaluate/report paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from goemo.core.errors import ConfigError, RunFolderError
from goemo.core.folder import ModelFolder
from goemo.core.run_folder import RunFolder
from goemo.data.source import DataSource
from goemo.data.split import Split
from goemo.models.tfidf import ARRAYS_FILE, VOCAB_FILE, TfidfModel
from goemo.scoring.metrics import summary, tune_thresholds
from goemo.training.tfidf import (
    TfidfConfig,
    fit_tfidf_baseline,
)

ODD_TEXTS = ["", "zzqx unseen words only", "I LOVE it!!! Thanks 😊", "Ça va? naïve café", "thank you " * 50]


@pytest.fixture(scope="module")
def splits(goemotions_splits):
    return {
        "train": goemotions_splits["train"].sample(3000, seed=1),
        "dev": goemotions_splits["dev"].sample(800, seed=1),
        "test": goemotions_splits["test"].sample(800, seed=1),
    }


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, splits, shared_data):
    out = tmp_path_factory.mktemp("tfidf") / "run"
    return fit_tfidf_baseline(TfidfConfig(data_dir=str(shared_data), output=str(out)), dict(splits))


def test_loaded_model_predicts_exactly_as_the_fitted_one(fitted, splits):
    loaded = TfidfModel.load(fitted.best_dir)
    texts = splits["test"].texts[:300] + ODD_TEXTS
    expected = fitted.model.predict_proba(texts)
    got = loaded.predict_proba(texts)
    assert got.shape == (len(texts), 28) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert list(loaded.vectorizers) == ["word", "char"]
    for name, vec in loaded.vectorizers.items():
        assert vec.vocabulary_ == fitted.model.vectorizers[name].vocabulary_
    assert np.ptp(expected[:, loaded.label_names.index("gratitude")]) > 0.5  # the scores are not flat


def test_each_label_is_sklearns_tfidf_logistic_regression(fitted, splits):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    train = splits["train"]
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, strip_accents="unicode")),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, strip_accents="unicode"
                ),
            ),
        ]
    )
    j = train.label_names.index("gratitude")
    lr = LogisticRegression(C=2.0, class_weight="balanced", solver="liblinear", max_iter=1000, random_state=0)
    pipe = make_pipeline(features, lr).fit(train.texts, train.labels[:, j])
    texts = splits["dev"].texts[:200]
    np.testing.assert_allclose(
        fitted.model.predict_proba(texts)[:, j], pipe.predict_proba(texts)[:, 1], rtol=0, atol=1e-8
    )
    assert fitted.model.terms() == {name: len(v.vocabulary_) for name, v in features.transformer_list}


def test_thresholds_are_tuned_on_dev_only(fitted, splits, tmp_path, shared_data):
    meta = json.loads((fitted.best_dir / "goemo.json").read_text())
    assert meta["kind"] == "tfidf" and meta["label_names"] == splits["train"].label_names
    info = meta["thresholds"]
    assert info["global"] == 0.3 and info["tuned_on"] == "dev"
    assert info["tuning"]["split"] == "dev" and info["tuning"]["forced"] is False
    dev = splits["dev"]
    expected = tune_thresholds(
        dev.labels, fitted.model.predict_proba(dev.texts), split_name="dev", label_names=dev.label_names
    )
    assert info["per_label"] == pytest.approx(expected.by_label())
    assert len(set(info["per_label"].values())) > 3  # really per label
    assert meta["data_checksums"]["dev"] == dev.checksum()
    # Test labels cannot move a threshold: refit with test labels scrambled, same thresholds.
    test = splits["test"]
    scrambled = Split(test.texts, test.ids, test.labels[::-1].copy(), test.label_names, "test")
    again = fit_tfidf_baseline(
        TfidfConfig(data_dir=str(shared_data), output=str(tmp_path / "again")), {**splits, "test": scrambled}
    )
    meta2 = json.loads((again.best_dir / "goemo.json").read_text())
    assert meta2["thresholds"]["per_label"] == info["per_label"]
    assert meta2["metrics"]["test"]["f1_macro"] != meta["metrics"]["test"]["f1_macro"]


def test_model_folder_holds_no_pickle(fitted):
    files = sorted(p.name for p in fitted.best_dir.iterdir())
    assert files == ["config.json", "goemo.json", ARRAYS_FILE, VOCAB_FILE]
    assert all(name.endswith((".json", ".npz")) for name in files)
    with np.load(fitted.best_dir / ARRAYS_FILE, allow_pickle=False) as z:
        assert sorted(z.files) == ["coef", "idf_char", "idf_word", "intercept"]
        assert z["coef"].shape == (28, fitted.model.vocabulary_size) and z["coef"].dtype == np.float64
        assert all(z[k].dtype.kind == "f" for k in z.files)
    vocab = json.loads((fitted.best_dir / VOCAB_FILE).read_text())
    assert sum(len(v) for v in vocab.values()) == fitted.model.vocabulary_size
    assert sorted(vocab["word"].values()) == list(range(len(vocab["word"]))) and "thank you" in vocab["word"]
    for path in fitted.run_dir.rglob("*"):
        assert path.is_dir() or path.suffix in {".json", ".npz", ".jsonl", ".yaml"}, path


def test_run_folder_and_summary(fitted, splits):
    s = json.loads((fitted.run_dir / "summary.json").read_text())
    probs = fitted.model.predict_proba(splits["test"].texts)
    assert s["test"]["f1_macro"] == pytest.approx(summary(splits["test"].labels, probs, 0.3)["f1_macro"])
    assert 0.1 < s["test"]["f1_macro"] < 0.6 and s["dev"]["f1_macro_tuned"] > s["dev"]["f1_macro"]
    assert s["fit_time_s"] > 0 and s["train_texts"] == 3000
    records = [json.loads(line) for line in (fitted.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["event"] == "epoch" and records[0]["f1_macro"] == s["dev"]["f1_macro"]
    config = yaml.safe_load((fitted.run_dir / "config.yaml").read_text())
    assert (
        config["c"] == 2.0
        and config["char_ngram_range"] == [2, 5]
        and TfidfConfig(**{k: v for k, v in config.items() if k != "model"}).to_dict() == config
    )  # config.yaml reads back
    with pytest.raises(RunFolderError, match="--overwrite"):
        fit_tfidf_baseline(TfidfConfig(output=str(fitted.run_dir)), dict(splits))


def test_emotion_classifier_uses_the_tfidf_backend(fitted, splits):
    from goemo.predict.classifier import EmotionClassifier

    assert ModelFolder.open(fitted.best_dir).kind == "tfidf" and ModelFolder.open(fitted.run_dir).meta == {}
    clf = EmotionClassifier.load(fitted.best_dir)
    assert clf.backend == "tfidf" and clf.device == "cpu"
    texts = splits["test"].texts[:50] + ODD_TEXTS
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs, fitted.model.predict_proba(texts), rtol=0, atol=1e-6)
    meta = json.loads((fitted.best_dir / "goemo.json").read_text())
    np.testing.assert_allclose(clf.thresholds, [meta["thresholds"]["per_label"][n] for n in clf.label_names])
    out = clf.predict(texts)
    for row, p in zip(out, probs):
        on = {clf.label_names[j] for j in np.flatnonzero(p > clf.thresholds)}
        assert {d["label"] for d in row} == on
    [[top]] = clf.predict(["Thank you so much, this is great, thanks!"], top_k=1)
    assert top["label"] == "gratitude"
    assert len(clf.predict_proba(["so happy"], taxonomy="ekman")[0]) == 7
    with pytest.raises(ConfigError, match="TF-IDF"):
        EmotionClassifier.load(fitted.best_dir, backend="onnx")


def test_evaluate_and_report(fitted, splits, shared_data):
    from goemo.core.errors import ThresholdLeakError
    from goemo.evaluation.evaluate import evaluate
    from goemo.report import ScoringOptions, build_report

    test = splits["test"]
    result = evaluate(fitted.best_dir, test, thresholds="tuned")
    s = json.loads((fitted.run_dir / "summary.json").read_text())
    assert result.report.macro.f1 == pytest.approx(s["test"]["f1_macro_tuned"], abs=1e-12)
    assert not result.predictions.from_cache
    assert evaluate(fitted.best_dir, test, thresholds=0.3).predictions.from_cache
    with pytest.raises(ThresholdLeakError):
        evaluate(fitted.best_dir, splits["dev"], thresholds="tuned")
    report = build_report(
        fitted.run_dir, source=DataSource.folder(shared_data), scoring=ScoringOptions(max_samples=400)
    )
    text = report.markdown.read_text()
    assert "tfidf-word+char-logreg" in text and "tuned on dev" in text and "## Training" in text


def test_one_job_per_folder_and_overwrite_keeps_nothing_of_the_old_run(splits, tmp_path):
    """The baseline's run folder is locked as a transformer's is: a second job fails at once."""
    out = tmp_path / "run"
    small = {k: s.sample(200, seed=2) for k, s in splits.items()}
    with RunFolder(out).lock():  # another goemo job training into this folder
        with pytest.raises(RunFolderError, match="is in use by another goemo run"):
            fit_tfidf_baseline(TfidfConfig(output=str(out), min_df=1), dict(small))
    assert not (out / "summary.json").exists()
    fit_tfidf_baseline(TfidfConfig(output=str(out), min_df=1), dict(small))
    (out / "stray.txt").write_text("from the old run")
    fit_tfidf_baseline(TfidfConfig(output=str(out), min_df=1, overwrite=True), dict(small))
    assert not (out / "stray.txt").exists() and (out / "best" / "goemo.json").is_file()


def test_label_without_positives_gets_a_constant_never(tmp_path):
    texts = ["good day", "bad day", "good thing", "bad thing", "good good", "bad bad"] * 3
    y = np.zeros((len(texts), 3), np.uint8)
    y[:, 0] = [t.startswith("good") for t in texts]
    y[:, 1] = [t.startswith("bad") for t in texts]
    train = Split(texts, [str(i) for i in range(len(texts))], y, ["pos", "neg", "never"], "train")
    model = TfidfModel.fit(train, TfidfConfig(min_df=1))
    p = model.predict_proba(["good", "bad"])
    assert p[0, 0] > 0.5 > p[1, 0] and p[1, 1] > 0.5 > p[0, 1]
    assert np.all(p[:, 2] < 1e-12)


def test_bad_settings_fail_with_one_clear_line():
    with pytest.raises(ConfigError, match="c=0"):
        TfidfConfig(c=0)
    with pytest.raises(ConfigError, match="class_weight"):
        TfidfConfig(class_weight="auto")


def test_cli_fits_predicts_and_evaluates(tmp_path, shared_data):
    from goemo.cli import app

    runner = CliRunner()
    out = tmp_path / "cli-run"
    args = [
        "baseline",
        "tfidf",
        "--data-dir",
        str(shared_data),
        "--out",
        str(out),
        "--max-train-samples",
        "1500",
        "--no-char",
        "--c",
        "4",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "test macro-F1" in res.output and str(out / "best") in res.output
    s = json.loads((out / "summary.json").read_text())
    assert f"{s['test']['f1_macro_tuned']:.4f} with dev-tuned" in res.output
    assert (
        list(s["terms"]) == ["word"] and json.loads((out / "best" / "goemo.json").read_text())["classifier"]["C"] == 4.0
    )
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already holds a run" in again.output and "Traceback" not in again.output
    pred = runner.invoke(app, ["predict", "--model", str(out / "best"), "thanks so much!", "--top-k", "1"])
    assert pred.exit_code == 0, pred.output
    assert json.loads(pred.stdout.splitlines()[0])["labels"][0]["label"] == "gratitude"
    ev = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(out / "best"),
            "--split",
            "test",
            "--thresholds",
            "tuned",
            "--data-dir",
            str(shared_data),
            "--format",
            "json",
        ],
    )
    assert ev.exit_code == 0, ev.output
    payload = json.loads(ev.output[ev.output.index("{") :])
    assert payload["metrics"]["macro"]["f1"] == pytest.approx(s["test"]["f1_macro_tuned"], abs=1e-9)
    bad = runner.invoke(
        app, ["baseline", "tfidf", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 1 and bad.output.startswith("goemo: error:")
    assert not (tmp_path / "x").exists()  # nothing written before the data is read


def test_cli_samples_by_goemo_max_train_samples_unless_told(tmp_path, shared_data, monkeypatch):
    """The option's default is $GOEMO_MAX_TRAIN_SAMPLES, as for goemo train; the option wins."""
    from goemo.cli import app

    monkeypatch.setenv("GOEMO_MAX_TRAIN_SAMPLES", "200")
    base = ["baseline", "tfidf", "--data-dir", str(shared_data), "--no-char"]
    for extra, texts in (([], 200), (["--max-train-samples", "300"], 300)):
        out = tmp_path / f"run-{texts}"
        res = CliRunner().invoke(app, [*base, "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "summary.json").read_text())["train_texts"] == texts
