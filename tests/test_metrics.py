"""Metrics and thresholds against numbers computed by hand in the comments.

The main fixture is 4 examples x 3 labels (a, b, c); predictions at threshold 0.5 (strict >):

    y_true      probs                 pred @ 0.5
    a b c       a     b     c         a b c
    1 0 0       0.9   0.2   0.05      1 0 0
    1 1 0       0.3   0.7   0.48      0 1 0
    0 1 0       0.6   0.8   0.2       1 1 0
    0 0 1       0.1   0.55  0.45      0 1 0
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from goemo.core.errors import GoemoError, MetricsInputError, ThresholdLeakError
from goemo.core.thresholds import PAPER_THRESHOLDS, TunedThresholds, binarize, is_test_split
from goemo.data.taxonomy import load_taxonomy
from goemo.scoring.metrics import (
    NO_NEGATIVES,
    NO_POSITIVES,
    compute_metrics,
    summary,
    tune_thresholds,
)

Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
P = np.array(
    [
        [0.9, 0.2, 0.05],
        [0.3, 0.7, 0.48],
        [0.6, 0.8, 0.2],
        [0.1, 0.55, 0.45],
    ]
)
NAMES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """No UndefinedMetricWarning (or any other) may leak out of goemo.scoring.metrics."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _with_empty_label(fires_once: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Adds label d with no positive example; with ``fires_once`` it is predicted on row 0."""
    y = np.hstack([Y, np.zeros((4, 1), np.uint8)])
    d = [[0.7], [0.1], [0.2], [0.3]] if fires_once else [[0.1], [0.1], [0.2], [0.3]]
    return y, np.hstack([P, np.array(d)])


# --------------------------------------------------------------------------- P/R/F1 by hand


def test_per_label_precision_recall_f1_by_hand():
    r = compute_metrics(Y, P, NAMES, thresholds=0.5, sweep=None)
    a, b, c = r.per_label
    # a: true rows {0,1}, pred rows {0,2}: tp 1, fp 1, fn 1 -> P 1/2, R 1/2, F1 1/2
    assert (a.precision, a.recall, a.f1, a.support, a.predicted) == pytest.approx((0.5, 0.5, 0.5, 2, 2))
    # b: true rows {1,2}, pred rows {1,2,3}: tp 2, fp 1, fn 0 -> P 2/3, R 1, F1 4/5
    assert (b.precision, b.recall, b.f1, b.support) == pytest.approx((2 / 3, 1.0, 0.8, 2))
    # c: true row {3}, never predicted: tp 0 -> P 0/0 := 0 (noted), R 0, F1 0
    assert (c.precision, c.recall, c.f1, c.support, c.predicted) == (0.0, 0.0, 0.0, 1, 0)
    assert "never predicted" in c.note
    assert a.note is None


def test_averages_by_hand_macro_differs_from_micro():
    r = compute_metrics(Y, P, NAMES, thresholds=0.5, sweep=None)
    # macro = plain mean of the three labels
    assert r.macro.precision == pytest.approx((0.5 + 2 / 3 + 0) / 3)  # 0.3889
    assert r.macro.recall == pytest.approx((0.5 + 1 + 0) / 3)  # 0.5
    assert r.macro.f1 == pytest.approx((0.5 + 0.8 + 0) / 3)  # 0.4333
    assert (r.macro.n_labels, r.macro.n_excluded) == (3, 0)
    # micro pools counts: tp 3, fp 2, fn 2 -> P 3/5, R 3/5, F1 3/5
    assert (r.micro.precision, r.micro.recall, r.micro.f1) == pytest.approx((0.6, 0.6, 0.6))
    assert r.micro.f1 != pytest.approx(r.macro.f1)
    # weighted by support (2, 2, 1) / 5
    assert r.weighted.precision == pytest.approx((2 * 0.5 + 2 * 2 / 3) / 5)  # 0.4667
    assert r.weighted.recall == pytest.approx((2 * 0.5 + 2 * 1.0) / 5)  # 0.6
    assert r.weighted.f1 == pytest.approx((2 * 0.5 + 2 * 0.8) / 5)  # 0.52
    # samples: rows (P, R, F1) = (1,1,1), (1,.5,2/3), (.5,1,2/3), (0,0,0)
    assert r.samples.precision == pytest.approx(2.5 / 4)
    assert r.samples.recall == pytest.approx(2.5 / 4)
    assert r.samples.f1 == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)
    # exact match: only row 0 predicts exactly its label set
    assert r.exact_match == pytest.approx(0.25)
    assert r.n_examples == 4 and r.threshold == 0.5


def test_auc_and_average_precision_by_hand():
    r = compute_metrics(Y, P, NAMES, thresholds=0.5, sweep=None)
    a, b, c = r.per_label
    # a: positives {0.9, 0.3} vs negatives {0.6, 0.1}: 3 of 4 pairs ordered -> 0.75
    assert a.auc == pytest.approx(0.75)
    # b: positives {0.7, 0.8} all above negatives {0.2, 0.55}: perfectly separated -> 1.0
    assert b.auc == pytest.approx(1.0)
    # c: positive 0.45 beats 0.05 and 0.2 but not 0.48 -> 2/3
    assert c.auc == pytest.approx(2 / 3)
    # AP: a ranks P N P N -> (1/1 + 2/3) / 2; b -> 1; c ranks N P -> 1/2
    assert (a.ap, b.ap, c.ap) == pytest.approx((5 / 6, 1.0, 0.5))
    assert r.macro.auc == pytest.approx((0.75 + 1 + 2 / 3) / 3)
    assert r.macro.ap == pytest.approx((5 / 6 + 1 + 0.5) / 3)
    # micro AUC over the 5 positive x 7 negative pairs of all cells: 7 + 4 + 7 + 7 + 4 = 29
    assert r.micro.auc == pytest.approx(29 / 35)
    # micro AP: ranking P P P N N N P P N N N N -> (1 + 1 + 1 + 4/7 + 5/8) / 5
    assert r.micro.ap == pytest.approx((3 + 4 / 7 + 5 / 8) / 5)


def test_macro_equals_sklearn_macro_when_every_label_is_defined():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.3).astype(np.uint8)
    p = np.clip(y * 0.3 + rng.random((200, 6)) * 0.7, 0, 1)
    r = compute_metrics(y, p, thresholds=0.4, sweep=None)
    pred = (p > 0.4).astype(int)
    expected = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)[:3]
    assert (r.macro.precision, r.macro.recall, r.macro.f1) == pytest.approx(expected)


# --------------------------------------------------------------------------- undefined labels


def test_label_without_positives_is_undefined_and_excluded_from_macro():
    y, p = _with_empty_label(fires_once=True)
    r = compute_metrics(y, p, NAMES + ["d"], thresholds=0.5, sweep=None)
    d = r.label("d")
    assert (d.precision, d.recall, d.f1, d.auc, d.ap) == (None, None, None, None, None)
    assert (d.support, d.predicted) == (0, 1)
    assert NO_POSITIVES in d.note
    assert r.undefined_labels == {"d": NO_POSITIVES}
    # macro is over a, b, c only: the same hand numbers as without d
    assert r.macro.f1 == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert r.macro.auc == pytest.approx((0.75 + 1 + 2 / 3) / 3)
    assert (r.macro.n_labels, r.macro.n_excluded, r.macro.n_labels_auc) == (3, 1, 3)
    # its false positive still counts in micro: tp 3, fp 3, fn 2 -> P 1/2, R 3/5, F1 6/11
    assert (r.micro.precision, r.micro.recall, r.micro.f1) == pytest.approx((0.5, 0.6, 6 / 11))
    # ... and in exact match: row 0 now has an extra label -> 0 of 4
    assert r.exact_match == 0.0
    assert any("excluded from macro" in n for n in r.notes)


def test_undefined_label_that_is_never_predicted():
    y, p = _with_empty_label(fires_once=False)
    r = compute_metrics(y, p, NAMES + ["d"], thresholds=0.5, sweep=None)
    assert r.label("d").precision is None and r.label("d").predicted == 0
    assert (r.micro.precision, r.micro.recall) == pytest.approx((0.6, 0.6))  # as without d


def test_summary_handles_undefined_labels_like_the_report():
    y, p = _with_empty_label()
    s = summary(y, p, 0.5)
    r = compute_metrics(y, p, thresholds=0.5, sweep=None)
    assert set(s) == {"auc_micro", "auc_macro", "auc_score", "f1_micro", "f1_macro"}
    assert s["f1_macro"] == pytest.approx((0.5 + 0.8 + 0) / 3) == pytest.approx(r.macro.f1)
    assert s["auc_macro"] == pytest.approx((0.75 + 1 + 2 / 3) / 3)
    assert s["auc_score"] == s["auc_macro"] == pytest.approx(r.macro.auc)  # the W&B report's name for it
    assert s["f1_micro"] == pytest.approx(6 / 11)
    assert s["auc_micro"] == pytest.approx(r.micro.auc)


def test_single_label_column_is_not_mistaken_for_binary_two_class():
    # y 1 0 1 0, probs .9 .6 .4 .1 -> pred 1 1 0 0: tp 1, fp 1, fn 1 -> P = R = F1 = 1/2
    y = np.array([[1], [0], [1], [0]])
    p = np.array([[0.9], [0.6], [0.4], [0.1]])
    r = compute_metrics(y, p, ["x"], thresholds=0.5, sweep=None)
    assert (r.macro.precision, r.macro.recall, r.macro.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (r.micro.precision, r.micro.f1) == pytest.approx((0.5, 0.5))
    assert r.per_label[0].auc == pytest.approx(0.75)  # pairs: .9>.6 .9>.1 .4<.6 .4>.1


# --------------------------------------------------------------------------- thresholds


def test_binarize_is_strictly_greater_than():
    p = np.array([[0.5, 0.0, 1.0, 0.50001]])
    assert binarize(p, 0.5).tolist() == [[0, 0, 1, 1]]  # equal to the threshold: not predicted
    assert binarize(p, 0.0).tolist() == [[1, 0, 1, 1]]  # 0.0 predicts any non-zero probability
    assert binarize(p, 1.0).tolist() == [[0, 0, 0, 0]]  # 1.0 predicts nothing


def test_binarize_scalar_and_per_label_agree_on_float32():
    # float32(0.3) is 0.30000001...; it must be above 0.3 whether the threshold is a scalar
    # (which numpy 2 would otherwise compare in float32) or a float64 per-label array
    p = np.array([[0.3, 0.3]], dtype=np.float32)
    assert binarize(p, 0.3).tolist() == binarize(p, [0.3, 0.3]).tolist() == [[1, 1]]


def test_per_label_thresholds_change_only_their_label():
    per_label = compute_metrics(Y, P, NAMES, thresholds=[0.5, 0.75, 0.5], sweep=None)
    # b at > 0.75 is predicted on row 2 only: tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 2/3
    b = per_label.label("b")
    assert (b.precision, b.recall, b.f1) == pytest.approx((1.0, 0.5, 2 / 3))
    assert per_label.label("a").f1 == pytest.approx(0.5)
    assert per_label.threshold == (0.5, 0.75, 0.5)
    # the same values as one scalar give a scalar threshold and b's F1 from the first test
    assert compute_metrics(Y, P, NAMES, thresholds=0.5, sweep=None).label("b").f1 == pytest.approx(0.8)


@pytest.mark.parametrize("bad", [[0.5, 0.5], [[0.5, 0.5, 0.5]], float("nan")])
def test_wrong_thresholds_are_rejected(bad):
    with pytest.raises(MetricsInputError):
        binarize(P, bad)


def test_inputs_are_validated_with_goemo_errors():
    with pytest.raises(GoemoError, match="sigmoid"):
        compute_metrics(Y, P * 5 - 2, NAMES)  # logits passed by mistake
    with pytest.raises(GoemoError, match="shape"):
        compute_metrics(Y, P[:, :2], NAMES)
    with pytest.raises(GoemoError, match="label names"):
        compute_metrics(Y, P, ["a", "b"])
    with pytest.raises(GoemoError, match="0 and 1"):
        compute_metrics(Y * 2, P, NAMES)


# Tuning case, 7 examples x 3 labels:
#   t1: positives .35 .4 .8, negatives .1 .2 .3 .6. F1(t) = 2TP / (#pred + 3):
#       [.30,.35): pred .35 .4 .6 .8 -> 6/7 (best); [.35,.40): 4/6; [.20,.30): 6/8; [.40,.60): 2/5
#   t2: no positives -> fallback
#   t3: positives .9 .95, negatives up to .36 -> F1 1 on [.36, .90), which contains 0.5
Y_TUNE = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
P_TUNE = np.array(
    [
        [0.35, 0.1, 0.36],
        [0.40, 0.2, 0.10],
        [0.80, 0.3, 0.90],
        [0.10, 0.4, 0.95],
        [0.20, 0.5, 0.20],
        [0.30, 0.6, 0.30],
        [0.60, 0.7, 0.05],
    ]
)


def test_tune_thresholds_finds_the_known_best_per_label():
    t = tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", label_names=["t1", "t2", "t3"], fallback=0.42)
    # t1's plateau is 0.30..0.34; the tie goes to the value closest to 0.5
    assert t.values.tolist() == pytest.approx([0.34, 0.42, 0.5])
    assert t.fallback_labels == ("t2",)
    assert t.scores[0] == pytest.approx(6 / 7) and t.scores[1] is None and t.scores[2] == 1.0
    assert t.score == pytest.approx((6 / 7 + 1) / 2)
    assert (t.split, t.forced, t.kind) == ("dev", False, "per_label")
    # the vectorised counts agree with scikit-learn at the chosen thresholds
    pred = binarize(P_TUNE, t)
    for j in (0, 2):
        assert f1_score(Y_TUNE[:, j], pred[:, j]) == pytest.approx(t.scores[j])


def test_shrink_pulls_each_tuned_threshold_towards_the_best_global_one():
    names = ["t1", "t2", "t3"]
    own = tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", label_names=names, fallback=0.42)
    pooled = 0.39  # the best global threshold (test_shrink_1_is_the_threshold_that_maximises_macro_f1)
    half = tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", label_names=names, fallback=0.42, shrink=0.5)
    # t1: (0.34 + 0.39) / 2, t3: (0.5 + 0.39) / 2; t2 has no positive and keeps the fallback
    assert half.values.tolist() == pytest.approx([0.365, 0.42, 0.445])
    assert half.values[0] == pytest.approx((own.values[0] + pooled) / 2)
    assert half.shrink == 0.5 and own.shrink == 0.0
    # the recorded scores are the F1s at the shrunk values, not at the unshrunk ones
    pred = binarize(P_TUNE, half)
    for j in (0, 2):
        assert f1_score(Y_TUNE[:, j], pred[:, j]) == pytest.approx(half.scores[j])
    full = tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", label_names=names, fallback=0.42, shrink=1.0)
    assert full.values.tolist() == pytest.approx([pooled, 0.42, pooled])
    back = TunedThresholds.from_dict(json.loads(json.dumps(half.to_dict())))
    assert back.shrink == 0.5 and np.asarray(back).tolist() == pytest.approx(half.values.tolist())
    with pytest.raises(ValueError, match="shrink"):
        tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", shrink=1.5)
    with pytest.raises(ThresholdLeakError):
        tune_thresholds(Y_TUNE, P_TUNE, split_name="test", shrink=0.5)


def test_tie_break_rule_closest_to_half_then_smaller():
    y, p = np.array([[1], [0]]), np.array([[0.9], [0.7]])
    assert tune_thresholds(y, p, split_name="dev").values[0] == pytest.approx(0.70)  # plateau .70-.89
    y, p = np.array([[1], [0]]), np.array([[0.65], [0.35]])
    assert tune_thresholds(y, p, [0.4, 0.6], split_name="dev").values[0] == 0.4  # equidistant


def test_shrink_1_is_the_threshold_that_maximises_macro_f1():
    # macro F1 over t1, t3: [.30,.35): (6/7 + 4/5)/2 = .829; [.36,.40): (4/6 + 1)/2 = .833 (best)
    g = tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", fallback=0.39, shrink=1.0)
    assert g.score == pytest.approx((4 / 6 + 1) / 2)
    assert np.asarray(g).tolist() == pytest.approx([0.39] * 3)
    r = compute_metrics(Y_TUNE, P_TUNE, thresholds=g, sweep=None)
    assert r.threshold == pytest.approx((0.39,) * 3) and r.macro.f1 == pytest.approx(g.score)


@pytest.mark.parametrize("name", ["test", "TEST", "data/test.tsv", "goemotions-test"])
def test_tuning_on_test_split_is_refused(name):
    with pytest.raises(ThresholdLeakError) as err:
        tune_thresholds(Y_TUNE, P_TUNE, split_name=name)
    assert isinstance(err.value, GoemoError) and "allow_test" in str(err.value)


def test_forced_test_tuning_is_recorded_in_the_report():
    t = tune_thresholds(Y_TUNE, P_TUNE, split_name="test", allow_test=True)
    assert t.forced and t.split == "test"
    r = compute_metrics(Y_TUNE, P_TUNE, thresholds=t, split="test", sweep=None)
    assert r.to_dict()["threshold_tuning"]["forced"] is True
    assert "FORCED" in r.to_markdown()
    assert not tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", allow_test=True).forced


def test_is_test_split_does_not_catch_lookalikes():
    assert not any(is_test_split(n) for n in ("dev", "train", "latest", "contest", "validation"))


def test_thresholds_round_trip_through_json():
    t = tune_thresholds(Y_TUNE, P_TUNE, split_name="dev", label_names=["t1", "t2", "t3"])
    back = TunedThresholds.from_dict(json.loads(json.dumps(t.to_dict())))
    assert np.asarray(back).tolist() == np.asarray(t).tolist()
    assert (back.split, back.kind, back.fallback_labels) == ("dev", "per_label", ("t2",))
    assert back.label_names == ("t1", "t2", "t3")


def test_thresholds_for_other_labels_are_rejected():
    t = tune_thresholds(Y, P, split_name="dev", label_names=["x", "y", "z"])
    with pytest.raises(MetricsInputError, match="same label names"):
        compute_metrics(Y, P, NAMES, thresholds=t)


# --------------------------------------------------------------------------- threshold table


def test_paper_threshold_table():
    rows = compute_metrics(Y, P, NAMES).at_thresholds
    assert len(rows) == 12 and tuple(r.threshold for r in rows) == PAPER_THRESHOLDS
    at = {r.threshold: r for r in rows}
    # 0.0: every cell predicted -> micro P 5/12, R 1; no row exact
    zero = at[0.0]
    assert (zero.micro_precision, zero.micro_recall, zero.exact_match) == pytest.approx((5 / 12, 1, 0))
    # 0.5: the hand numbers of the first tests
    assert (at[0.5].macro_f1, at[0.5].micro_f1, at[0.5].exact_match) == pytest.approx((1.3 / 3, 0.6, 0.25))
    # 0.99: nothing predicted -> precision 0 (zero_division=0), recall 0
    assert (at[0.99].micro_precision, at[0.99].micro_recall, at[0.99].macro_f1) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- output formats


def test_to_dict_is_json_safe_with_none_for_undefined():
    y, p = _with_empty_label()
    d = compute_metrics(y, p, NAMES + ["d"], thresholds=0.5).to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["per_label"][3]["f1"] is None and back["per_label"][3]["auc"] is None
    assert back["undefined_labels"] == {"d": NO_POSITIVES}
    assert back["macro"]["n_excluded"] == 1 and len(back["at_thresholds"]) == 12
    assert back["threshold_convention"] == "predicted when prob > threshold"


def test_rows_and_markdown():
    y, p = _with_empty_label()
    r = compute_metrics(y, p, NAMES + ["d"], thresholds=0.5)
    rows = r.to_rows()
    assert [row["label"] for row in rows] == ["a", "b", "c", "d", "macro", "micro", "weighted", "samples"]
    assert rows[4]["f1"] == pytest.approx(1.3 / 3) and "1 undefined" in rows[4]["note"]
    md = r.to_markdown()
    assert "| d † | n/a | n/a | n/a | 0 | n/a | n/a |" in md
    assert "**macro** (3 of 4 labels)" in md
    assert "| a | 0.500 | 0.500 | 0.500 | 2 | 0.750 | 0.833 |" in md
    assert "| 0.95 |" in md  # the threshold table


# --------------------------------------------------------------------------- taxonomy projection


def _ekman_case() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """3 examples on the 28 fine labels; every unlisted probability is 0.05.

    0: true annoyance; annoyance .8, joy .3
    1: true joy;       amusement .7, joy .2   (a joy-group member, not joy itself)
    2: true neutral;   neutral .9, fear .6    (fear: a false positive)
    """
    names = load_taxonomy("goemotions").labels
    ix = {n: i for i, n in enumerate(names)}
    y = np.zeros((3, len(names)), np.uint8)
    p = np.full((3, len(names)), 0.05)
    for row, label in enumerate(("annoyance", "joy", "neutral")):
        y[row, ix[label]] = 1
    for row, label, prob in [
        (0, "annoyance", 0.8),
        (0, "joy", 0.3),
        (1, "amusement", 0.7),
        (1, "joy", 0.2),
        (2, "neutral", 0.9),
        (2, "fear", 0.6),
    ]:
        p[row, ix[label]] = prob
    return y, p, names


def test_projection_to_ekman():
    y, p, names = _ekman_case()
    fine = compute_metrics(y, p, names, thresholds=0.5, sweep=None)
    # fine: annoyance F1 1, joy F1 0 (never predicted), neutral F1 1 -> macro 2/3 over 3 defined
    assert fine.macro.f1 == pytest.approx(2 / 3) and fine.macro.n_labels == 3
    r = compute_metrics(y, p, names, thresholds=0.5, taxonomy="ekman")
    assert r.taxonomy == "ekman"
    assert r.label_names == ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")
    for group in ("anger", "joy", "neutral"):
        assert (r.label(group).precision, r.label(group).recall, r.label(group).f1) == (1.0, 1.0, 1.0)
    assert set(r.undefined_labels) == {"disgust", "fear", "sadness", "surprise"}
    assert (r.macro.f1, r.macro.n_labels, r.macro.n_excluded) == (1.0, 3, 4)
    assert r.label("fear").predicted == 1
    # micro: tp 3, fp 1 (fear), fn 0 -> P 3/4, R 1, F1 6/7; exact match 2 of 3
    assert (r.micro.precision, r.micro.recall, r.micro.f1) == pytest.approx((0.75, 1.0, 6 / 7))
    assert r.exact_match == pytest.approx(2 / 3)
    # group score is the members' max: joy group (.3, .7, .05) separates perfectly, while
    # joy alone (.3, .2, .05) would rank its positive below a negative (AUC 1/2)
    assert r.label("joy").auc == 1.0 and fine.label("joy").auc == pytest.approx(0.5)
    assert len(r.at_thresholds) == 12


def test_projection_applies_per_label_thresholds_before_grouping():
    y, p, names = _ekman_case()
    t = np.full(len(names), 0.5)
    t[list(names).index("amusement")] = 0.75  # amusement .7 no longer fires, so joy is missed
    r = compute_metrics(y, p, names, thresholds=t, taxonomy="ekman", sweep=None)
    assert r.label("joy").recall == 0.0 and r.label("anger").recall == 1.0
    assert any("before projecting" in n for n in r.notes)


# --------------------------------------------------------------------------- cross-tuned macro F1


def test_cross_tuned_f1_tunes_on_one_half_and_scores_the_other():
    from goemo.scoring.metrics import cross_tuned_f1_macro, tune_thresholds

    rng = np.random.default_rng(3)
    y = (rng.random((400, 4)) < [0.4, 0.2, 0.1, 0.05]).astype(int)
    p = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    order = np.random.default_rng(11).permutation(len(y))
    a, b = order[:200], order[200:]
    expected = []
    for tune, score in ((a, b), (b, a)):
        t = tune_thresholds(y[tune], p[tune], split_name="dev").values
        pred = (p[score] > t).astype(int)
        keep = y[score].sum(axis=0) > 0
        expected.append(f1_score(y[score][:, keep], pred[:, keep], average="macro", zero_division=0))
    assert cross_tuned_f1_macro(y, p, split_name="dev", seed=11) == pytest.approx(np.mean(expected))
    # Scoring on the tuning texts themselves can only flatter: the honest number is lower here.
    assert cross_tuned_f1_macro(y, p, split_name="dev", seed=11) < tune_thresholds(y, p, split_name="dev").score
    # with shrink, the halves are tuned by the same (shrunk) rule
    shrunk = []
    for tune, score in ((a, b), (b, a)):
        t = tune_thresholds(y[tune], p[tune], split_name="dev", shrink=0.5).values
        keep = y[score].sum(axis=0) > 0
        pred = (p[score] > t).astype(int)
        shrunk.append(f1_score(y[score][:, keep], pred[:, keep], average="macro", zero_division=0))
    assert cross_tuned_f1_macro(y, p, split_name="dev", seed=11, shrink=0.5) == pytest.approx(np.mean(shrunk))
    assert np.mean(shrunk) != pytest.approx(np.mean(expected))


def test_cross_tuned_f1_is_perfect_for_separable_scores_and_refuses_test():
    from goemo.core.errors import ThresholdLeakError
    from goemo.scoring.metrics import cross_tuned_f1_macro

    y = np.tile(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]), (25, 1))
    p = np.where(y == 1, 0.8, 0.2)
    assert cross_tuned_f1_macro(y, p, split_name="dev") == pytest.approx(1.0)
    with pytest.raises(ThresholdLeakError):
        cross_tuned_f1_macro(y, p, split_name="test")


# --------------------------------------------------------------------------- edges that move a number


def test_nothing_predicted_scores_precision_zero_not_one():
    # at 0.85 only row 0 predicts anything (a, 0.9): samples P = (1 + 0 + 0 + 0) / 4, zero_division=0
    r = compute_metrics(Y, P, NAMES, thresholds=0.85, sweep=None)
    assert r.samples.precision == pytest.approx(0.25)
    assert any(n.startswith("3 example(s) with no predicted label") for n in r.notes)
    # at 1.0 nothing is predicted at all: micro P 0/0 := 0
    nothing = compute_metrics(Y, P, NAMES, thresholds=1.0, sweep=None)
    assert (nothing.micro.precision, nothing.micro.recall, nothing.micro.f1) == (0.0, 0.0, 0.0)
    assert nothing.samples.precision == 0.0


def test_silent_examples_are_those_with_a_true_label_only():
    # row 1 has no true label but a prediction; row 2 has a true label and no prediction
    y = np.array([[1, 0], [0, 0], [0, 1]])
    p = np.array([[0.9, 0.1], [0.8, 0.1], [0.1, 0.2]])
    notes = compute_metrics(y, p, ["a", "b"], thresholds=0.5, sweep=None).notes
    assert "1 example(s) with no predicted label count as precision 0 in samples averages." in notes
    assert "1 example(s) with no true label excluded from samples averages." in notes


def test_no_negatives_note_names_only_defined_labels():
    y, p = _with_empty_label()  # d: no positives; no label lacks negatives
    r = compute_metrics(y, p, NAMES + ["d"], thresholds=0.5, sweep=None)
    assert not any(NO_NEGATIVES in n for n in r.notes)
    always = np.hstack([Y, np.ones((4, 1), np.uint8)])  # e: positive on every row
    r = compute_metrics(always, np.hstack([P, np.full((4, 1), 0.6)]), NAMES + ["e"], thresholds=0.5, sweep=None)
    assert [n for n in r.notes if NO_NEGATIVES in n] == [
        f"1 label(s) with {NO_NEGATIVES} (e): AUC undefined, excluded from macro AUC."
    ]


def test_micro_auc_needs_both_classes():
    y = np.ones((3, 2), np.uint8)
    r = compute_metrics(y, np.full((3, 2), 0.7), ["a", "b"], thresholds=0.5, sweep=None)
    assert r.micro.auc is None and r.micro.f1 == 1.0
    assert summary(y, np.full((3, 2), 0.7), 0.5)["auc_micro"] is None


def test_summary_macro_auc_counts_labels_with_negatives_whatever_the_label_count():
    # 4 examples, 2 labels; label a has 3 positives of 4 (so negatives too): its AUC counts
    y = np.array([[1, 1], [1, 0], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.8], [0.6, 0.3], [0.4, 0.7], [0.5, 0.2]])
    expected = (roc_auc_score(y[:, 0], p[:, 0]) + roc_auc_score(y[:, 1], p[:, 1])) / 2
    assert summary(y, p, 0.5)["auc_macro"] == pytest.approx(expected)
    assert compute_metrics(y, p, ["a", "b"], thresholds=0.5, sweep=None).macro.auc == pytest.approx(expected)


def test_a_grid_may_reach_one():
    t = tune_thresholds(Y_TUNE, P_TUNE, [0.5, 1.0], split_name="dev")
    assert set(np.asarray(t).tolist()) <= {0.5, 1.0}
    for bad in ([1.01], [-0.1], [], [np.nan]):
        with pytest.raises(MetricsInputError, match=r"grid must be non-empty values in \[0, 1\]"):
            tune_thresholds(Y_TUNE, P_TUNE, bad, split_name="dev")


def test_thresholds_for_other_labels_name_three_of_each():
    t = tune_thresholds(Y, P, split_name="dev", label_names=["x", "y", "z"])
    with pytest.raises(MetricsInputError, match=r"labels \['x', 'y', 'z'\]\.\.\., not for \['a', 'b', 'c'\]"):
        compute_metrics(Y, P, NAMES, thresholds=t)
