"""`DataSource`: one value for where a split comes from, one resolver every verb goes through."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from goemo.core.errors import ConfigError, DataError
from goemo.core.folder import ModelFolder
from goemo.data import source as source_module
from goemo.data.source import DataSource, model_source, read_split, resolve_source
from goemo.data.taxonomy import load_taxonomy

CSV_HEAD = "text,labels\n"


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text(CSV_HEAD + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_options_make_one_kind_each(tmp_path: Path) -> None:
    assert DataSource.from_options().kind == "folder"
    assert DataSource.from_options(data_dir="d").data_dir == "d"
    files = DataSource.from_options(files={"train": "a.csv", "dev": "b.csv", "test": None})
    assert files.kind == "files" and files.files == {"train": "a.csv", "dev": "b.csv"}
    assert DataSource.from_options(dataset="go_emotions", dataset_config="simplified").kind == "dataset"
    with pytest.raises(ConfigError, match="give --dataset or --data-dir, not both"):
        DataSource.from_options(dataset="go_emotions", data_dir="d")


def test_a_local_csv_is_read_by_goemos_reader_whichever_option_names_it(tmp_path: Path) -> None:
    """`--dataset mine.csv` and `--train mine.csv` give the same file:line: field error."""
    bad = _csv(tmp_path / "mine.csv", ["fine,joy", "broken,nosuchlabel"])
    by_dataset = DataSource.from_options(dataset=str(bad))
    by_files = DataSource.from_options(files={"train": str(bad)})
    assert by_dataset == by_files
    errors = []
    for source in (by_dataset, by_files):
        with pytest.raises(DataError) as e:
            source.split("train", label_names=["joy", "anger"])
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "mine.csv:3" in errors[0]


def test_a_local_folder_of_split_files_is_read_by_goemos_reader(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    _csv(folder / "train.csv", ["a,joy", "b,anger"])
    _csv(folder / "validation.csv", ["c,joy"])
    source = DataSource.from_options(dataset=str(folder))
    assert source.kind == "files" and sorted(source.files) == ["dev", "train"]
    splits = source.splits()
    assert splits["dev"].texts == ["c"] and splits["dev"].label_names == splits["train"].label_names


def test_the_record_resolves_from_any_working_directory(tmp_path: Path, monkeypatch, shared_data: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(shared_data, data)
    monkeypatch.chdir(tmp_path)
    record = DataSource.folder("data").to_record()
    assert record["data_dir"] == str(data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    back = DataSource.from_record(json.loads(json.dumps(record)))
    assert len(back.split("dev")) == 5426


def test_unknown_split_names_are_refused_in_one_line(shared_data: Path) -> None:
    with pytest.raises(ConfigError, match="one of train, dev, test or a data file; 'validation' is neither"):
        DataSource.folder(shared_data).split("validation")


def test_a_split_file_keeps_the_sources_columns(tmp_path: Path) -> None:
    path = tmp_path / "extra.csv"
    path.write_text("body,emotions\nhello,joy\n", encoding="utf-8")
    base = DataSource.from_options(files={"train": "t.csv"}, text_column="body", label_column="emotions")
    source, name = resolve_source(None, str(path), base)
    assert name == "extra" and source.split(name, ["joy"]).texts == ["hello"]


def test_every_scoring_verb_goes_through_the_one_resolver(tiny_model_dir: Path, monkeypatch, tmp_path) -> None:
    """evaluate, report, ensemble and the int8 check all find the model's data through `model_source`."""
    from goemo.evaluation.ensemble import evaluate_ensemble
    from goemo.evaluation.evaluate import evaluate
    from goemo.predict.fastest import find_dev_split
    from goemo.report.builder import ScoringOptions, build_report

    calls: list[str] = []
    real = source_module.model_source

    def spy(folder: ModelFolder) -> DataSource:
        calls.append(str(folder.path))
        return real(folder)

    monkeypatch.setattr(source_module, "model_source", spy)
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir.parent, run, ignore=shutil.ignore_patterns("last"))
    evaluate(run / "best", "test", max_samples=50)
    build_report(run, scoring=ScoringOptions(max_samples=50))
    evaluate_ensemble([run / "best"], eval_split="test")
    assert find_dev_split(ModelFolder.open(run / "best"))[0] is not None
    assert len(calls) >= 4 and set(calls) == {str(run / "best")}


def test_training_records_its_source_and_old_folders_fall_back(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = ModelFolder.open(tiny_model_dir)
    record = folder.meta["data_source"]
    assert record["kind"] == "folder" and os.path.isabs(record["data_dir"])
    assert model_source(folder) == DataSource.from_record(record)
    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)
    meta = json.loads((old / "goemo.json").read_text())
    del meta["data_source"]
    (old / "goemo.json").write_text(json.dumps(meta))
    rebuilt = model_source(ModelFolder.open(old))
    assert rebuilt.kind == "folder" and Path(str(rebuilt.data_dir)).resolve() == Path(record["data_dir"])
    assert len(read_split(ModelFolder.open(old), "dev")) == 5426


def test_data_dir_is_a_parameter_of_at_most_five_library_functions() -> None:
    """Issue 28: a folder of data is named by a `DataSource`, not by a ``data_dir`` threaded through."""
    src = Path(source_module.__file__).parents[1]
    hits = [
        f"{path.relative_to(src)}:{node.name}"
        for path in src.rglob("*.py")
        if "cli" not in path.relative_to(src).parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and "data_dir" in [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
    ]
    assert len(hits) <= 5, hits


def test_a_folder_of_its_own_labels_is_not_goemotions(tmp_path: Path) -> None:
    """A data folder whose emotions.txt names other labels trains a model of its own labels: no
    paper table beside it, no projection onto Ekman (found: it was recorded as ``goemotions``)."""
    (tmp_path / "emotions.txt").write_text("billing\ndelivery\n", encoding="utf-8")
    assert DataSource.folder(tmp_path).model_taxonomy(["billing", "delivery"]) == "own"
    goemotions = load_taxonomy("goemotions").labels
    (tmp_path / "emotions.txt").write_text("\n".join(goemotions) + "\n", encoding="utf-8")
    assert DataSource.folder(tmp_path).model_taxonomy(goemotions) == "goemotions"
    assert DataSource.folder("no/such/folder").model_taxonomy(["billing", "delivery"]) == "own"
