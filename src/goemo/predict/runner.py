"""Running a token backend over texts: the max length to truncate to, and length-sorted batches.

The classifier, the ONNX export's parity check and the CPU export's dev check all run their
graphs through `logits_in_order`, so what the checks measure is what ``goemo predict`` and
``goemo serve`` compute. It lives below the classifier because the export code, which the
classifier calls, cannot import the classifier back. Texts are tokenised once without padding,
sorted by length and cut into batches padded to their own longest text
(`goemo.data.batching.eval_batches`); outputs are put back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from goemo.core.calibration import Calibration
from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import META_FILE, ModelFolder
from goemo.core.thresholds import sigmoid
from goemo.data.batching import EncodedSplit, collate, eval_batches, tokenize_texts

# Where neither the folder nor the tokenizer says: BERT-family position limit.
MAX_LENGTH_CAP = 512
# transformers sets a tokenizer's model_max_length to int(1e30) when its config does not say.
_UNSET_TOKENIZER_LIMIT = 10**9
# Gathers one picklable object per process (accelerate.utils.gather_object in training).
Gather = Callable[[list[Any]], list[Any]]


def check_max_length(folder: ModelFolder, max_length: int | None) -> None:
    """Refuse a max length the model cannot take, from ``config.json`` alone (before anything loads),
    so that the first long text cannot crash a run half-way: asked for, a `ConfigError`; saved in
    ``goemo.json``, a `ModelError` naming the file and field (`ModelFolder.max_length`).

        check_max_length(ModelFolder.open("runs/x/best"), 1000)
        # -> Traceback (most recent call last):
        # -> goemo.core.errors.ConfigError: max_length=1000: the model takes at most 512 tokens (config.json max_position_embeddings 512)
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
    """The max length to truncate to: the one asked for, else the folder's, else the most the model
    takes; checked against the tokenizer's own limit too, with `check_max_length`'s errors."""
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


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's padding id (0 when it has none)."""
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    return int(pad) if pad is not None else 0


def logits_in_order(
    backend: Callable[[np.ndarray, np.ndarray], np.ndarray],
    encoded: EncodedSplit,
    *,
    batch_size: int,
    pad_id: int,
    num_labels: int,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> np.ndarray:
    """Logits ``(n, L)`` float32 of already tokenised texts, in input order.

    With ``world_size > 1`` (training on several processes) each process runs its share of the
    batches and ``gather`` collects the (index, logits) pairs, put back by index: none lost or doubled.
    """
    parts_idx, parts_out = [], []
    for idx in eval_batches(encoded.lengths, batch_size, rank, world_size):
        batch = collate(encoded, idx, pad_id=pad_id)
        parts_idx.append(idx)
        parts_out.append(backend(batch["input_ids"], batch["attention_mask"]))
    mine = (
        np.concatenate(parts_idx) if parts_idx else np.zeros(0, np.int64),
        np.concatenate(parts_out) if parts_out else np.zeros((0, num_labels), np.float32),
    )
    parts = gather([mine]) if world_size > 1 and gather is not None else [mine]
    out = np.zeros((len(encoded), num_labels), dtype=np.float32)
    seen = np.zeros(len(encoded), dtype=bool)
    for idx, logits in parts:
        out[idx] = logits
        seen[idx] = True
    if not seen.all():  # a sharding bug would silently bias every metric
        raise RuntimeError(f"{int((~seen).sum())} examples were not scored")
    return out


def encode_texts(texts: Sequence[str], tokenizer: Any, max_length: int) -> EncodedSplit:
    """Token ids of ``texts`` (truncated to ``max_length``, unpadded), with no labels."""
    flat, offsets = tokenize_texts(texts, tokenizer, max_length)
    return EncodedSplit(flat, offsets, np.zeros((len(offsets) - 1, 0), np.float32))


def probs_of_texts(
    backend: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    num_labels: int,
    calibration: Calibration | None = None,
) -> np.ndarray:
    """Probabilities ``(n, L)`` float32 of ``texts``, as `EmotionClassifier.predict_proba` computes them
    (the sigmoid, then ``calibration``'s parts that are not folded into the weights)."""
    encoded = encode_texts(texts, tokenizer, max_length)
    logits = logits_in_order(
        backend, encoded, batch_size=batch_size, pad_id=pad_id_of(tokenizer), num_labels=num_labels
    )
    if calibration is not None:
        return calibration.backend_probabilities(logits, np.float32)
    return sigmoid(logits).astype(np.float32)
