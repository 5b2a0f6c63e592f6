"""The TF-IDF backend: logits of the baseline's linear scorers, straight from texts (no tokenizer, no torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from goemo.core.folder import ModelFolder
from goemo.models.tfidf import TfidfModel


class TfidfBackend:
    """`goemo.models.tfidf.TfidfModel` behind the predictor: it reads texts, not token ids."""

    name = "tfidf"
    takes_tokens = False
    device = "cpu"
    precision = "fp64"

    def __init__(self, folder: ModelFolder) -> None:
        self.model = TfidfModel.load(folder)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits ``(n, L)`` in float64, the precision the model was fitted and scored in."""
        return np.asarray(self.model.decision_function(list(texts)), dtype=np.float64)
