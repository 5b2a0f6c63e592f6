"""Bootstrap intervals and the paired bootstrap (`goemo.scoring.bootstrap`), checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from goemo.core.errors import MetricsInputError
from goemo.scoring.bootstrap import (
    DEFAULT_RESAMPLES,
    Resampling,
    bootstrap_scores,
    paired_bootstrap,
    resample_indices,
    sign_flip_p_value,
)
from goemo.scoring.metrics import compute_metrics

# Six texts, two labels. At 0.5, A misses text 4's first label (F1 4/5 and 1: macro 0.9); B gets
# the first label right and, on the second, fires on text 3 and misses text 5 (F1 1 and 2/3).
Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
PA = np.array([[0.9, 0.1], [0.2, 0.9], [0.8, 0.7], [0.1, 0.2], [0.4, 0.3], [0.3, 0.8]])
PB = np.array([[0.7, 0.2], [0.1, 0.6], [0.6, 0.9], [0.2, 0.7], [0.9, 0.1], [0.3, 0.4]])
# Four resamples, written out.
INDICES = np.array([[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 2, 5], [3, 4, 5, 5, 1, 0], [2, 2, 2, 4, 4, 1]])


def test_paired_bootstrap_by_hand() -> None:
    # Macro-F1 of A and B on each resample, counted by hand:
    #   r1 (the split itself): A 0.9,  B (1 + 2/3) / 2      -> A - B = 1/15
    #   r2: A 1 and 1 -> 1;          B 1 and 6/7 -> 13/14   -> 1/14
    #   r3: A 2/3 and 1 -> 5/6;      B 1 and 2/5 -> 0.7     -> 2/15
    #   r4: A 3/4 and 1 -> 7/8;      B 1 and 1 -> 1         -> -1/8
    result = paired_bootstrap(Y, PA, PB, 0.5, 0.5, metrics=["f1_macro"], resampling=Resampling(indices=INDICES))[
        "f1_macro"
    ]
    assert result.a == pytest.approx(0.9) and result.b == pytest.approx(5 / 6)
    assert result.difference == pytest.approx(1 / 15)
    # numpy's percentiles interpolate linearly between the sorted differences [-1/8, 1/15, 1/14, 2/15]
    assert result.low == pytest.approx(-1 / 8 + 0.075 * (1 / 15 + 1 / 8))
    assert result.high == pytest.approx(1 / 14 + 0.925 * (2 / 15 - 1 / 14))
    # one resample of four (r4) has A - B <= 0: p = 2 x 1/4
    assert result.p_value == pytest.approx(0.5) and result.n_resamples == 4
    assert not result.significant
    assert result.verdict() == "no clear difference in macro-F1: A - B = +0.0667 (95% CI -0.1106 to +0.1287; p = 0.5)"


def test_intervals_by_hand() -> None:
    scores = bootstrap_scores(Y, PA, 0.5, ["joy", "anger"], Resampling(indices=INDICES))
    assert scores.f1_macro.estimate == pytest.approx(0.9)
    resampled = np.sort([0.9, 1.0, 5 / 6, 7 / 8])
    assert scores.f1_macro.low == pytest.approx(np.percentile(resampled, 2.5))
    assert scores.f1_macro.high == pytest.approx(np.percentile(resampled, 97.5))
    joy = np.sort([0.8, 1.0, 2 / 3, 0.75])  # the first label's F1 on r1..r4
    assert scores.f1_per_label["joy"].low == pytest.approx(np.percentile(joy, 2.5))
    assert scores.f1_per_label["anger"].estimate == 1.0 and scores.f1_per_label["anger"].low == 1.0


def test_resampled_auc_matches_scikit_learn_with_ties_and_repeats() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.3).astype(int)
    p = np.round(rng.random((300, 3)) * 0.5 + 0.4 * y, 1)  # rounded: many ties
    idx = resample_indices(300, 5, seed=1)
    from goemo.scoring.bootstrap import _counts, _weighted_auc  # the vectorised core

    w = _counts(idx, 300)
    for j in range(3):
        got = _weighted_auc(w, y[:, j].astype(float), p[:, j])
        want = [roc_auc_score(y[row, j], p[row, j]) for row in idx]
        assert np.allclose(got, want)


def test_point_estimates_are_the_evaluation_numbers() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((400, 5)) < 0.1).astype(np.uint8)
    y[:, 4] = 0  # a label with no positives: left out of macro averages, as evaluation does
    p = np.clip(rng.random((400, 5)) * 0.6 + 0.35 * y, 0, 1)
    thresholds = np.array([0.3, 0.4, 0.5, 0.35, 0.3])
    names = list("abcde")
    scores = bootstrap_scores(y, p, thresholds, names, Resampling(n_resamples=50))
    report = compute_metrics(y, p, names, thresholds=thresholds, sweep=None)
    assert scores.f1_macro.estimate == pytest.approx(report.macro.f1)
    assert scores.auc_macro.estimate == pytest.approx(report.macro.auc)
    assert scores.f1_per_label["e"].estimate is None
    assert scores.f1_macro.low <= scores.f1_macro.estimate <= scores.f1_macro.high


def test_seeded_and_at_least_a_thousand_resamples_by_default() -> None:
    assert DEFAULT_RESAMPLES >= 1000
    a = bootstrap_scores(Y, PA, 0.5, ["joy", "anger"], Resampling(seed=3))
    b = bootstrap_scores(Y, PA, 0.5, ["joy", "anger"], Resampling(seed=3))
    assert a.n_resamples == 1000 and a.to_dict() == b.to_dict()
    assert bootstrap_scores(Y, PA, 0.5, ["joy", "anger"], Resampling(seed=4)).to_dict() != a.to_dict()


def test_a_clear_winner_is_called_one() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random((2000, 4)) < 0.2).astype(np.uint8)
    good = np.clip(0.6 * y + 0.4 * rng.random(y.shape), 0, 1)
    bad = rng.random(y.shape)
    result = paired_bootstrap(y, good, bad, 0.5, 0.5, resampling=Resampling(n_resamples=300))
    assert all(c.significant and c.difference > 0 and c.p_value == 0 for c in result.values())
    assert result["f1_macro"].verdict("good", "bad").startswith("good beats bad on macro-F1 by ")
    assert result["f1_macro"].p_text() == "p < 0.0067"
    flipped = paired_bootstrap(y, bad, good, 0.5, 0.5, resampling=Resampling(n_resamples=300))["auc_macro"]
    assert flipped.verdict("bad", "good").startswith("good beats bad on macro ROC-AUC")


def test_sign_flip_p_value() -> None:
    assert sign_flip_p_value(0.1, np.array([0.2, 0.1, 0.0, -0.1])) == 1.0  # two of four not above 0
    assert sign_flip_p_value(-0.1, np.array([-0.2, -0.1, -0.3, 0.1])) == 0.5
    assert sign_flip_p_value(0.0, np.array([0.1])) == 1.0


def test_bad_indices_are_refused() -> None:
    with pytest.raises(MetricsInputError, match="row numbers"):
        paired_bootstrap(Y, PA, PB, 0.5, 0.5, resampling=Resampling(indices=np.array([[0, 1, 2, 3, 4, 6]])))


def test_one_resampling_gives_the_same_resamples_to_every_score() -> None:
    """`Resampling.fixed` draws once: intervals from it equal those from the seeded draw itself."""
    seeded = Resampling(n_resamples=40, seed=7)
    fixed = seeded.fixed(len(Y))
    assert fixed.indices is not None and fixed.indices.shape == (40, len(Y))
    assert np.array_equal(fixed.draw(len(Y)), resample_indices(len(Y), 40, seed=7))
    a = bootstrap_scores(Y, PA, 0.5, ["joy", "anger"], seeded)
    b = bootstrap_scores(Y, PA, 0.5, ["joy", "anger"], fixed)
    assert a.f1_macro == b.f1_macro and a.seed == 7 and b.seed is None  # given resamples have no seed
    with pytest.raises(MetricsInputError, match="confidence"):
        Resampling(confidence=95)
