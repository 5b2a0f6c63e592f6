"""Shared fixtures: the official data beside the checkout, and tiny models for fast tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GOEMO_SHARED_DATA", REPO.parent / "shared" / "goemotions"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The official simplified split (`../shared/goemotions`); never copied into the repo."""
    if not (SHARED_DATA / "train.tsv").is_file():
        pytest.fail(f"GoEmotions data not found at {SHARED_DATA}; set GOEMO_SHARED_DATA")
    return SHARED_DATA
