"""A model's calibration: the per-label maps ``config.json`` records, and applying them (numpy only).

A classifier's sigmoid outputs rank texts well but need not mean what they say: of the texts
scored 0.8 for a label, far fewer or far more than 80% may carry it. A calibration fitted on dev
(`goemo.scoring.calibration.fit_calibration`) maps each label's raw logit ``z`` to a probability
that does. Per label, one of:

* ``identity``: ``sigmoid(z)`` (too few dev positives to fit anything, or nothing fitted did better);
* ``temperature``: ``sigmoid(a·z)``;
* ``platt``: ``sigmoid(a·z + b)``;
* ``isotonic``: ``g(sigmoid(z))``, ``g`` piecewise linear through fitted breakpoints, blended with a
  ``blend`` (1e-4) share of the identity so that it is strictly increasing: a calibration never
  changes the order of two texts, so ROC-AUC and average precision stay as they were.

The affine maps (``a·z + b``) are *folded* into the classifier's last layer when the folder
holds float32 PyTorch weights (`goemo.models.folding`; ``folded`` is then true): plain
transformers, an ONNX export and every goemo backend return calibrated logits with no extra
code. Isotonic maps, and affine maps that could not be folded (an ONNX or TF-IDF folder), are
applied by the predictor after the sigmoid (`Calibration.backend_probabilities`).

**Decisions do not change.** Thresholds are re-expressed on the calibrated scale by the same
maps (`Calibration.anchored`). An isotonic map takes the probability rounded to float32, the
precision the predictor hands out and decides in, so the predictor and the prediction cache
(float64) get the same calibrated values even on the map's steep steps. It also gets a *pivot*
at its threshold ``t``: the map is capped at ``T`` (its calibrated threshold, a float32 value)
for ``p <= t`` and raised to the next float32 above ``T`` for ``p > t``, so ``g(p) > T`` exactly
when the float32 probability is above ``t``, whatever flat stretch the fitted map has. An affine
map is strictly increasing, so its decisions are the same up to rounding of the logit (the
folded weights compute ``a·z + b`` in the model's precision: float32, or bf16 under autocast).

This module needs numpy only, so the serving path applies a calibration without scikit-learn.

>>> cal = Calibration(("joy",), (LabelMap("platt", scale=2.0, shift=-1.0),))
>>> cal.probabilities(np.array([[0.5]])).round(3).tolist()
[[0.5]]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from goemo.core.errors import ModelError
from goemo.core.thresholds import sigmoid

CALIBRATION_KEY = "calibration"  # the entry of config.json
CALIBRATION_FORMAT = 1
METHODS = ("identity", "temperature", "platt", "isotonic")
AFFINE_METHODS = ("identity", "temperature", "platt")
ISOTONIC_BLEND = 1e-4  # share of the identity in an isotonic map: strictly increasing, off by at most 1e-4
# Probabilities are clipped this far from 0 and 1 before a logit is taken (float64: logit(1 - 1e-15) ~ 34.5).
PROB_CLIP = 1e-15


@dataclass(frozen=True)
class LabelMap:
    """One label's map from raw logit to calibrated probability (see the module's docstring).

    ``scale``/``shift``: the affine part ``a·z + b`` (1 and 0 for identity and isotonic).
    ``x``/``y``: an isotonic map's breakpoints (raw probability -> calibrated probability).
    ``pivot``: ``(t, T)``, an isotonic label's raw threshold and its calibrated one.
    """

    method: str
    scale: float = 1.0
    shift: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    blend: float = ISOTONIC_BLEND
    pivot: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method in ("temperature", "platt"):
            out["scale"] = self.scale
        if self.method == "platt":
            out["shift"] = self.shift
        if self.method == "isotonic":
            out |= {"x": list(self.x), "y": list(self.y), "blend": self.blend}
            if self.pivot is not None:
                out["pivot"] = list(self.pivot)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LabelMap:
        if not isinstance(data, dict) or data.get("method") not in METHODS:
            raise ModelError(f"{where}: expected an object with a method in {', '.join(METHODS)}")
        method = data["method"]
        scale = _number(data.get("scale", 1.0), f"{where}.scale")
        shift = _number(data.get("shift", 0.0), f"{where}.shift")
        if not scale > 0:
            raise ModelError(f"{where}.scale: expected a number > 0 (a calibration must not reverse the order)")
        if method != "isotonic":
            return cls(method, scale if method != "identity" else 1.0, shift if method == "platt" else 0.0)
        x, y = _numbers(data.get("x"), f"{where}.x"), _numbers(data.get("y"), f"{where}.y")
        if not x or len(x) != len(y):
            raise ModelError(f"{where}: x and y: expected two lists of the same non-zero length")
        if any(b <= a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])):
            raise ModelError(f"{where}: x must be strictly increasing and y non-decreasing")
        if not (0.0 <= min(y) and max(y) <= 1.0):
            raise ModelError(f"{where}.y: expected probabilities in [0, 1]")
        blend = _number(data.get("blend", ISOTONIC_BLEND), f"{where}.blend")
        if not 0.0 < blend < 1.0:
            raise ModelError(f"{where}.blend: expected a number in (0, 1)")
        pivot = data.get("pivot")
        if pivot is not None:
            values = _numbers(pivot, f"{where}.pivot")
            if len(values) != 2 or not all(0.0 <= v <= 1.0 for v in values):
                raise ModelError(f"{where}.pivot: expected [raw threshold, calibrated threshold] in [0, 1]")
            pivot = (values[0], values[1])
        return cls(method, 1.0, 0.0, tuple(x), tuple(y), blend, pivot)


@dataclass(frozen=True)
class Calibration:
    """Per-label maps in label order, whether their affine parts are folded into the weights, and provenance.

    ``info`` holds what the record says about itself (``fitted_on``, ``split_checksum``,
    ``texts``, ``selection``, ``rule``, ``raw_thresholds``, dev ``ece`` and ``log_loss``
    before and after); it is written to ``config.json`` as it is.

    >>> cal = Calibration(("joy", "anger"), (LabelMap("temperature", scale=0.5), LabelMap("identity")))
    >>> cal.probabilities(np.array([[2.0, 2.0]])).round(4).tolist()
    [[0.7311, 0.8808]]
    """

    label_names: tuple[str, ...]
    maps: tuple[LabelMap, ...]
    folded: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.label_names) != len(self.maps):
            raise ValueError(f"{len(self.label_names)} labels but {len(self.maps)} maps")

    @property
    def scale(self) -> np.ndarray:
        """The affine maps' ``a`` per label (float64; 1 for identity and isotonic labels)."""
        return np.array([m.scale for m in self.maps], dtype=np.float64)

    @property
    def shift(self) -> np.ndarray:
        """The affine maps' ``b`` per label (float64; 0 for identity, temperature and isotonic labels)."""
        return np.array([m.shift for m in self.maps], dtype=np.float64)

    @property
    def methods(self) -> list[str]:
        return [m.method for m in self.maps]

    @property
    def scaled_labels(self) -> list[int]:
        """The labels whose map moves the logit (temperature, Platt): the ones an affine map changes."""
        return [j for j, m in enumerate(self.maps) if m.method in ("temperature", "platt")]

    def method_counts(self) -> dict[str, int]:
        """How many labels use each method, e.g. ``{"platt": 20, "temperature": 6, "identity": 2}``."""
        return dict(Counter(self.methods))

    # ------------------------------------------------------------------ applying

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``(n, L)`` float64 from the *raw* model's logits (every part applied)."""
        return self._probabilities(logits, affine_done=False, dtype=np.float64)

    def backend_probabilities(self, logits: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """Calibrated probabilities from the logits of the folder's own weights: what the predictor applies.

        With ``folded`` the weights already compute the affine parts, so only the isotonic ones
        are left; otherwise everything (an ONNX or TF-IDF folder).
        """
        return self._probabilities(logits, affine_done=self.folded, dtype=dtype)

    def calibrate_probs(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) from the raw model's probabilities, such as cached ones:
        identity labels keep theirs exactly, isotonic maps take them as they are, affine maps go
        through the logit (`logit`, clipped)."""
        p, affine = self._matrix(probs, "probabilities"), self.scaled_labels
        out = p.copy()
        if affine:
            out[:, affine] = sigmoid(logit(p[:, affine]) * self.scale[affine] + self.shift[affine])
        return self._isotonic(out, p)

    def uncalibrate_probs(self, probs: np.ndarray) -> np.ndarray:
        """The raw model's probabilities back from calibrated ones (`calibrate_probs` undone), to show
        a calibration's effect on any split; NaN in the columns of isotonic maps (step functions,
        not invertible)."""
        p, affine = self._matrix(probs, "probabilities"), self.scaled_labels
        out = p.copy()
        if affine:
            out[:, affine] = sigmoid((logit(p[:, affine]) - self.shift[affine]) / self.scale[affine])
        out[:, [j for j, m in enumerate(self.maps) if m.method == "isotonic"]] = np.nan
        return out

    def _matrix(self, values: np.ndarray, what: str) -> np.ndarray:
        """``values`` as float64 ``(texts, labels)``, checked against the maps."""
        a = np.asarray(values, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != len(self.maps):
            raise ModelError(f"{what} of shape {a.shape} for a calibration of {len(self.maps)} labels")
        return a

    def _isotonic(self, out: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``out`` with each isotonic label's column replaced by its map of ``p``'s (taken as float32)."""
        for j, m in enumerate(self.maps):
            if m.method == "isotonic":
                out[:, j] = isotonic_map(p[:, j].astype(np.float32), m)
        return out

    def _probabilities(self, logits: np.ndarray, affine_done: bool, dtype: Any) -> np.ndarray:
        z = self._matrix(logits, "logits")
        if not affine_done:
            z = z * self.scale + self.shift
        p = sigmoid(z).astype(dtype)
        return self._isotonic(p, p)

    # ------------------------------------------------------------------ thresholds

    def map_thresholds(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Thresholds on the calibrated scale (float64), one per label: the maps applied to ``raw``.

        An isotonic label's value is its pivot's ``T`` when ``raw`` is the threshold it was
        anchored at (`anchored`), so its decisions are exactly those of ``p > raw``.
        """
        t = self._vector(raw)
        out = np.empty_like(t)
        for j, m in enumerate(self.maps):
            if m.method == "identity":
                out[j] = t[j]
            elif m.method == "isotonic":
                if m.pivot is not None and float(np.float32(t[j])) == m.pivot[0]:
                    out[j] = m.pivot[1]
                else:
                    out[j] = float(isotonic_map(np.array([t[j]]), m)[0])
            else:
                out[j] = _affine_threshold(t[j], m.scale, m.shift)
        return out

    def anchored(self, raw_thresholds: Sequence[float] | np.ndarray) -> tuple[Calibration, np.ndarray]:
        """This calibration with a decision pivot at each isotonic label's threshold, and the
        thresholds re-expressed on the calibrated scale (see the module's docstring).

        ``raw_thresholds`` are the ones the model decides by (`goemo.core.folder.ModelFolder.thresholds`);
        a pivot sits at their float32 value, the precision the predictor compares in. An identity
        label keeps its threshold as given. They are kept in ``info["raw_thresholds"]``.

        >>> iso = LabelMap("isotonic", x=(0.0, 0.2, 0.6, 1.0), y=(0.1, 0.3, 0.3, 0.9))
        >>> cal, t = Calibration(("joy",), (iso,)).anchored([0.4])
        >>> p = np.array([0.4, np.nextafter(np.float32(0.4), np.float32(1))], dtype=np.float32)
        >>> (isotonic_map(p, cal.maps[0]).astype(np.float32) > np.float32(t[0])).tolist()  # flat there, yet
        [False, True]
        """
        given = self._vector(raw_thresholds)
        raw = given.astype(np.float32).astype(np.float64)
        maps = list(self.maps)
        for j, m in enumerate(maps):
            if m.method == "isotonic":
                unpinned = replace(m, pivot=None)
                value = float(isotonic_map(np.array([raw[j]]), unpinned)[0])
                below = np.float32(value)
                if float(below) > value:  # round down, so that the capped side stays at or below T
                    below = np.nextafter(below, np.float32(0.0))
                maps[j] = replace(m, pivot=(float(raw[j]), float(below)))
        info = {**self.info, "raw_thresholds": [float(v) for v in given]}
        anchored = Calibration(self.label_names, tuple(maps), self.folded, info)
        return anchored, anchored.map_thresholds(given)

    def _vector(self, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
        t = np.asarray(thresholds, dtype=np.float64)
        if t.shape != (len(self.maps),):
            raise ModelError(f"{t.shape} thresholds for a calibration of {len(self.maps)} labels")
        return t

    # ------------------------------------------------------------------ the record

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` entry (`from_dict` reads it back)."""
        return {
            "format": CALIBRATION_FORMAT,
            "folded": self.folded,
            **self.info,
            "labels": {name: m.to_dict() for name, m in zip(self.label_names, self.maps)},
        }

    @classmethod
    def from_dict(cls, data: Any, label_names: Sequence[str], where: str = "calibration") -> Calibration:
        """Read a ``config.json`` entry, checked against the model's labels (`ModelError` naming the field)."""
        if not isinstance(data, dict):
            raise ModelError(f"{where}: expected an object")
        if data.get("format") != CALIBRATION_FORMAT:
            raise ModelError(f"{where}.format: expected {CALIBRATION_FORMAT}, got {data.get('format')!r}")
        labels = data.get("labels")
        if not isinstance(labels, dict) or list(labels) != list(label_names):
            raise ModelError(f"{where}.labels: expected one entry per label of the model, in its order")
        folded = data.get("folded")
        if not isinstance(folded, bool):
            raise ModelError(f"{where}.folded: expected true or false")
        maps = tuple(LabelMap.from_dict(v, f"{where}.labels.{k}") for k, v in labels.items())
        info = {k: v for k, v in data.items() if k not in ("format", "folded", "labels")}
        return cls(tuple(label_names), maps, folded, info)


def isotonic_map(probs: np.ndarray, m: LabelMap) -> np.ndarray:
    """An isotonic label's calibrated probabilities (float64) from raw ones, pivot included."""
    p = np.asarray(probs, dtype=np.float64)
    out = (1.0 - m.blend) * np.interp(p, m.x, m.y) + m.blend * p
    if m.pivot is not None:
        t, cap = m.pivot
        floor = float(np.nextafter(np.float32(cap), np.float32(1.0)))
        out = np.where(p > t, np.maximum(out, floor), np.minimum(out, cap))
    return np.clip(out, 0.0, 1.0)


def logit(probs: np.ndarray, clip: float = PROB_CLIP) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, ``p`` clipped to ``[clip, 1 - clip]`` (finite for 0 and 1).

    >>> logit(np.array([0.5, 0.0, 1.0])).round(2).tolist()
    [0.0, -34.54, 34.54]
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), clip, 1.0 - clip)
    return np.log(p) - np.log1p(-p)


def _affine_threshold(t: float, scale: float, shift: float) -> float:
    if t <= 0.0 or t >= 1.0:
        return float(t)  # 0 predicts every label with any probability, 1 none: the same on either scale
    return float(sigmoid(np.array(scale * math.log(t / (1.0 - t)) + shift)))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> list[float]:
    if not isinstance(value, list):
        raise ModelError(f"{where}: expected a list of numbers")
    return [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]
