"""The checks of a run before its first step: an encoder's limits, and nothing written when they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, RobertaConfig

from goemo.core.errors import ConfigError, ModelError
from goemo.models.modeling import GoemoConfig, encoder_settings, resolve_model_name
from goemo.training.loop import train
from goemo.training.preflight import check_encoder


def _encoder_folder(folder: Path, config, model_max_length: int | None = None) -> Path:
    """A model folder with only what the check reads: config.json and the tokenizer (MiniLM's)."""
    config.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(folder)
    return folder


def test_a_max_length_beyond_the_encoders_positions_is_refused(tiny_config) -> None:
    check_encoder(tiny_config.replace(max_length=512))  # the most it takes
    with pytest.raises(ConfigError) as refused:
        check_encoder(tiny_config.replace(max_length=513))
    assert str(refused.value) == (
        "max_length=513: tiny-random-bert takes at most 512 tokens (its config.json max_position_embeddings 512); "
        "give --max-length 512 or less"
    )


def test_roberta_positions_and_the_tokenizers_own_limit_count(tiny_config, tmp_path) -> None:
    roberta = RobertaConfig(max_position_embeddings=130, pad_token_id=1)  # positions from pad_token_id + 1: 128 tokens
    folder = _encoder_folder(tmp_path / "roberta", roberta)
    with pytest.raises(ConfigError, match=r"at most 128 tokens \(its config.json max_position_embeddings 130 less 2\)"):
        check_encoder(tiny_config.replace(model=str(folder), max_length=129))
    short = _encoder_folder(tmp_path / "short", BertConfig(), model_max_length=64)
    with pytest.raises(ConfigError, match=r"at most 64 tokens \(its tokenizer's model_max_length 64\)"):
        check_encoder(tiny_config.replace(model=str(short), max_length=65))


def test_a_goemo_mean_pooling_folder_is_checked_by_its_nested_encoder(tiny_config, tmp_path) -> None:
    nested = GoemoConfig(encoder=BertConfig(max_position_embeddings=40).to_dict(), pooling="mean")
    folder = _encoder_folder(tmp_path / "mean", nested)
    assert encoder_settings(str(folder))["max_position_embeddings"] == 40
    check_encoder(tiny_config.replace(model=str(folder), max_length=40))
    with pytest.raises(ConfigError, match="at most 40 tokens"):
        check_encoder(tiny_config.replace(model=str(folder), max_length=41))


def test_a_model_that_is_not_there_is_refused_before_the_run_folder_is_touched(tiny_config, tmp_path) -> None:
    with pytest.raises(ModelError, match="cannot load model from folder"):
        train(tiny_config.replace(model=str(tmp_path)))  # a folder without config.json
    assert not Path(tiny_config.output).exists()


def test_train_refuses_an_impossible_max_length_before_its_first_step(tiny_config) -> None:
    """It used to train the whole run, then refuse the best/ it wrote (the model card, goemo predict)."""
    with pytest.raises(ConfigError, match="max_length=4000: tiny-random-bert takes at most 512 tokens"):
        train(tiny_config.replace(max_length=4000))
    assert not Path(tiny_config.output).exists()
    assert not Path(tiny_config.cache_dir).exists()  # nothing tokenised either
