"""The numbers training computes: cheap ones every epoch on dev, and at the end with the best weights.

The logits come from the predictor (`LiveScorer`), so training reports what prediction will give.
At the end, thresholds are tuned and a calibration fitted on dev (never test), and both splits scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn

from goemo.core.calibration import Calibration, logit
from goemo.core.config import TrainConfig
from goemo.core.errors import ModelError
from goemo.core.thresholds import TunedThresholds, sigmoid
from goemo.data.batching import EncodedSplit
from goemo.models.folding import fold_into_module
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.pieces import encode_pieces
from goemo.predict.torch_backend import TorchBackend
from goemo.scoring.calibration import CalibrationReport, CalibrationSettings, calibration_report, fit_calibration
from goemo.scoring.metrics import cross_tuned_f1_macro, is_test_split, summary, tune_thresholds

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"val_loss"}
RAW_KEYS = ("val_loss", "f1_macro", "f1_macro_xtuned", "auc_macro")  # logged for the raw weights beside an average


class LiveScorer:
    """The predictor around the model being trained, in the training precision; each process scores its share."""

    def __init__(
        self, accelerator: Accelerator, tokenizer: Any, label_names: Sequence[str], config: TrainConfig
    ) -> None:
        self.accelerator, self.tokenizer, self.config = accelerator, tokenizer, config
        self.label_names = list(label_names)
        self.precision = "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision

    def classifier(self, model: nn.Module) -> EmotionClassifier:
        """An `EmotionClassifier` over ``model`` as it is now (its ``settings`` key the predictions cache)."""
        backend = TorchBackend(model, str(self.accelerator.device), self.precision)
        return EmotionClassifier(
            backend,
            self.tokenizer,
            self.label_names,
            np.full(len(self.label_names), self.config.threshold),
            max_length=self.config.max_length,
            batch_size=self.config.eval_batch_size,
            long_text="truncate",  # it scores the splits' truncated token ids (the token cache), as it trains on them
        )

    def recorded_settings(
        self, model: nn.Module, scored: Mapping[str, tuple[Sequence[str], EncodedSplit]]
    ) -> dict[str, Any]:
        """The settings of the probabilities training caches: ``long_text: pieces`` when no scored text was
        truncated (pieces would give the same bits, and `goemo evaluate` finds them), else ``truncate``."""
        settings = self.classifier(model).settings
        long = sum(
            encode_pieces(texts, self.tokenizer, self.config.max_length, "truncate", encoded=encoded).long
            for texts, encoded in scored.values()
        )
        return {**settings, "long_text": "truncate" if long else "pieces"}

    def logits(self, model: nn.Module, split: EncodedSplit) -> np.ndarray:
        """Logits of every text of ``split`` (gathered in input order), ``model`` in eval mode meanwhile."""
        was_training = model.training
        model.eval()
        try:
            return self.classifier(model).logits_for_encoded(
                split,
                rank=self.accelerator.process_index,
                world_size=self.accelerator.num_processes,
                gather=gather_object,
            )
        finally:
            model.train(was_training)


def evaluate_logits(
    logits: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    split: str = "dev",
    shrink: float = 0.0,
    probs: np.ndarray | None = None,
) -> dict[str, float]:
    """Loss and the per-epoch headline metrics from logits (cheap: no threshold sweep).

    The cross-tuned F1 tunes on part of ``split``, so a test split has none. ``probs`` (a
    calibration's) replace ``sigmoid(logits)`` when given.

    >>> y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    >>> m = evaluate_logits(np.where(y > 0, 2.0, -2.0).astype(np.float32), y, 0.3, split="test")
    >>> round(m["val_loss"], 4), m["f1_macro"]
    (0.1269, 1.0)
    """
    if probs is None:
        probs = sigmoid(logits)
    z = torch.from_numpy(np.asarray(logits))
    loss = float(nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(labels).to(z.dtype)).item())
    values = summary(labels, probs, threshold)
    # What dev-tuned per-label thresholds will give on unseen text, estimated on dev alone
    # (tuned on one half, scored on the other): the number the `fast` recipe is chosen by.
    if not is_test_split(split):
        values["f1_macro_xtuned"] = cross_tuned_f1_macro(labels, probs, split_name=split, shrink=shrink)
    # An undefined average (no label with positives in a tiny sample) becomes NaN, never a number.
    return {"val_loss": loss, **{k: float("nan") if v is None else v for k, v in values.items()}}


def dev_metrics(
    scorer: LiveScorer, model: nn.Module, average: nn.Module | None, dev: EncodedSplit, config: TrainConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """The epoch's dev metrics of the weights that are evaluated (``average`` when one is kept),
    and with an average the raw weights' ``raw_val_loss``, ``raw_f1_macro``, … beside them."""
    logits = scorer.logits(model if average is None else average, dev)
    raw: dict[str, float] = {}
    if average is not None:
        raw_values = evaluate_logits(
            scorer.logits(model, dev), dev.labels, config.threshold, shrink=config.threshold_shrink
        )
        raw = {f"raw_{k}": raw_values[k] for k in RAW_KEYS}
    return evaluate_logits(logits, dev.labels, config.threshold, shrink=config.threshold_shrink), raw


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (lower loss, higher anything else); NaN never wins.

    >>> is_better("f1_macro", 0.4, 0.3), is_better("val_loss", 0.4, 0.3), is_better("f1_macro", float("nan"), None)
    (True, False, False)
    >>> is_better("auc_score", 0.7, 0.6)
    True
    """
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric in LOWER_IS_BETTER else value > best


@dataclass
class FinalScores:
    """The best weights' scores: ``metrics`` per split, the probabilities they came from, dev-tuned
    thresholds, and the calibration fitted on dev with its ECE per split (when ``calibrate``)."""

    metrics: dict[str, dict[str, Any]]
    probs: dict[str, np.ndarray]
    tuned: TunedThresholds | None
    calibration: Calibration | None = None
    calibration_reports: dict[str, CalibrationReport] = field(default_factory=dict)

    def calibration_summary(self) -> dict[str, Any] | None:
        """For ``summary.json``: the maps chosen and the macro ECE and log-loss before and after, per split."""
        if self.calibration is None:
            return None
        reports = {split: report.summary() for split, report in self.calibration_reports.items()}
        return {"methods": self.calibration.method_counts(), "rule": self.calibration.info.get("rule"), **reports}

    def flat(self) -> dict[str, Any]:
        """``{"dev/f1_macro": …, "test/auc_micro": …}``: the metrics as one flat dict, for the trackers."""
        return {f"{split}/{name}": value for split, values in self.metrics.items() for name, value in values.items()}


def final_evaluation(
    scorer: LiveScorer,
    model: nn.Module,
    encoded: dict[str, EncodedSplit],
    config: TrainConfig,
    dev_checksum: str | None = None,
) -> FinalScores:
    """Score dev (and test, with ``eval_test``) with the best weights, at the fixed and the dev-tuned thresholds.

    With ``calibrate``, a calibration fitted on dev re-expresses the thresholds (no decision
    changes) and its affine maps are folded into ``model`` as into the saved weights, so every
    number is what the saved model gives.
    """
    keys = [key for key in ("dev", "test") if key in encoded and (key == "dev" or config.eval_test)]
    logits = {key: scorer.logits(model, encoded[key]) for key in keys}
    raw = logits
    out = FinalScores({}, {}, None)
    if "dev" in logits:  # per-label thresholds come from dev only, never from test
        dev = encoded["dev"]
        out.tuned = tune_thresholds(
            dev.labels,
            sigmoid(logits["dev"]),
            split_name="dev",
            label_names=scorer.label_names,
            shrink=config.threshold_shrink,
        )
        if config.calibrate and len(dev.labels) >= 2:  # (a calibration needs texts to fit on)
            fit = fit_calibration(
                dev.labels,
                logits["dev"],
                scorer.label_names,
                split_name="dev",
                split_checksum=dev_checksum,
                settings=CalibrationSettings(seed=config.seed),
            )
            fitted, values = fit.calibration.anchored(out.tuned.values)
            out.tuned = replace(out.tuned, values=values)
            if any(m.method in ("temperature", "platt") for m in fitted.maps):
                try:
                    fold_into_module(scorer.accelerator.unwrap_model(model), fitted.scale, fitted.shift)
                except ModelError as e:
                    log.warning("the calibration's affine maps stay outside the weights (%s)", e)
                else:
                    fitted = replace(fitted, folded=True)
                    logits = {key: scorer.logits(model, encoded[key]) for key in keys}  # the saved model's own
            else:
                fitted = replace(fitted, folded=True)  # nothing to fold: the weights are already the saved model's
            out.calibration = fitted
    assert out.tuned is not None  # dev comes first
    cal = out.calibration
    for key in keys:
        labels = encoded[key].labels
        if cal is None:
            probs, z = sigmoid(logits[key]), logits[key]
        else:
            probs = cal.backend_probabilities(logits[key])
            z = logit(probs)
        out.probs[key] = probs
        out.metrics[key] = evaluate_logits(
            z, labels, config.threshold, split=key, shrink=config.threshold_shrink, probs=probs
        )
        out.metrics[key]["f1_macro_tuned"] = summary(labels, probs, out.tuned)["f1_macro"]
        if cal is not None:
            out.calibration_reports[key] = calibration_report(
                labels, sigmoid(raw[key]), probs, scorer.label_names, cal.methods, split=key
            )
    if cal is not None and "dev" in out.calibration_reports:
        out.calibration = replace(cal, info={**cal.info, "dev": out.calibration_reports["dev"].summary()})
    return out
