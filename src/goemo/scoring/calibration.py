"""Calibration on dev: fitting per-label maps, expected calibration error, reliability diagrams.

`fit_calibration` fits, for every label, the maps of `goemo.core.calibration` on the dev
split's logits, and chooses between them by **5-fold cross-validated dev log-loss** (each map
fitted on four fifths of dev and scored on the fifth left out, the same folds for every map),
because a map's log-loss on the very texts it was fitted on always favours the more flexible
one. The rule, per label (``selection="per-label"``, the default):

1. with fewer than 3 dev positives (or negatives) a label keeps ``identity``: nothing can be fitted;
2. otherwise the affine map with the lowest cross-validated log-loss: ``identity``,
   ``temperature`` (``sigmoid(a·z)``, SciPy's bounded scalar minimiser) or ``platt``
   (``sigmoid(a·z + b)``, SciPy's BFGS on the log-loss), both fitted to Platt's smoothed targets
   (``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``, so that a separable label still has an optimum),
   the simpler one on a tie; a map whose ``a`` leaves [0.05, 20] in any fit is not used;
3. ``isotonic`` (scikit-learn's `IsotonicRegression` on the probability, its steps joined at their
   centres, see `_centred_isotonic`) instead only where the label
   has at least 30 dev positives and 30 negatives *and* its cross-validated log-loss is at least
   2% below the chosen affine map's: it has many more parameters, and its maps cannot be folded
   into the weights.

``selection="global"`` applies the same rule once to the log-loss summed over labels and gives
every label that method (``identity`` where a label has too few positives for it). The chosen
maps are then refitted on all of dev.

Expected calibration error (`expected_calibration_error`): per label, texts are put in 15
equal-width bins of predicted probability; ECE is the average over bins, weighted by their share
of texts, of ``|fraction positive - mean probability|``. Macro ECE is the mean over labels.
`reliability` gives the diagrams' data (bin centres, accuracy, confidence, counts).

>>> rng = np.random.default_rng(0)
>>> z = rng.normal(size=(4000, 1)) * 3
>>> y = (rng.random((4000, 1)) < 1 / (1 + np.exp(-z / 3))).astype(np.uint8)  # logits 3x too confident
>>> fit = fit_calibration(y, z, ["joy"])
>>> fit.calibration.methods, round(fit.calibration.maps[0].scale, 1)
(['temperature'], 0.3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold

from goemo.core.calibration import AFFINE_METHODS, METHODS, PROB_CLIP, Calibration, LabelMap
from goemo.core.errors import ConfigError, EvaluationError, MetricsInputError
from goemo.core.thresholds import is_test_split, json_float, sigmoid
from goemo.scoring.metrics import check_scores, defined_mean

DEFAULT_BINS = 15
CV_FOLDS = 5
ISOTONIC_MARGIN = 0.02  # isotonic must beat the best affine map's cross-validated log-loss by 2% (relative)
MIN_POSITIVES = 3  # fewer dev positives (or negatives): identity
MIN_ISOTONIC = 30  # positives and negatives an isotonic map needs
SCALE_RANGE = (0.05, 20.0)  # a temperature or Platt slope outside this is not used
Selection = Literal["per-label", "global"]
Method = Literal["auto", "temperature", "platt", "isotonic"]


@dataclass(frozen=True)
class LabelFit:
    """How one label's map was chosen: its dev counts, each candidate's cross-validated log-loss
    (None where it could not be used) and the choice, with the reason in words."""

    name: str
    positives: int
    negatives: int
    cv_log_loss: dict[str, float | None]
    method: str
    reason: str


@dataclass(frozen=True)
class CalibrationFit:
    """A fitted `Calibration` and, per label, how its map was chosen."""

    calibration: Calibration
    labels: tuple[LabelFit, ...]
    rule: str


@dataclass(frozen=True)
class CalibrationSettings:
    """How the maps are chosen and fitted: ``method`` (``auto``: chosen by cross-validated log-loss,
    else that map for every label), ``selection`` (``per-label`` or one ``global`` method), the
    cross-validation ``folds`` and their ``seed``. `fit_calibration` takes it, and
    `goemo.evaluation.calibration.calibrate_model` passes it on from ``goemo calibrate``.

    >>> CalibrationSettings(method="platt", seed=3).folds
    5
    """

    method: Method = "auto"
    selection: Selection = "per-label"
    folds: int = CV_FOLDS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("auto", *METHODS[1:]):
            raise ConfigError(f"method={self.method!r}: expected auto, temperature, platt or isotonic")
        if self.selection not in ("per-label", "global"):
            raise ConfigError(f"selection={self.selection!r}: expected per-label or global")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"folds={self.folds!r}: expected an integer >= 2")


def fit_calibration(
    y_true: np.ndarray,
    logits: np.ndarray,
    label_names: Sequence[str],
    *,
    settings: CalibrationSettings | None = None,
    split_name: str = "dev",
    split_checksum: str | None = None,
) -> CalibrationFit:
    """Fit each label's calibration map on ``split_name``'s raw ``logits`` (see the module's docstring).

    ``settings`` (default: ``auto``, per label, 5 folds, seed 0): a ``method`` other than
    ``"auto"`` fits that map for every label that has enough positives (identity for the
    others), without the selection. Fitting on a test split is refused: its scores would then
    flatter the calibration.
    """
    if is_test_split(split_name):
        raise EvaluationError(
            f"a calibration is fitted on dev only, not on {split_name!r}: its ECE there would be optimistic"
        )
    settings = settings or CalibrationSettings()
    method, selection, folds, seed = settings.method, settings.selection, settings.folds, settings.seed
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or np.shape(y_true) != z.shape or z.shape[1] != len(label_names):
        raise MetricsInputError(
            f"labels {np.shape(y_true)}, logits {z.shape} and {len(label_names)} label names do not fit together"
        )
    if not np.all(np.isfinite(z)):
        raise MetricsInputError("logits must be finite numbers")
    y = (np.asarray(y_true) > 0).astype(np.float64)
    n, n_labels = z.shape
    if n < 2:
        raise MetricsInputError(f"a calibration needs at least 2 texts, got {n}")
    splits = list(KFold(n_splits=min(folds, n), shuffle=True, random_state=seed).split(z))
    positives = y.sum(axis=0).astype(int)
    negatives = n - positives
    candidates = ("identity", "temperature", "platt", "isotonic") if method == "auto" else ("identity", method)
    cv = [
        {m: _cv_log_loss(m, z[:, j], y[:, j], splits, int(positives[j]), int(negatives[j])) for m in candidates}
        for j in range(n_labels)
    ]
    chosen = _choose(cv, method, selection)
    maps, fits = [], []
    for j, name in enumerate(label_names):
        m, reason = chosen[j]
        fitted = _fit(m, z[:, j], y[:, j])
        if fitted is None:  # the full-dev fit left the slope range although every fold's did not
            reason = f"{m} on all of dev left the slope range {SCALE_RANGE}"
            m, fitted = "identity", LabelMap("identity")
        maps.append(fitted)
        fits.append(LabelFit(name, int(positives[j]), int(negatives[j]), cv[j], m, reason))
    rule = _rule(method, selection, folds)
    info: dict[str, Any] = {
        "fitted_on": split_name,
        "split_checksum": split_checksum,
        "texts": int(n),
        "selection": selection if method == "auto" else f"{method} for every label",
        "rule": rule,
    }
    return CalibrationFit(Calibration(tuple(label_names), tuple(maps), False, info), tuple(fits), rule)


def _rule(method: str, selection: str, folds: int) -> str:
    if method != "auto":
        return f"{method} for every label with at least {MIN_POSITIVES} dev positives and negatives, identity otherwise"
    scope = "per label" if selection == "per-label" else "one method for all labels (log-loss summed over labels)"
    return (
        f"{scope}: the affine map (identity, temperature, Platt) with the lowest {folds}-fold cross-validated "
        f"dev log-loss; isotonic only with at least {MIN_ISOTONIC} dev positives and negatives and a "
        f"cross-validated log-loss {ISOTONIC_MARGIN:.0%} lower; identity below {MIN_POSITIVES} positives"
    )


def _choose(cv: list[dict[str, float | None]], method: str, selection: str) -> list[tuple[str, str]]:
    """(method, reason) per label from the cross-validated log-losses."""
    if method != "auto":
        return [
            (method, "as asked") if row.get(method) is not None else ("identity", f"too few dev positives for {method}")
            for row in cv
        ]
    if selection == "global":
        totals = {
            m: sum(row[m] if row.get(m) is not None else row["identity"] for row in cv)  # type: ignore[misc]
            for m in METHODS
            if any(row.get(m) is not None for row in cv)
        }
        best, _ = _best(totals)
        return [
            (best, "chosen for all labels")
            if row.get(best) is not None
            else ("identity", f"too few dev positives for {best}")
            for row in cv
        ]
    out = []
    for row in cv:
        usable = {m: v for m, v in row.items() if v is not None}
        best, affine = _best(usable)
        if len(usable) == 1:
            out.append(("identity", f"fewer than {MIN_POSITIVES} dev positives or negatives"))
        elif best == "isotonic":
            out.append(("isotonic", f"cross-validated log-loss {ISOTONIC_MARGIN:.0%}+ below {affine}'s"))
        else:
            out.append((affine, "lowest cross-validated log-loss of the affine maps"))
    return out


def _best(losses: Mapping[str, float]) -> tuple[str, str]:
    """(choice, best affine map): the simpler affine map on a tie, isotonic only `ISOTONIC_MARGIN` lower."""
    affine = min((m for m in AFFINE_METHODS if m in losses), key=lambda m: (losses[m], AFFINE_METHODS.index(m)))
    if "isotonic" in losses and losses["isotonic"] < (1 - ISOTONIC_MARGIN) * losses[affine]:
        return "isotonic", affine
    return affine, affine


def _cv_log_loss(
    method: str, z: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], pos: int, neg: int
) -> float | None:
    """Mean held-out log-loss of ``method`` over the folds; None when it cannot be used for this label."""
    if method == "identity":
        return log_loss(y, sigmoid(z))
    if min(pos, neg) < MIN_POSITIVES or (method == "isotonic" and min(pos, neg) < MIN_ISOTONIC):
        return None
    held_out = np.empty_like(z)
    for train, test in splits:
        fitted = _fit(method, z[train], y[train])
        if fitted is None:
            return None
        cal = Calibration(("label",), (fitted,))
        held_out[test] = cal.probabilities(z[test, None])[:, 0]
    return log_loss(y, held_out)


def _fit(method: str, z: np.ndarray, y: np.ndarray) -> LabelMap | None:
    """One label's map fitted on ``(z, y)``; None when its slope leaves `SCALE_RANGE`."""
    if method == "identity":
        return LabelMap("identity")
    if method == "isotonic":
        return _centred_isotonic(z, y)
    pos, neg = float(y.sum()), float(len(y) - y.sum())  # Platt's (1999) smoothed targets
    target = np.where(y > 0, (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))
    if method == "temperature":
        lo, hi = (math.log(v) for v in SCALE_RANGE)
        found = minimize_scalar(
            lambda s: _soft_log_loss(target, math.exp(s) * z),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-6},
        )
        scale = math.exp(float(found.x))
        return LabelMap("temperature", scale=scale) if _in_range(scale, strict=True) else None
    # Platt: the 2-parameter log-loss of sigmoid(a·z + b) against the smoothed targets, with its
    # gradient, by SciPy's BFGS (scikit-learn's LogisticRegression fits the same model, ~100x slower here).
    found = minimize(_platt_loss, np.array([1.0, 0.0]), args=(z, target), jac=True, method="BFGS")
    scale, shift = float(found.x[0]), float(found.x[1])
    if not (found.success or found.status == 2) or not _in_range(scale):  # 2: precision loss at the optimum
        return None
    return LabelMap("platt", scale=scale, shift=shift)


def _platt_loss(params: np.ndarray, z: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean soft-target log-loss of ``sigmoid(a·z + b)`` and its gradient in ``(a, b)``."""
    s = params[0] * z + params[1]
    residual = sigmoid(s) - target
    return _soft_log_loss(target, s), np.array([np.mean(residual * z), np.mean(residual)])


def _centred_isotonic(z: np.ndarray, y: np.ndarray) -> LabelMap:
    """scikit-learn's isotonic fit on the (float32, as applied) probabilities, its steps joined at their centres.

    The fitted step function's own breakpoints are the first and last probability of each block,
    so between two blocks the map climbs between two *adjacent* dev probabilities, which may lie
    1e-8 apart: a probability moved by float noise (ONNX against PyTorch) could jump from one
    block's value to the next. Joining the blocks at their mean probabilities instead (centred
    isotonic regression, Oron and Flournoy 2017) spreads each rise over the gap between blocks.
    """
    p = sigmoid(z).astype(np.float32).astype(np.float64)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p, y)
    order = np.argsort(p, kind="stable")
    xs, fitted = p[order], iso.predict(p[order])
    starts = np.flatnonzero(np.concatenate([[True], np.diff(fitted) != 0]))
    centres = np.add.reduceat(xs, starts) / np.diff(np.concatenate([starts, [len(xs)]]))
    keep = np.concatenate([[True], np.diff(centres) > 0])  # strictly increasing, as interpolation needs
    values = np.clip(fitted[starts][keep], 0.0, 1.0)
    return LabelMap("isotonic", x=tuple(float(v) for v in centres[keep]), y=tuple(float(v) for v in values))


def _in_range(scale: float, strict: bool = False) -> bool:
    lo, hi = SCALE_RANGE
    if strict:  # a bounded minimiser that stops at a bound found no optimum inside
        return lo * 1.001 < scale < hi / 1.001
    return lo <= scale <= hi


def _soft_log_loss(target: np.ndarray, z: np.ndarray) -> float:
    """Mean cross-entropy of soft targets against ``sigmoid(z)``, computed from logits (stable)."""
    return float(np.mean(np.logaddexp(0.0, z) - target * z))


# ---------------------------------------------------------------------------- measuring


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary log-loss of one label (probabilities clipped to [1e-15, 1 - 1e-15]).

    >>> round(log_loss(np.array([1, 0]), np.array([0.9, 0.2])), 4)
    0.1643
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), PROB_CLIP, 1.0 - PROB_CLIP)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _binned(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label and equal-width bin (``[0, 1/B), …, [(B-1)/B, 1]``; ``(L, bins)`` each): text counts,
    sum of labels, sum of probabilities."""
    n_labels = p.shape[1]
    idx = (np.minimum((p * bins).astype(np.int64), bins - 1) + np.arange(n_labels) * bins).ravel()
    size = n_labels * bins
    counts = np.bincount(idx, minlength=size).reshape(n_labels, bins)
    positives = np.bincount(idx, weights=y.ravel(), minlength=size).reshape(n_labels, bins)
    confidence = np.bincount(idx, weights=p.ravel(), minlength=size).reshape(n_labels, bins)
    return counts, positives, confidence


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """ECE of each label ``(L,)``: ``sum_b (n_b / n) * |acc_b - conf_b|`` over equal-width bins.

    >>> y = np.array([[1], [0], [1], [0]])
    >>> expected_calibration_error(y, np.array([[0.9], [0.1], [0.6], [0.6]]), bins=10).round(3).tolist()
    [0.1]
    """
    y, p = check_scores(y_true, probs)
    if len(p) == 0:
        return np.full(p.shape[1], np.nan)
    _, positives, confidence = _binned(y, p, bins)
    return np.abs(positives - confidence).sum(axis=1) / len(p)


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's data per label and pooled over labels (``all``): for each of ``bins``
    equal-width bins its centre, the fraction of its texts that carry the label (``accuracy``), their
    mean probability (``confidence``) and how many texts fell in it; NaN where a bin is empty."""

    label_names: tuple[str, ...]
    centres: np.ndarray  # (bins,)
    accuracy: np.ndarray  # (L, bins)
    confidence: np.ndarray  # (L, bins)
    counts: np.ndarray  # (L, bins)
    all_accuracy: np.ndarray  # (bins,)
    all_confidence: np.ndarray
    all_counts: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; an empty bin's accuracy and confidence are None."""

        def part(accuracy: np.ndarray, confidence: np.ndarray, counts: np.ndarray) -> dict[str, list[Any]]:
            return {
                "accuracy": [json_float(v) for v in accuracy],
                "confidence": [json_float(v) for v in confidence],
                "counts": [int(c) for c in counts],
            }

        return {
            "bins": len(self.centres),
            "centres": [json_float(v) for v in self.centres],
            "all": part(self.all_accuracy, self.all_confidence, self.all_counts),
            "labels": {
                name: part(self.accuracy[j], self.confidence[j], self.counts[j])
                for j, name in enumerate(self.label_names)
            },
        }


def reliability(
    y_true: np.ndarray, probs: np.ndarray, label_names: Sequence[str], bins: int = DEFAULT_BINS
) -> Reliability:
    """The data of a reliability diagram per label and pooled (see `Reliability`).

    >>> r = reliability(np.array([[1], [0]]), np.array([[0.95], [0.05]]), ["joy"], bins=2)
    >>> r.centres.tolist(), r.accuracy.tolist(), r.counts.tolist()
    ([0.25, 0.75], [[0.0, 1.0]], [[1, 1]])
    """
    y, p = check_scores(y_true, probs, label_names)
    counts, positives, confidence = _binned(y, p, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = positives / counts
        mean_conf = confidence / counts
        pooled = counts.sum(axis=0)
        all_accuracy = positives.sum(axis=0) / pooled
        all_confidence = confidence.sum(axis=0) / pooled
    return Reliability(
        tuple(label_names),
        (np.arange(bins) + 0.5) / bins,
        accuracy,
        mean_conf,
        counts,
        all_accuracy,
        all_confidence,
        pooled,
    )


@dataclass(frozen=True)
class CalibrationReport:
    """ECE and log-loss per label before and after a calibration, on one split."""

    split: str
    label_names: tuple[str, ...]
    methods: tuple[str, ...]
    ece_before: np.ndarray
    ece_after: np.ndarray
    log_loss_before: np.ndarray
    log_loss_after: np.ndarray
    texts: int
    bins: int = DEFAULT_BINS
    reliability_before: Reliability | None = field(default=None, repr=False)
    reliability_after: Reliability | None = field(default=None, repr=False)

    @property
    def macro_ece_before(self) -> float:
        """Over the labels whose raw scores are known (NaN: an isotonic map that cannot be undone)."""
        return float(defined_mean(self.ece_before))

    @property
    def macro_ece_after(self) -> float:
        return float(np.mean(self.ece_after))

    def summary(self) -> dict[str, Any]:
        """Macro figures, for ``summary.json`` and the calibration record."""
        return {
            "texts": self.texts,
            "ece_bins": self.bins,
            "macro_ece_before": json_float(self.macro_ece_before),
            "macro_ece_after": json_float(self.macro_ece_after),
            "log_loss_before": json_float(float(defined_mean(self.log_loss_before))),
            "log_loss_after": json_float(np.mean(self.log_loss_after)),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per label: method, ECE and log-loss before and after (None where unknown)."""
        return [
            {
                "label": name,
                "method": self.methods[j],
                "ece_before": json_float(self.ece_before[j]),
                "ece_after": json_float(self.ece_after[j]),
                "log_loss_before": json_float(self.log_loss_before[j]),
                "log_loss_after": json_float(self.log_loss_after[j]),
            }
            for j, name in enumerate(self.label_names)
        ]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.split, **self.summary(), "per_label": self.rows()}
        if self.reliability_before is not None and self.reliability_after is not None:
            out["reliability"] = {
                "before": self.reliability_before.to_dict(),
                "after": self.reliability_after.to_dict(),
            }
        return out


def calibration_report(
    y_true: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    label_names: Sequence[str],
    methods: Sequence[str],
    *,
    split: str,
    bins: int = DEFAULT_BINS,
) -> CalibrationReport:
    """ECE, log-loss and reliability data of ``before`` and ``after`` probabilities on one split."""
    y, p0 = check_scores(y_true, before)
    _, p1 = check_scores(y_true, after)
    losses = [
        np.array([log_loss(y[:, j], p[:, j]) for j in range(p.shape[1])]) if len(p) else np.full(p.shape[1], np.nan)
        for p in (p0, p1)
    ]
    return CalibrationReport(
        split,
        tuple(label_names),
        tuple(methods),
        expected_calibration_error(y, p0, bins),
        expected_calibration_error(y, p1, bins),
        losses[0],
        losses[1],
        len(p0),
        bins,
        reliability(y, p0, label_names, bins),
        reliability(y, p1, label_names, bins),
    )
