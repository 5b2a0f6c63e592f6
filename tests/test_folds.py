"""Fold assignment for cross-fitted teachers: stable per id, balanced, refuses one fold."""

from __future__ import annotations

import numpy as np
import pytest

from goemo.data.folds import fold_of


def test_a_text_keeps_its_fold_whatever_the_order_or_company() -> None:
    ids = [f"c{i}" for i in range(3000)]
    folds = fold_of(ids, 3)
    reordered = fold_of(ids[::-1], 3)[::-1]
    assert np.array_equal(folds, reordered)
    assert np.array_equal(fold_of(ids[500:700], 3), folds[500:700])  # a sample keeps the full split's folds


def test_folds_cover_every_value_and_are_near_even(shared_data) -> None:
    from goemo.data.io import load_goemotions

    ids = load_goemotions(shared_data, splits=["train"])["train"].ids
    counts = np.bincount(fold_of(ids, 3), minlength=3)
    assert counts.sum() == len(ids) and len(counts) == 3
    assert counts.min() > 0.95 * len(ids) / 3  # CRC-32 spreads the comment ids evenly


def test_one_fold_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fold_of(["a"], 1)
