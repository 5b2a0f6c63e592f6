"""`goemo.core.thresholds`: the paper's constants, the choice of thresholds and its guards.

Written so that each check fails when the code is wrong in a small way (a constant moved, a
comparison turned round, a guard removed): ``benchmarks/mutation.py`` measures how many such
changes these tests and ``tests/test_metrics.py`` catch.
"""

from __future__ import annotations

import json
import math
import warnings
from importlib.resources import files

import numpy as np
import pytest

from goemo.core.errors import ConfigError, EvaluationError, GoemoError, MetricsInputError, ThresholdLeakError
from goemo.core.thresholds import (
    DEFAULT_GRID,
    DEFAULT_THRESHOLD,
    PAPER_THRESHOLD,
    PAPER_THRESHOLDS,
    THRESHOLD_CONVENTION,
    ThresholdChoice,
    TunedThresholds,
    as_probs,
    as_thresholds,
    binarize,
    choose_thresholds,
    is_test_split,
    json_float,
    sigmoid,
)

NAMES = ["joy", "anger", "fear"]


def tuned(split: str = "dev", values=(0.2, 0.45, 0.7), **changes) -> TunedThresholds:
    return TunedThresholds(np.array(values), tuple(NAMES), "per_label", split, **changes)


# --------------------------------------------------------------------------- the paper's numbers


def test_paper_threshold_is_the_papers_reported_one() -> None:
    """0.3 is what the paper's test results were computed with; the report's paper column says so."""
    reference = json.loads(files("goemo.report").joinpath("paper_reference.json").read_text(encoding="utf-8"))
    assert PAPER_THRESHOLD == reference["threshold"] == 0.3
    assert PAPER_THRESHOLD in PAPER_THRESHOLDS


def test_paper_threshold_grid_is_the_papers_eval_thresholds() -> None:
    assert PAPER_THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def test_default_threshold_and_grid() -> None:
    assert DEFAULT_THRESHOLD == 0.5
    assert len(DEFAULT_GRID) == 99 and DEFAULT_GRID[0] == 0.01 and DEFAULT_GRID[-1] == 0.99
    assert 0.3 in DEFAULT_GRID.tolist() and 0.5 in DEFAULT_GRID.tolist()  # the literals, not near them
    assert np.all(np.diff(DEFAULT_GRID) > 0)


def test_paper_threshold_decides_strictly() -> None:
    p = np.array([[0.3, np.nextafter(0.3, 1.0), 0.29]])
    assert binarize(p, PAPER_THRESHOLD).tolist() == [[0, 1, 0]]


# --------------------------------------------------------------------------- json_float


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), np.float32("nan"), np.float64("-inf")])
def test_json_float_turns_what_json_cannot_hold_into_null(value) -> None:
    assert json_float(value) is None


@pytest.mark.parametrize(
    ("value", "expected"), [(0.25, 0.25), (np.float32(0.5), 0.5), (1, 1.0), (0, 0.0), (None, None)]
)
def test_json_float_keeps_numbers(value, expected) -> None:
    got = json_float(value)
    assert got == expected and (got is None or type(got) is float)


def test_tuned_thresholds_with_undefined_scores_write_strict_json() -> None:
    t = tuned(score=float("nan"), scores=(0.5, float("nan"), float("inf")))
    d = t.to_dict()
    assert d["score"] is None and d["scores"] == [0.5, None, None]
    json.dumps(d, allow_nan=False)  # raises on NaN or inf


# --------------------------------------------------------------------------- TunedThresholds


def test_tuned_thresholds_behave_as_their_array() -> None:
    t = tuned()
    assert len(t) == 3
    assert np.asarray(t).tolist() == [0.2, 0.45, 0.7]
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    copy = np.asarray(t)
    copy[0] = 0.9
    assert t.values[0] == 0.2  # a copy: the thresholds cannot be changed through it
    assert t.by_label() == {"joy": 0.2, "anger": 0.45, "fear": 0.7}
    assert t.global_value is None
    assert TunedThresholds(np.array([0.4] * 3), tuple(NAMES), "global", "dev").global_value == 0.4
    assert TunedThresholds(np.array([]), (), "global", "dev").global_value is None


def test_tuned_thresholds_to_dict_and_back() -> None:
    t = tuned(forced=True, score=0.5, scores=(0.4, None, 0.6), fallback=0.42, fallback_labels=("anger",), shrink=0.25)
    d = t.to_dict()
    assert d["convention"] == THRESHOLD_CONVENTION == "predicted when prob > threshold"
    assert (d["kind"], d["split"], d["forced"], d["global"]) == ("per_label", "dev", True, None)
    assert d["per_label"] == {"joy": 0.2, "anger": 0.45, "fear": 0.7}
    assert (d["score"], d["scores"], d["fallback"], d["fallback_labels"]) == (0.5, [0.4, None, 0.6], 0.42, ["anger"])
    assert (d["grid"], d["shrink"]) == ([0.01, 0.99, 99], 0.25)
    back = TunedThresholds.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d


def test_tuned_thresholds_from_a_minimal_record_take_the_defaults() -> None:
    back = TunedThresholds.from_dict({"kind": "global", "split": "dev", "per_label": {"joy": 0.3, "anger": 0.3}})
    assert (back.forced, back.score, back.scores, back.fallback_labels) == (False, None, (), ())
    assert (back.fallback, back.grid, back.shrink) == (DEFAULT_THRESHOLD, (0.01, 0.99, 99), 0.0)
    assert back.global_value == 0.3 and back.label_names == ("joy", "anger")


# --------------------------------------------------------------------------- inputs


def test_probabilities_outside_zero_one_are_refused() -> None:
    assert as_probs(np.array([[0.0, 1.0]])).tolist() == [[0.0, 1.0]]
    assert as_probs(np.zeros((0, 3))).shape == (0, 3)
    for bad in ([[1.0001]], [[-0.0001]], [[np.nan]], [[np.inf]]):
        with pytest.raises(MetricsInputError, match="sigmoid"):
            as_probs(np.array(bad))
    with pytest.raises(MetricsInputError, match=r"range found: 0\.5\.\.2, with NaN/inf"):
        as_probs(np.array([[0.5, np.nan, 2.0]]))
    with pytest.raises(MetricsInputError, match=r"range found: -1\.\.0\.5\)"):
        as_probs(np.array([[0.5, -1.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "All-NaN slice" RuntimeWarning on the way to the error
        with pytest.raises(MetricsInputError, match="no finite value, with NaN/inf"):
            as_probs(np.array([[np.nan, np.inf]]))
    with pytest.raises(MetricsInputError, match="2-D"):
        as_probs(np.array([0.5]))


def test_thresholds_are_one_or_one_per_label_and_finite() -> None:
    assert as_thresholds(0.4, 3).tolist() == [0.4, 0.4, 0.4]
    assert as_thresholds([0.1, 0.2], 2).tolist() == [0.1, 0.2]
    assert as_thresholds(tuned(), 3).tolist() == [0.2, 0.45, 0.7]
    for wrong in ([0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [[0.1, 0.2, 0.3]]):  # too few, too many, 2-D
        with pytest.raises(MetricsInputError, match="one per label"):
            as_thresholds(wrong, 3)
    with pytest.raises(MetricsInputError, match="finite"):
        as_thresholds([0.1, np.inf], 2)


def test_binarize_per_label_and_empty() -> None:
    p = np.array([[0.3, 0.5, 0.71], [0.21, 0.44, 0.9]])
    assert binarize(p, tuned()).tolist() == [[1, 1, 1], [1, 0, 1]]
    assert binarize(p, tuned()).dtype == np.uint8
    assert binarize(np.zeros((0, 3)), 0.5).shape == (0, 3)


@pytest.mark.parametrize(
    ("name", "test"),
    [("test", True), ("runs/x/test.jsonl", True), ("my_test_sample", True), ("dev", False), ("testing", False)],
)
def test_is_test_split(name: str, test: bool) -> None:
    assert is_test_split(name) is test


def test_sigmoid_values() -> None:
    x = np.array([-2.0, 0.0, 2.0, 40.0, -800.0])
    assert sigmoid(x) == pytest.approx([1 / (1 + math.exp(2)), 0.5, 1 / (1 + math.exp(-2)), 1.0, 0.0], abs=1e-15)
    assert sigmoid(np.float32([1.0])).dtype == np.float64


# --------------------------------------------------------------------------- choose_thresholds


def choose(spec, **kwargs) -> ThresholdChoice:
    return choose_thresholds(spec, **({"global_threshold": 0.3, "tuned": tuned(), "label_names": NAMES} | kwargs))


def test_fixed_uses_the_models_threshold_and_says_whose() -> None:
    for spec in (None, "fixed"):
        c = choose(spec)
        assert (c.mode, c.value, c.tuned_on) == ("fixed", 0.3, None)
        assert c.description == "global threshold 0.3 (prob > 0.3; the paper's)"
    assert choose(None, global_threshold=0.45).description == "global threshold 0.45 (prob > 0.45; the model's)"
    assert choose("fixed", global_threshold=0.45).to_dict() == {
        "mode": "fixed",
        "description": "global threshold 0.45 (prob > 0.45; the model's)",
        "tuned_on": None,
        "convention": THRESHOLD_CONVENTION,
        "global": 0.45,
    }


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_a_number_is_used_as_given(value: float) -> None:
    c = choose(value)
    assert (c.mode, c.value, type(c.value)) == ("fixed", float(value), float)
    assert c.description == f"global threshold {float(value):g} (prob > {float(value):g})"


@pytest.mark.parametrize("value", [-0.01, 1.01, 3, -1, float("nan"), float("inf")])
def test_a_number_outside_zero_one_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        choose(value)


@pytest.mark.parametrize("spec", ["tuneed", "Tuned", "fix", "", "0.3", True, False])
def test_a_misspelt_mode_is_refused(spec) -> None:
    with pytest.raises(ConfigError, match="'fixed' or 'tuned'"):
        choose(spec)


def test_tuned_takes_the_tuned_thresholds_and_describes_them() -> None:
    c = choose("tuned", split_name="test")
    assert (c.mode, c.tuned_on) == ("tuned", "dev")
    assert c.value is not None and isinstance(c.value, TunedThresholds)
    assert c.description == "per-label thresholds tuned on dev (0.2–0.7, each label's F1-maximising value)"
    assert c.to_dict()["per_label"] == {"joy": 0.2, "anger": 0.45, "fear": 0.7}
    assert "global" not in c.to_dict()
    shrunk = choose("tuned", tuned=tuned(shrink=0.5), split_name="test")
    assert shrunk.description.endswith(
        "each label's F1-maximising value, shrunk 0.5 of the way to the best global threshold)"
    )
    forced = choose("tuned", tuned=tuned(split="test", forced=True), split_name="other")
    assert forced.description.endswith(" (FORCED on a test split: scores are optimistic)")
    assert "FORCED" not in c.description


def test_modes_read_from_a_command_line_are_equal_strings_not_the_same_objects() -> None:
    assert choose("".join(["tu", "ned"]), split_name="test").mode == "tuned"
    assert choose("".join(["fi", "xed"])).mode == "fixed"


def test_tuned_thresholds_compare_by_identity_and_hash() -> None:
    """Field-wise ``==`` on arrays is ambiguous; a TunedThresholds is one object, usable as a key."""
    t = tuned()
    assert t == t and t != tuned()
    assert len({t, tuned()}) == 2


def test_tuned_on_the_split_being_scored_is_a_leak() -> None:
    with pytest.raises(ThresholdLeakError, match="'dev'"):
        choose("tuned", split_name="".join(["d", "ev"]))  # an equal name, not the same string object
    with pytest.raises(ThresholdLeakError):  # another name, the same rows
        choose("tuned", split_name="dev-copy", split_checksum="abc", tuned_split_checksum="abc")
    # no name and no checksum, or different ones: not a leak
    assert choose("tuned").mode == "tuned"
    assert choose("tuned", split_name="test", split_checksum="abc", tuned_split_checksum="abd").mode == "tuned"
    assert choose("tuned", split_name="test", tuned_split_checksum="abc").mode == "tuned"
    assert choose("tuned", split_name="ckpt").mode == choose("tuned", split_name="tuning").mode == "tuned"


def test_tuned_needs_tuned_thresholds_for_the_models_labels() -> None:
    with pytest.raises(EvaluationError, match="no tuned per-label thresholds"):
        choose("tuned", tuned=None)
    with pytest.raises(
        EvaluationError, match=r"for labels \['joy', 'anger', 'fear'\]…, not the model's \['joy', 'fear', 'anger'\]…"
    ):
        choose("tuned", label_names=["joy", "fear", "anger"])
    with pytest.raises(EvaluationError):
        choose("tuned", label_names=NAMES[:2])
    assert issubclass(ThresholdLeakError, GoemoError)
