"""The model folder: the one place that reads (and writes) what a goemo model folder holds.

A model folder is what ``goemo train`` writes as ``runs/NAME/best/``, what ``goemo export``
writes as an ONNX folder, what ``goemo baseline tfidf`` writes, or any multi-label Hugging
Face checkpoint. Everything else in goemo asks a `ModelFolder` what it needs (its kind, its
labels, taxonomy, thresholds and where they were tuned, max length, the precision and batch
size its cached predictions were made with, the fingerprint of its weights) instead of
parsing ``goemo.json`` or ``config.json`` itself, so a malformed file is reported the same way
whichever command met it, and a new field is added in one place.

Reading a folder costs milliseconds: this module imports neither torch nor transformers.

>>> folder = ModelFolder.open("runs/reproduce/best")     # doctest: +SKIP
>>> folder.kind, folder.taxonomy, folder.max_length      # doctest: +SKIP
('transformer', 'goemotions', 128)
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from goemo.core.errors import ModelError
from goemo.core.fileio import atomic_write_json
from goemo.core.thresholds import (
    DEFAULT_THRESHOLD,
    PAPER_THRESHOLD,
    ThresholdChoice,
    ThresholdSpec,
    TunedThresholds,
    choose_thresholds,
)

META_FILE = "goemo.json"
CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"
TFIDF_KIND = "tfidf"
TFIDF_FILES = ("tfidf.npz", "vocabulary.json")
CARD_FILE = "README.md"
# Bumped when the way probabilities are computed changes, so old prediction caches are not reused.
FINGERPRINT_VERSION = "1"

Kind = Literal["transformer", "onnx", "tfidf"]


def write_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``goemo.json`` into ``folder`` atomically (the only writer of that file)."""
    return atomic_write_json(Path(folder) / META_FILE, meta)


class ModelFolder:
    """A model folder opened for reading: its files are parsed once, lazily, and validated.

    Every accessor raises `ModelError` with the file and the field when the folder is
    malformed, so tampered or truncated folders end in one clear line.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta

    @classmethod
    def open(cls, path: str | Path) -> ModelFolder:
        """Open ``path``; a folder without ``goemo.json`` (a plain transformers checkpoint) has empty metadata."""
        folder = Path(path)
        if not folder.is_dir():
            raise ModelError(f"{folder}: no such model folder: not found (expected e.g. runs/NAME/best)")
        return cls(folder, _read_object(folder / META_FILE, missing_ok=True))

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r}, kind={self.kind!r})"

    # ------------------------------------------------------------------ what it is

    @cached_property
    def kind(self) -> Kind:
        """``"tfidf"`` (goemo.json says so), ``"onnx"`` (an export) or ``"transformer"`` (safetensors)."""
        if self.meta.get("kind") == TFIDF_KIND:
            return "tfidf"
        if (self.path / ONNX_FILE).is_file():
            return "onnx"
        if self.has_torch_weights:
            return "transformer"
        raise ModelError(
            f"{self.path} holds neither {ONNX_FILE} nor model.safetensors nor a TF-IDF model: not a model folder"
        )

    @property
    def has_torch_weights(self) -> bool:
        return any((self.path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json"))

    @property
    def has_onnx(self) -> bool:
        return (self.path / ONNX_FILE).is_file()

    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.json`` ({} when absent)."""
        return _read_object(self.path / CONFIG_FILE, missing_ok=True)

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in output order: ``goemo.json``'s, which must agree with ``config.json``'s ``id2label``."""
        from_config = self._config_label_names()
        saved = self.meta.get("label_names")
        if saved is None:
            if from_config is None:
                raise ModelError(f"{self.path / CONFIG_FILE}: cannot read the label names (no id2label)")
            return from_config
        if not isinstance(saved, list) or not saved or not all(isinstance(n, str) for n in saved):
            raise ModelError(f"{self.path / META_FILE}: label_names: expected a non-empty list of strings")
        if from_config is not None and from_config != saved:
            raise ModelError(f"{self.path}: goemo.json label_names disagree with config.json id2label")
        return list(saved)

    def _config_label_names(self) -> list[str] | None:
        id2label = self.config.get("id2label")
        if id2label is None:
            return None
        where = f"{self.path / CONFIG_FILE}: id2label"
        if not isinstance(id2label, dict) or not id2label:
            raise ModelError(f"{where}: expected an object mapping 0..L-1 to label names")
        try:
            names = [id2label[str(i)] for i in range(len(id2label))]
        except KeyError as e:
            raise ModelError(f"{where}: missing id {e.args[0]}") from None
        if not all(isinstance(n, str) for n in names):
            raise ModelError(f"{where}: label names must be strings")
        return names

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def taxonomy(self) -> str:
        """The taxonomy the model was trained on, ``"goemotions"`` when unknown."""
        return str(self.meta.get("taxonomy") or "goemotions")

    @property
    def training_config(self) -> dict[str, Any]:
        value = self.meta.get("training_config") or {}
        if not isinstance(value, dict):
            raise ModelError(f"{self.path / META_FILE}: training_config: expected an object")
        return value

    @property
    def data_checksums(self) -> dict[str, str]:
        value = self.meta.get("data_checksums") or {}
        return value if isinstance(value, dict) else {}

    @property
    def metrics(self) -> dict[str, Any]:
        value = self.meta.get("metrics") or {}
        return value if isinstance(value, dict) else {}

    @property
    def max_length(self) -> int | None:
        """The max length the model was trained with (None when the folder does not say)."""
        value = self.meta.get("max_length") or self.training_config.get("max_length")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ModelError(f"{self.path / META_FILE}: max_length: expected an integer >= 2, got {value!r}")
        return value

    @property
    def onnx_quantize(self) -> str | None:
        """``"int8"`` for a quantised export, None otherwise."""
        return (self.meta.get("onnx") or {}).get("quantize")

    @property
    def prediction_settings(self) -> dict[str, Any]:
        """The predictor settings of the probabilities training cached (precision, batch size), {} if none."""
        value = self.meta.get("prediction") or {}
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------------ thresholds

    @property
    def global_threshold(self) -> float:
        """The fixed threshold the model reports at (the paper's 0.3 unless it says otherwise)."""
        value = self._thresholds_entry().get("global")
        return PAPER_THRESHOLD if value is None else _probability(value, f"{self.path / META_FILE}: thresholds.global")

    @cached_property
    def tuned(self) -> TunedThresholds | None:
        """The dev-tuned per-label thresholds with their provenance, or None."""
        tuning = self._thresholds_entry().get("tuning")
        if not tuning or not tuning.get("per_label"):
            return None
        where = f"{self.path / META_FILE}: thresholds.tuning"
        try:
            tuned = TunedThresholds.from_dict(tuning)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"{where}: malformed ({e})") from None
        if not np.all((tuned.values >= 0) & (tuned.values <= 1)):
            raise ModelError(f"{where}: per_label: thresholds must be numbers in [0, 1]")
        return tuned

    def thresholds(self) -> np.ndarray:
        """Per-label decision thresholds in label order: tuned where present, else the global one.

        A folder without goemo's metadata (a plain transformers checkpoint) gets 0.5, the point
        where a sigmoid is undecided.
        """
        entry = self._thresholds_entry()
        where = f"{self.path / META_FILE}: thresholds"
        default = entry.get("global")
        default = DEFAULT_THRESHOLD if default is None else _probability(default, f"{where}.global")
        per_label = entry.get("per_label") or {}
        if not isinstance(per_label, dict):
            raise ModelError(f"{where}.per_label: expected an object label -> threshold")
        return np.array(
            [_probability(per_label.get(n, default), f"{where}.per_label.{n}") for n in self.label_names],
            dtype=np.float32,
        )

    def choose_thresholds(
        self, spec: ThresholdSpec, split_name: str | None = None, split_checksum: str | None = None
    ) -> ThresholdChoice:
        """`goemo.core.thresholds.choose_thresholds` with this model's thresholds and test-split guard.

        >>> ModelFolder.open("runs/x/best").choose_thresholds("tuned", "dev")   # doctest: +SKIP
        Traceback (most recent call last):
        goemo.core.errors.ThresholdLeakError: the tuned thresholds were tuned on 'dev', ...
        """
        tuned = self.tuned if spec == "tuned" else None
        return choose_thresholds(
            spec,
            global_threshold=self.global_threshold,
            tuned=tuned,
            label_names=self.label_names,
            split_name=split_name,
            split_checksum=split_checksum,
            tuned_split_checksum=self.data_checksums.get(tuned.split) if tuned is not None else None,
        )

    def _thresholds_entry(self) -> dict[str, Any]:
        value = self.meta.get("thresholds") or {}
        if not isinstance(value, dict):
            raise ModelError(f"{self.path / META_FILE}: thresholds: expected an object")
        return value

    # ------------------------------------------------------------------ identity

    def weight_files(self) -> list[Path]:
        """The files that determine the model's scores."""
        if self.kind == "tfidf":
            files = [self.path / f for f in TFIDF_FILES]
        elif self.kind == "onnx":
            files = [self.path / ONNX_FILE]
        else:
            files = sorted(self.path.glob("*.safetensors"))
        files = [f for f in files if f.is_file()]
        if not files:
            raise ModelError(f"{self.path}: no weights found; expected a model folder written by `goemo train`")
        return files

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the weights and ``config.json``: content, not mtime.

        Copying a run folder keeps its prediction cache valid; retraining into the same folder
        (new weights) never reuses stale predictions.
        """
        h = hashlib.sha256(f"goemo-predictions-{FINGERPRINT_VERSION}".encode())
        for path in [*self.weight_files(), self.path / CONFIG_FILE]:
            if not path.is_file():
                continue
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


def _read_object(path: Path, missing_ok: bool) -> dict[str, Any]:
    if not path.is_file():
        if missing_ok:
            return {}
        raise ModelError(f"{path}: not found")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read: {e}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ModelError(f"{where}: expected a number in [0, 1], got {value!r}")
    return float(value)
