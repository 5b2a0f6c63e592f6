"""Multi-label metrics and decision thresholds, shared by training, evaluation and reports.

Everything that turns probabilities into yes/no decisions goes through `binarize`, so the
training loop, the evaluation report and threshold tuning can never disagree about a
probability that sits exactly on a threshold.

**Threshold convention: a label is predicted when ``prob > threshold`` (strict).** This is
what the GoEmotions authors' ``calculate_metrics.py`` does for the paper's test numbers
(``pred_ind[pred_ind > threshold] = 1``), and what TF1's ``precision_at_thresholds`` (their
per-threshold table) computes. It also gives both ends of a [0, 1] threshold a clean
meaning: 0.0 predicts every label with any probability at all, 1.0 predicts nothing.
Comparisons are made in float64 on the stored values, so a float32 probability and a scalar
or per-label threshold always compare the same way.

**Undefined labels.** A label with no positive example in ``y_true`` cannot be scored:
recall, F1, ROC-AUC and average precision are all 0/0 or meaningless. Such a label is
reported with those values as ``None`` and a note ("no positive examples"), listed in
`MetricsReport.undefined_labels`, and *left out of every macro average* (whose
``n_labels``/``n_excluded`` say how many labels were averaged). Its false positives still
count in micro averages and exact match, so a model that fires on an absent label is still
penalised. Precision of a label that is never predicted (0/0) is the opposite case: the
truth is known, the model just said nothing, and the conventional, conservative 0.0 is used
(``zero_division=0``), with a note on the label.

Metric values come from scikit-learn; macro averages are the unweighted mean of
scikit-learn's per-label values over the defined labels (exactly ``average="macro"``
restricted to those labels). Only threshold tuning counts true positives itself, because
sweeping a grid of 99 thresholds per label must be fast; its scores match scikit-learn's F1
at the chosen thresholds (checked in the tests).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field, fields
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from goemo.core.config import SORT_KEYS
from goemo.core.errors import ConfigError, MetricsInputError, ThresholdLeakError
from goemo.core.thresholds import (
    DEFAULT_GRID,
    DEFAULT_THRESHOLD,
    PAPER_THRESHOLDS,
    THRESHOLD_CONVENTION,
    Thresholds,
    TunedThresholds,
    as_probs,
    as_thresholds,
    binarize,
    is_test_split,
    json_float,
)
from goemo.data.taxonomy import Taxonomy, load_taxonomy, project_labels, project_probs

logger = logging.getLogger(__name__)

NO_POSITIVES = "no positive examples"
NO_NEGATIVES = "no negative examples"
NEVER_PREDICTED = "never predicted: precision set to 0 (zero_division=0)"

_TIE_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- result objects


@dataclass(frozen=True)
class LabelMetrics:
    """Scores of one label; ``None`` means undefined on this data, and ``note`` says why.

    ``predicted`` is how often the label was predicted, so false alarms on a label with no
    positive examples stay visible even though its scores are undefined.
    """

    name: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int
    auc: float | None
    ap: float | None
    note: str | None = None

    @property
    def defined(self) -> bool:
        return self.support > 0

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def sort_labels(per_label: Sequence[LabelMetrics], key: str) -> tuple[LabelMetrics, ...]:
    """``per_label`` ordered by ``key``: ``label`` alphabetically, a score worst first (the problem
    classes a reader looks for), undefined scores last; ties keep their order.

    >>> rows = [LabelMetrics("joy", 0.9, 0.9, 0.9, 5, 5, 0.95, 0.9), LabelMetrics("grief", 0.1, 0.2, 0.13, 2, 3, 0.7, 0.1)]
    >>> [m.name for m in sort_labels(rows, "f1")]
    ['grief', 'joy']
    """
    if key not in SORT_KEYS:
        raise ConfigError(f"sort={key!r}: expected one of {', '.join(SORT_KEYS)}")
    if key == "label":
        return tuple(sorted(per_label, key=lambda m: m.name))
    return tuple(sorted(per_label, key=lambda m: (getattr(m, key) is None, getattr(m, key) or 0)))


@dataclass(frozen=True)
class Average:
    """One averaging of P/R/F1 (and, for macro and micro, AUC and AP).

    ``n_labels`` is how many labels entered the P/R/F1 average and ``n_excluded`` how many
    were left out as undefined (macro only); ``n_labels_auc`` likewise for the AUC average,
    which can additionally lose labels with no negative example.
    """

    name: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    auc: float | None = None
    ap: float | None = None
    n_labels: int | None = None
    n_excluded: int = 0
    n_labels_auc: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        del out["name"]
        return out


@dataclass(frozen=True)
class ThresholdMetrics:
    """One row of the per-threshold table (macro over defined labels, as in `MetricsReport`)."""

    threshold: float
    macro_precision: float | None
    macro_recall: float | None
    macro_f1: float | None
    micro_precision: float | None
    micro_recall: float | None
    micro_f1: float | None
    exact_match: float

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class MetricsReport:
    """All metrics of one set of predictions, ready for a log line, JSON, CSV or Markdown.

    ``threshold`` is a float for one global threshold, else one value per *source* label
    (when a taxonomy projection was applied, thresholds act before projecting).
    ``undefined_labels`` maps each label left out of the macro averages to the reason.
    """

    per_label: tuple[LabelMetrics, ...]
    macro: Average
    micro: Average
    weighted: Average
    samples: Average
    exact_match: float
    threshold: float | tuple[float, ...]
    n_examples: int
    undefined_labels: dict[str, str]
    taxonomy: str | None = None
    split: str | None = None
    threshold_tuning: dict[str, Any] | None = None
    at_thresholds: tuple[ThresholdMetrics, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.per_label)

    def label(self, name: str) -> LabelMetrics:
        for m in self.per_label:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; undefined values are ``None``, floats are not rounded."""
        threshold = (
            float(self.threshold) if isinstance(self.threshold, (int, float)) else [float(t) for t in self.threshold]
        )
        return {
            "split": self.split,
            "taxonomy": self.taxonomy,
            "n_examples": int(self.n_examples),
            "n_labels": len(self.per_label),
            "threshold": threshold,
            "threshold_convention": THRESHOLD_CONVENTION,
            "threshold_tuning": self.threshold_tuning,
            "exact_match": json_float(self.exact_match),
            "macro": self.macro.to_dict(),
            "micro": self.micro.to_dict(),
            "weighted": self.weighted.to_dict(),
            "samples": self.samples.to_dict(),
            "undefined_labels": dict(self.undefined_labels),
            "per_label": [m.to_dict() for m in self.per_label],
            "at_thresholds": [row.to_dict() for row in self.at_thresholds],
            "notes": list(self.notes),
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per label, then one per average (``label`` = "macro", ...), for CSV."""
        rows = [m.to_dict() | {"label": m.name} for m in self.per_label] + [
            avg.to_dict() | {"label": avg.name, "predicted": None, "note": _average_note(avg)}
            for avg in (self.macro, self.micro, self.weighted, self.samples)
        ]
        return [{k: row[k] for k in _ROW_KEYS} for row in rows]

    def to_markdown(self, digits: int = 3) -> str:
        """Per-label table with average rows, a headline line, and the threshold table if any."""
        lines = [
            "| label | precision | recall | F1 | support | AUC | AP |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in self.per_label:
            name = f"{m.name} †" if not m.defined else m.name
            lines.append(_md_row(name, (m.precision, m.recall, m.f1, m.support, m.auc, m.ap), digits))
        for avg in (self.macro, self.micro, self.weighted, self.samples):
            label = f"**{avg.name}**"
            if avg.name == "macro" and avg.n_excluded and avg.n_labels is not None:
                label += f" ({avg.n_labels} of {avg.n_labels + avg.n_excluded} labels)"
            lines.append(_md_row(label, (avg.precision, avg.recall, avg.f1, avg.support, avg.auc, avg.ap), digits))
        lines += [
            "",
            f"Exact match: {_fmt(self.exact_match, digits)} · {self._threshold_text()} · {self.n_examples} examples",
        ]
        if self.undefined_labels:
            listed = ", ".join(f"{k} ({v})" for k, v in self.undefined_labels.items())
            lines.append(f"† undefined, excluded from macro averages: {listed}")
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        if self.at_thresholds:
            lines += [
                "",
                "| threshold | macro P | macro R | macro F1 | micro P | micro R | micro F1 | exact match |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            lines += [_md_row(f"{r.threshold:g}", astuple(r)[1:], digits) for r in self.at_thresholds]
        return "\n".join(lines) + "\n"

    def _threshold_text(self) -> str:
        if isinstance(self.threshold, (int, float)):
            text = f"threshold: prob > {self.threshold:g}"
        else:
            text = f"per-label thresholds ({min(self.threshold):g}–{max(self.threshold):g})"
        tuning = self.threshold_tuning
        if tuning:
            text += f", tuned on {tuning['split']}"
            if tuning.get("forced"):
                text += " (FORCED: tuned on the test split, scores are optimistic)"
        return text


_ROW_KEYS = ("label", "precision", "recall", "f1", "support", "predicted", "auc", "ap", "note")


# --------------------------------------------------------------------------- thresholds


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    grid: Sequence[float] | np.ndarray | None = None,
    *,
    split_name: str,
    label_names: Sequence[str] | None = None,
    fallback: float = DEFAULT_THRESHOLD,
    allow_test: bool = False,
    shrink: float = 0.0,
) -> TunedThresholds:
    """Per-label thresholds that maximise each label's F1 on a held-out (dev) split.

    Tuning on the split you then report is leakage, so ``split_name`` is required and a test
    split raises `ThresholdLeakError` unless ``allow_test=True``, in which case the result is
    marked ``forced`` for reports to show. Ties (a flat F1 plateau, common with few positives)
    go to the grid value closest to 0.5, then the smaller one: the sigmoid's undecided point
    is the least surprising choice when the data cannot tell. Labels with no positive example
    cannot be tuned and get ``fallback``; they are listed in ``fallback_labels``.

    ``shrink`` in [0, 1] pulls each label's value that far towards the best global threshold
    (the one value maximising macro F1 on the same split). A rare label's F1-maximising
    threshold rests on a handful of dev positives and is mostly noise; shrinking trades a
    little fit on dev for thresholds that hold up on unseen text (docs/benchmarks.md,
    "Thresholds": 0.5 scored better on held-out halves of dev for every minilm seed).

    >>> y = np.array([[1], [1], [0], [0]])
    >>> p = np.array([[0.9], [0.4], [0.35], [0.1]])
    >>> tune_thresholds(y, p, split_name="dev").values.tolist()  # plateau 0.35..0.39
    [0.39]
    """
    _guard_split(split_name, allow_test, what="per-label thresholds")
    if not 0.0 <= shrink <= 1.0:
        raise ValueError(f"shrink={shrink!r}: expected a number in [0, 1]")
    y, p, names = _check_inputs(y_true, probs, label_names)
    g = _as_grid(grid)
    f1, defined = _f1_curves(y, p, g), y.sum(axis=0) > 0
    values = np.full(y.shape[1], float(fallback))
    scores: list[float | None] = [None] * y.shape[1]
    for j in np.flatnonzero(defined):
        k = _pick(f1[j], g)
        values[j], scores[j] = g[k], float(f1[j, k])
    if shrink > 0 and defined.any():
        pooled = g[_pick(f1[defined].mean(axis=0), g)]
        values[defined] = np.round((1.0 - shrink) * values[defined] + shrink * pooled, 6)
        _, _, f1_at, _ = _prfs_per_label(y, binarize(p, values))
        for j in np.flatnonzero(defined):
            scores[j] = float(f1_at[j])
    score = float(np.mean([s for s in scores if s is not None])) if defined.any() else None
    return TunedThresholds(
        values=values,
        label_names=names,
        kind="per_label",
        split=str(split_name),
        forced=is_test_split(split_name),
        score=score,
        scores=tuple(scores),
        fallback=float(fallback),
        fallback_labels=tuple(n for n, d in zip(names, defined) if not d),
        grid=(float(g.min()), float(g.max()), int(g.size)),
        shrink=float(shrink),
    )


# --------------------------------------------------------------------------- metrics


def compute_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    label_names: Sequence[str] | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLD,
    taxonomy: str | Path | Taxonomy | None = None,
    sweep: Sequence[float] | None = PAPER_THRESHOLDS,
    split: str | None = None,
) -> MetricsReport:
    """Per-label, averaged and exact-match metrics of thresholded probabilities.

    ``taxonomy`` (e.g. "ekman") evaluates fine-label probabilities on coarser groups: decisions
    are made per fine label with ``thresholds`` and then projected (a group is on when any
    member is), and a group's score for AUC/AP is its members' max probability. ``sweep``
    adds the per-threshold table (``at_thresholds``); pass ``None`` to skip it.

    >>> y = np.array([[1, 0], [0, 1], [1, 1]])
    >>> p = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3]])
    >>> r = compute_metrics(y, p, ["joy", "anger"], thresholds=0.5, sweep=None)
    >>> r.label("anger").recall, r.micro.f1, r.exact_match
    (0.5, 0.8571428571428571, 0.6666666666666666)
    """
    y, p, names = _check_inputs(y_true, probs, label_names)
    if isinstance(thresholds, TunedThresholds) and thresholds.label_names != names:
        raise MetricsInputError(
            f"thresholds were tuned for labels {list(thresholds.label_names)[:3]}..., "
            f"not for {list(names)[:3]}...: pass the same label names, in the same order"
        )
    t = as_thresholds(thresholds, p.shape[1])
    pred = binarize(p, t)
    tax_name = None
    if taxonomy is not None:
        tax = _resolve_taxonomy(taxonomy)
        y, p, pred = (
            project_labels(y, names, tax),
            project_probs(p, names, tax),
            project_labels(pred, names, tax),
        )
        names, tax_name = tax.labels, tax.name
    per_label = _per_label(y, p, pred, names)
    labelled = y.sum(axis=1) > 0
    return MetricsReport(
        per_label=per_label,
        macro=_macro(per_label),
        micro=_micro(y, p, pred),
        weighted=_sklearn_average("weighted", y, pred, int(y.sum())),
        samples=_sklearn_average("samples", y[labelled], pred[labelled], int(labelled.sum())),
        exact_match=float(accuracy_score(y, pred)),
        threshold=float(t[0]) if not _is_per_label(thresholds) else tuple(map(float, t)),
        n_examples=int(y.shape[0]),
        undefined_labels={m.name: NO_POSITIVES for m in per_label if not m.defined},
        taxonomy=tax_name,
        split=split,
        threshold_tuning=thresholds.to_dict() if isinstance(thresholds, TunedThresholds) else None,
        # With a global threshold, max-projection commutes with thresholding, so sweeping the
        # projected probabilities gives exactly the projected decisions.
        at_thresholds=tuple(_sweep(y, p, sweep)) if sweep is not None else (),
        notes=tuple(_notes(y, pred, per_label, taxonomy is not None and _is_per_label(thresholds))),
    )


def summary(
    y_true: np.ndarray, probs: np.ndarray, threshold: Thresholds = DEFAULT_THRESHOLD
) -> dict[str, float | None]:
    """The numbers logged every epoch: micro/macro ROC-AUC and micro/macro F1, and ``auc_score``.

    Cheap (no per-threshold sweep, no per-label objects) and consistent with
    `compute_metrics`: macro values average the defined labels only, undefined ones are None.
    ``auc_score`` is ``auc_macro`` under the name the W&B GoEmotions report logged it as
    (scikit-learn's ``roc_auc_score`` averages per label by default): with it in the record,
    ``--select-metric auc_score``, a sweep's ``metric.name: auc_score``, the trackers and
    ``summary.json`` all find the report's number by the report's name.

    >>> y = np.array([[1, 0], [0, 1], [1, 1]])
    >>> p = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3]])
    >>> s = summary(y, p, 0.5)
    >>> s["f1_macro"], s["auc_score"] == s["auc_macro"]
    (0.8333333333333333, True)
    """
    y, p, _ = _check_inputs(y_true, probs, None)
    pred = binarize(p, threshold)
    support = y.sum(axis=0)
    defined = support > 0
    auc_ok = defined & (support < y.shape[0])
    _, _, f1, _ = _prfs_per_label(y, pred)
    micro = _micro(y, p, pred)
    auc_macro = _mean_or_none(_score_per_label(roc_auc_score, y, p, auc_ok)[auc_ok])
    return {
        "auc_micro": micro.auc,
        "auc_macro": auc_macro,
        "auc_score": auc_macro,
        "f1_micro": micro.f1,
        "f1_macro": _mean_or_none(f1[defined]),
    }


def cross_tuned_f1_macro(
    y_true: np.ndarray,
    probs: np.ndarray,
    grid: Sequence[float] | np.ndarray | None = None,
    *,
    split_name: str,
    seed: int = 0,
    shrink: float = 0.0,
) -> float | None:
    """Macro F1 with per-label thresholds tuned on one half of a split and scored on the other.

    Tuning thresholds on dev and scoring them on the same dev texts flatters every model, and
    flatters most the ones with many rare labels, so comparing recipes (sweeps, epoch selection)
    on that number picks noise. Here a fixed random halving is tuned on one half and scored on
    the other, both ways, and the two macro F1s are averaged: an honest estimate of what
    dev-tuned thresholds will give on unseen text, from the dev split alone. Same leakage guard
    as `tune_thresholds` (a test split is refused); ``shrink`` is passed on to it, so the
    estimate is of the tuning rule actually used.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random((200, 3)) < 0.3).astype(int)
    >>> p = np.clip(y * 0.5 + rng.random((200, 3)) * 0.5, 0, 1)
    >>> 0.5 < cross_tuned_f1_macro(y, p, split_name="dev") <= 1.0
    True
    """
    _guard_split(split_name, False, what="cross-tuned thresholds")
    y, p, _ = _check_inputs(y_true, probs, None)
    g = _as_grid(grid)
    order = np.random.default_rng(seed).permutation(y.shape[0])
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    scores = []
    for tune_idx, score_idx in (halves, halves[::-1]):
        thresholds = tune_thresholds(y[tune_idx], p[tune_idx], g, split_name=split_name, shrink=shrink).values
        y_s = y[score_idx]
        defined = y_s.sum(axis=0) > 0
        if not defined.any():
            continue
        _, _, f1, _ = _prfs_per_label(y_s, binarize(p[score_idx], thresholds))
        scores.append(float(np.mean(f1[defined])))
    return float(np.mean(scores)) if scores else None


def project_to_taxonomy(
    y_true: np.ndarray,
    probs: np.ndarray,
    label_names: Sequence[str],
    taxonomy: str | Path | Taxonomy,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Labels and probabilities mapped to a coarser taxonomy, with its label names.

    A thin wrapper over `goemo.data.taxonomy` (labels: any member; probabilities: max of
    members) for callers that want the projected arrays themselves, e.g. to tune thresholds
    on ekman groups.

    >>> names = ["anger", "joy"]
    >>> tax = Taxonomy("valence", ("neg", "pos"), {"neg": ("anger",), "pos": ("joy",)})
    >>> project_to_taxonomy(np.array([[1, 0]]), np.array([[0.8, 0.1]]), names, tax)[2]
    ('neg', 'pos')
    """
    y, p, names = _check_inputs(y_true, probs, label_names)
    tax = _resolve_taxonomy(taxonomy)
    return project_labels(y, names, tax), project_probs(p, names, tax), tax.labels


# --------------------------------------------------------------------------- internals: metrics


def _per_label(y: np.ndarray, p: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> tuple[LabelMetrics, ...]:
    n = y.shape[0]
    precision, recall, f1, support = _prfs_per_label(y, pred)
    defined = support > 0
    auc_ok = defined & (support < n)
    auc = _score_per_label(roc_auc_score, y, p, auc_ok)
    ap = _score_per_label(average_precision_score, y, p, defined)
    predicted = pred.sum(axis=0)
    reasons = (NEVER_PREDICTED, f"{NO_NEGATIVES}: AUC undefined")
    undefined = f"{NO_POSITIVES}: precision, recall, F1, AUC and AP undefined"
    out = []
    for j, name in enumerate(names):
        prec, rec, f1_j = (float(s[j]) if defined[j] else None for s in (precision, recall, f1))
        note = "; ".join(compress(reasons, (predicted[j] == 0, not auc_ok[j]))) if defined[j] else undefined
        auc_j, ap_j = float(auc[j]) if auc_ok[j] else None, float(ap[j]) if defined[j] else None
        out.append(LabelMetrics(name, prec, rec, f1_j, int(support[j]), int(predicted[j]), auc_j, ap_j, note or None))
    return tuple(out)


def _macro(per_label: Sequence[LabelMetrics]) -> Average:
    defined = [m for m in per_label if m.defined]
    with_auc = [m.auc for m in defined if m.auc is not None]
    return Average(
        "macro",
        _mean_or_none([m.precision for m in defined]),
        _mean_or_none([m.recall for m in defined]),
        _mean_or_none([m.f1 for m in defined]),
        support=sum(m.support for m in defined),
        auc=_mean_or_none(with_auc),
        ap=_mean_or_none([m.ap for m in defined]),
        n_labels=len(defined),
        n_excluded=len(per_label) - len(defined),
        n_labels_auc=len(with_auc),
    )


def _micro(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> Average:
    positives = int(y.sum())
    negatives = int(y.size - positives)
    with _quiet():
        auc = float(roc_auc_score(y, p, average="micro")) if positives and negatives else None
        ap = float(average_precision_score(y, p, average="micro")) if positives else None
    return Average("micro", *_micro_prf(y, pred), support=positives, auc=auc, ap=ap)


def _sklearn_average(average: str, y: np.ndarray, pred: np.ndarray, support: int) -> Average:
    """scikit-learn's ``weighted`` (by support: undefined labels have weight 0, so they drop out by
    construction) or ``samples`` (per example; pass the examples with at least one true label) average."""
    if not support:
        return Average(average, None, None, None, support=0)
    precision, recall, f1, _ = _prfs(y, pred, average)
    return Average(average, float(precision), float(recall), float(f1), support=support)


def _sweep(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float]) -> list[ThresholdMetrics]:
    defined = y.sum(axis=0) > 0
    rows = []
    for t in thresholds:
        pred = binarize(p, float(t))
        precision, recall, f1, _ = _prfs_per_label(y, pred)
        micro = _micro_prf(y, pred)
        rows.append(
            ThresholdMetrics(
                float(t),
                _mean_or_none(precision[defined]),
                _mean_or_none(recall[defined]),
                _mean_or_none(f1[defined]),
                *micro,
                exact_match=float(accuracy_score(y, pred)),
            )
        )
    return rows


def _micro_prf(y: np.ndarray, pred: np.ndarray) -> tuple[float, float | None, float | None]:
    precision, recall, f1, _ = _prfs(y, pred, "micro")
    if not y.sum():
        return float(precision), None, None
    return float(precision), float(recall), float(f1)


def _prfs(y: np.ndarray, pred: np.ndarray, average: str | None) -> Any:
    """scikit-learn's precision, recall, F1 and support (``zero_division=0``), single columns padded."""
    with _quiet():
        return precision_recall_fscore_support(*_pad_single_column(y, pred), average=average, zero_division=0)


def _prfs_per_label(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    L = y.shape[1]
    precision, recall, f1, support = _prfs(y, pred, None)
    return precision[:L], recall[:L], f1[:L], support[:L]


def _score_per_label(score: Any, y: np.ndarray, p: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``score`` (ROC-AUC, average precision) per label for the columns in ``ok``; NaN elsewhere."""
    out = np.full(y.shape[1], np.nan)
    if ok.any():
        with _quiet():
            out[ok] = np.atleast_1d(score(y[:, ok], p[:, ok], average=None))
    return out


def _pad_single_column(*mats: np.ndarray) -> tuple[np.ndarray, ...]:
    """scikit-learn reads an (n, 1) 0/1 matrix as *binary* targets and would then average over
    both classes; an all-zero extra column keeps it multilabel without changing any count."""
    if mats[0].shape[1] != 1:
        return mats
    return tuple(np.hstack([m, np.zeros_like(m)]) for m in mats)


def _notes(y: np.ndarray, pred: np.ndarray, per_label: Sequence[LabelMetrics], projected_per_label: bool) -> list[str]:
    """Plain-language caveats for reports, so no convention that moves a number is hidden."""
    notes = [f"Threshold convention: {THRESHOLD_CONVENTION} (strict), as in the GoEmotions paper's code."]
    undefined = [m.name for m in per_label if not m.defined]
    if undefined:
        false_alarms = sum(m.predicted for m in per_label if not m.defined)
        notes.append(
            f"{len(undefined)} label(s) with {NO_POSITIVES} ({', '.join(undefined)}): scores undefined "
            f"(None) and excluded from macro averages; their {false_alarms} false positive(s) still "
            f"count in micro averages and exact match."
        )
    never = [m.name for m in per_label if m.defined and m.predicted == 0]
    if never:
        notes.append(
            f"{len(never)} label(s) never predicted ({', '.join(never)}): precision set to 0 (zero_division=0)."
        )
    no_neg = [m.name for m in per_label if m.defined and m.auc is None]
    if no_neg:
        notes.append(
            f"{len(no_neg)} label(s) with {NO_NEGATIVES} ({', '.join(no_neg)}): AUC undefined, excluded from macro AUC."
        )
    truthless = int((y.sum(axis=1) == 0).sum())
    if truthless:
        notes.append(f"{truthless} example(s) with no true label excluded from samples averages.")
    silent = int(((pred.sum(axis=1) == 0) & (y.sum(axis=1) > 0)).sum())
    if silent:
        notes.append(f"{silent} example(s) with no predicted label count as precision 0 in samples averages.")
    if projected_per_label:
        notes.append("Per-label thresholds were applied to the source labels before projecting.")
    return notes


# --------------------------------------------------------------------------- internals: tuning


def _f1_curves(y: np.ndarray, p: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``(L, len(grid))`` F1 of each label at each threshold; NaN for labels without positives.

    Counting with `np.searchsorted` on sorted columns costs O(n log n) per label whatever the
    grid size, and makes no (n, L, grid) boolean cube. ``#(p > t) = n - #(p <= t)``, which is
    the same strict convention as `binarize`. F1 = 2 TP / (predicted + positives).
    """
    n, L = y.shape
    positives = y.sum(axis=0)
    f1 = np.full((L, grid.size), np.nan)
    for j in np.flatnonzero(positives):
        column = p[:, j]
        predicted = n - np.searchsorted(np.sort(column), grid, side="right")
        tp = positives[j] - np.searchsorted(np.sort(column[y[:, j] == 1]), grid, side="right")
        f1[j] = 2.0 * tp / (predicted + positives[j])
    return f1


def _pick(scores: np.ndarray, grid: np.ndarray) -> int:
    """Index of the best score; ties go to the threshold closest to 0.5, then the smaller."""
    best = np.nanmax(scores)
    tied = np.flatnonzero(scores >= best - _TIE_TOLERANCE)
    order = np.lexsort((grid[tied], np.abs(grid[tied] - 0.5)))
    return int(tied[order[0]])


def _guard_split(split_name: str, allow_test: bool, what: str) -> None:
    if not isinstance(split_name, str) or not split_name.strip():
        raise MetricsInputError("split_name must name the split the thresholds are tuned on, e.g. 'dev'")
    if not is_test_split(split_name):
        return
    if not allow_test:
        raise ThresholdLeakError(
            f"refusing to tune {what} on split {split_name!r}: that leaks test labels into test "
            f"scores; tune on the dev split, or pass allow_test=True (the result is marked forced)"
        )
    logger.warning("tuning %s on test split %r (allow_test=True): test scores will be optimistic", what, split_name)


def _as_grid(grid: Sequence[float] | np.ndarray | None) -> np.ndarray:
    g = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    if g.size == 0 or not np.all(np.isfinite(g)) or g.min() < 0.0 or g.max() > 1.0:
        raise MetricsInputError(f"threshold grid must be non-empty values in [0, 1], got {grid!r}")
    return np.unique(g)


# --------------------------------------------------------------------------- internals: validation


def defined_mean(values: np.ndarray, axis: int | None = None) -> Any:
    """The mean of the values that are not NaN (per row with ``axis=1``); NaN where none is.

    A label with no positives has no AUC or ECE: the mean is over the labels that have one,
    without numpy's all-NaN warning.

    >>> float(defined_mean(np.array([0.5, np.nan, 0.7]))), float(defined_mean(np.array([np.nan])))
    (0.6, nan)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def check_scores(
    y_true: np.ndarray, probs: np.ndarray, label_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as an array and ``probs`` as float64, checked as every scorer needs them: probabilities
    (`as_probs`), labels of their shape, one label name (if given) per column."""
    y = np.asarray(y_true)
    p = as_probs(probs)
    if y.shape != p.shape:
        raise MetricsInputError(f"y_true has shape {y.shape} but probs has shape {p.shape}")
    if label_names is not None and len(label_names) != y.shape[1]:
        raise MetricsInputError(f"{len(label_names)} label names for {y.shape[1]} label columns")
    return y, p


def _check_inputs(
    y_true: np.ndarray, probs: np.ndarray, label_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    y, p = check_scores(y_true, probs, label_names)
    if y.shape[0] == 0:
        raise MetricsInputError("no examples to evaluate (0 rows)")
    if not np.isin(y, (0, 1)).all():
        others = sorted(set(np.unique(y).tolist()) - {0, 1})[:5]
        raise MetricsInputError(f"y_true must hold only 0 and 1, found {others}")
    names = tuple(label_names) if label_names is not None else tuple(f"label_{j}" for j in range(y.shape[1]))
    return y.astype(np.uint8), p, tuple(str(n) for n in names)


def _is_per_label(thresholds: Thresholds) -> bool:
    if isinstance(thresholds, TunedThresholds):
        return thresholds.kind == "per_label"
    return np.ndim(thresholds) > 0


def _resolve_taxonomy(taxonomy: str | Path | Taxonomy) -> Taxonomy:
    return taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)


# --------------------------------------------------------------------------- internals: small helpers


@contextmanager
def _quiet() -> Iterator[None]:
    """Undefined cases are handled explicitly above; sklearn's warnings would only be noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        yield


def _mean_or_none(values: Sequence[float | None] | np.ndarray) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else None


def _plain(record: Any) -> dict[str, Any]:
    """A result dataclass's fields in order, as JSON types: floats through `json_float` (NaN becomes None)."""
    return {f.name: _json(getattr(record, f.name)) for f in fields(record)}


def _json(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return json_float(value)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _average_note(avg: Average) -> str | None:
    if avg.name == "macro" and avg.n_excluded:
        return f"mean over {avg.n_labels} defined labels; {avg.n_excluded} undefined label(s) excluded"
    return None


def _md_row(first: str, cells: Sequence[Any], digits: int) -> str:
    return f"| {first} | " + " | ".join(_fmt(c, digits) for c in cells) + " |"
