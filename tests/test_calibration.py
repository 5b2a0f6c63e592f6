"""Calibration maps (`goemo.core.calibration`) and their fitting and measuring (`goemo.scoring.calibration`).

The maps must never change a decision: thresholds are re-expressed by the same maps, and an
isotonic label's pivot keeps ``g(p) > T`` exactly when ``p > t``, in float32 (the predictor) and
float64 (evaluation), however flat the fitted map is around the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from goemo.core.calibration import Calibration, LabelMap, isotonic_map, logit
from goemo.core.errors import ConfigError, EvaluationError, ModelError
from goemo.core.thresholds import sigmoid
from goemo.scoring.calibration import (
    CalibrationSettings,
    calibration_report,
    expected_calibration_error,
    fit_calibration,
    log_loss,
    reliability,
)

# Flat from 0.2 to 0.6: a raw threshold of 0.4 sits in the middle of a step.
STEP = LabelMap("isotonic", x=(0.0, 0.2, 0.6, 1.0), y=(0.05, 0.3, 0.3, 0.95))


def _around(t: float, ulps: int = 50) -> np.ndarray:
    """float32 probabilities from ``ulps`` below to ``ulps`` above float32(t), every one of them."""
    below = [np.float32(t)]
    above = [np.float32(t)]
    for _ in range(ulps):
        below.append(np.nextafter(below[-1], np.float32(0)))
        above.append(np.nextafter(above[-1], np.float32(1)))
    return np.array(sorted(set(below) | set(above)), dtype=np.float32)


def test_an_isotonic_pivot_keeps_every_float32_decision_in_a_flat_step() -> None:
    cal, thresholds = Calibration(("joy",), (STEP,)).anchored([0.4])
    p = _around(0.4)
    raw = p > np.float32(0.4)
    calibrated = isotonic_map(p, cal.maps[0]).astype(np.float32) > np.float32(thresholds[0])
    assert raw.any() and not raw.all()
    assert np.array_equal(raw, calibrated)
    # float64, as evaluation compares: probabilities are taken to float32 first, as the predictor hands them out
    p64 = np.float64(np.float32(0.4)) + np.array([-1e-9, 0.0, 1e-12, 1e-7])
    decided = cal.calibrate_probs(p64[:, None])[:, 0] > thresholds[0]
    assert decided.tolist() == [False, False, False, True]
    assert np.array_equal(decided, p64.astype(np.float32) > np.float32(0.4))


def test_without_the_pivot_the_flat_step_would_merge_decisions() -> None:
    """The check above can fail: the same map without a pivot puts both sides of t on one float32 value."""
    t = Calibration(("joy",), (STEP,)).map_thresholds([0.4])[0]
    p = _around(0.4)
    calibrated = isotonic_map(p, STEP).astype(np.float32) > np.float32(t)
    assert not np.array_equal(p > np.float32(0.4), calibrated)


def test_the_predictor_path_rounds_to_float32_before_the_isotonic_map() -> None:
    """backend_probabilities(dtype=float32) sees the very float32 probability the raw predictor compared."""
    cal, thresholds = Calibration(("joy",), (STEP,)).anchored([0.4])
    z = logit(np.float64(np.float32(0.4)) + np.linspace(-3e-7, 3e-7, 2001))[:, None]
    raw = sigmoid(z).astype(np.float32) > np.float32(0.4)
    calibrated = cal.backend_probabilities(z, np.float32) > np.float32(thresholds[0])
    assert raw.any() and not raw.all() and np.array_equal(raw, calibrated)


def test_a_probability_equal_to_an_identity_threshold_stays_undecided() -> None:
    cal, thresholds = Calibration(("joy",), (LabelMap("identity"),)).anchored([0.3])
    assert thresholds[0] == 0.3  # kept exactly as given, not rounded through float32
    assert not (cal.calibrate_probs(np.array([[0.3]]))[0, 0] > thresholds[0])


def test_affine_maps_keep_decisions_and_order() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20000, 3)) * 4
    maps = (LabelMap("temperature", scale=0.4), LabelMap("platt", scale=1.7, shift=-0.8), LabelMap("identity"))
    raw_t = np.array([0.31, 0.07, 0.5])
    cal, t = Calibration(("a", "b", "c"), maps).anchored(raw_t)
    before = sigmoid(z) > raw_t
    after = cal.probabilities(z) > t
    assert np.array_equal(before, after)
    assert np.array_equal(np.argsort(cal.probabilities(z), axis=0), np.argsort(z, axis=0))
    # from cached probabilities (through the clipped logit) too
    assert np.array_equal(cal.calibrate_probs(sigmoid(z)) > t, before)


def test_threshold_0_and_1_keep_their_meaning() -> None:
    cal = Calibration(("a", "b"), (LabelMap("platt", scale=2.0, shift=1.0), LabelMap("temperature", scale=3.0)))
    assert cal.map_thresholds([0.0, 1.0]).tolist() == [0.0, 1.0]


def test_the_record_round_trips_and_is_checked() -> None:
    cal, _ = Calibration(("joy", "anger"), (STEP, LabelMap("platt", scale=1.5, shift=-0.2))).anchored([0.4, 0.3])
    back = Calibration.from_dict(cal.to_dict(), ["joy", "anger"])
    z = np.linspace(-5, 5, 101)[:, None].repeat(2, axis=1)
    assert np.array_equal(back.probabilities(z), cal.probabilities(z)) and back.maps == cal.maps
    with pytest.raises(ModelError, match="one entry per label"):
        Calibration.from_dict(cal.to_dict(), ["anger", "joy"])
    bad = cal.to_dict()
    bad["labels"]["anger"]["scale"] = -1.0
    with pytest.raises(ModelError, match=r"labels\.anger\.scale: expected a number > 0"):
        Calibration.from_dict(bad, ["joy", "anger"])
    bad = cal.to_dict()
    bad["labels"]["joy"]["x"] = [0.5, 0.2, 0.6, 1.0]
    with pytest.raises(ModelError, match="strictly increasing"):
        Calibration.from_dict(bad, ["joy", "anger"])


def test_folded_affine_parts_are_not_applied_again() -> None:
    cal = Calibration(("a", "b"), (LabelMap("platt", scale=2.0, shift=1.0), STEP), folded=True)
    z = np.array([[0.3, 0.1]])
    folded_logits = z * cal.scale + cal.shift  # what folded weights output
    assert np.allclose(cal.backend_probabilities(folded_logits), cal.probabilities(z))


# ---------------------------------------------------------------------------- fitting


def _data(n: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_overconfident_logits_get_a_temperature_and_shifted_ones_platt() -> None:
    rng = _data(0)
    z = rng.normal(size=(6000, 2)) * 3
    truth = np.column_stack([z[:, 0] / 3, z[:, 1] - 2.0])  # 3x too confident; 2 too high
    y = (rng.random(z.shape) < sigmoid(truth)).astype(np.uint8)
    fit = fit_calibration(y, z, ["over", "shifted"])
    assert fit.calibration.methods == ["temperature", "platt"]
    assert fit.calibration.maps[0].scale == pytest.approx(1 / 3, abs=0.03)
    assert fit.calibration.maps[1].shift == pytest.approx(-2.0, abs=0.2)
    report = calibration_report(
        y, sigmoid(z), fit.calibration.probabilities(z), ["over", "shifted"], fit.calibration.methods, split="dev"
    )
    assert report.macro_ece_after < report.macro_ece_before / 3


def test_isotonic_only_where_clearly_better_and_never_without_enough_positives() -> None:
    rng = _data(1)
    n = 8000
    z = rng.normal(size=(n, 3)) * 2
    # a step: below 0 the label is rare, above it common, whatever the logit's size (no sigmoid fits that)
    step = np.where(z[:, 0] > 0, 0.7, 0.02)
    y = np.column_stack([rng.random(n) < step, rng.random(n) < sigmoid(z[:, 1]), np.zeros(n, bool)]).astype(np.uint8)
    y[:2, 2] = 1  # two positives only
    fit = fit_calibration(y, z, ["step", "fine", "rare"])
    assert fit.calibration.methods[0] == "isotonic"
    assert fit.calibration.methods[1] in ("identity", "temperature", "platt")
    assert fit.calibration.methods[2] == "identity" and fit.labels[2].cv_log_loss["platt"] is None
    globally = fit_calibration(y, z, ["step", "fine", "rare"], settings=CalibrationSettings(selection="global"))
    assert len(set(globally.calibration.methods[:2])) == 1  # one method for every label that can take it


def test_isotonic_steps_are_joined_at_their_centres() -> None:
    """Two blocks, {0.1, 0.2} never and {0.3, 0.4} always: the map rises from 0.15 to 0.35, not
    between 0.2 and 0.3 (where float noise on a probability near either would jump it by 1)."""
    p = np.repeat([0.1, 0.2, 0.3, 0.4], 30)
    y = (p > 0.25).astype(np.uint8)[:, None]
    m = fit_calibration(
        y, logit(p)[:, None], ["joy"], settings=CalibrationSettings(method="isotonic")
    ).calibration.maps[0]
    assert m.method == "isotonic" and m.y == (0.0, 1.0)
    assert m.x == pytest.approx((0.15, 0.35), abs=1e-7)
    assert isotonic_map(np.array([0.25]), m)[0] == pytest.approx(0.5, abs=1e-3)


def test_a_forced_method_applies_where_it_can() -> None:
    rng = _data(2)
    z = rng.normal(size=(3000, 2))
    y = (rng.random(z.shape) < sigmoid(z)).astype(np.uint8)
    y[:, 1] = 0
    fit = fit_calibration(y, z, ["a", "b"], settings=CalibrationSettings(method="platt"))
    assert fit.calibration.methods == ["platt", "identity"]


def test_fitting_on_a_test_split_is_refused() -> None:
    with pytest.raises(EvaluationError, match="fitted on dev only"):
        fit_calibration(np.zeros((4, 1)), np.zeros((4, 1)), ["joy"], split_name="test")


def test_unknown_calibration_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="expected auto, temperature, platt or isotonic"):
        CalibrationSettings(method="beta")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected per-label or global"):
        CalibrationSettings(selection="each")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="folds=1"):
        CalibrationSettings(folds=1)


def test_fitting_is_reproducible() -> None:
    rng = _data(3)
    z = rng.normal(size=(2000, 2)) * 2
    y = (rng.random(z.shape) < sigmoid(z / 2)).astype(np.uint8)
    five = CalibrationSettings(seed=5)
    a, b = fit_calibration(y, z, ["a", "b"], settings=five), fit_calibration(y, z, ["a", "b"], settings=five)
    assert a.calibration.to_dict() == b.calibration.to_dict()


# ---------------------------------------------------------------------------- measuring


def test_ece_by_hand() -> None:
    # 15 bins of width 1/15: 0.05 -> bin 0, 0.2 -> bin 3, 0.9 and 0.95 -> bin 13 and 14, 1.0 -> bin 14
    y = np.array([[0], [1], [1], [1], [0]])
    p = np.array([[0.05], [0.2], [0.9], [0.95], [1.0]])
    # bin 0: acc 0, conf .05 -> .05 * 1/5; bin 3: 1 vs .2 -> .8/5; bin 13: 1 vs .9 -> .1/5;
    # bin 14: acc 1/2, conf .975 -> .475 * 2/5
    expected = (0.05 + 0.8 + 0.1) / 5 + 0.475 * 2 / 5
    assert expected_calibration_error(y, p)[0] == pytest.approx(expected)


def test_reliability_data_by_hand() -> None:
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7], [0.2, 0.6]])
    r = reliability(y, p, ["a", "b"], bins=2)
    assert r.centres.tolist() == [0.25, 0.75]
    assert r.counts.tolist() == [[2, 2], [2, 2]]
    assert r.accuracy.tolist() == [[0.5, 0.5], [0.0, 1.0]]
    assert np.allclose(r.confidence, [[0.15, 0.85], [0.15, 0.65]])
    assert r.all_counts.tolist() == [4, 4] and r.all_accuracy.tolist() == [0.25, 0.75]
    empty = reliability(np.array([[1]]), np.array([[0.9]]), ["a"], bins=2).to_dict()
    assert empty["labels"]["a"]["accuracy"] == [None, 1.0]


def test_log_loss_by_hand() -> None:
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
