"""``TRANSFORMERS_CACHE`` is honoured as the hub cache, which transformers 5 and huggingface_hub no longer do.

A hub-layout cache (``models--org--name/refs/main`` + ``snapshots/<commit>/``) with a tiny random
BERT and a tokenizer is built in a temporary folder; with the hub offline, a hub id loads from
it when ``TRANSFORMERS_CACHE`` names it, and fails with goemo's one-line error when it does not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, BertConfig

from goemo.core.errors import ModelError
from goemo.models import modeling
from goemo.models.modeling import build_model, fetch_model, hub_cache_dir, load_tokenizer

REPO_ID = "goemo-tests/tiny-cached-bert"  # in no real cache: only the one built here has it
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABELS = ["joy", "anger"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub cache folder holding ``REPO_ID`` at ``main``, as snapshot_download leaves it."""
    root = tmp_path_factory.mktemp("transformers-cache")
    repo = root / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    torch.manual_seed(0)
    enc = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    AutoModel.from_config(enc).save_pretrained(snapshot)
    load_tokenizer("minilm").save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The hub unreachable, no hub-cache variable set, and goemo's once-per-process caches fresh."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("TRANSFORMERS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    modeling.hub_reachable.cache_clear()
    modeling._announce_hub_cache.cache_clear()
    yield
    modeling.hub_reachable.cache_clear()
    modeling._announce_hub_cache.cache_clear()


def _cache_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "TRANSFORMERS_CACHE=" in r.getMessage()]


def test_a_hub_id_loads_from_transformers_cache_with_one_line(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRANSFORMERS_CACHE", str(cache))
    with caplog.at_level(logging.INFO, logger="goemo.models.modeling"):
        model = build_model(REPO_ID, LABELS, pooling="cls")
        mean = build_model(REPO_ID, LABELS, pooling="mean")
        tokenizer = load_tokenizer(REPO_ID)
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_labels == 2
    assert type(mean).__name__ == "GoemoForSequenceClassification"
    assert tokenizer("so happy")["input_ids"][0] == tokenizer.cls_token_id
    lines = _cache_lines(caplog)
    assert len(lines) == 1, lines  # once per process, however many loads
    assert f"TRANSFORMERS_CACHE={cache} is used as the Hugging Face hub cache" in lines[0]
    assert "HF_HUB_CACHE" in lines[0] and "HF_HOME" in lines[0]


def test_without_transformers_cache_the_same_id_is_not_found(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="goemo.models.modeling"):
        with pytest.raises(ModelError, match=f"goemo fetch-model {REPO_ID}"):
            build_model(REPO_ID, LABELS)
        with pytest.raises(ModelError, match="not in the Hugging Face cache"):
            load_tokenizer(REPO_ID)
    assert hub_cache_dir() is None and not _cache_lines(caplog)


def test_hf_hub_cache_wins_over_transformers_cache(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRANSFORMERS_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", "/somewhere/else")
    with caplog.at_level(logging.INFO, logger="goemo.models.modeling"):
        assert hub_cache_dir() is None and hub_cache_dir() is None  # the hub uses its own HF_HUB_CACHE
    (line,) = _cache_lines(caplog)
    assert "is ignored: HF_HUB_CACHE=/somewhere/else is set" in line


def test_transformers_cache_expands_home_and_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GOEMO_TEST_SCRATCH", "/scratch/me")
    monkeypatch.setenv("TRANSFORMERS_CACHE", "$GOEMO_TEST_SCRATCH/hf")
    assert hub_cache_dir() == "/scratch/me/hf"
    monkeypatch.setenv("TRANSFORMERS_CACHE", "~/hf")
    assert hub_cache_dir() == str(tmp_path / "hf")
    monkeypatch.setenv("TRANSFORMERS_CACHE", "  ")
    assert hub_cache_dir() is None  # blank is unset


def test_fetch_model_fills_transformers_cache_unless_told_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """`goemo fetch-model` downloads where training will read: an explicit cache_dir wins over the variable."""
    calls: list[Any] = []

    def fake_snapshot_download(repo_id: str, cache_dir: str | Path | None, allow_patterns: list[str]) -> str:
        calls.append(cache_dir)
        return f"/fake/{repo_id}"

    monkeypatch.setattr(modeling, "snapshot_download", fake_snapshot_download)
    fetch_model(REPO_ID)
    monkeypatch.setenv("TRANSFORMERS_CACHE", "/shared/tc")
    fetch_model(REPO_ID)
    fetch_model(REPO_ID, cache_dir="/explicit")
    assert calls == [None, "/shared/tc", "/explicit"]
