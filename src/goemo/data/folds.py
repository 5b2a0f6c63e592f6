"""Which fold of the training texts each text belongs to, for cross-fitted teachers.

A teacher that memorised its training texts predicts them close to their 0/1 labels, so
distilling from it passes on little beyond the labels. A teacher that held one fold out
predicts that fold the way it predicts dev. With one teacher per fold every training text gets
an out-of-sample prediction. (On the focal-loss `fast` recipe the teachers memorise little and
this does not help; docs/benchmarks.md has the measurement.)

Folds come from a hash of each text's id rather than its position, so every run (teachers
and students, any seed, any ``max_train_samples``) puts a text in the same fold.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def fold_of(ids: Sequence[str], num_folds: int) -> np.ndarray:
    """The fold (0 .. num_folds-1) of each id: CRC-32 of its UTF-8 bytes, modulo ``num_folds``.

    >>> fold_of(["eew5j0j", "ed2mah1"], 3).tolist()
    [0, 1]
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    return np.fromiter((zlib.crc32(str(i).encode("utf-8")) % num_folds for i in ids), dtype=np.int64, count=len(ids))
