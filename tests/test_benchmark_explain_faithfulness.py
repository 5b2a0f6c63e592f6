"""benchmarks/explain_faithfulness.py: the bins' word counts, and a run on the tiny model that writes every figure."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "explain_faithfulness.py"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports benchmarks/common.py as `common`
    spec = importlib.util.spec_from_file_location("explain_faithfulness_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("common", None)


def test_words_deleted_per_bin(bench):
    assert bench.BINS == (0.01, 0.05, 0.10, 0.20, 0.50)
    assert bench.counts(1) == [1, 1, 1, 1, 1]
    assert bench.counts(10) == [1, 1, 1, 2, 5]
    assert bench.counts(13) == [1, 1, 2, 3, 7]


def test_a_run_on_the_tiny_model_writes_every_figure(bench, tiny_model_dir, shared_data, tmp_path, capsys):
    out = tmp_path / "figures.json"
    test_file = shared_data / "test.tsv"  # a split given as a file, as the lead's command gives it
    args = ["--model", str(tiny_model_dir), "--split", str(test_file), "--backends", "torch", "--pairs", "12"]
    args += ["--methods", "occlusion", "--alone", "2", "--json", str(out)]
    assert bench.main(args) == 0
    [row] = json.loads(out.read_text())["results"]
    assert row["method"] == "occlusion" and row["pairs"] >= 12 and row["backend"] == "torch fp32"
    # at 1% one word goes: occlusion's top word is, by construction, the one whose deletion lowers the label most
    assert row["comp by bin"][0] >= row["random comp by bin"][0] - 1e-6
    assert row["comp by bin"][3] == pytest.approx(row["comp@20%"])
    assert row["ratio@20%"] == pytest.approx(row["comp@20%"] / row["random comp@20%"])
    assert row["suff ratio@20%"] == pytest.approx(row["suff@20%"] / row["random suff@20%"])
    assert row["ms/text batched"] > 0 and row["explain/predict"] > 0
    assert "| torch fp32 | occlusion |" in capsys.readouterr().out
