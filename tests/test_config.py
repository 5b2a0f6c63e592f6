from pathlib import Path

import pytest

from goemo.core.config import PRESETS, TrainConfig, load_yaml, resolve_config, save_config
from goemo.core.errors import ConfigError


def test_precedence_defaults_preset_yaml_cli(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: paper\nlr: 3.0e-5\nbatch_size: 8\n")
    cfg = resolve_config(config_file=cfg_file, overrides={"batch_size": 4, "epochs": None})
    assert cfg.model == "bert-base-cased"  # from the preset named in the file
    assert cfg.lr == 3e-5  # file beats preset
    assert cfg.batch_size == 4  # command line beats file
    assert cfg.epochs == PRESETS["paper"]["epochs"]  # None means "not given"
    assert cfg.preset == "paper"


def test_paper_preset_matches_the_paper() -> None:
    cfg = resolve_config("paper")
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.epochs, cfg.max_length, cfg.warmup_ratio, cfg.threshold) == (
        "bert-base-cased", 16, 5e-5, 4, 50, 0.1, 0.3
    )


def test_wandb_names_are_aliases(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("learning_rate: 3.0e-5\ntokenizer_max_len: 40\nbatch_size: 64\n")
    assert load_yaml(f) == {"lr": 3e-5, "max_length": 40, "batch_size": 64}


@pytest.mark.parametrize(
    "changes, field",
    [({"lr": 0}, "lr"), ({"dropout": 1.0}, "dropout"), ({"pooling": "max"}, "pooling"),
     ({"select_metric": "accuracy"}, "select_metric"), ({"precision": "fp8"}, "precision"),
     ({"threshold_shrink": 1.5}, "threshold_shrink"), ({"ema_decay": 1.0}, "ema_decay"),
     ({"ema_decay": 0}, "ema_decay"), ({"distill_alpha": 1.5}, "distill_alpha"),
     ({"teachers": 3}, "teachers"), ({"num_folds": 1}, "num_folds"), ({"holdout_fold": 3}, "holdout_fold"),
     ({"holdout_fold": -1}, "holdout_fold")],
)
def test_invalid_values_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**changes)


def test_unknown_option_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'learnin_rate'"):
        resolve_config(overrides={"learnin_rate": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("nope")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig(lr=2e-5, head_lr=1e-3, pooling="mean")
    save_config(cfg, tmp_path / "config.yaml")
    assert resolve_config(config_file=tmp_path / "config.yaml") == cfg
