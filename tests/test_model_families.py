"""``--dropout`` sets the classifier dropout of every head goemo builds, whatever the encoder family.

Each family gets a tiny randomly initialised encoder saved as a local folder (no network). Two
models built from it with the same seed and dropouts 0.0 and 0.5 must give identical outputs in
eval mode (same weights: dropout is the only difference) and different ones in train mode (the
dropout reached the classifier), while the encoder's own dropout settings stay as they were.
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from goemo.core.config import resolve_config
from goemo.models.modeling import (
    CLS_HEAD_DROPOUT,
    GOEMO_HEAD,
    GoemoConfig,
    GoemoForSequenceClassification,
    build_model,
    build_tiny_model,
    load_model,
    load_tokenizer,
    save_model,
)

LABELS = ["joy", "anger", "fear"]
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
# model_type -> the tiny config's settings (vocabulary 100, 64 positions).
FAMILIES: dict[str, dict[str, Any]] = {
    "bert": SMALL,
    "roberta": SMALL,
    "xlm-roberta": SMALL,
    "electra": {**SMALL, "embedding_size": 16},
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37},
    "albert": {**SMALL, "embedding_size": 16},
    "deberta-v2": SMALL,
    # its grouped convolutions need multiples of 4; embeddings as wide as the hidden states
    "squeezebert": {**SMALL, "intermediate_size": 36, "embedding_size": 32},
    "mpnet": SMALL,
}
OWN_HEAD_CLASS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "xlm-roberta": "XLMRobertaForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "albert": "AlbertForSequenceClassification",
    "deberta-v2": "DebertaV2ForSequenceClassification",
}


def _tiny_config(family: str) -> PretrainedConfig:
    return AutoConfig.for_model(family, vocab_size=100, max_position_embeddings=64, **FAMILIES[family])


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved random encoder folder per family, as `build_model` reads a local model."""
    root = tmp_path_factory.mktemp("families")
    folders = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        AutoModel.from_config(_tiny_config(family)).save_pretrained(root / family)
        folders[family] = root / family
    return folders


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 9), generator=g)  # above every family's special ids (RoBERTa pads with 1)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _build(folder: Path, pooling: str, dropout: float) -> PreTrainedModel:
    torch.manual_seed(123)  # the same fresh classifier weights for both dropouts
    return build_model(str(folder), LABELS, pooling=pooling, dropout=dropout)


def _logits(model: PreTrainedModel, train: bool) -> torch.Tensor:
    model.train(train)
    torch.manual_seed(7)  # the same dropout masks wherever both models draw them
    with torch.no_grad():
        return model(**_inputs()).logits


def _dropouts(model: nn.Module) -> dict[str, float]:
    return {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}


def _encoder_config(model: PreTrainedModel) -> dict[str, Any]:
    """The encoder's settings, whichever head: the nested config of goemo's, the model's own otherwise."""
    config = model.encoder.config if isinstance(model, GoemoForSequenceClassification) else model.config
    return config.to_dict()


def _check_only_the_classifier_dropout_differs(family: str, pooling: str, folder: Path) -> PreTrainedModel:
    low, high = _build(folder, pooling, 0.0), _build(folder, pooling, 0.5)
    assert torch.equal(_logits(low, train=False), _logits(high, train=False)), "eval outputs differ: weights differ"
    assert not torch.equal(_logits(low, train=True), _logits(high, train=True)), "--dropout did not reach the head"

    # The dropout layers that changed are the head's only, not the encoder's.
    before, after = _dropouts(low), _dropouts(high)
    changed = {name for name in before if before[name] != after[name]}
    assert changed and all(after[name] == 0.5 for name in changed)
    prefix = high.base_model_prefix + "."
    assert not {n for n in changed if n.startswith(prefix) and ".pooler." not in n}, changed
    # The encoder's own settings (hidden_dropout_prob, attention dropout, …) stay the family's defaults.
    default = _tiny_config(family).to_dict()
    enc_low, enc_high = _encoder_config(low), _encoder_config(high)
    differ = {k for k in set(enc_low) | set(enc_high) if enc_low.get(k) != enc_high.get(k)}
    expected = set(CLS_HEAD_DROPOUT[family]) if pooling == "cls" else set()
    assert differ == expected, (differ, expected)
    for key in ("hidden_dropout_prob", "dropout", "attention_probs_dropout_prob", "attention_dropout"):
        if key in default:
            assert enc_high[key] == default[key], key
    return high


@pytest.mark.parametrize("family", list(FAMILIES))
def test_dropout_reaches_the_cls_head_of_every_family(family: str, encoders: dict[str, Path], caplog) -> None:
    with caplog.at_level(logging.INFO, logger="goemo.models.modeling"):
        model = _check_only_the_classifier_dropout_differs(family, "cls", encoders[family])
    lines = [r.getMessage() for r in caplog.records if "dropout" in r.getMessage()]
    if CLS_HEAD_DROPOUT[family] == GOEMO_HEAD:
        assert isinstance(model, GoemoForSequenceClassification) and model.config.pooling == "cls"
        assert model.config.classifier_dropout == 0.5
        assert all("goemo's head" in line for line in lines) and len(lines) == 2  # one per build
    else:
        assert type(model).__name__ == OWN_HEAD_CLASS[family]
        assert all(getattr(model.config, f) == 0.5 for f in CLS_HEAD_DROPOUT[family])
        assert all("of its own head" in line for line in lines) and len(lines) == 2


@pytest.mark.parametrize("family", ["bert", "squeezebert", "deberta-v2", "distilbert"])
def test_dropout_reaches_the_mean_head(family: str, encoders: dict[str, Path]) -> None:
    model = _check_only_the_classifier_dropout_differs(family, "mean", encoders[family])
    assert isinstance(model, GoemoForSequenceClassification) and model.config.pooling == "mean"
    assert not list(getattr(model.encoder, "pooler", nn.Identity()).parameters())  # dropped: unused


def test_the_table_names_every_family_tested() -> None:
    assert set(CLS_HEAD_DROPOUT) >= set(FAMILIES)


def test_goemo_cls_head_classifies_the_pooler_output_or_the_first_token(encoders: dict[str, Path]) -> None:
    """SqueezeBERT has a pooler and keeps it (as its own head uses it); a pooler-less encoder gives token 0."""
    model = _build(encoders["squeezebert"], "cls", 0.1).eval()
    assert model.encoder.pooler is not None
    with torch.no_grad():
        pooled = model.encoder(**_inputs()).pooler_output
        assert torch.allclose(model(**_inputs()).logits, model.classifier(pooled))
    torch.manual_seed(0)
    distil = GoemoForSequenceClassification(
        GoemoConfig(encoder=_tiny_config("distilbert").to_dict(), pooling="cls", id2label=dict(enumerate(LABELS)))
    ).eval()
    with torch.no_grad():
        first = distil.encoder(**_inputs()).last_hidden_state[:, 0]
        assert torch.allclose(distil(**_inputs()).logits, distil.classifier(first))
    with pytest.raises(ValueError, match="pooling 'max'"):
        GoemoForSequenceClassification(GoemoConfig(encoder=_tiny_config("bert").to_dict(), pooling="max"))


def test_tiny_model_honours_dropout_in_both_heads() -> None:
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)
        low = build_tiny_model(LABELS, pooling, dropout=0.0)
        torch.manual_seed(0)
        high = build_tiny_model(LABELS, pooling, dropout=0.5)
        assert torch.equal(_logits(low, train=False), _logits(high, train=False))
        assert not torch.equal(_logits(low, train=True), _logits(high, train=True))
        assert high.config.to_dict().get("hidden_dropout_prob", 0.1) == 0.1


def test_goemo_cls_head_saves_and_loads_with_and_without_goemo(encoders: dict[str, Path], tmp_path: Path) -> None:
    """A SqueezeBERT on goemo's cls head: `save_model` / `load_model`, and plain transformers with remote code."""
    model = _build(encoders["squeezebert"], "cls", 0.3).eval()
    folder = tmp_path / "best"
    save_model(model, load_tokenizer("minilm"), folder, {})
    expected = _logits(model, train=False)

    loaded = load_model(folder)
    assert isinstance(loaded.model, GoemoForSequenceClassification) and loaded.label_names == LABELS
    assert loaded.model.config.pooling == "cls" and loaded.model.config.classifier_dropout == 0.3
    assert torch.equal(_logits(loaded.model, train=False), expected)
    assert (folder / "modeling_goemo.py").is_file()

    ids = _inputs()
    code = f"""
        import sys, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert "goemo" not in sys.modules
        ids, mask = torch.tensor({ids["input_ids"].tolist()}), torch.tensor({ids["attention_mask"].tolist()})
        with torch.no_grad():
            print("RESULT", model(input_ids=ids, attention_mask=mask).logits.tolist())
    """
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plain = torch.tensor(ast.literal_eval(done.stdout.rpartition("RESULT ")[2]))
    assert torch.allclose(plain, expected, atol=1e-5)


def test_the_wandb_report_preset_honours_the_sweeps_dropout(encoders: dict[str, Path]) -> None:
    """The preset's SqueezeBERT with each dropout of examples/wandb_report_sweep.yaml (the tiny one stands in)."""
    assert resolve_config("wandb-report").model.startswith("squeezebert/")
    for dropout in (0.3, 0.4, 0.5):
        cfg = resolve_config("wandb-report", overrides={"model": str(encoders["squeezebert"]), "dropout": dropout})
        assert cfg.pooling == "cls"
        model = build_model(cfg.model, LABELS, cfg.pooling, cfg.dropout, cfg.trust_remote_code)
        assert isinstance(model, GoemoForSequenceClassification) and model.dropout.p == dropout
        assert model.encoder.config.hidden_dropout_prob == 0.1  # SqueezeBERT's default, untouched
