"""`goemo train`'s options are generated from TrainConfig's field metadata: every field is an
option with help, and what is given on the command line reaches the config (nothing else does)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
import yaml
from typer.testing import CliRunner

from goemo.cli import app
from goemo.cli.options import option_declarations
from goemo.core.config import PRESETS, SELECT_METRICS, TrainConfig, opt, resolve_config
from goemo.core.errors import ConfigError

runner = CliRunner()
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


@pytest.fixture
def trained(monkeypatch) -> list[TrainConfig]:
    """Stand in for goemo.training.loop (no torch import, no training): record the configs `goemo train` builds."""
    seen: list[TrainConfig] = []

    def train(config: TrainConfig):
        seen.append(config)
        return types.SimpleNamespace(is_main_process=False)

    fake = types.ModuleType("goemo.training.loop")
    fake.train = train
    monkeypatch.setitem(sys.modules, "goemo.training.loop", fake)
    return seen


def _train_params() -> dict[str, Any]:
    command = typer.main.get_command(app).commands["train"]
    return {p.name: p for p in command.params}


def test_every_field_has_help_and_a_train_option_or_a_reason_not_to() -> None:
    params = _train_params()
    for name, f in FIELDS.items():
        assert isinstance(f.metadata.get("help"), str) and f.metadata["help"].strip(), (
            f"TrainConfig.{name} has no help: declare it with opt(..., help='...')"
        )
        if f.metadata.get("no_cli"):
            assert name not in params, f"{name} is marked no_cli ({f.metadata['no_cli']}) but is an option"
            continue
        assert name in params, f"TrainConfig.{name} is not a goemo train option (nor marked no_cli with a reason)"
        param = params[name]
        assert param.help.startswith(f.metadata["help"]), name  # the help is the field's own
        assert param.default is None, name  # unset options must not override --config / --preset
        first, *aliases = option_declarations(f)
        on, _, off = first.partition("/")
        assert [*param.opts, *param.secondary_opts] == [on, *aliases, *([off] if off else [])], name
    # nothing but the fields, --config and --cuda (a shortcut for --device cuda): no hand-kept option left to drift
    assert set(params) - set(FIELDS) == {"config_file", "cuda"}


def test_the_three_drifted_fields_are_options_now() -> None:
    params = _train_params()
    assert params["eval_batch_size"].opts == ["--eval-batch-size"]
    assert (params["eval_test"].opts, params["eval_test"].secondary_opts) == (["--eval-test"], ["--no-eval-test"])
    assert params["max_grad_norm"].opts == ["--max-grad-norm"]
    shown = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert shown.exit_code == 0
    for needle in (
        "--eval-batch-size",
        "--eval-test / --no-eval-test",
        "--max-grad-norm",
        "[default: 128]",
        "--config",
        "--preset",
        "--teacher",
        "--tracker",
        "Example: goemo train",
    ):
        assert needle in shown.stdout, needle


def test_the_three_drifted_fields_reach_the_config(trained, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--output", str(out), "--eval-batch-size", "7", "--no-eval-test", "--max-grad-norm", "0.5"]
    )
    assert result.exit_code == 0, result.output
    (config,) = trained
    assert (config.eval_batch_size, config.eval_test, config.max_grad_norm) == (7, False, 0.5)
    assert config.output == str(out)
    again = runner.invoke(app, ["train", "--eval-test", "--max-grad-norm", "0"])
    assert again.exit_code == 0, again.output
    assert (trained[-1].eval_test, trained[-1].max_grad_norm) == (True, 0.0)
    bad = runner.invoke(app, ["train", "--eval-batch-size", "many"])
    assert bad.exit_code == 2 and "--eval-batch-size" in bad.output  # a usage error, from the field's type


def _example(name: str, hint: Any, default: Any) -> Any:
    """A valid value of a field that differs from its default (from its type, so new fields need nothing)."""
    special = {"select_metric": SELECT_METRICS[1], "pos_weight": "auto", "preset": "fast"}
    if name in special:
        return special[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = args[0]
    if typing.get_origin(hint) is Literal:
        return next(v for v in typing.get_args(hint) if v != default)
    if typing.get_origin(hint) is list:
        return [f"{name}-1", f"{name}-2"]
    if hint is bool:
        return not default
    if hint is int:
        return default + 1 if isinstance(default, int) else 2
    if hint is float:
        return default / 2 if default else 0.25
    assert hint is str, f"{name}: add an example value of {hint} here"
    return f"{name}-value"


def _argv(values: dict[str, Any]) -> list[str]:
    argv = []
    for name, value in values.items():
        on, _, off = option_declarations(FIELDS[name])[0].partition("/")
        if isinstance(value, bool):
            assert value or off, f"{name}: a flag that cannot be turned off"
            argv.append(on if value else off)
        elif isinstance(value, list):
            for item in value:
                argv += [on, item]
        else:
            argv += [on, str(value)]
    return argv


# --dataset replaces these data sources: they cannot all be given in one command
_DATASET_FIELDS = {"dataset", "dataset_config"}
_FILE_SOURCES = {"data_dir", "train_file", "dev_file", "test_file"}


@pytest.mark.parametrize("left_out", [_DATASET_FIELDS, _FILE_SOURCES], ids=["files", "dataset"])
def test_every_option_reaches_its_field(trained, left_out: set[str]) -> None:
    types_ = typing.get_type_hints(TrainConfig)
    values = {
        name: _example(name, types_[name], f.default if f.default is not dataclasses.MISSING else f.default_factory())
        for name, f in FIELDS.items()
        if not f.metadata.get("no_cli") and name not in left_out
    }
    overwrite = values.pop("overwrite")  # with --resume, refused before training starts: given on its own below
    result = runner.invoke(app, ["train", *_argv(values)])
    assert result.exit_code == 0, result.output
    (config,) = trained
    for name, value in values.items():
        assert getattr(config, name) == value, name
        assert type(getattr(config, name)) is type(value), name  # paths reach the config as plain strings
    assert runner.invoke(app, ["train", *_argv({"overwrite": overwrite})]).exit_code == 0
    assert trained[-1].overwrite is overwrite


def test_unset_options_keep_the_yaml_and_preset_values(trained, tmp_path: Path) -> None:
    """defaults < preset < YAML < explicit command line, as resolve_config merges them."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "preset": "paper",
                "lr": 3e-5,
                "teachers": ["t1"],
                "trackers": ["tensorboard"],
                "resume": True,
                "eval_test": False,
                "compile": True,
                "max_grad_norm": 0.5,
                "eval_batch_size": 16,
            }
        )
    )
    assert runner.invoke(app, ["train", "--config", str(cfg)]).exit_code == 0
    assert trained[-1] == resolve_config(config_file=cfg)  # nothing given: nothing overridden
    c = trained[-1]
    assert (c.model, c.batch_size) == ("bert-base-cased", PRESETS["paper"]["batch_size"])  # preset named in the file
    assert (c.lr, c.teachers, c.trackers, c.resume, c.eval_test, c.compile) == (
        3e-5,
        ["t1"],
        ["tensorboard"],
        True,
        False,
        True,
    )

    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(cfg),
            "--lr",
            "1e-4",
            "--teacher",
            "t2",
            "--eval-test",
            "--no-compile",
            "--eval-batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    c = trained[-1]
    assert (c.lr, c.teachers, c.eval_test, c.compile, c.eval_batch_size) == (1e-4, ["t2"], True, False, 8)
    assert (c.max_grad_norm, c.trackers, c.model) == (0.5, ["tensorboard"], "bert-base-cased")  # not given: kept

    assert runner.invoke(app, ["train", "--config", str(cfg), "--preset", "fast"]).exit_code == 0
    c = trained[-1]
    assert (c.preset, c.model, c.pooling, c.lr) == ("fast", "minilm", "mean", 3e-5)  # the YAML still beats the preset


def test_a_bad_value_is_one_line_and_exit_1(trained) -> None:
    result = runner.invoke(app, ["train", "--pooling", "max"])
    assert result.exit_code == 1 and not trained
    assert result.stderr.strip() == "goemo: error: pooling='max': expected 'cls' or 'mean'"


def test_a_field_cannot_be_declared_without_help() -> None:
    with pytest.raises(TypeError, match="help"):
        opt(1, help="")
    with pytest.raises(TypeError):
        opt(1)  # type: ignore[call-arg]


def test_importing_the_cli_stays_light() -> None:
    """`goemo --help` must not wait for torch, numpy, scikit-learn or optuna."""
    code = (
        "import sys, goemo.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'sklearn', 'optuna', 'matplotlib', "
        "'onnxruntime', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- --dataset: a Hugging Face dataset instead of files


def test_dataset_options_are_generated_and_reach_the_config(trained) -> None:
    params = _train_params()
    assert params["dataset"].opts == ["--dataset"] and params["dataset_config"].opts == ["--dataset-config"]
    shown = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert "--dataset " in shown.stdout and "--dataset-config" in shown.stdout
    argv = ["train", "--dataset", "go_emotions", "--dataset-config", "simplified", "--text-column", "comment"]
    result = runner.invoke(app, [*argv, "--label-column", "emotions", "--taxonomy", "ekman"])
    assert result.exit_code == 0, result.output
    c = trained[-1]
    assert (c.dataset, c.dataset_config, c.text_column, c.label_column, c.taxonomy) == (
        "go_emotions",
        "simplified",
        "comment",
        "emotions",
        "ekman",
    )
    assert c.data_dir == "data/goemotions" and c.train_file is None  # the default folder is left unused


@pytest.mark.parametrize(
    "other",
    [
        ["--data-dir", "data/goemotions"],  # explicit, even at its default value
        ["--data-dir", "elsewhere"],
        ["--train", "t.csv", "--dev", "d.csv"],
        ["--test", "t.csv"],
    ],
)
def test_dataset_and_data_files_are_mutually_exclusive(trained, other: list[str]) -> None:
    result = runner.invoke(app, ["train", "--dataset", "go_emotions", *other])
    assert result.exit_code == 1 and not trained
    line = result.stderr.strip()
    assert line.startswith("goemo: error: dataset='go_emotions': give --dataset or --") and line.endswith(", not both")
    assert other[0] in line and len(line.splitlines()) == 1


def test_a_saved_dataset_config_resolves_again(trained, tmp_path: Path) -> None:
    """A run folder's config.yaml holds the default data_dir beside the dataset: it is no clash."""
    saved = TrainConfig(dataset="go_emotions", dataset_config="simplified")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved.to_dict()))
    assert resolve_config(config_file=path) == saved
    assert runner.invoke(app, ["train", "--config", str(path), "--epochs", "1"]).exit_code == 0
    assert trained[-1].dataset == "go_emotions"
    with pytest.raises(ConfigError, match="give --dataset or --data-dir, not both"):
        TrainConfig(dataset="go_emotions", data_dir="elsewhere")


def test_the_cluster_guides_option_names_work_and_show_in_help(trained) -> None:
    """bert_model.py train ... --cuda --learning-rate --batch-size --transformer-model, as the guide types it."""
    argv = [
        "train",
        "--cuda",
        "--learning-rate",
        "3e-5",
        "--batch-size",
        "16",
        "--transformer-model",
        "bert-base-cased",
    ]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    (config,) = trained
    assert (config.device, config.lr, config.batch_size, config.model) == ("cuda", 3e-5, 16, "bert-base-cased")
    shown = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--lr, --learning-rate" in shown and "--model, --transformer-model" in shown and "--cuda" in shown


def test_cuda_and_another_device_clash(trained) -> None:
    result = runner.invoke(app, ["train", "--cuda", "--device", "cpu"])
    assert result.exit_code == 1 and not trained
    assert result.stderr.strip() == "goemo: error: --cuda and --device cpu: give one of them"


def test_exclude_and_corrections_reach_the_config(trained, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--exclude", str(tmp_path / "ids.txt"), "--corrections", str(tmp_path / "fix.csv")]
    )
    assert result.exit_code == 0, result.output
    assert (trained[-1].exclude, trained[-1].corrections) == (str(tmp_path / "ids.txt"), str(tmp_path / "fix.csv"))
    shown = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert "--exclude" in shown.stdout and "--corrections" in shown.stdout and "add|remove" in shown.stdout
