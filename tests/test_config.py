import dataclasses
from pathlib import Path

import pytest

from goemo.core.config import (
    DATA_FIELDS,
    FIELD_METADATA_KEYS,
    NOT_SWEEPABLE_FIELDS,
    PRESETS,
    RESUMABLE_FIELDS,
    RUNTIME_FIELDS,
    TrainConfig,
    fields_where,
    load_yaml,
    resolve_config,
    save_config,
)
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


def test_sample_sizes_default_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GOEMO_MAX_TRAIN_SAMPLES / GOEMO_MAX_EVAL_SAMPLES are defaults: a quick run of a command as written."""
    assert TrainConfig().max_train_samples is None and TrainConfig().max_eval_samples is None
    monkeypatch.setenv("GOEMO_MAX_TRAIN_SAMPLES", "300")
    monkeypatch.setenv("GOEMO_MAX_EVAL_SAMPLES", " 100 ")
    cfg = resolve_config("fast")
    assert (cfg.max_train_samples, cfg.max_eval_samples) == (300, 100)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("max_train_samples: 50\n")
    cfg = resolve_config("fast", config_file=cfg_file, overrides={"max_eval_samples": 20})
    assert (cfg.max_train_samples, cfg.max_eval_samples) == (50, 20)  # a file or an option wins
    assert TrainConfig(**TrainConfig(max_train_samples=7).to_dict()).max_train_samples == 7  # config.yaml read back


@pytest.mark.parametrize("value", ["0", "-5", "many", "1.5"])
def test_a_bad_sample_size_in_the_environment_is_refused_by_name(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOEMO_MAX_EVAL_SAMPLES", value)
    with pytest.raises(ConfigError, match=f"GOEMO_MAX_EVAL_SAMPLES='{value}': expected a whole number >= 1"):
        resolve_config("fast")


def test_the_tfidf_baseline_reads_the_same_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from goemo.training.tfidf import TfidfConfig

    assert TfidfConfig().max_train_samples is None
    monkeypatch.setenv("GOEMO_MAX_TRAIN_SAMPLES", "120")
    assert TfidfConfig().max_train_samples == 120 and TfidfConfig(max_train_samples=9).max_train_samples == 9


def test_paper_preset_matches_the_paper() -> None:
    cfg = resolve_config("paper")
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.epochs, cfg.max_length, cfg.warmup_ratio, cfg.threshold) == (
        "bert-base-cased",
        16,
        5e-5,
        4,
        50,
        0.1,
        0.3,
    )


def test_wandb_names_are_aliases(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("learning_rate: 3.0e-5\ntokenizer_max_len: 40\nbatch_size: 64\n")
    assert load_yaml(f) == {"lr": 3e-5, "max_length": 40, "batch_size": 64}


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"lr": 0}, "lr"),
        ({"dropout": 1.0}, "dropout"),
        ({"pooling": "max"}, "pooling"),
        ({"select_metric": "accuracy"}, "select_metric"),
        ({"precision": "fp8"}, "precision"),
        ({"threshold_shrink": 1.5}, "threshold_shrink"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": 0}, "ema_decay"),
        ({"distill_alpha": 1.5}, "distill_alpha"),
        ({"teachers": 3}, "teachers"),
        ({"num_folds": 1}, "num_folds"),
        ({"holdout_fold": 3}, "holdout_fold"),
        ({"holdout_fold": -1}, "holdout_fold"),
    ],
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


def test_a_preset_given_beats_the_files_and_is_the_one_recorded(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: paper\nlr: 3.0e-5\n")
    cfg = resolve_config("fast", cfg_file)
    assert (cfg.preset, cfg.model, cfg.pooling) == ("fast", PRESETS["fast"]["model"], "mean")
    assert cfg.lr == 3e-5  # the file still beats the preset
    assert resolve_config(config_file=cfg_file, overrides={"preset": "fast"}).preset == "fast"


# ---------------------------------------------------------------- field metadata: one definition per option


def test_every_field_is_declared_with_its_metadata() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert set(f.metadata) == set(FIELD_METADATA_KEYS), f"TrainConfig.{f.name}: declare it with opt(..., help=...)"
        assert isinstance(f.metadata["help"], str) and f.metadata["help"].strip(), f.name
        assert f.metadata["no_cli"] is None or f.metadata["no_cli"].strip(), f"{f.name}: no_cli needs its reason"
    with pytest.raises(KeyError, match="unknown field metadata 'sweepabel'"):
        fields_where("sweepabel")


def test_groups_of_fields_are_read_from_the_metadata() -> None:
    assert DATA_FIELDS == (
        "data_dir",
        "train_file",
        "dev_file",
        "test_file",
        "labels_file",
        "dataset",
        "dataset_config",
        "text_column",
        "label_column",
        "taxonomy",
    )
    assert set(RUNTIME_FIELDS) >= {"device", "precision", "compile", "num_threads", "eval_batch_size"}
    assert set(RUNTIME_FIELDS) <= set(RESUMABLE_FIELDS)  # how a run executes may change when it resumes
    assert {"data_dir", "train_file", "dataset", "dataset_config"} <= set(RESUMABLE_FIELDS)  # where the data lives
    assert {"resume", "overwrite", "output", "eval_test"} <= set(RESUMABLE_FIELDS)
    assert not {"lr", "model", "seed", "epochs", "teachers"} & set(RESUMABLE_FIELDS)  # what is trained may not
    assert set(NOT_SWEEPABLE_FIELDS) == {"output", "overwrite", "resume", "trackers", "select_metric", "preset"}
    assert fields_where("sweepable", False) == NOT_SWEEPABLE_FIELDS
    assert set(RESUMABLE_FIELDS + DATA_FIELDS) <= {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("name", NOT_SWEEPABLE_FIELDS)
def test_a_sweep_refuses_the_fields_marked_not_sweepable(name: str) -> None:
    from goemo.sweeps.config import parse_sweep_config

    config = {"method": "random", "metric": {"name": "f1_macro"}, "parameters": {name: {"values": ["a", "b"]}}}
    # select_metric may be fixed ({value: val_loss}: each trial's kept epoch), never searched
    expected = "is fixed, not searched" if name == "select_metric" else f"{name} is set by the sweep itself"
    with pytest.raises(ConfigError, match=expected):
        parse_sweep_config(config, "sweep.yaml")


def test_a_sweep_accepts_a_runtime_field_as_a_parameter() -> None:
    from goemo.sweeps.config import parse_sweep_config

    spec = parse_sweep_config(
        {"method": "grid", "metric": {"name": "f1_macro"}, "parameters": {"eval_batch_size": {"values": [64, 128]}}},
        "sweep.yaml",
    )
    assert "eval_batch_size" in spec.params


def test_resume_accepts_changes_only_to_resumable_fields(tmp_path: Path) -> None:
    from goemo.core.errors import RunFolderError
    from goemo.core.run_folder import RunFolder

    saved = TrainConfig(output=str(tmp_path))
    save_config(saved, tmp_path / "config.yaml")
    folder = RunFolder(tmp_path)
    changed = {
        "eval_batch_size": 7,
        "eval_test": False,
        "device": "cpu",
        "num_threads": 1,
        "data_dir": "elsewhere",
        "resume": True,
    }
    assert set(changed) <= set(RESUMABLE_FIELDS)
    folder._check_same_run(saved.replace(**changed))  # the check --resume makes on a folder with a checkpoint
    with pytest.raises(RunFolderError, match=r"settings differ from the saved run \(lr: 5e-05 -> 0.001\)"):
        folder._check_same_run(saved.replace(lr=1e-3, **changed))
