"""The model folder: the one place that reads (and writes) what a goemo model folder holds.

A model folder is what ``goemo train`` writes as ``runs/NAME/best/``, what ``goemo export``
writes as an ONNX folder, what ``goemo baseline tfidf`` writes, or any multi-label Hugging
Face checkpoint. Everything else in goemo asks a `ModelFolder` what it needs (its kind, its
labels, taxonomy, thresholds and where they were tuned, max length, the precision and batch
size its cached predictions were made with, the fingerprint of its weights) instead of
parsing ``goemo.json`` or ``config.json`` itself, so a malformed file is reported the same way
whichever command met it, and a new field is added in one place.

Reading a folder costs milliseconds: this module imports neither torch nor transformers.

    folder = ModelFolder.open("runs/reproduce/best")
    folder.kind, folder.taxonomy, folder.max_length
    # -> ('transformer', 'goemotions', 128)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from goemo.core.calibration import CALIBRATION_KEY, Calibration
from goemo.core.errors import ModelError, json_problem
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
# goemo.json entry of a CPU export the predictor made by itself (goemo.predict.fastest).
CPU_EXPORT_KEY = "cpu_export"
TFIDF_FILES = ("tfidf.npz", "vocabulary.json")
CARD_FILE = "README.md"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")
# A tokenizer's vocabulary, in one of the forms transformers saves (fast; WordPiece; BPE; SentencePiece).
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# Encoders whose position ids start after the padding index (RoBERTa's ``padding_idx + 1``):
# they take ``max_position_embeddings - pad_token_id - 1`` tokens (514 - 2 = 512 for roberta-base).
OFFSET_POSITION_TYPES = frozenset(
    {
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "longformer",
        "data2vec-text",
        "mpnet",
        "ibert",
        "luke",
        "markuplm",
    }
)
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the format's own limit
# The most bytes a JSON file of the folder may have: json.loads holds several times its size in memory
# (a 300 MB config.json took 1.9 GB). Configs and goemo.json are kilobytes; the largest tokenizer.json
# files of public models are tens of megabytes.
MAX_JSON_BYTES = 16 * 2**20
MAX_TOKENIZER_JSON_BYTES = 128 * 2**20
# The classifier's output layer in the heads goemo saves and loads: BERT's and goemo's
# ``classifier``, RoBERTa's ``classifier.out_proj``, the ``score`` of decoder heads.
_OUTPUT_LAYER = re.compile(r"^(?:.*\.)?(?:classifier(?:\.out_proj)?|score)\.weight$")
_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")
# Bumped when the way probabilities are computed changes, so old prediction caches are not reused.
FINGERPRINT_VERSION = "1"

Kind = Literal["transformer", "onnx", "tfidf"]


def write_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``goemo.json`` into ``folder`` atomically (the only writer of that file)."""
    return atomic_write_json(Path(folder) / META_FILE, meta)


def encoder_positions(encoder: dict[str, Any], where: str) -> tuple[int, int] | None:
    """(max_position_embeddings, position offset) of an encoder's ``config.json`` settings, None
    when it has no absolute positions; `ModelError` starting with ``where`` when they make no sense.

    The tokens it takes are the first less the second: RoBERTa-style encoders number positions
    from ``pad_token_id + 1``. Training checks ``--max-length`` with it before its first step,
    and a model folder its saved max length.

    >>> encoder_positions({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, "x")
    (514, 2)
    >>> encoder_positions({"model_type": "deberta-v2", "position_biased_input": False}, "x") is None
    True
    """
    value = encoder.get("max_position_embeddings")
    if value is None or encoder.get("position_biased_input") is False:  # DeBERTa-v2/3: relative positions only
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{where}: expected a positive integer, got {value!r}")
    offset = 0
    if encoder.get("model_type") in OFFSET_POSITION_TYPES:
        pad = encoder.get("pad_token_id", 1)
        offset = (pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 1) + 1
    if value - offset < 2:
        raise ModelError(f"{where}: {value} positions leave room for no text")
    return value, offset


def is_output_layer(name: str) -> bool:
    """Whether a weight's name is the classifier's output layer in the heads goemo saves and loads
    (``classifier.weight``, ``classifier.out_proj.weight``, ``score.weight``, under any prefix).

    >>> is_output_layer("classifier.out_proj.weight"), is_output_layer("pre_classifier.weight")
    (True, False)
    """
    return _OUTPUT_LAYER.match(name) is not None


def write_calibration(folder: str | Path, calibration: Calibration | None) -> Path:
    """Put ``calibration`` into the folder's ``config.json`` beside the thresholds (atomically); None removes it.

    The record says which map each label has and whether the affine parts are folded into
    the weights (`goemo.core.calibration`); `ModelFolder.calibration` reads it back.
    """
    path = Path(folder) / CONFIG_FILE
    config = _read_object(path, missing_ok=False)
    if calibration is None:
        config.pop(CALIBRATION_KEY, None)
    else:
        config[CALIBRATION_KEY] = calibration.to_dict()
    return atomic_write_json(path, config)


@dataclass(frozen=True)
class OutputLayer:
    """The classifier's last linear layer in a folder's safetensors: the file, the tensor names, the dtype."""

    path: Path
    weight: str
    bias: str | None
    dtype: str  # the safetensors dtype name: F32, BF16, ...


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
        if self.has_onnx:
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
        return self._object("training_config")

    @property
    def init_from(self) -> dict[str, Any] | None:
        """What training started from (``goemo train --init-from``): ``path`` (the trained folder,
        absolute), ``labels_kept`` (its head continued) and ``model`` (the encoder it was trained
        from); None for a model that started from a plain encoder."""
        value = self.meta.get("init_from")
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            raise ModelError(f"{self.path / META_FILE}: init_from: expected an object with a path")
        return value

    @property
    def data_checksums(self) -> dict[str, str]:
        return self._object("data_checksums", strict=False)

    @property
    def metrics(self) -> dict[str, Any]:
        return self._object("metrics", strict=False)

    @property
    def max_length(self) -> int | None:
        """The max length the model was trained with (None when the folder does not say).

        Checked against what the encoder can take (`position_limit`), so a tampered or
        mistaken ``goemo.json`` fails when the folder is opened, not on the first long text.
        """
        field = "max_length"
        value = self.meta.get("max_length")
        if value is None:
            field, value = "training_config.max_length", self.training_config.get("max_length")
        if value is None:
            return None
        where = f"{self.path / META_FILE}: {field}"
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ModelError(f"{where}: expected an integer >= 2, got {value!r}")
        limit = self.position_limit
        if limit is not None and value > limit:
            raise ModelError(
                f"{where}: {value} is more than the {limit} tokens the model takes ({self.position_source})"
            )
        return value

    @cached_property
    def encoder_config(self) -> dict[str, Any]:
        """The encoder's settings: ``config.json``, or the ``encoder`` nested in it by goemo's mean-pooling head."""
        config = self.config
        if config.get("model_type") != "goemo-mean-pool":
            return config
        encoder = config.get("encoder")
        if not isinstance(encoder, dict):
            raise ModelError(f"{self.path / CONFIG_FILE}: encoder: expected an object (the encoder's config)")
        return encoder

    def _key(self, name: str) -> str:
        """An encoder setting's key as written in config.json (nested under ``encoder`` for the mean head)."""
        return f"encoder.{name}" if self.encoder_config is not self.config else name

    def _config_field(self, name: str) -> str:
        return f"{CONFIG_FILE} {self._key(name)}"

    @cached_property
    def _positions(self) -> tuple[int, int] | None:
        """(max_position_embeddings, position offset) of the encoder, None when it has no absolute positions."""
        return encoder_positions(
            self.encoder_config, f"{self.path / CONFIG_FILE}: {self._key('max_position_embeddings')}"
        )

    @property
    def position_limit(self) -> int | None:
        """The most tokens the encoder takes: ``max_position_embeddings`` less the position offset.

        RoBERTa-style encoders number positions from ``pad_token_id + 1``, so roberta-base's 514
        positions take 512 tokens. None when ``config.json`` does not say (an ONNX export without
        it, a TF-IDF model); the same ``config.json`` decides for an ONNX export as for its source.

            ModelFolder.open("runs/roberta/best").position_limit
            # -> 512
        """
        positions = self._positions
        return None if positions is None else positions[0] - positions[1]

    @property
    def position_source(self) -> str:
        """Where `position_limit` comes from, for messages: ``config.json max_position_embeddings 514 less 2``."""
        positions = self._positions
        if positions is None:
            return "no limit in config.json"
        value, offset = positions
        return f"{self._config_field('max_position_embeddings')} {value}" + (f" less {offset}" if offset else "")

    @property
    def onnx_quantize(self) -> str | None:
        """``"int8"`` for a quantised export, None otherwise."""
        return (self.meta.get("onnx") or {}).get("quantize")

    @property
    def cpu_export(self) -> dict[str, Any]:
        """What a CPU export made by the predictor records (`goemo.predict.fastest`), {} for any other folder.

        ``source_fingerprint`` (the `fingerprint` of the weights it was made from: a retrained
        model is exported again), ``precision`` (int8 or fp32), ``verdict`` (why, in one line)
        and ``dev_check`` (the dev macro-F1 of int8 and fp32 at the model's thresholds), so a
        later start reuses the export and reports the same figures without measuring again.
        """
        return self._object(CPU_EXPORT_KEY)

    @property
    def prediction_settings(self) -> dict[str, Any]:
        """The predictor settings of the probabilities training cached (precision, batch size), {} if none."""
        return self._object("prediction", strict=False)

    @property
    def card_facts(self) -> dict[str, Any]:
        """What training measured for the model card (``goemo.json`` ``card``: per-label rows, split
        sizes, label counts, resources; `goemo.models.card.CardFacts`), {} if none."""
        return self._object("card", strict=False)

    def _object(self, key: str, strict: bool = True) -> dict[str, Any]:
        """``goemo.json``'s object ``key`` ({} when absent); another value is a `ModelError`, or {} unless ``strict``."""
        value = self.meta.get(key) or {}
        if isinstance(value, dict):
            return value
        if strict:
            raise ModelError(f"{self.path / META_FILE}: {key}: expected an object")
        return {}

    @cached_property
    def calibration(self) -> Calibration | None:
        """The calibration ``config.json`` records (`goemo.core.calibration`), None for an uncalibrated model."""
        value = self.config.get(CALIBRATION_KEY)
        if value is None:
            return None
        return Calibration.from_dict(value, self.label_names, f"{self.path / CONFIG_FILE}: {CALIBRATION_KEY}")

    # ------------------------------------------------------------------ thresholds

    @property
    def global_threshold(self) -> float:
        """The fixed threshold the model reports at (the paper's 0.3 unless it says otherwise)."""
        value = self._object("thresholds").get("global")
        return PAPER_THRESHOLD if value is None else _probability(value, f"{self.path / META_FILE}: thresholds.global")

    @cached_property
    def tuned(self) -> TunedThresholds | None:
        """The dev-tuned per-label thresholds with their provenance, or None."""
        tuning = self._object("thresholds").get("tuning")
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

    def thresholds(self, dtype: Any = np.float32) -> np.ndarray:
        """Per-label decision thresholds in label order: tuned where present, else the global one.

        A folder without goemo's metadata (a plain transformers checkpoint) gets 0.5, the point
        where a sigmoid is undecided. float32 is the precision the predictor decides in; float64
        gives the values ``goemo.json`` holds.
        """
        entry = self._object("thresholds")
        where = f"{self.path / META_FILE}: thresholds"
        default = entry.get("global")
        default = DEFAULT_THRESHOLD if default is None else _probability(default, f"{where}.global")
        per_label = entry.get("per_label") or {}
        if not isinstance(per_label, dict):
            raise ModelError(f"{where}.per_label: expected an object label -> threshold")
        return np.array(
            [_probability(per_label.get(n, default), f"{where}.per_label.{n}") for n in self.label_names],
            dtype=dtype,
        )

    def choose_thresholds(
        self, spec: ThresholdSpec, split_name: str | None = None, split_checksum: str | None = None
    ) -> ThresholdChoice:
        """`goemo.core.thresholds.choose_thresholds` with this model's thresholds and test-split guard.

        ModelFolder.open("runs/x/best").choose_thresholds("tuned", "dev")
        # -> Traceback (most recent call last):
        # -> goemo.core.errors.ThresholdLeakError: the tuned thresholds were tuned on 'dev', ...
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

    # ------------------------------------------------------------------ integrity

    def check_weights(self) -> None:
        """Check the safetensors files are whole and fit ``config.json``, before a backend loads them.

        Reads only each file's header (no torch): a truncated or overwritten file, or a
        ``config.json`` edited to another label count, hidden size, vocabulary, position count
        or layer count than the weights have, fails here with one `ModelError` naming the
        file and the field, instead of deep inside weight loading (or, for a missing layer,
        not at all: transformers would fill it with random numbers).
        """
        shapes: dict[str, list[int]] = {}
        for path in sorted(self.path.glob("*.safetensors")):
            for name, info in _safetensors_header(path).items():
                shapes[name] = list(info["shape"])
                self._check_tensor(path, name, shapes[name])
        self._check_layers(shapes)

    def output_layer(self) -> OutputLayer:
        """Where the classifier's last linear layer is stored: one ``[labels, hidden]`` weight whose name
        is BERT's and goemo's ``classifier``, RoBERTa's ``classifier.out_proj`` or a decoder's ``score``.

        Read from the safetensors headers (no torch); `ModelError` when the folder has no such
        layer, or more than one.
        """
        found = []
        for path in sorted(self.path.glob("*.safetensors")):
            header = _safetensors_header(path)
            for name, info in header.items():
                if _OUTPUT_LAYER.match(name) and list(info.get("shape", [])[:1]) == [self.num_labels]:
                    bias = name.removesuffix(".weight") + ".bias"
                    found.append(OutputLayer(path, name, bias if bias in header else None, str(info.get("dtype"))))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} ({', '.join(f.weight for f in found)})"
            raise ModelError(
                f"{self.path}: {what} classifier output layer with {self.num_labels} rows in its safetensors files"
            )
        return found[0]

    def _check_tensor(self, path: Path, name: str, shape: list[int]) -> None:
        enc = self.encoder_config
        hidden = _int_or_none(enc.get("hidden_size"))
        expected: list[tuple[int, int | None, str]] = []  # (axis, expected size, what says so)
        if _OUTPUT_LAYER.match(name) and self._config_label_names() is not None:
            expected += [(0, self.num_labels, f"{CONFIG_FILE} id2label: {self.num_labels} labels")]
            expected += [(1, hidden, self._config_field(f"hidden_size {hidden}"))]
        elif name.endswith("word_embeddings.weight"):
            width = _int_or_none(enc.get("embedding_size")) or hidden
            vocab = _int_or_none(enc.get("vocab_size"))
            expected += [(0, vocab, self._config_field(f"vocab_size {vocab}"))]
            expected += [
                (1, width, self._config_field(f"{'embedding' if 'embedding_size' in enc else 'hidden'}_size {width}"))
            ]
        elif name.endswith(".position_embeddings.weight") and self._positions is not None:
            n = self._positions[0]
            expected += [(0, n, self._config_field(f"max_position_embeddings {n}"))]
        for axis, size, source in expected:
            if size is not None and (len(shape) <= axis or shape[axis] != size):
                raise ModelError(
                    f"{path}: {name}: shape {shape} does not fit {source}; the weights and config.json disagree"
                )

    def _check_layers(self, shapes: dict[str, list[int]]) -> None:
        declared = _int_or_none(self.encoder_config.get("num_hidden_layers"))
        found = {int(m.group(1)) for name in shapes if (m := _LAYER_INDEX.search(name))}
        if declared is None or not found:
            return
        if len(found) != declared or max(found) != declared - 1:
            raise ModelError(
                f"{self.path}: the weights hold {len(found)} encoder layers but "
                f"{self._config_field('num_hidden_layers')} is {declared}; the weights and config.json disagree"
            )

    def check_tokenizer(self) -> None:
        """Check the tokenizer's files before it loads: JSON files that are objects, and a vocabulary.

        Without its vocabulary file transformers quietly builds a tokenizer of the special
        tokens alone, which turns every word into ``[UNK]``: predictions from nothing.
        """
        for name in TOKENIZER_FILES:
            _read_object(self.path / name, missing_ok=True)
        if not any((self.path / name).is_file() for name in VOCABULARY_FILES):
            raise ModelError(f"{self.path}: no tokenizer vocabulary (expected one of {', '.join(VOCABULARY_FILES)})")

    def check_vocabulary(self, size: int) -> None:
        """Check a loaded tokenizer's ``size`` tokens all have a row in the embeddings (``config.json vocab_size``)."""
        vocab = _int_or_none(self.encoder_config.get("vocab_size"))
        if vocab is not None and size > vocab:
            raise ModelError(
                f"{self.path}: the tokenizer has {size} tokens but {self._config_field('vocab_size')} is {vocab}: "
                "ids past the embeddings would crash on the texts that use them"
            )

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
    """A JSON object from the folder, refused unread when it is larger than such a file can be."""
    if not path.is_file():
        if missing_ok:
            return {}
        raise ModelError(f"{path}: not found")
    limit = MAX_TOKENIZER_JSON_BYTES if path.name == "tokenizer.json" else MAX_JSON_BYTES
    try:
        size = path.stat().st_size
        if size <= limit:
            with open(path, "rb") as f:
                data = f.read(limit + 1)  # bounded even if the file grows meanwhile
            size = max(size, len(data))
        if size > limit:
            raise ModelError(
                f"{path}: {size:,} bytes, more than the {limit:,} a {path.name} may have; "
                "not read (a damaged or wrong file?)"
            )
        value = json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}:{e.lineno}: invalid JSON: {json_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read: {e}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor name -> ``{"dtype", "shape", "data_offsets"}`` from a safetensors header, without
    ``__metadata__``, checking that the file holds every byte it promises.

    The format: 8 bytes little-endian header length N, N bytes of JSON
    (``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``), then the tensor bytes.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{path}: truncated: {size} bytes, too short for a safetensors file")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ModelError(
                    f"{path}: truncated or not a safetensors file: its header length reads {n:,}, the file has {size:,} bytes"
                )
            header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path}: damaged: its header is not JSON (not a safetensors file?)") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: damaged: its header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for name, info in tensors.items():
        try:
            dtype, shape, (begin, stop) = info["dtype"], list(info["shape"]), info["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in shape) or not 0 <= begin <= stop:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: {name}: damaged tensor entry in the header") from None
        width = _SAFETENSORS_DTYPE_BYTES.get(dtype)
        if width is not None and stop - begin != math.prod(shape) * width:
            raise ModelError(f"{path}: {name}: {stop - begin:,} bytes for a {dtype} tensor of shape {shape}")
        end = max(end, stop)
    if 8 + n + end != size:
        have = size - 8 - n
        raise ModelError(
            f"{path}: truncated: its header promises {end:,} bytes of tensors, the file holds {have:,}"
            if have < end
            else f"{path}: damaged: {have - end:,} bytes after the last tensor"
        )
    return tensors


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ModelError(f"{where}: expected a number in [0, 1], got {value!r}")
    return float(value)
