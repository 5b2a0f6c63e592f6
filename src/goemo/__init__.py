"""goemo: multi-label emotion classification of text with transformers.

The public API is imported lazily so that `goemo --help` stays fast. goemo's model heads
are registered with transformers' Auto classes (see `goemo.models.modeling`) as soon as
transformers is imported, so after a plain ``import goemo``, ``transformers.pipeline``
loads goemo model folders; without that hook ``import goemo`` would cost seconds of
torch + transformers import even for ``goemo download``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Split": "goemo.data.split",
    "load_split": "goemo.data.io",
    "load_goemotions": "goemo.data.io",
    "load_taxonomy": "goemo.data.taxonomy",
    "TrainConfig": "goemo.core.config",
    "resolve_config": "goemo.core.config",
    "train": "goemo.train.loop",
    "evaluate": "goemo.evaluate.evaluation",
    "EmotionClassifier": "goemo.predict.classifier",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'goemo' has no attribute {name!r}")


class _RegisterHeadsAfterTransformers(importlib.abc.MetaPathFinder):
    """Import `goemo.models.modeling` (which registers the heads) right after transformers loads."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            importlib.import_module("goemo.models.modeling")

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "transformers" in sys.modules:
    importlib.import_module("goemo.models.modeling")
elif not any(isinstance(f, _RegisterHeadsAfterTransformers) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterHeadsAfterTransformers())
