"""goemo: multi-label emotion classification of text with transformers.

The public API is imported lazily so that `goemo --help` stays fast; importing the
package registers goemo's model heads with transformers' Auto classes (see
`goemo.modeling`), so `transformers.pipeline` can load goemo model folders after a plain
``import goemo``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Split": "goemo.data.split",
    "load_split": "goemo.data.io",
    "load_goemotions": "goemo.data.io",
    "load_taxonomy": "goemo.data.taxonomy",
    "TrainConfig": "goemo.config",
    "train": "goemo.training",
    "evaluate": "goemo.evaluation",
    "EmotionClassifier": "goemo.inference",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'goemo' has no attribute {name!r}")
