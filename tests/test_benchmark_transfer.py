"""benchmarks/transfer.py on tiny settings: the label split, the samples, and one source and two target runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from goemo.core.folder import ModelFolder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def transfer(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports benchmarks/common.py
    spec = importlib.util.spec_from_file_location("transfer_benchmark", BENCHMARKS / "transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_19_source_labels_and_8_held_out(transfer, goemotions_splits) -> None:
    names = goemotions_splits["train"].label_names
    source = transfer.source_labels(names)
    assert len(source) == 19 and len(transfer.HELD_OUT) == 8
    assert set(source) | set(transfer.HELD_OUT) | {"neutral"} == set(names)
    counts = goemotions_splits["test"].labels.sum(axis=0)
    assert all(counts[names.index(n)] >= 50 for n in transfer.HELD_OUT)


def test_samples_hold_each_held_out_label_and_the_source_none(transfer, goemotions_splits) -> None:
    train = goemotions_splits["train"]
    rows = transfer.target_sample(train, 100, seed=3, min_per_label=2)
    assert len(rows) == len(set(rows.tolist())) == 100
    assert np.array_equal(rows, transfer.target_sample(train, 100, seed=3, min_per_label=2))
    held = transfer.with_labels(train, list(transfer.HELD_OUT), rows)
    assert held.labels.sum(axis=0).min() >= 2 and held.label_names == list(transfer.HELD_OUT)
    kept = transfer.without_held_out(train)
    cols = [train.label_names.index(n) for n in transfer.HELD_OUT]
    assert 0 < len(kept) < len(train) and train.labels[np.ix_(kept, cols)].sum() == 0


def test_quick_run_trains_the_source_then_both_starts_and_prints_the_table(transfer, tmp_path, capsys) -> None:
    out = tmp_path / "transfer"
    assert transfer.main(["--quick", "--sizes", "20", "--out", str(out)]) == 0
    figures = json.loads((out / "transfer.json").read_text())
    assert [(r["texts"], r["start"]) for r in figures["runs"]] == [(20, "init"), (20, "plain")]
    assert all(r["low"] <= r["f1_macro"] <= r["high"] for r in figures["runs"])
    source = ModelFolder.open(out / "source" / "best")
    assert source.label_names == figures["source_labels"]
    started = ModelFolder.open(out / "n20-seed1-init" / "best")
    assert started.label_names == list(transfer.HELD_OUT)
    assert started.init_from == {
        "path": str((out / "source" / "best").resolve()),
        "labels_kept": False,
        "model": "tiny-random-bert",
    }
    assert ModelFolder.open(out / "n20-seed1-plain" / "best").init_from is None
    printed = capsys.readouterr().out
    assert "| texts | start | mean macro-F1 |" in printed and "| 20 | plain encoder |" in printed
