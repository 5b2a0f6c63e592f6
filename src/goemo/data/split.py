"""The one object a loaded dataset split becomes; everything downstream takes it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)  # arrays make field-wise == ambiguous; compare checksum()
class Split:
    """Texts with their multi-hot labels.

    Labels are a dense ``(n, L)`` uint8 matrix rather than lists of ids because every
    consumer (statistics, BCE loss, metrics) wants the matrix, and 58k x 28 bytes is tiny.

    >>> s = Split(["hi", "yo"], ["a", "b"], np.array([[1, 0], [0, 1]], np.uint8), ["joy", "anger"])
    >>> len(s), s.label_names[1]
    (2, 'anger')
    """

    texts: list[str]
    ids: list[str]
    labels: np.ndarray
    label_names: list[str]
    name: str = "split"
    source: Path | str | None = field(default=None, compare=False)  # a file, or "dataset NAME[/CONFIG]:split"

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.ids) != n:
            raise ValueError(f"{n} texts but {len(self.ids)} ids")
        if self.labels.ndim != 2 or self.labels.shape != (n, len(self.label_names)):
            raise ValueError(f"labels must have shape ({n}, {len(self.label_names)}), got {self.labels.shape}")
        if self.labels.dtype != np.uint8:
            object.__setattr__(self, "labels", self.labels.astype(np.uint8))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Split:
        """A new split holding the rows at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Split(
            [self.texts[i] for i in idx],
            [self.ids[i] for i in idx],
            self.labels[idx],
            list(self.label_names),
            name or self.name,
            self.source,
        )

    def sample(self, n: int, seed: int = 0, name: str | None = None) -> Split:
        """A reproducible random subset of at most ``n`` rows, for quick experiments and tests."""
        if n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        return self.subset(np.sort(rng.choice(len(self), size=n, replace=False)), name)

    def checksum(self) -> str:
        """sha256 of the content, used to key caches (token ids, predictions) to the exact data."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        h.update(np.ascontiguousarray(self.labels).tobytes())
        h.update("\0".join(self.label_names).encode("utf-8"))
        return h.hexdigest()
