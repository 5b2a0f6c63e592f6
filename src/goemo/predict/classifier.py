"""The one predictor: `EmotionClassifier` turns texts into probabilities and decisions.

Every command that runs a model goes through it: training's per-epoch scoring (around its
live model), ``goemo evaluate``, ``report`` and ``ensemble`` (through the prediction cache,
`goemo.predict.cache`), ``goemo predict`` and ``goemo serve``. Its backend follows the
folder's kind (`goemo.core.folder.ModelFolder.kind`):

* ``torch``: the transformers model (`goemo.predict.torch_backend`), fp32 or bf16/fp16 autocast;
* ``onnx``: an export's ``model.onnx`` under ONNX Runtime (`goemo.predict.onnx_backend`), no torch;
* ``tfidf``: the TF-IDF baseline (`goemo.predict.tfidf_backend`), no tokenizer, no torch.

Precision, batch size and max length are explicit settings (`settings`), part of the
prediction-cache key, so two commands with the same settings give identical probabilities.

Speed comes from the shape of the work: texts are tokenised once without padding, sorted by
length and cut into batches padded only to their own longest text
(`goemo.data.batching.eval_batches`); outputs are put back in input order.

Decisions use the folder's thresholds (per label, tuned on dev, when present; else its
global threshold; else 0.5) and goemo's strict convention ``probability > threshold``
(`goemo.core.thresholds.binarize`).

>>> clf = EmotionClassifier.load("runs/goemo/best")              # doctest: +SKIP
>>> clf.predict(["I love it, thank you!"])                        # doctest: +SKIP
[[{'label': 'gratitude', 'score': 0.97}, {'label': 'love', 'score': 0.81}]]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import META_FILE, ONNX_FILE, ModelFolder
from goemo.core.thresholds import binarize, sigmoid
from goemo.data.batching import EncodedSplit, collate, encode_split, eval_batches, tokenize_texts
from goemo.data.records import check_texts
from goemo.data.split import Split
from goemo.data.taxonomy import Taxonomy, load_taxonomy, project_labels, project_probs

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx", "tfidf"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# Where neither the folder nor the tokenizer says: BERT-family position limit.
MAX_LENGTH_CAP = 512
# transformers sets a tokenizer's model_max_length to int(1e30) when its config does not say.
_UNSET_TOKENIZER_LIMIT = 10**9
DEFAULT_BATCH_SIZE = 128
# Gathers one picklable object per process (accelerate.utils.gather_object in training).
Gather = Callable[[list[Any]], list[Any]]


class TokenBackend(Protocol):
    """Logits ``(b, L)`` float32 for a padded batch of token ids (torch, ONNX)."""

    name: str
    device: str
    precision: str
    takes_tokens: bool

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def choose_backend(folder: ModelFolder, backend: str) -> str:
    """The backend ``backend`` asks for, checked against what the folder holds (``auto``: its kind)."""
    if backend not in ("auto", "torch", "onnx", "tfidf"):
        raise ConfigError(f"backend={backend!r}: expected auto, torch, onnx or tfidf")
    kind = folder.kind
    if kind == "tfidf":
        if backend not in ("auto", "tfidf"):
            raise ConfigError(
                f"{folder.path} is a TF-IDF model (goemo.json kind 'tfidf'): backend {backend!r} does "
                f"not apply; use --backend auto"
            )
        return "tfidf"
    if backend == "onnx" and not folder.has_onnx:
        raise ModelError(f"{folder.path} has no {ONNX_FILE}; make one with `goemo export {folder.path} --format onnx`")
    if backend == "torch" and not folder.has_torch_weights:
        hint = " (it is an ONNX export: use --backend onnx)" if folder.has_onnx else ""
        raise ModelError(f"{folder.path} has no model.safetensors{hint}")
    if backend == "tfidf":
        raise ConfigError(f"{folder.path} is not a TF-IDF model; use --backend auto")
    if backend != "auto":
        return backend
    return "onnx" if kind == "onnx" else "torch"


def check_max_length(folder: ModelFolder, max_length: int | None) -> None:
    """Refuse a max length the model cannot take, from ``config.json`` alone (before anything loads).

    Asked for (``max_length``): at most the encoder's positions (`ModelFolder.position_limit`,
    ``max_position_embeddings`` less RoBERTa's offset), else `ConfigError`. Saved in the
    folder (``goemo.json``): the same limit, else `ModelError` naming the file and field. Either
    way the first long text can no longer crash a run half-way.

    >>> check_max_length(ModelFolder.open("runs/x/best"), 1000)   # doctest: +SKIP
    Traceback (most recent call last):
    goemo.core.errors.ConfigError: max_length=1000: the model takes at most 512 tokens (config.json max_position_embeddings 512)
    """
    if max_length is None:
        _ = folder.max_length  # validated on access
        return
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length={max_length!r}: expected an integer >= 2")
    limit = folder.position_limit
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length={max_length}: the model takes at most {limit} tokens ({folder.position_source})")


def tokenizer_limit(tokenizer: Any, where: str = "tokenizer_config.json") -> int | None:
    """The tokenizer's own ``model_max_length``, None when its config leaves it unset."""
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, bool) or not isinstance(value, int) or value >= _UNSET_TOKENIZER_LIMIT:
        return None
    if value < 2:
        raise ModelError(f"{where}: model_max_length: {value} leaves room for no text")
    return value


def choose_max_length(folder: ModelFolder, tokenizer: Any, max_length: int | None) -> int:
    """The max length to truncate to: the one asked for, else the folder's, else the most the model takes.

    Each is checked against the tokenizer's own limit too (`check_max_length` has checked the
    encoder's positions): asked for, a `ConfigError`; saved in ``goemo.json``, a `ModelError`.
    """
    check_max_length(folder, max_length)
    limit = tokenizer_limit(tokenizer, str(folder.path / "tokenizer_config.json"))
    source = f"{folder.path / 'tokenizer_config.json'} model_max_length"
    if max_length is not None:
        if limit is not None and max_length > limit:
            raise ConfigError(f"max_length={max_length}: the model's tokenizer takes at most {limit} tokens ({source})")
        return max_length
    saved = folder.max_length
    if saved is not None:
        if limit is not None and saved > limit:
            raise ModelError(
                f"{folder.path / META_FILE}: max_length: {saved} is more than the {limit} tokens the tokenizer takes ({source})"
            )
        return saved
    return min(n for n in (MAX_LENGTH_CAP, limit, folder.position_limit) if n is not None)


class EmotionClassifier:
    """A model ready to label texts: backend, tokenizer, label names, thresholds and settings.

    Thread-safe: concurrent calls (a web server's workers) share the model; tokenisation,
    whose fast tokenizer keeps per-call state, is serialised.

    >>> clf = EmotionClassifier.load("runs/goemo/best", backend="onnx")   # doctest: +SKIP
    >>> clf.predict_proba(["so happy for you", "ugh"]).shape               # doctest: +SKIP
    (2, 28)
    """

    def __init__(
        self,
        backend: Any,
        tokenizer: Any,
        label_names: Sequence[str],
        thresholds: np.ndarray,
        *,
        max_length: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        folder: ModelFolder | None = None,
    ) -> None:
        self._backend = backend
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (len(self.label_names),):
            raise ModelError(f"{len(self.label_names)} labels but {self.thresholds.shape} thresholds")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: expected an integer >= 1")
        if backend.takes_tokens and max_length < 2:
            raise ConfigError(f"max_length={max_length}: expected an integer >= 2")
        self.max_length = max_length
        self.batch_size = batch_size
        self.folder = folder
        self._pad_id = 0
        if tokenizer is not None and tokenizer.pad_token_id is not None:
            self._pad_id = tokenizer.pad_token_id
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | Path | ModelFolder,
        backend: Backend = "auto",
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        *,
        precision: Precision = "auto",
        num_threads: int | None = None,
    ) -> EmotionClassifier:
        """Open a model folder (``runs/X/best``, an ONNX export of one, or a TF-IDF baseline).

        ``backend="auto"`` follows the folder: ``model.onnx`` for an export, the PyTorch weights
        otherwise, the TF-IDF model for a baseline. ``max_length`` defaults to the length the
        model was trained with. ``precision="auto"`` is bf16 on CUDA and fp32 on CPU
        (`goemo.predict.device.resolve_precision`); an ONNX graph runs in the precision it was
        exported with. ``num_threads`` sets the CPU threads of the backend (default: all cores).

        >>> clf = EmotionClassifier.load("runs/goemo/best-onnx-int8")   # doctest: +SKIP
        >>> clf.backend, clf.precision
        ('onnx', 'int8')
        """
        folder = path if isinstance(path, ModelFolder) else ModelFolder.open(path)
        chosen = choose_backend(folder, backend)
        names = folder.label_names
        if chosen == "tfidf":
            from goemo.predict.tfidf_backend import TfidfBackend  # noqa: PLC0415  (optional extra: scikit-learn, only for this kind)

            if device not in ("auto", "cpu"):
                log.warning("%s is a TF-IDF model: it runs on the CPU, not %s", folder.path, device)
            tfidf = TfidfBackend(folder)
            return cls(tfidf, None, names, folder.thresholds(), max_length=0, batch_size=batch_size, folder=folder)
        check_max_length(folder, max_length)  # before the weights load: a bad length fails fast
        runner: TokenBackend
        tokenizer: Any
        if chosen == "torch":
            from goemo.predict.torch_backend import load_torch_backend  # noqa: PLC0415  (optional extra: torch, only for this backend)

            runner, tokenizer = load_torch_backend(folder, device, precision, num_threads)
        else:
            from goemo.predict.onnx_backend import load_onnx_backend  # noqa: PLC0415  (optional extra: onnx, onnxruntime)

            runner, tokenizer = load_onnx_backend(folder, device, precision, num_threads)
        max_length = choose_max_length(folder, tokenizer, max_length)
        return cls(
            runner, tokenizer, names, folder.thresholds(), max_length=max_length, batch_size=batch_size, folder=folder
        )

    # ------------------------------------------------------------------ what it is

    @property
    def backend(self) -> str:
        return str(self._backend.name)

    @property
    def device(self) -> str:
        return str(self._backend.device)

    @property
    def precision(self) -> str:
        return str(self._backend.precision)

    @property
    def path(self) -> Path | None:
        return self.folder.path if self.folder is not None else None

    @property
    def meta(self) -> dict[str, Any]:
        return self.folder.meta if self.folder is not None else {}

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the probabilities besides the weights and the texts: the cache key's part.

        >>> EmotionClassifier.load("runs/x/best", precision="bf16").settings   # doctest: +SKIP
        {'backend': 'torch', 'device': 'cpu', 'precision': 'bf16', 'batch_size': 128, 'max_length': 128}
        """
        return {
            "backend": self.backend,
            "device": self.device.split(":")[0],
            "precision": self.precision,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }

    def __repr__(self) -> str:
        return (
            f"EmotionClassifier(path={str(self.path)!r}, backend={self.backend!r}, device={self.device!r}, "
            f"precision={self.precision!r}, labels={self.num_labels})"
        )

    # ------------------------------------------------------------------ scores

    def encode(self, texts: Sequence[str]) -> EncodedSplit:
        """Token ids of ``texts`` (truncated to ``max_length``, unpadded)."""
        with self._tokenizer_lock:  # fast tokenizers are not safe to share across threads
            flat, offsets = tokenize_texts(texts, self.tokenizer, self.max_length)
        return EncodedSplit(flat, offsets, np.zeros((len(offsets) - 1, 0), np.float32))

    def logits_for_encoded(
        self, encoded: EncodedSplit, *, rank: int = 0, world_size: int = 1, gather: Gather | None = None
    ) -> np.ndarray:
        """Logits ``(n, L)`` float32 of already tokenised texts, in input order.

        With ``world_size > 1`` (training on several processes) each process runs a disjoint
        share of the length-sorted batches and ``gather`` collects the (index, logits) pairs,
        which are put back by index, so no example is duplicated or dropped.
        """
        parts_idx, parts_out = [], []
        for idx in eval_batches(encoded.lengths, self.batch_size, rank, world_size):
            batch = collate(encoded, idx, pad_id=self._pad_id)
            parts_idx.append(idx)
            parts_out.append(self._backend(batch["input_ids"], batch["attention_mask"]))
        mine = (
            np.concatenate(parts_idx) if parts_idx else np.zeros(0, np.int64),
            np.concatenate(parts_out) if parts_out else np.zeros((0, self.num_labels), np.float32),
        )
        parts = gather([mine]) if world_size > 1 and gather is not None else [mine]
        out = np.zeros((len(encoded), self.num_labels), dtype=np.float32)
        seen = np.zeros(len(encoded), dtype=bool)
        for idx, logits in parts:
            out[idx] = logits
            seen[idx] = True
        if not seen.all():  # a sharding bug would silently bias every metric
            raise RuntimeError(f"{int((~seen).sum())} examples were not scored")
        return out

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits ``(n, L)`` float32, in input order (length-sorted batches inside)."""
        texts = check_texts(texts)
        if not self._backend.takes_tokens:
            return self._backend.logits(texts)
        if not texts:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        return self.logits_for_encoded(self.encode(texts))

    def split_logits(self, split: Split, token_cache_dir: str | Path | None = None) -> np.ndarray:
        """`predict_logits` for a labelled split, reading token ids from the token cache."""
        if not self._backend.takes_tokens:
            return self._backend.logits(split.texts)
        return self.logits_for_encoded(encode_split(split, self.tokenizer, self.max_length, token_cache_dir))

    def predict_proba(self, texts: Sequence[str], taxonomy: str | None = None) -> np.ndarray:
        """Probabilities ``(n, L)`` float32, one column per label of `label_names`, in input order.

        With ``taxonomy`` (e.g. ``"ekman"``), one column per group of that taxonomy, each the
        max of its members' probabilities (`goemo.data.taxonomy.project_probs`).

        >>> clf.predict_proba(["I love it"])[0, clf.label_names.index("love")]   # doctest: +SKIP
        0.87
        """
        probs = sigmoid(self.predict_logits(texts)).astype(np.float32)
        tax = self._taxonomy(taxonomy) if taxonomy is not None else None
        return probs if tax is None else project_probs(probs, self.label_names, tax)

    # ------------------------------------------------------------------ decisions

    def predict(
        self,
        texts: Sequence[str],
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Per text, the predicted emotions as ``{"label", "score"}`` dicts, highest score first.

        By default a label is predicted when its probability is above its own threshold
        (strictly). ``threshold`` replaces every label's threshold; ``top_k`` returns the k
        highest-scoring labels whatever their score, or, with ``threshold`` too, at most k of
        those above it. With ``taxonomy="ekman"`` (or ``"sentiment"``, or a grouping file) the
        labels are groups: a group's score is the max of its members' probabilities, and a
        group is predicted when any member is above its own threshold.

        >>> clf.predict(["thanks so much!"], top_k=2)                 # doctest: +SKIP
        [[{'label': 'gratitude', 'score': 0.96}, {'label': 'admiration', 'score': 0.08}]]
        """
        return self.predict_from_proba(self.predict_proba(texts), top_k=top_k, threshold=threshold, taxonomy=taxonomy)

    def predict_from_proba(
        self,
        probs: np.ndarray,
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """`predict` on probabilities already computed with `predict_proba` (no taxonomy there).

        Lets a caller score many requests' texts in one batch, then decide per request with
        that request's own ``top_k`` and ``threshold``.
        """
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != self.num_labels:
            raise ConfigError(f"probs must have shape (n, {self.num_labels}), got {probs.shape}")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
            raise ConfigError(f"top_k={top_k!r}: expected an integer >= 1")
        if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
            raise ConfigError(f"threshold={threshold!r}: expected a number in [0, 1]")
        names, scores, on = self.decide(probs, threshold=threshold, taxonomy=taxonomy)
        if top_k is not None and threshold is None:
            on = np.ones_like(on)
        results: list[list[dict[str, Any]]] = []
        for row_scores, row_on in zip(scores, on):
            chosen = np.flatnonzero(row_on)
            chosen = chosen[np.argsort(-row_scores[chosen], kind="stable")]
            if top_k is not None:
                chosen = chosen[: int(top_k)]
            results.append([{"label": names[j], "score": float(row_scores[j])} for j in chosen])
        return results

    def decide(
        self, probs: np.ndarray, threshold: float | None = None, taxonomy: str | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(label names, scores, 0/1 decisions) for fine-label probabilities, optionally grouped.

        A group is on when any member is above its threshold, so grouping never changes which
        texts carry an emotion, only how finely it is named.

        >>> names, scores, on = clf.decide(clf.predict_proba(["yay"]), taxonomy="ekman")  # doctest: +SKIP
        """
        # Compared in float32, the probabilities' own precision: a probability printed as 0.3
        # is float32(0.3) > 0.3 in float64, and must not count as above a threshold of 0.3.
        t = self.thresholds if threshold is None else np.float32(threshold)
        on = binarize(probs, t) if len(probs) else np.zeros(probs.shape, np.uint8)
        tax = self._taxonomy(taxonomy) if taxonomy is not None else None
        if tax is None:
            return list(self.label_names), probs, on
        return list(tax.labels), project_probs(probs, self.label_names, tax), project_labels(on, self.label_names, tax)

    def label_names_for(self, taxonomy: str | None = None) -> list[str]:
        """The label names `predict_proba` columns stand for, with or without a taxonomy."""
        tax = self._taxonomy(taxonomy) if taxonomy is not None else None
        return list(self.label_names) if tax is None else list(tax.labels)

    def _taxonomy(self, taxonomy: str) -> Taxonomy | None:
        """The target taxonomy, or None when the model already predicts exactly its labels."""
        tax = load_taxonomy(taxonomy)
        if list(tax.labels) == self.label_names:
            return None
        missing = [m for group in (tax.groups or {}).values() for m in group if m not in self.label_names]
        if tax.groups is None or missing:
            raise ConfigError(
                f"taxonomy {taxonomy!r} cannot be derived from this model's labels "
                f"({', '.join(self.label_names[:5])}{', ...' if self.num_labels > 5 else ''})"
            )
        return tax
