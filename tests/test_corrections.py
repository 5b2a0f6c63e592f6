"""Cleaning a training split: the exclude and corrections files (`goemo.data.corrections`) and how
training applies them (`goemo.training.data.clean_train`), every mistake named by file, line and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from goemo.core.config import TrainConfig
from goemo.core.errors import DataError
from goemo.data.corrections import read_corrections, read_exclusions
from goemo.data.download import sha256_file
from goemo.data.split import Split
from goemo.training.data import clean_train


def _splits() -> dict[str, Split]:
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.uint8)
    names = ["joy", "anger", "fear"]
    train = Split(["a", "b", "c", "d"], ["t1", "t2", "t3", "t4"], labels, names, "train")
    dev = Split(["e"], ["t1"], np.array([[0, 1, 0]], dtype=np.uint8), names, "dev")  # an id train also has
    return {"train": train, "dev": dev}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- the files


def test_exclusions_one_id_a_line_or_a_csv_id_column(tmp_path: Path) -> None:
    plain = _write(tmp_path, "drop.txt", "# checked by hand\nt1\n\n  t3  \n")
    assert [(e.id, e.line) for e in read_exclusions(plain)] == [("t1", 2), ("t3", 4)]
    issues = _write(tmp_path, "label_issues.csv", 'id,text,label\nt2,"two\nlines",joy\nt4,x,anger\n')
    assert [(e.id, e.line) for e in read_exclusions(issues)] == [("t2", 2), ("t4", 4)]


def test_corrections_rows_and_their_checks(tmp_path: Path) -> None:
    ok = _write(tmp_path, "fix.csv", "\ufeffid,label,action,note\nt1, joy ,REMOVE,x\n\nt2,fear,add,\n")
    assert [(c.id, c.label, c.action, c.line) for c in read_corrections(ok)] == [
        ("t1", "joy", "remove", 2),
        ("t2", "fear", "add", 4),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label\nt1,joy\n", "fix.csv:1: no action column (columns: id, label)"),
        ("", "fix.csv:1: no id or label or action column (columns: none (the file is empty))"),
        ("id,label,action\nt1,joy,flip\n", "fix.csv:2: action: 'flip' is not add or remove"),
        ("id,label,action\nt1,,add\n", "fix.csv:2: label: empty label"),
        (
            "id,label,action\nt1,joy,add\nt2,joy,add\nt1,joy,remove\n",
            "fix.csv:4: action: 'joy' of 't1': line 2 says add",
        ),
    ],
)
def test_a_bad_corrections_file_is_named_by_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError) as err:
        read_corrections(_write(tmp_path, "fix.csv", text))
    assert str(err.value).startswith(str(tmp_path / message.split(":")[0]) + message[len(message.split(":")[0]) :])


def test_a_file_that_is_not_there_or_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.csv: no such file"):
        read_corrections(tmp_path / "nothing.csv")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"t1\n\xff\n")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8 \(byte 3\)"):
        read_exclusions(bad)


# ---------------------------------------------------------------- applying them to the train split


def test_exclude_and_correct_change_only_the_train_split(tmp_path: Path) -> None:
    drop = _write(tmp_path, "drop.txt", "t3\n")
    fixes = _write(tmp_path, "fix.csv", "id,label,action\nt1,joy,remove\nt1,fear,add\nt2,anger,add\nt3,joy,add\n")
    splits = _splits()
    dev = splits["dev"]
    cleaning = clean_train(TrainConfig(exclude=str(drop), corrections=str(fixes)), splits)
    train = splits["train"]
    assert train.ids == ["t1", "t2", "t4"] and train.texts == ["a", "b", "d"]
    assert train.labels.tolist() == [[0, 0, 1], [0, 1, 0], [1, 1, 0]]
    assert splits["dev"] is dev  # dev and test keep their labels
    assert cleaning is not None
    # t1 lost joy and gained fear; t2 already had anger (unchanged); t3's change went with t3
    assert (cleaning.texts_excluded, cleaning.labels_changed, cleaning.added, cleaning.removed) == (1, 2, 1, 1)
    assert cleaning.unchanged == 1
    assert cleaning.exclude == {"file": str(drop.resolve()), "sha256": sha256_file(drop)}
    assert cleaning.corrections is not None and cleaning.corrections["sha256"] == sha256_file(fixes)
    assert cleaning.describe().startswith("cleaned with: 1 texts excluded, 2 labels changed (1 added, 1 removed)")


def test_no_files_no_cleaning() -> None:
    splits = _splits()
    train = splits["train"]
    assert clean_train(TrainConfig(), splits) is None and splits["train"] is train


@pytest.mark.parametrize(
    ("option", "name", "text", "message"),
    [
        ("exclude", "drop.txt", "t1\nnope\n", "drop.txt:2: id: unknown id 'nope': no training text has it"),
        ("corrections", "fix.csv", "id,label,action\nt9,joy,add\n", "fix.csv:2: id: unknown id 't9'"),
        ("corrections", "fix.csv", "id,label,action\nt1,Joy,add\n", "fix.csv:2: label: unknown label 'Joy' (the training labels: joy, anger, fear)"),
    ],
)  # fmt: skip
def test_unknown_ids_and_labels_are_one_line_errors(
    tmp_path: Path, option: str, name: str, text: str, message: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError) as err:
        clean_train(TrainConfig(**{option: str(path)}), _splits())
    assert str(err.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(err.value)
