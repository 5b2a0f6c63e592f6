"""Fast batches: tokenise once (cached on disk), bucket by length, pad only to the batch's longest.

Reddit comments are short (median ~15 word pieces) and skewed, so padding every batch to a
fixed length wastes most of the compute. Sorting inside large shuffled pools ("buckets")
keeps batches near-uniform in length while training order stays random.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goemo.core.errors import one_line
from goemo.core.fileio import atomic_write_bytes
from goemo.data.split import Split

log = logging.getLogger(__name__)
CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """``$GOEMO_CACHE_DIR``, else ``$XDG_CACHE_HOME/goemo``, else ``~/.cache/goemo``."""
    if os.environ.get("GOEMO_CACHE_DIR"):
        return Path(os.environ["GOEMO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "goemo"


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the token ids: vocabulary, normaliser, special tokens."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calling the tokenizer stores its last truncation/padding settings in the backend;
        # they are not part of its identity (max_length is keyed separately).
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode("utf-8"))
    else:  # slow tokenizers: fall back to the vocabulary and class
        h.update(type(tokenizer).__name__.encode())
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    return h.hexdigest()


@dataclass
class EncodedSplit:
    """Token ids of a split as one flat array plus offsets (no per-text Python objects)."""

    flat_ids: np.ndarray  # int32, all texts' ids concatenated
    offsets: np.ndarray  # int64, len n+1
    labels: np.ndarray  # float32 (n, L)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.flat_ids[self.offsets[i] : self.offsets[i + 1]]


def tokenize_texts(
    texts: Sequence[str], tokenizer, max_length: int, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` as (flat int32 ids, int64 offsets), truncated, unpadded."""
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    for start in range(0, len(texts), chunk):
        enc = tokenizer(
            list(texts[start : start + chunk]),
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        for ids in enc:
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return flat, offsets


def encode_split(
    split: Split, tokenizer, max_length: int, cache_dir: str | Path | None = None, use_cache: bool = True
) -> EncodedSplit:
    """Token ids for ``split``, read from the disk cache when the same data was seen before.

    The cache key covers the tokenizer, the max length and the data checksum, so changing
    any of them can never return stale ids. Files are plain ``.npz`` (no pickle).
    """
    labels = split.labels.astype(np.float32)
    if not use_cache:
        flat, offsets = tokenize_texts(split.texts, tokenizer, max_length)
        return EncodedSplit(flat, offsets, labels)
    key = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{max_length}|{split.checksum()}".encode()).hexdigest()[
        :32
    ]
    path = Path(cache_dir or default_cache_dir()) / "tokens" / f"{key}.npz"
    cached = _read_token_cache(path, len(split), tokenizer, max_length) if path.is_file() else None
    if cached is not None:
        return EncodedSplit(*cached, labels)
    flat, offsets = tokenize_texts(split.texts, tokenizer, max_length)
    buf = io.BytesIO()
    np.savez(buf, flat_ids=flat, offsets=offsets)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only cache must not stop training
        log.warning("cannot write token cache %s: %s", path, e)
    return EncodedSplit(flat, offsets, labels)


def _read_token_cache(path: Path, n: int, tokenizer, max_length: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(flat ids, offsets)`` of ``n`` texts, or None (with one warning) when the file is damaged.

    A truncated or overwritten file (a full disk, a copy cut short) must cost a re-tokenisation,
    never a crash or wrong ids: the caller tokenises again and replaces the file atomically, so
    the next run reads the rebuilt one.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            flat, offsets = z["flat_ids"], z["offsets"]
    except FileNotFoundError:  # removed since is_file(): another process cleaning up
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("token cache %s unreadable (%s); tokenising again", path, one_line(str(e)) or type(e).__name__)
        return None
    problem = _token_cache_problem(flat, offsets, n, tokenizer, max_length)
    if problem is not None:
        log.warning("token cache %s is damaged (%s); tokenising again", path, problem)
        return None
    return flat, offsets


def _token_cache_problem(flat: np.ndarray, offsets: np.ndarray, n: int, tokenizer, max_length: int) -> str | None:
    """Why cached arrays cannot be the token ids of ``n`` texts, or None when they can."""
    if flat.ndim != 1 or offsets.ndim != 1 or flat.dtype.kind not in "iu" or offsets.dtype.kind not in "iu":
        return "expected 1-d integer arrays"
    if len(offsets) != n + 1:
        return f"offsets for {len(offsets) - 1} texts, the split has {n}"
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != len(flat) or (lengths < 0).any() or (lengths > max_length).any():
        return "offsets do not cut the ids into texts"
    if len(flat) and (flat.min() < 0 or flat.max() >= len(tokenizer)):
        return "token ids outside the vocabulary"
    return None


class LengthBucketBatches:
    """Batches of similar length, in an order fixed by (seed, epoch), sharded across processes.

    Each epoch: shuffle all indices, cut them into pools of ``batch_size * pool_batches``,
    sort each pool by length, cut pools into batches, shuffle the batches. The order is a
    pure function of (seed, epoch), so a resumed run replays exactly the batches an
    uninterrupted run would see; ``start`` skips those already trained on.

    With ``world_size > 1`` the batch list is padded (by repeating its head) to a multiple of
    the world size and process ``rank`` takes every ``world_size``-th batch, so all processes
    step the same number of times.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        pool_batches: int = 50,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.pool = batch_size * pool_batches
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch (its order) and how many of this process's batches to skip."""
        self.epoch = epoch
        self.start = start

    def _global_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        batches: list[np.ndarray] = []
        for p in range(0, n, self.pool):
            pool = order[p : p + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]

    def _my_batches(self) -> list[np.ndarray]:
        batches = self._global_batches()
        if self.world_size > 1:
            total = math.ceil(len(batches) / self.world_size) * self.world_size
            batches = batches + batches[: total - len(batches)]
            batches = batches[self.rank :: self.world_size]
        return batches

    def __len__(self) -> int:
        """Batches per epoch for this process (before skipping); cheap: one permutation."""
        return len(self._my_batches())

    def __iter__(self) -> Iterator[np.ndarray]:
        yield from self._my_batches()[self.start :]


def collate(
    encoded: EncodedSplit, indices: np.ndarray, pad_id: int = 0, pad_to_multiple: int = 1
) -> dict[str, np.ndarray]:
    """Pad the chosen texts to their own longest length (optionally rounded up for tensor cores).

    Plain numpy arrays, so the ONNX and TF-IDF paths need no torch; the torch backend and the
    training loop wrap them with ``torch.from_numpy`` (no copy).
    """
    lens = encoded.lengths[indices]
    width = int(lens.max()) if len(lens) else 1
    if pad_to_multiple > 1:
        width = int(math.ceil(width / pad_to_multiple) * pad_to_multiple)
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        seq = encoded.ids(int(i))
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": encoded.labels[indices],
        "index": np.asarray(indices, dtype=np.int64),
    }


def eval_batches(lengths: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Length-sorted batches for inference; each example goes to exactly one process.

    No padding of the example list: callers gather (index, output) pairs and put them back
    in input order, so nothing is duplicated or dropped when n is not divisible by the world size.
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    mine = order[rank::world_size]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
