"""The two walk-through pages, run for real: every command on docs/coming-from-*.md, on a sample.

Each test reads the page's ```bash blocks and runs every ``goemo`` line as it is written there,
with only what a machine without network or GPU needs appended or swapped, and said so next
to the step: a small sample (``--max-train-samples``), fractional epochs, a tiny randomly
initialised model of the same family in place of the hub one, ``--device cpu`` for
``--cuda``, W&B in offline mode. A page whose commands change without the test, or a command
that stops working, fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from goemo.cli import app

ROOT = Path(__file__).resolve().parents[1]
WANDB_PAGE = ROOT / "docs" / "coming-from-wandb-report.md"
GUIDE_PAGE = ROOT / "docs" / "coming-from-cluster-guide.md"
runner = CliRunner()
SAMPLE = ["--max-train-samples", "96", "--max-eval-samples", "64"]

pytestmark = pytest.mark.slow


def page_commands(page: Path) -> list[str]:
    """The shell lines of the page's ```bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def goemo(line: str, *extra: str, swap: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Run one ``goemo …`` line of a page in-process (stdout redirect ``> FILE`` honoured)."""
    line, _, redirect = line.partition(" > ")
    argv = shlex.split(os.path.expandvars(line))
    assert argv[0] == "goemo", line
    argv = [(swap or {}).get(a, a) for a in argv[1:]]
    if "--" in argv:  # options of goemo cluster render go before its goemo arguments
        cut = argv.index("--")
        argv = argv[:cut] + list(extra) + argv[cut:]
    else:
        argv += list(extra)
    result = runner.invoke(app, argv, catch_exceptions=False)
    assert result.exit_code == 0, f"{line}\n{result.output}"
    if redirect:
        Path(redirect.strip()).write_text(result.stdout, encoding="utf-8")
    return result.output, argv


def tiny_encoder(folder: Path, family: str) -> Path:
    """A tiny randomly initialised encoder of ``family`` with MiniLM's (BERT-uncased) tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from goemo.models.modeling import resolve_model_name

    torch.manual_seed(0)
    sizes = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if family == "squeezebert":  # its embeddings feed the first layer without a projection
        sizes["embedding_size"] = sizes["hidden_size"]
    config = AutoConfig.for_model(family, **sizes)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_name("minilm")).save_pretrained(folder)
    return folder


def hub_cache_with(cache: Path, repo_id: str, model_folder: Path) -> None:
    """``cache`` laid out as the Hugging Face hub cache holding ``repo_id`` = the files of ``model_folder``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_folder, repo / "snapshots" / commit)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> Path:
    """A fresh folder as the user's current directory, with W&B offline and no hub."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-files"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GOEMO_CACHE_DIR", str(tmp_path / "token-cache"))
    (tmp_path / "wandb-files").mkdir()
    return tmp_path


def test_the_wandb_report_walk_through(workdir: Path, shared_data: Path) -> None:
    lines = page_commands(WANDB_PAGE)
    assert [line.split()[1] for line in lines] == ["download", "stats", "train", "sweep", "sweep-report", "evaluate"]
    download, stats, train, sweep, sweep_report, evaluate = lines
    squeezebert = str(tiny_encoder(workdir / "tiny-squeezebert", "squeezebert"))

    goemo(download, "--from", str(shared_data))  # no network: the official files from a local copy
    goemo(stats)  # as written: --tracker wandb alone
    sample = (workdir / "runs" / "data-analysis" / "sample_train.csv").read_text(encoding="utf-8")
    assert sample.count("\n") >= 1000 and "label_ids" in sample.splitlines()[0]
    (table,) = workdir.glob("**/offline-run-*/files/media/table/data_sample_*.table.json")  # the W&B Table
    assert len(json.loads(table.read_text(encoding="utf-8"))["data"]) == 1000

    # the preset's squeezebert/squeezebert-uncased, as a tiny random SqueezeBERT
    goemo(train, "--model", squeezebert, "--epochs", "1", *SAMPLE, "--watch-every", "2")
    run = workdir / "runs" / "squeezebert"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["preset"], config["select_metric"], config["dropout"], config["max_length"]) == (
        "wandb-report",
        "val_loss",
        0.3,
        40,
    )
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("auc_score" in e for e in epochs)

    # the report's sweep config verbatim, but two epochs instead of ten
    report_yaml = yaml.safe_load((ROOT / "examples" / "wandb_report_sweep.yaml").read_text())
    report_yaml["parameters"]["epochs"] = {"value": 2}
    Path("examples").mkdir()
    Path("examples/wandb_report_sweep.yaml").write_text(yaml.safe_dump(report_yaml))
    goemo(sweep.replace("--count 6", "--count 3"), "--model", squeezebert, *SAMPLE)
    sweep_dir = workdir / "runs" / "sweeps" / "wandb_report_sweep"
    goemo(sweep_report)
    assert (sweep_dir / "sweep_report.html").is_file()
    assert list((sweep_dir / "plots").glob("sweep_*.png"))
    goemo(evaluate, "--max-samples", "64")


def test_dropout_changes_the_wandb_report_model(workdir: Path, shared_data: Path) -> None:
    """The report's central sweep dimension: with SqueezeBERT, two dropouts give two different runs."""
    squeezebert = str(tiny_encoder(workdir / "tiny-squeezebert", "squeezebert"))
    losses = []
    for dropout in ("0.3", "0.5"):
        out = workdir / f"runs/d{dropout}"
        argv = ["train", "--preset", "wandb-report", "--model", squeezebert, "--data-dir", str(shared_data)]
        argv += ["--dropout", dropout, "--epochs", "1", *SAMPLE, "--output", str(out), "--no-eval-test"]
        result = runner.invoke(app, argv, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses.append([e["train_loss"] for e in epochs if "train_loss" in e])
    assert losses[0] != losses[1]


def test_the_cluster_guide_walk_through(workdir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = page_commands(GUIDE_PAGE)
    assert [line.split()[0] for line in lines] == ["goemo", "goemo", "export", "goemo", "goemo", "goemo", "qsub"] + [
        "goemo",
        "goemo",
    ]
    download, stats, export, fetch, train, render, qsub, evaluate, report = lines
    goemo(download, "--from", str(shared_data))
    goemo(stats)
    assert (workdir / "runs" / "data-analysis").is_dir()

    # `export TRANSFORMERS_CACHE=$HOME/hf-cache`: that cache holds bert-base-cased (a tiny random BERT
    # here, as no hub can be reached) and the guide's variable is all that points goemo at it
    monkeypatch.setenv("HOME", str(workdir))
    name, value = export.removeprefix("export ").split("=", 1)
    monkeypatch.setenv(name, os.path.expandvars(value))
    hub_cache_with(Path(os.environ[name]), "bert-base-cased", tiny_encoder(workdir / "tiny-bert", "bert"))
    goemo(fetch)

    import torch

    swap = {} if torch.cuda.is_available() else {"--cuda": "--device=cpu"}
    goemo(train, "--epochs", "0.5", *SAMPLE, "--max-length", "32", swap=swap)
    assert (workdir / "runs" / "paper" / "best" / "config.json").is_file()

    conda_prefix = workdir / "envs" / "goemo"
    goemo(render)
    script = (workdir / "train.sge").read_text()
    assert qsub == "qsub train.sge" and script.startswith("#!/bin/bash")
    assert "conda activate" in script and str(conda_prefix) in script
    subprocess.run(["bash", "-n", "train.sge"], check=True)

    goemo(evaluate, "--max-samples", "64")
    goemo(report)
    assert (workdir / "runs" / "paper" / "report.md").is_file()


def test_the_cluster_guides_evaluate_stage_runs_on_a_cpu_node(workdir: Path, tiny_model_dir: Path) -> None:
    """A rendered job that needs no GPU, executed: the evaluate stage in the guide's environment."""
    script = workdir / "evaluate.sge"
    venv = Path(sys.executable).parent.parent
    argv = ["cluster", "render", "--scheduler", "sge", "--stage", "evaluate", "--gpus", "0"]
    argv += ["--env", f"venv:{venv}", "--", "--model", str(tiny_model_dir), "--split", "dev", "--max-samples", "32"]
    result = runner.invoke(app, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    script.write_text(result.stdout)
    assert (workdir / "logs").is_dir()  # the script's log folder, made by the render
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=workdir, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "f1" in done.stdout.lower()
