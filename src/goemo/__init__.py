"""goemo: multi-label emotion classification of text with transformers.

The public API is imported lazily, so that ``import goemo`` and ``goemo --help`` cost
milliseconds and the ONNX serving path never imports torch. goemo's mean-pool head is
registered with transformers' Auto classes when `goemo.models.modeling` is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Split": "goemo.data.split",
    "load_split": "goemo.data.io",
    "load_goemotions": "goemo.data.io",
    "load_taxonomy": "goemo.data.taxonomy",
    "TrainConfig": "goemo.core.config",
    "resolve_config": "goemo.core.config",
    "train": "goemo.training.loop",
    "evaluate": "goemo.evaluation.evaluate",
    "EmotionClassifier": "goemo.predict.classifier",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'goemo' has no attribute {name!r}")
