"""Hugging Face ``datasets`` as a data source (`goemo.data.hf_datasets`): small local datasets built
here with ``datasets`` (no network), one in the exact ``go_emotions`` / ``simplified`` schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError, DataError
from goemo.data.hf_datasets import load_hf_dataset
from goemo.data.io import load_goemotions
from goemo.data.split import Split
from goemo.evaluation.ensemble import evaluate_ensemble
from goemo.evaluation.evaluate import evaluate
from goemo.training.data import load_training_data

runner = CliRunner()


def _same(got: Split, want: Split) -> None:
    assert got.texts == want.texts
    assert got.ids == want.ids
    assert got.label_names == want.label_names
    assert got.labels.dtype == np.uint8 and np.array_equal(got.labels, want.labels)
    assert got.checksum() == want.checksum()


# ---------------------------------------------------------------- the go_emotions schema


def test_the_go_emotions_schema_reads_as_load_goemotions_reads_the_same_rows(go_emotions_dataset) -> None:
    path, rows = go_emotions_dataset
    data = load_hf_dataset(path)
    assert sorted(data) == ["dev", "test", "train"]
    for key, hf_name in (("train", "train"), ("dev", "validation"), ("test", "test")):
        _same(data[key], rows[key])
        assert data[key].name == key
        assert data[key].source == f"dataset {path}:{hf_name}"
    assert len(data["train"].label_names) == 28
    again = load_hf_dataset(path)
    assert {k: s.checksum() for k, s in again.items()} == {k: s.checksum() for k, s in data.items()}  # stable


def test_taxonomies_project_as_they_do_for_the_official_files(go_emotions_dataset, shared_data: Path) -> None:
    path, _ = go_emotions_dataset
    for taxonomy in ("ekman", "sentiment"):
        official = load_goemotions(shared_data, taxonomy=taxonomy)
        data = load_hf_dataset(path, taxonomy=taxonomy)
        _same(data["train"], official["train"].sample(400, seed=7))  # the rows the fixture drew
        _same(data["dev"], official["dev"].sample(120, seed=7))


def test_training_data_comes_from_the_dataset(go_emotions_dataset) -> None:
    path, rows = go_emotions_dataset
    splits = load_training_data(TrainConfig(dataset=str(path)))
    assert sorted(splits) == ["dev", "test", "train"]
    _same(splits["dev"], rows["dev"])


def test_a_dataset_without_validation_cannot_train(go_emotions_dataset, tmp_path: Path) -> None:
    path, _ = go_emotions_dataset
    only_train = tmp_path / "only-train"
    datasets.load_from_disk(str(path))["train"].save_to_disk(str(only_train))
    assert sorted(load_hf_dataset(only_train)) == ["train"]  # one Dataset saved alone is its train split
    with pytest.raises(ConfigError, match="has splits train; training needs validation too"):
        load_training_data(TrainConfig(dataset=str(only_train)))
    with pytest.raises(ConfigError, match=r"has no 'test' split \(it has train\)"):
        load_hf_dataset(only_train, splits=["test"])


def test_a_hub_id_goes_to_load_dataset_unchanged(go_emotions_dataset, monkeypatch) -> None:
    """The Hub path without the Hub: ``go_emotions`` / ``simplified`` reach ``datasets.load_dataset`` as given."""
    path, rows = go_emotions_dataset
    calls = []

    def load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return datasets.load_from_disk(str(path))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    test = load_hf_dataset("go_emotions", "simplified", splits=["test"])["test"]
    assert calls == [("go_emotions", "simplified")]
    assert test.source == "dataset go_emotions/simplified:test"
    _same(test, rows["test"])


def test_a_hub_id_offline_and_not_cached_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-m", "goemo", "stats", "--dataset", "nobody-here/no-such-dataset", "--no-tokens"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("goemo: error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    (line,) = lines
    assert "nobody-here/no-such-dataset" in line and "HF_DATASETS_OFFLINE" in line and "HF_HOME" in line
    assert str(tmp_path / "hf") in line


# ---------------------------------------------------------------- local folders and files


def test_a_parquet_folder_keeps_the_class_label_names(go_emotions_dataset, tmp_path: Path) -> None:
    path, rows = go_emotions_dataset
    folder = tmp_path / "parquet"
    folder.mkdir()
    for name, ds in datasets.load_from_disk(str(path)).items():
        ds.to_parquet(str(folder / f"{name}.parquet"))
    data = load_hf_dataset(folder, cache_dir=tmp_path / "cache")
    _same(data["dev"], rows["dev"])
    assert data["dev"].source == f"dataset {folder}:validation"


def test_a_json_lines_file_of_label_names(tmp_path: Path) -> None:
    file = tmp_path / "mine.jsonl"
    records = [
        {"comment": "yay", "emotions": ["joy"]},
        {"comment": "hm", "emotions": []},
        {"comment": "grr", "emotions": ["anger", "joy"]},
    ]
    file.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load_hf_dataset(file, text_column="comment", label_column="emotions", cache_dir=tmp_path / "cache")
    (train,) = data.values()
    assert (train.name, train.label_names, train.ids) == ("train", ["anger", "joy"], ["0", "1", "2"])
    assert train.labels.tolist() == [[0, 1], [0, 0], [1, 1]]
    named = load_hf_dataset(
        file,
        text_column="comment",
        label_column="emotions",
        label_names=["joy", "anger", "fear"],
        cache_dir=tmp_path / "c",
    )["train"]
    assert named.labels.tolist() == [[1, 0, 0], [0, 0, 0], [1, 1, 0]]
    with pytest.raises(DataError, match=r"dataset .*mine.jsonl:train: emotions: row 0: unknown label 'joy'"):
        load_hf_dataset(
            file, text_column="comment", label_column="emotions", label_names=["sad"], cache_dir=tmp_path / "c"
        )


def test_a_multi_hot_column_and_a_single_class_label(tmp_path: Path) -> None:
    multi = tmp_path / "multi"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b"], "labels": [[1, 0, 1], [0, 0, 0]]}),
            "validation": datasets.Dataset.from_dict({"text": ["c"], "labels": [[0, 1, 0]]}),
        }
    ).save_to_disk(str(multi))
    data = load_hf_dataset(multi)
    assert data["train"].label_names == ["label_0", "label_1", "label_2"]
    assert data["train"].labels.tolist() == [[1, 0, 1], [0, 0, 0]] and data["dev"].labels.tolist() == [[0, 1, 0]]
    assert load_hf_dataset(multi, label_names=["x", "y", "z"])["dev"].label_names == ["x", "y", "z"]
    with pytest.raises(
        DataError, match=r"multi:train: labels: row 0: expected a multi-hot list of 2 values 0/1, got 3"
    ):
        load_hf_dataset(multi, label_names=["x", "y"])

    single = tmp_path / "single"
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    datasets.Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=features).save_to_disk(str(single))
    (train,) = load_hf_dataset(single).values()  # the default label column: labels, else label
    assert (train.label_names, train.labels.tolist()) == (["neg", "pos"], [[1, 0], [0, 1]])


# ---------------------------------------------------------------- bad columns and labels: one line naming the column


def test_bad_columns_and_labels_name_the_column(go_emotions_dataset, tmp_path: Path) -> None:
    path, _ = go_emotions_dataset
    with pytest.raises(
        ConfigError, match=r":train: no text column 'comment' \(columns: text, labels, id\); use --text-column"
    ):
        load_hf_dataset(path, text_column="comment")
    with pytest.raises(ConfigError, match=r"no label column 'emotions' .*use --label-column"):
        load_hf_dataset(path, label_column="emotions")
    with pytest.raises(
        ConfigError, match=r"column 'labels' names its labels \[admiration, .*not the label names given \[joy\]"
    ):
        load_hf_dataset(path, label_names=["joy"])
    with pytest.raises(ConfigError, match=r"--taxonomy ekman: .*not among the source labels"):
        _tiny(tmp_path, "flat", {"text": ["a"], "labels": [[1]]}, taxonomy="ekman")  # label_0 is no GoEmotions label

    bad = {
        "number-text": (
            {"text": [1, 2], "labels": [[0], [1]]},
            r"text: expected a text column \(Value\('string'\)\), got Value\('int64'\)",
        ),
        "float-labels": (
            {"text": ["a", "b"], "labels": [0.5, 1.0]},
            r"labels: unsupported label feature Value\('float64'\)",
        ),
        "ragged": (
            {"text": ["a", "b"], "labels": [[0, 1], [1]]},
            r"labels: row 1: expected a multi-hot list of 2 values 0/1, got 1 values",
        ),
        "not-binary": (
            {"text": ["a"], "labels": [[0, 2]]},
            r"labels: row 0: expected 0 or 1 in a multi-hot list, got 2",
        ),
        "plain-ids": ({"text": ["a"], "labels": [3]}, r"column 'labels' holds label ids but no label names"),
        "bad-json": ({"text": ["a"], "labels": ["[joy"]}, r"labels: row 0: invalid JSON list: Expecting value at"),
        "huge-id": (  # int() refuses the digits: a clean line, as io's readers give, not a ValueError
            {"text": ["a"], "labels": ["[" + "9" * 5000 + "]"]},
            r"labels: row 0: invalid JSON list: a number of more than 4,300 digits",
        ),
    }
    for name, (columns, message) in bad.items():
        with pytest.raises((ConfigError, DataError), match=message) as caught:
            _tiny(tmp_path, name, columns)
        assert "\n" not in str(caught.value), name


def _tiny(tmp_path: Path, name: str, columns: dict, **options) -> dict[str, Split]:
    folder = tmp_path / name
    datasets.Dataset.from_dict(columns).save_to_disk(str(folder))
    return load_hf_dataset(folder, **options)


def test_missing_local_paths_and_odd_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data/nowhere/at/all: no such file or folder"):
        load_hf_dataset("data/nowhere/at/all")
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"unsupported file type '.txt'"):
        load_hf_dataset(odd)
    _tiny(tmp_path, "plain", {"text": ["a"], "labels": [[1]]})
    with pytest.raises(ConfigError, match="written by save_to_disk, which has no configurations"):
        load_hf_dataset(tmp_path / "plain", "simplified")


# ---------------------------------------------------------------- the CLI end to end: train, evaluate, stats


@pytest.fixture(scope="module")
def trained_on_dataset(go_emotions_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """``goemo train --dataset PATH`` with the tiny random BERT: (the dataset, the run folder)."""
    path, _ = go_emotions_dataset
    run = tmp_path_factory.mktemp("hf-train") / "run"
    args = ["train", "--dataset", str(path), "--model", "tiny-random-bert", "--epochs", "1", "--lr", "1e-3"]
    args += ["--batch-size", "16", "--max-length", "48", "--precision", "fp32", "--log-every", "10"]
    args += ["--output", str(run), "--cache-dir", str(run.parent / "cache")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return path, run


def test_goemo_train_on_a_dataset_end_to_end(trained_on_dataset) -> None:
    path, run = trained_on_dataset
    summary = json.loads((run / "summary.json").read_text())
    assert {"dev", "test"} <= set(summary) and isinstance(summary["dev"]["f1_macro"], float)
    meta = json.loads((run / "best" / "goemo.json").read_text())
    assert meta["training_config"]["dataset"] == str(path)
    config = json.loads((run / "best" / "config.json").read_text())
    assert len(config["id2label"]) == 28 and config["id2label"]["0"] == "admiration"
    card = ModelCard.load(run / "best" / "README.md")  # the local folder, not the Hub's go_emotions
    assert "datasets" not in card.data.to_dict() and "huggingface.co/datasets" not in card.text
    assert f"A local dataset: `{path}` (not from the Hugging Face Hub)." in card.text


def test_goemo_evaluate_on_a_dataset(trained_on_dataset) -> None:
    path, run = trained_on_dataset
    given = runner.invoke(
        app, ["evaluate", "--model", str(run / "best"), "--dataset", str(path), "--split", "test", "--format", "json"]
    )
    assert given.exit_code == 0, given.output
    result = json.loads(given.stdout)
    assert result["split"] == "test" and result["metrics"]["n_examples"] == 120
    by_default = runner.invoke(app, ["evaluate", "--model", str(run / "best"), "--split", "test", "--format", "json"])
    assert by_default.exit_code == 0, by_default.output  # the model's own training dataset
    assert json.loads(by_default.stdout)["metrics"] == result["metrics"]
    both = runner.invoke(app, ["evaluate", "--model", str(run / "best"), "--dataset", str(path), "--data-dir", "x"])
    assert both.exit_code == 2 and "give --dataset or --data-dir, not both" in both.output


def test_goemo_report_and_ensemble_read_the_models_dataset(trained_on_dataset, tmp_path: Path, monkeypatch) -> None:
    """Without --data-dir, report and ensemble score the model's own training dataset, as evaluate
    does (they used to look for data/goemotions, here absent)."""
    path, run = trained_on_dataset
    monkeypatch.chdir(tmp_path)  # no data/goemotions below the working directory
    at_03 = evaluate(run / "best", "test", thresholds=0.3)
    assert at_03.report.n_examples == 120  # the dataset's test split, by default
    report = runner.invoke(app, ["report", str(run), "--data-analysis", str(tmp_path / "none")])
    assert report.exit_code == 0, report.output
    assert "(120 texts;" in report.stdout
    members = evaluate_ensemble([run / "best"]).members
    assert members[0]["f1_macro"] == pytest.approx(at_03.report.macro.f1)


def test_goemo_stats_on_a_dataset(go_emotions_dataset) -> None:
    path, rows = go_emotions_dataset
    result = runner.invoke(
        app, ["stats", "--dataset", str(path), "--no-tokens", "--format", "json", "--taxonomy", "ekman"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["splits"]["train"]["texts"] == 400 and stats["splits"]["dev"]["texts"] == 120
    bad = runner.invoke(app, ["stats", "--dataset", str(path), "--no-tokens", "--text-column", "body"])
    assert bad.exit_code == 1
    assert bad.stderr.strip().startswith("goemo: error: dataset ") and "no text column 'body'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
