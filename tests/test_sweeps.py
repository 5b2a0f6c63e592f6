"""Sweeps: W&B config parsing, the Optuna study, crash survival, resume after kill, shared studies, report."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.report.run_data import epoch_records
from goemo.sweeps.objective import metric_value
from goemo.sweeps.runner import (
    BaseOptions,
    load_sweep,
    load_sweep_config,
    parse_sweep_config,
    prepare_sweep,
    retried_trial,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[1]
WANDB_REPORT = REPO / "examples" / "wandb_report_sweep.yaml"


def _cfg(**parameters) -> dict:
    return {"method": "random", "metric": {"name": "f1_macro", "goal": "maximize"}, "parameters": parameters}


@pytest.fixture(scope="module")
def base(shared_data: Path, tmp_path_factory) -> dict:
    """Tiny trials: random 2-layer BERT, 64 texts, 1 epoch (a few seconds each)."""
    return {
        "data_dir": str(shared_data),
        "model": "tiny-random-bert",
        "epochs": 1,
        "max_train_samples": 64,
        "max_eval_samples": 64,
        "cache_dir": str(tmp_path_factory.mktemp("token-cache")),
        "precision": "fp32",
        "eval_test": False,
        "num_threads": 1,
    }


def _trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return load_sweep(sweep_dir)[1].get_trials()


def _kept_value(run_dir: Path, metric: str = "auc_score") -> float | None:
    """A trial's objective from its run folder: ``metric`` at the epoch its select_metric kept."""
    summary = json.loads((run_dir / "summary.json").read_text())
    kept = [r for r in epoch_records(run_dir / "metrics.jsonl") if r["epoch"] == summary["best_epoch"]]
    return metric_value(kept[-1], metric)


def _cli(sweep_dir: Path, config: Path, base: dict, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "goemo", "sweep", "--config", str(config), "--output", str(sweep_dir)]
    for key, value in base.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args + list(extra)


# ---------------------------------------------------------------- config parsing (no training)


def test_wandb_report_config_maps_names_metric_and_values():
    spec = load_sweep_config(WANDB_REPORT)
    assert (spec.method, spec.metric_name, spec.metric, spec.direction) == (
        "random",
        "auc_score",
        "auc_score",  # a metric goemo records itself (macro ROC-AUC), no longer translated
        "maximize",
    )
    assert spec.select_metric == "val_loss"  # the report kept each run's lowest-validation-loss checkpoint
    assert spec.fixed == {"epochs": 10, "max_length": 40}
    assert list(spec.params) == ["lr", "batch_size", "dropout"]
    assert spec.params["lr"].values == (5e-5, 3e-5)  # "5e-5" is a string to YAML 1.1; read as a float
    assert spec.params["lr"].source == "learning_rate"
    assert spec.params["dropout"].values == (0.3, 0.4, 0.5)
    assert any("tokenizer_max_len is goemo's max_length" in n for n in spec.notes)
    # 2 x 2 x 3 points: a random sweep over them draws without repeats, the same way for a seed
    slots = spec.slot_params(12, seed=7)
    assert len({tuple(sorted(s.items())) for s in slots}) == 12
    assert slots == spec.slot_params(12, seed=7) != spec.slot_params(12, seed=8)
    assert spec.slot_params(13, seed=7)[12] == {}  # past the 12 points the sampler draws freely


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("sweep_*.yaml")), ids=lambda p: p.name)
def test_every_example_sweep_config_loads_and_names_real_options(path):
    spec = load_sweep_config(path)
    for name in spec.params:
        assert name in TrainConfig.__dataclass_fields__, name
    if spec.method == "grid":  # every point is a valid training config
        for point in spec.grid():
            TrainConfig(**{**spec.fixed, **point})


def test_fast_recipe_stages_are_graded_on_dev_only():
    for name in ("sweep_fast_recipe.yaml", "sweep_fast_stage2.yaml"):
        spec = load_sweep_config(REPO / "examples" / name)
        assert (spec.metric, spec.direction) == ("f1_macro_xtuned", "maximize")


def test_distributions_become_the_right_optuna_suggestions():
    spec = parse_sweep_config(
        _cfg(
            learning_rate={"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
            dropout={"distribution": "uniform", "min": 0.0, "max": 0.5},
            batch_size={"min": 8, "max": 64},  # two integers: W&B's int_uniform
            warmup_ratio={"distribution": "q_uniform", "min": 0.0, "max": 0.2, "q": 0.05},
            weight_decay={"distribution": "log_uniform", "min": -9.2, "max": -2.3},  # exponents of e
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        values = {n: p.suggest(trial) for n, p in spec.params.items()}
        assert 1e-5 <= values["lr"] <= 1e-3 and 0 <= values["dropout"] <= 0.5
        assert isinstance(values["batch_size"], int) and 8 <= values["batch_size"] <= 64
        assert abs(values["warmup_ratio"] / 0.05 - round(values["warmup_ratio"] / 0.05)) < 1e-9
        assert 1.0e-4 < values["weight_decay"] < 0.101
        study.tell(trial, 0.0)
    dists = study.trials[0].distributions
    assert dists["lr"].log and not dists["dropout"].log and dists["weight_decay"].log
    assert isinstance(dists["batch_size"], optuna.distributions.IntDistribution)


@pytest.mark.parametrize(
    "config, message",
    [
        (
            _cfg(lr={"distribution": "normal", "mu": 0, "sigma": 1, "min": 0, "max": 1}),
            "distribution 'normal' is not supported",
        ),
        (_cfg(learning_rat={"values": [1e-4]}), "unknown option 'learning_rat'"),
        (_cfg(output={"values": ["a", "b"]}), "output is set by the sweep itself"),
        (_cfg(lr={"values": [1e-4]}, learning_rate={"values": [2e-4]}), "lr is given twice"),
        (_cfg(epochs={"value": 2}), "nothing to search"),
        ({**_cfg(lr={"min": 1e-5, "max": 1e-3}), "method": "grid"}, "a grid needs a list of values"),
        ({**_cfg(lr={"values": [1e-4, 2e-4]}), "metric": {"name": "accuracy"}}, "metric.name 'accuracy'"),
        ({**_cfg(lr={"values": [1e-4, 2e-4]}), "method": "hyperopt"}, "method 'hyperopt'"),
        ({**_cfg(lr={"values": [1e-4, 2e-4]}), "early_terminate": {"type": "envelope"}}, "only type: hyperband"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(config, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep_config(config, "sweep.yaml")


def test_program_and_command_keys_are_ignored_with_a_note_and_hyperband_maps():
    spec = parse_sweep_config(
        {
            **_cfg(lr={"values": [1e-4, 2e-4]}),
            "program": "train.py",
            "command": ["${program}"],
            "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2, "max_iter": 8},
        }
    )
    assert any("program, command" in n for n in spec.notes)
    pruner = spec.pruner()
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 8, 2)


def test_auc_score_is_a_metric_of_its_own_and_bare_auc_means_the_macro_average():
    def metric(name: str) -> str:
        return parse_sweep_config({**_cfg(lr={"values": [1e-4, 2e-4]}), "metric": {"name": name}}).metric

    assert metric("auc_score") == "auc_score"
    assert [metric(n) for n in ("auc", "roc_auc", "val_auc", "macro_auc")] == ["auc_macro"] * 4
    assert metric("micro_auc") == "auc_micro"


def test_select_metric_is_a_fixed_parameter_and_cannot_be_searched():
    spec = parse_sweep_config(_cfg(lr={"values": [1e-4, 2e-4]}, select_metric={"value": "eval_loss"}))
    assert spec.select_metric == "val_loss" and "select_metric" not in spec.fixed and list(spec.params) == ["lr"]
    assert parse_sweep_config(_cfg(lr={"values": [1e-4, 2e-4]})).select_metric is None
    with pytest.raises(ConfigError, match="select_metric picks each trial's kept epoch and is fixed, not searched"):
        parse_sweep_config(_cfg(lr={"values": [1e-4]}, select_metric={"values": ["val_loss", "f1_macro"]}))
    with pytest.raises(ConfigError, match="select_metric 'accuracy' is not a dev metric"):
        parse_sweep_config(_cfg(lr={"values": [1e-4]}, select_metric={"value": "accuracy"}))


def test_select_metric_precedence_config_then_command_line_else_preset_else_the_sweep_metric(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(_cfg(lr={"values": [1e-4, 2e-4]})))
    assert prepare_sweep(plain, output=tmp_path / "a", count=1).base.select_metric == "f1_macro"  # the sweep metric
    on_preset = prepare_sweep(plain, output=tmp_path / "b", count=1, base=BaseOptions(preset="wandb-report"))
    assert on_preset.base.select_metric == "val_loss"  # the preset's, when the config names none
    assert prepare_sweep(WANDB_REPORT, output=tmp_path / "c", count=1).base.select_metric == "val_loss"
    cli = prepare_sweep(
        WANDB_REPORT, output=tmp_path / "d", count=1, base=BaseOptions(overrides={"select_metric": "auc_micro"})
    )
    assert cli.base.select_metric == "auc_micro"  # the command line (--set select_metric=...) wins
    assert json.loads((tmp_path / "d" / "sweep.json").read_text())["select_metric"] == "auc_micro"


def test_searched_parameter_cannot_also_be_a_command_line_option(tmp_path):
    with pytest.raises(ConfigError, match="lr searched by .* and also given as an option"):
        prepare_sweep(WANDB_REPORT, output=tmp_path / "s", count=1, base=BaseOptions(overrides={"learning_rate": 1e-4}))
    with pytest.raises(ConfigError, match="random sweep needs --count"):
        prepare_sweep(WANDB_REPORT, output=tmp_path / "s")


def test_trials_skip_the_test_split_unless_asked(tmp_path):
    """A sweep chooses on dev: its trials score test only when --eval-test is given."""
    assert prepare_sweep(WANDB_REPORT, output=tmp_path / "a", count=1).base.eval_test is False
    asked = prepare_sweep(WANDB_REPORT, output=tmp_path / "b", count=1, base=BaseOptions(overrides={"eval_test": True}))
    assert asked.base.eval_test is True


# ---------------------------------------------------------------- the W&B report's sweep, and its report


@pytest.fixture(scope="module")
def wandb_sweep(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "wandb"
    trackers = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []  # the track extra
    sweep = prepare_sweep(WANDB_REPORT, output=out, count=3, base=BaseOptions(overrides=base), trackers=trackers)
    return sweep, run_sweep(sweep)


def test_wandb_report_config_runs_three_trials_and_picks_the_best(wandb_sweep, base):
    sweep, result = wandb_sweep
    trials = _trials(sweep.sweep_dir)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and result.counts == {"COMPLETE": 3}
    seen = set()
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == sweep.sweep_dir / "trials" / str(t.number)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        # each trial is a normal run: the sampled values, the config's fixed ones, our overrides
        assert (
            t.params["lr"] in (5e-5, 3e-5)
            and t.params["batch_size"] in (32, 64)
            and t.params["dropout"] in (0.3, 0.4, 0.5)
        )
        assert (config["lr"], config["batch_size"], config["dropout"]) == (
            t.params["lr"],
            t.params["batch_size"],
            t.params["dropout"],
        )
        assert (config["max_length"], config["epochs"], config["select_metric"]) == (40, 1, "val_loss")
        # selected by val_loss, ranked by auc_score at the epoch val_loss kept
        assert summary["select_metric"] == "val_loss" and t.user_attrs["select_metric"] == "val_loss"
        assert t.value == pytest.approx(_kept_value(run_dir))
        # the best/ model's dev score: rescored after its calibration is folded into the weights, which
        # keeps each label's ranking up to float rounding of the tiny model's near-tied scores
        assert t.value == pytest.approx(metric_value(summary["dev"], "auc_score"), abs=1e-3)
        assert (run_dir / "best" / "model.safetensors").is_file()
        if sweep.trackers:  # each trial has its own event files (opened after train() set up the folder)
            assert list((run_dir / "tensorboard").iterdir())
        seen.add(tuple(t.params.values()))
    assert len(seen) == 3  # a random sweep over 12 points does not repeat one
    best = max(trials, key=lambda t: t.value)
    assert (result.best_number, result.best_value, result.best_params) == (best.number, best.value, best.params)
    assert result.best_run_dir == best.user_attrs["run_dir"]
    # run again from the folder's own copy of the config: the study is found, nothing is left to do
    again = run_sweep(
        prepare_sweep(sweep.sweep_dir / "sweep.yaml", output=sweep.sweep_dir, count=3, base=BaseOptions(overrides=base))
    )
    assert again.study_name == "wandb_report_sweep" and again.outcomes == [] and len(_trials(sweep.sweep_dir)) == 3
    status, lines = again.verdict()
    assert status == 0 and lines[0].startswith("nothing to run")


def test_sweep_report_lists_trials_best_importance_and_per_class_auc(wandb_sweep):
    from goemo.sweeps.report import write_sweep_report

    sweep, result = wandb_sweep
    report = write_sweep_report(sweep.sweep_dir, top=2)
    a = report.analysis
    assert [r.number for r in a.rows][0] == result.best_number
    assert [r.value for r in a.rows] == sorted((r.value for r in a.rows), reverse=True)
    assert a.importance is None or set(a.importance) <= {"lr", "batch_size", "dropout"}
    if a.importance:
        assert sum(a.importance.values()) == pytest.approx(1.0)
    # per-class AUC of the 2 best trials: read from each trial's dev_metrics.json
    assert list(a.label_auc) == [r.number for r in a.rows[:2]]
    dev = json.loads((sweep.sweep_dir / "trials" / str(result.best_number) / "dev_metrics.json").read_text())
    assert a.label_auc[result.best_number] == {m["name"]: m["auc"] for m in dev["per_label"]}
    assert len(a.label_auc[result.best_number]) == 28
    md = report.markdown.read_text()
    assert f"trial {result.best_number}: auc_score = {result.best_value:.4f}" in md
    assert "kept by val_loss" in md
    assert "## Per-class AUC of the best trials" in md and "| label | trial" in md
    html = report.html.read_text()
    assert "data:image/png;base64," in html and 'src="plots/' not in html  # self-contained
    assert {p.name for p in report.plots} >= {
        "sweep_params.png",
        "sweep_history.png",
        "sweep_label_auc.png",
        "sweep_curves.png",  # per-trial train/val loss and AUC by epoch, from each trial's metrics.jsonl
        "sweep_parallel.png",
    }
    for p in report.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_report_cli_prints_the_best_trial(wandb_sweep):
    from typer.testing import CliRunner

    from goemo.cli import app

    sweep, result = wandb_sweep
    out = CliRunner().invoke(app, ["sweep-report", str(sweep.sweep_dir)])
    assert out.exit_code == 0, out.output
    assert f"best: trial {result.best_number}" in out.output
    out = CliRunner().invoke(app, ["sweep-report", str(sweep.sweep_dir.parent)])
    assert out.exit_code == 1 and "not a sweep folder" in out.output


# ---------------------------------------------------------------- grid coverage and crashing trials


@pytest.fixture(scope="module")
def grid_sweep(base, tmp_path_factory, shared_data):
    """A 2 x 2 grid where three points crash: dropout 1.5 is refused by TrainConfig, and
    (dropout 0.1, lr 2e-3) runs out of memory in training (a patched train)."""
    import torch

    import goemo.training.loop

    path = tmp_path_factory.mktemp("configs") / "grid.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": "auc_macro", "goal": "maximize"},
                "parameters": {"dropout": {"values": [1.5, 0.1]}, "lr": {"values": [2e-3, 1e-3]}},
            }
        )
    )
    real_train = goemo.training.loop.train

    def train(config, splits=None, callbacks=()):
        if config.lr == 2e-3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(config, splits=splits, callbacks=callbacks)

    sweep = prepare_sweep(path, output=tmp_path_factory.mktemp("sweeps") / "grid", base=BaseOptions(overrides=base))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(goemo.training.loop, "train", train)
        result = run_sweep(sweep)
    return sweep, result


def test_grid_covers_its_grid_exactly(grid_sweep, base):
    sweep, result = grid_sweep
    trials = _trials(sweep.sweep_dir)
    assert sweep.count == 4  # --count defaults to the grid size
    points = [(t.params["dropout"], t.params["lr"]) for t in trials]
    assert points == [(1.5, 2e-3), (1.5, 1e-3), (0.1, 2e-3), (0.1, 1e-3)]  # each once, in grid order


def test_crashing_trials_are_recorded_and_the_sweep_goes_on(grid_sweep):
    sweep, result = grid_sweep
    trials = _trials(sweep.sweep_dir)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert trials[0].user_attrs["error"] == "ConfigError: dropout=1.5: expected a number in [0, 1)"
    assert trials[2].user_attrs["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert "Traceback" in (sweep.sweep_dir / "trials" / "2" / "error.txt").read_text()
    status, lines = result.verdict()  # one trial succeeded: exit 0, saying what failed
    assert status == 0 and lines[0] == "3 of the 4 trial(s) this run took failed:"
    assert "  1 x OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in lines
    summary = json.loads((sweep.sweep_dir / "trials" / "3" / "summary.json").read_text())
    assert trials[3].value == pytest.approx(summary["best_metric"]) and result.best_number == 3
    from goemo.sweeps.report import write_sweep_report

    md = write_sweep_report(sweep.sweep_dir).markdown.read_text()
    assert "## Failed trials" in md and "OutOfMemoryError: CUDA out of memory" in md
    assert "Importance needs at least 2 completed trials (1 so far)" in md


def test_pruning_reports_every_epoch_and_stops_the_trial(base, tmp_path):
    """The W&B hyperband path without its randomness: a pruner that prunes any value at epoch 1."""
    path = tmp_path / "prune.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": "auc_micro", "goal": "maximize"},
                "parameters": {"lr": {"values": [1e-3]}, "epochs": {"value": 3}},
                "early_terminate": {"type": "hyperband", "min_iter": 1},
            }
        )
    )
    sweep = prepare_sweep(path, output=tmp_path / "sweep", base=BaseOptions(overrides={**base, "epochs": None}))
    assert sweep.base.epochs == 3 and isinstance(sweep.spec.pruner(), optuna.pruners.HyperbandPruner)
    sweep.spec.pruner = lambda: optuna.pruners.ThresholdPruner(lower=1.1)  # every AUC is below 1.1
    result = run_sweep(sweep)
    (trial,) = _trials(sweep.sweep_dir)
    assert trial.state.name == "PRUNED" and result.counts == {"PRUNED": 1}
    epochs = [
        json.loads(line) for line in (sweep.sweep_dir / "trials" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1]  # stopped after the first of 3 epochs
    assert trial.intermediate_values == {1: pytest.approx(epochs[0]["auc_micro"])}
    assert (sweep.sweep_dir / "trials" / "0" / "last" / "model.safetensors").is_file()  # checkpoints kept


# ---------------------------------------------------------------- select vs optimise, exit status (no training)

# (epoch, val_loss, auc_score): val_loss is lowest at epoch 2, auc_score highest at epoch 3
FAKE_EPOCHS = [(1, 0.30, 0.60), (2, 0.25, 0.65), (3, 0.28, 0.70)]


def _fake_training(monkeypatch) -> None:
    """``loop.train`` replaced by three made-up epochs that select by the config's select_metric."""
    from types import SimpleNamespace

    import goemo.training.loop
    from goemo.sweeps import objective, runner

    def train(config, splits=None, callbacks=()):
        run = Path(config.output)
        run.mkdir(parents=True, exist_ok=True)
        epochs = [
            {"event": "epoch", "epoch": e, "train_loss": 0.5, "val_loss": v, "auc_score": a, "auc_macro": a}
            for e, v, a in FAKE_EPOCHS
        ]
        with open(run / "metrics.jsonl", "a") as f:
            for record in epochs:
                f.write(json.dumps(record) + "\n")
                for cb in callbacks:
                    cb(record)
        kept = objective.best_epoch_by(epochs, config.select_metric)
        summary = {"best_epoch": kept, "select_metric": config.select_metric, "dev": {"auc_score": 0.0}}
        return SimpleNamespace(summary=summary, best_dir=run / "best", path=run)

    monkeypatch.setattr(goemo.training.loop, "train", train)
    monkeypatch.setattr(runner, "load_training_data", lambda config: {"train": None, "dev": None})
    monkeypatch.setattr(runner, "write_dev_metrics", lambda *args, **kwargs: {})


@pytest.mark.parametrize("select, kept, value", [("val_loss", 2, 0.65), (None, 3, 0.70)])
def test_a_trial_is_ranked_by_the_sweep_metric_at_the_epoch_its_select_metric_kept(
    tmp_path, monkeypatch, select, kept, value
):
    """Optimise auc_score across trials, keep each trial's epoch by val_loss (the W&B report's setup):
    the objective is auc_score at epoch 2 (lowest val_loss), not its own best (epoch 3). Without
    a select_metric the sweep metric selects, and the two coincide."""
    _fake_training(monkeypatch)
    parameters = {"lr": {"values": [1e-3]}, **({"select_metric": {"value": select}} if select else {})}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "metric": {"name": "auc_score"}, "parameters": parameters}))
    sweep = prepare_sweep(path, output=tmp_path / "sweep")
    assert sweep.base.select_metric == (select or "auc_score")
    result = run_sweep(sweep)
    (trial,) = _trials(sweep.sweep_dir)
    assert trial.state.name == "COMPLETE" and result.best_value == trial.value == pytest.approx(value)
    assert trial.user_attrs["best_epoch"] == kept and trial.user_attrs["metric_best_epoch"] == 3
    assert trial.user_attrs["select_metric"] == (select or "auc_score")
    # the pruner sees the sweep metric every epoch, whatever selects
    assert trial.intermediate_values == {e: pytest.approx(a) for e, _, a in FAKE_EPOCHS}


def test_a_trial_the_encoder_cannot_take_fails_before_its_first_step(base, tmp_path):
    """Each trial is checked as ``goemo train`` is: max length 4000 on a 512-position encoder trains nothing."""
    path = tmp_path / "lengths.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": "auc_micro", "goal": "maximize"},
                "parameters": {"max_length": {"values": [4000, 32]}},
            }
        )
    )
    sweep = prepare_sweep(path, output=tmp_path / "lengths", base=BaseOptions(overrides=base))
    run_sweep(sweep)
    refused, trained = _trials(sweep.sweep_dir)
    assert (refused.state.name, trained.state.name) == ("FAIL", "COMPLETE")
    assert refused.user_attrs["error"] == (
        "ConfigError: max_length=4000: tiny-random-bert takes at most 512 tokens "
        "(its config.json max_position_embeddings 512); give --max-length 512 or less"
    )
    assert [p.name for p in (sweep.sweep_dir / "trials" / "0").iterdir()] == ["error.txt"]  # trained nothing


def test_a_sweep_whose_trials_all_fail_exits_non_zero_with_the_reasons(tmp_path):
    from typer.testing import CliRunner

    from goemo.cli import app

    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {"method": "grid", "metric": {"name": "auc_score"}, "parameters": {"dropout": {"values": [1.5, 2.0]}}}
        )
    )
    args = ["sweep", "--config", str(config), "--output", str(tmp_path / "sweep")]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1, out.output
    assert "goemo: error: none of the 2 trial(s) this run took succeeded" in out.output
    assert "1 x ConfigError: dropout=1.5: expected a number in [0, 1)" in out.output
    assert "1 x ConfigError: dropout=2.0: expected a number in [0, 1)" in out.output
    # each failure in one line (the error's own message), not Optuna's warning with a traceback
    assert [line for line in out.output.splitlines() if "trial 0 failed" in line.lower()] == [
        "WARNING goemo.sweeps.runner: trial 0 failed: dropout=1.5: expected a number in [0, 1)"
    ]
    assert "Traceback" not in out.output
    # the same command again retries them; they fail again, so it exits 1 again
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1, again.output
    assert "2 failed trial(s) queued again (0, 1)" in again.output
    assert "goemo: error: none of the 2 trial(s) this run took succeeded" in again.output
    assert [t.state.name for t in _trials(tmp_path / "sweep")] == ["FAIL"] * 4
    verbose = CliRunner().invoke(app, ["--verbose", *args])  # the traceback is there at DEBUG
    assert verbose.exit_code == 1 and "Traceback" in verbose.output


def test_rerunning_a_sweep_after_fixing_the_cause_retries_its_failed_trials(tmp_path, monkeypatch):
    """Both trials fail (the data is missing); once it is there, the same command trains them, each
    as a retry of its failed trial (same parameters, same run folder), and exits 0."""
    from typer.testing import CliRunner

    import goemo.training.loop
    from goemo.cli import app
    from goemo.core.errors import DataError

    _fake_training(monkeypatch)
    fake_train = goemo.training.loop.train
    missing = [True]

    def train(config, splits=None, callbacks=()):
        if missing[0]:
            raise DataError("no such file", path="data/goemotions/train.tsv")
        return fake_train(config, splits=splits, callbacks=callbacks)

    monkeypatch.setattr(goemo.training.loop, "train", train)
    config = tmp_path / "grid.yaml"
    config.write_text(
        yaml.safe_dump(
            {"method": "grid", "metric": {"name": "auc_score"}, "parameters": {"lr": {"values": [1e-3, 2e-3]}}}
        )
    )
    args = ["sweep", "--config", str(config), "--output", str(tmp_path / "sweep")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert "trial 1 failed: data/goemotions/train.tsv: no such file" in first.output
    missing[0] = False
    fixed = CliRunner().invoke(app, args)
    assert fixed.exit_code == 0, fixed.output
    assert "best: trial 2, auc_score 0.7000 (lr=0.001)" in fixed.output
    failed_0, failed_1, retry_0, retry_1 = _trials(tmp_path / "sweep")
    assert [t.state.name for t in (failed_0, failed_1, retry_0, retry_1)] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    for failed, retry in ((failed_0, retry_0), (failed_1, retry_1)):
        assert retried_trial(retry) == retry.user_attrs["retry_of"] == failed.number
        assert retry.params == failed.params and retry.user_attrs["run_dir"] == failed.user_attrs["run_dir"]
        assert retry.user_attrs.get("error") is None
    done = CliRunner().invoke(app, args)  # every slot has a result: nothing is retried
    assert done.exit_code == 0 and "nothing to run" in done.output and len(_trials(tmp_path / "sweep")) == 4


@pytest.mark.parametrize(
    "counts, status",
    [({"FAIL": 2}, 1), ({"FAIL": 1, "COMPLETE": 1}, 0), ({"FAIL": 1, "PRUNED": 1}, 0), ({"FAIL": 1, "RUNNING": 1}, 0)],
)
def test_a_worker_with_nothing_to_run_fails_while_the_study_has_only_failures(tmp_path, counts, status):
    from goemo.sweeps.runner import SweepResult

    result = SweepResult(tmp_path, "s", "sqlite://", counts, None, None, {}, None, [], [])
    assert result.verdict()[0] == status  # RUNNING: another worker may still succeed


# ---------------------------------------------------------------- interrupted trials are queued again


def _one_point(tmp_path: Path) -> Path:
    path = tmp_path / "one.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": "auc_micro", "goal": "maximize"},
                "parameters": {"lr": {"values": [1e-3]}, "dropout": {"values": [0.2]}},
            }
        )
    )
    return path


def test_ctrl_c_fails_the_trial_and_queues_it_again(base, tmp_path, monkeypatch):
    import goemo.training.loop

    sweep = prepare_sweep(_one_point(tmp_path), output=tmp_path / "sweep", base=BaseOptions(overrides=base))
    real_train = goemo.training.loop.train

    def interrupted(config, splits=None, callbacks=()):
        raise KeyboardInterrupt

    monkeypatch.setattr(goemo.training.loop, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep)
    stopped, queued = _trials(sweep.sweep_dir)
    assert (stopped.state.name, stopped.user_attrs["error"]) == ("FAIL", "interrupted: Ctrl-C")
    assert queued.state.name == "WAITING" and queued.params == stopped.params == {"lr": 1e-3, "dropout": 0.2}
    assert retried_trial(queued) == 0  # Optuna's record of the retry series

    monkeypatch.setattr(goemo.training.loop, "train", real_train)
    result = run_sweep(prepare_sweep(_one_point(tmp_path), output=tmp_path / "sweep", base=BaseOptions(overrides=base)))
    stopped, retry = _trials(sweep.sweep_dir)
    assert [o.number for o in result.outcomes] == [1] and result.counts == {"FAIL": 1, "COMPLETE": 1}
    assert retry.state.name == "COMPLETE" and retry.params == stopped.params
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs.get("error") is None  # this attempt's own record
    assert retry.user_attrs["run_dir"] == stopped.user_attrs["run_dir"] == str(sweep.sweep_dir / "trials" / "0")
    assert retry.user_attrs["pid"] == os.getpid()


def test_a_trial_whose_heartbeat_stopped_elsewhere_is_failed_and_retried(base, tmp_path, monkeypatch, caplog):
    """A worker on another host stops beating (power cut): Optuna's heartbeat check fails its
    trial after the grace period, and the retry callback queues it for the next worker."""
    from goemo.sweeps import runner

    monkeypatch.setattr(runner, "HEARTBEAT_S", 1)
    monkeypatch.setattr(runner, "GRACE_S", 2)
    sweep = prepare_sweep(_one_point(tmp_path), output=tmp_path / "sweep", base=BaseOptions(overrides=base))
    storage = runner.open_storage(sweep.storage_url)
    study = runner.open_study(sweep, storage)

    def lost_worker(trial):  # takes the slot, beats, then vanishes without telling the study
        trial.set_user_attr("host", "another-host")
        trial.set_user_attr("pid", 4242)
        trial.set_user_attr("run_dir", str(sweep.trials_dir / str(trial.number)))
        for p in sweep.spec.params.values():
            p.suggest(trial)
        time.sleep(1.5)
        raise SystemExit

    with pytest.raises(SystemExit):
        study.optimize(lost_worker, n_trials=1)
    (lost,) = _trials(sweep.sweep_dir)
    assert lost.state.name == "RUNNING"
    time.sleep(4)  # past the grace period (the database clock counts whole seconds)

    with caplog.at_level("WARNING", logger="goemo.sweeps.runner"):
        result = run_sweep(sweep)
    assert "trial 0 lost its heartbeat (worker gone); its parameters are queued again" in caplog.text
    lost, retry = _trials(sweep.sweep_dir)
    assert lost.state.name == "FAIL" and result.counts == {"FAIL": 1, "COMPLETE": 1}
    assert retry.state.name == "COMPLETE" and retry.params == lost.params and retry.user_attrs["retry_of"] == 0
    assert retry.user_attrs["host"] != "another-host" and retry.user_attrs["run_dir"] == str(
        sweep.sweep_dir / "trials" / "0"
    )


# ---------------------------------------------------------------- processes: kill and resume, two workers


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_the_same_command(base, tmp_path):
    out = tmp_path / "sweep"
    cmd = _cli(out, WANDB_REPORT, base, "--count", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "trials" / "1" / "config.yaml").is_file():  # trial 1 has started training
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "trial 1 never started"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _trials(out)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    from goemo.sweeps.report import write_sweep_report

    stalled = write_sweep_report(out, top=1)  # the report says the running trial has no worker
    assert [r.worker_gone for r in sorted(stalled.analysis.rows, key=lambda r: r.number)] == [False, True]
    assert "worker ended: the same sweep command resumes it" in stalled.markdown.read_text()

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trial 1 was interrupted" in done.stderr
    trials = _trials(out)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]  # 2 done, as asked
    killed, retry = trials[1], trials[2]
    assert killed.user_attrs["error"].startswith("interrupted: worker process")
    assert retry.user_attrs["retry_of"] == 1 and retry.params == killed.params
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]  # the retry reuses the folder
    assert _kept_value(out / "trials" / "1") == pytest.approx(retry.value)
    assert trials[0].value == before[0].value  # finished trials are kept, not run again


def _two_workers(cmd: list[str]) -> None:
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def _check_shared(trials: list[optuna.trial.FrozenTrial], count: int) -> None:
    assert len(trials) == count and [t.number for t in trials] == list(range(count))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({tuple(t.params.values()) for t in trials}) == count  # no point run twice
    assert len({t.user_attrs["run_dir"] for t in trials}) == count
    for t in trials:
        assert t.value == pytest.approx(_kept_value(Path(t.user_attrs["run_dir"])))
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers trained


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(base, tmp_path):
    out = tmp_path / "sweep"
    _two_workers(_cli(out, WANDB_REPORT, base, "--count", "4"))
    _check_shared(_trials(out), 4)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("GOEMO_TEST_POSTGRES_URL"), reason="GOEMO_TEST_POSTGRES_URL not set (.ci/run sets it)"
)
def test_two_workers_share_one_postgresql_study(base, tmp_path):
    url = os.environ["GOEMO_TEST_POSTGRES_URL"]
    study = f"goemo-test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "sweep"
    _two_workers(_cli(out, WANDB_REPORT, base, "--count", "4", "--storage", url, "--study", study))
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    _check_shared(trials, 4)
    assert json.loads((out / "sweep.json").read_text())["storage"].startswith("postgresql+psycopg2://goemo@127.0.0.1")
    optuna.delete_study(study_name=study, storage=url)


def test_sweep_cli_reports_config_errors_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from goemo.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("method: random\nmetric: {name: auc_score}\nparameters:\n  learning_rate: {values: [1e-4, 2e-4]\n")
    out = CliRunner().invoke(app, ["sweep", "--config", str(bad), "--count", "1", "--output", str(tmp_path / "s")])
    assert out.exit_code == 1
    assert out.output.strip().startswith(f"goemo: error: {bad}:") and "invalid YAML" in out.output
    assert len(out.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- a Hugging Face dataset as the base data


def test_a_sweep_on_a_dataset_passes_it_to_every_trial(base, go_emotions_dataset, tmp_path):
    from typer.testing import CliRunner

    from goemo.cli import app

    path, _ = go_emotions_dataset
    config = tmp_path / "grid.yaml"
    config.write_text(
        yaml.safe_dump({"method": "grid", "metric": {"name": "f1_macro"}, "parameters": {"lr": {"values": [1e-3]}}})
    )
    sweep_dir = tmp_path / "sweep"
    on_dataset = {k: v for k, v in base.items() if k != "data_dir"} | {"dataset": str(path)}
    args = _cli(sweep_dir, config, on_dataset)[3:]  # the same options, in process
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (trial,) = _trials(sweep_dir)
    assert trial.state.name == "COMPLETE"
    trial_config = yaml.safe_load((sweep_dir / "trials" / "0" / "config.yaml").read_text())
    assert trial_config["dataset"] == str(path) and trial_config["lr"] == 1e-3
    assert json.loads((sweep_dir / "sweep.json").read_text())["base_config"]["dataset"] == str(path)
    both = CliRunner().invoke(app, [*args, "--data-dir", "elsewhere"])
    assert both.exit_code == 1 and "give --dataset or --data-dir, not both" in both.output
