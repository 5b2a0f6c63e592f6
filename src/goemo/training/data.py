"""The splits a run trains on: read, cleaned, without a held-out fold, sampled, checked, batched.

Apart from the loop because the sweep runner reads the data once for all its trials and the
loop narrows each trial's copy; both must see exactly the texts training used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError, DataError
from goemo.data.batching import EncodedSplit, LengthBucketBatches
from goemo.data.corrections import read_corrections, read_exclusions
from goemo.data.download import sha256_file
from goemo.data.folds import fold_of
from goemo.data.source import DataSource
from goemo.data.split import Split


def load_training_data(config: TrainConfig) -> dict[str, Split]:
    """The splits the config's data source names; one without a dev split is refused (dev selects the model)."""
    source = DataSource.from_config(config.to_dict())
    if source.kind == "files" and "dev" not in source.files:
        raise ConfigError("--dev FILE is needed with --train (model selection uses the dev split)")
    splits = source.splits()
    missing = [name for key, name in (("train", "train"), ("dev", "validation")) if key not in splits]
    if missing:
        has = ", ".join(str(split.source).rpartition(":")[2] for split in splits.values())
        raise ConfigError(
            f"{source.describe()} has splits {has}; training needs {' and '.join(missing)} too "
            "(validation, or dev, selects the model)"
        )
    return {key: splits[key] for key in ("train", "dev", "test") if key in splits}


@dataclasses.dataclass(frozen=True)
class Cleaning:
    """What ``--exclude`` and ``--corrections`` did to the training split, kept in ``goemo.json`` and the card.

    ``labels_changed`` (``added`` + ``removed``) counts the texts kept; a correction the data
    already holds is ``unchanged``.
    """

    texts_excluded: int = 0
    labels_changed: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    exclude: dict[str, str] | None = None  # {"file": absolute path, "sha256": ...}
    corrections: dict[str, str] | None = None

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for logs and model cards.

        >>> Cleaning(3, 2, 1, 1, exclude={"file": "/a/x.txt", "sha256": "ab12"}).describe()
        'cleaned with: 3 texts excluded, 2 labels changed (1 added, 1 removed), from /a/x.txt sha256 ab12'
        """
        files = [f"{f['file']} sha256 {f['sha256']}" for f in (self.exclude, self.corrections) if f]
        return (
            f"cleaned with: {self.texts_excluded:,} texts excluded, {self.labels_changed:,} labels changed "
            f"({self.added:,} added, {self.removed:,} removed), from {' and '.join(files)}"
        )


def clean_train(config: TrainConfig, splits: dict[str, Split]) -> Cleaning | None:
    """Apply ``config.exclude`` and ``config.corrections`` to ``splits["train"]`` (written back); None without them.

    Dev and test keep their labels, so a cleaned model is scored as any other. An id or label
    the files name that the split lacks is a `DataError` naming file, line and field: a typo
    would otherwise clean nothing, silently.
    """
    if not config.exclude and not config.corrections:
        return None
    train = splits["train"]
    rows: dict[str, list[int]] = {}
    for i, text_id in enumerate(train.ids):
        rows.setdefault(str(text_id), []).append(i)
    labels = np.array(train.labels, copy=True)
    column = {name: j for j, name in enumerate(train.label_names)}
    drop: set[int] = set()
    record: dict[str, Any] = {}
    if config.exclude:
        path = Path(config.exclude)
        for entry in read_exclusions(path):
            drop.update(_rows_of(rows, entry.id, path, entry.line))
        record["exclude"] = {"file": str(path.resolve()), "sha256": sha256_file(path)}
    changed: dict[tuple[int, int], str] = {}
    unchanged = 0
    if config.corrections:
        path = Path(config.corrections)
        for fix in read_corrections(path):
            found = _rows_of(rows, fix.id, path, fix.line)
            if fix.label not in column:
                raise DataError(
                    f"unknown label {fix.label!r} (the training labels: {_names(train.label_names)})",
                    path=path,
                    line=fix.line,
                    field="label",
                )
            j, value = column[fix.label], 1 if fix.action == "add" else 0
            for i in found:
                if labels[i, j] == value and (i, j) not in changed:
                    unchanged += 1
                    continue
                labels[i, j] = value
                changed[(i, j)] = fix.action
        record["corrections"] = {"file": str(path.resolve()), "sha256": sha256_file(path)}
    keep = np.array([i for i in range(len(train)) if i not in drop], dtype=np.int64)
    kept_changes = [action for (i, _), action in changed.items() if i not in drop]
    cleaned = Split(
        [train.texts[i] for i in keep],
        [train.ids[i] for i in keep],
        labels[keep],
        list(train.label_names),
        train.name,
        train.source,
    )
    splits["train"] = cleaned
    added = kept_changes.count("add")
    return Cleaning(
        texts_excluded=len(drop),
        labels_changed=len(kept_changes),
        added=added,
        removed=len(kept_changes) - added,
        unchanged=unchanged,
        **record,
    )


def _rows_of(rows: dict[str, list[int]], text_id: str, path: Path, line: int) -> list[int]:
    found = rows.get(text_id)
    if not found:
        raise DataError(f"unknown id {text_id!r}: no training text has it", path=path, line=line, field="id")
    return found


def _names(names: Sequence[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f", … ({len(names)} in all)" if len(names) > shown else "")


def prepare_splits(config: TrainConfig, splits: dict[str, Split]) -> dict[str, Split]:
    """``splits`` narrowed as this run trains on them, written back, so a caller sees the texts training scored."""
    if "train" not in splits or "dev" not in splits:
        raise ConfigError("training needs a 'train' and a 'dev' split")
    if config.holdout_fold is not None:  # a cross-fitted teacher: its predictions on this fold are out of sample
        keep = np.flatnonzero(fold_of(splits["train"].ids, config.num_folds) != config.holdout_fold)
        splits["train"] = splits["train"].subset(keep)
    if config.max_train_samples:
        splits["train"] = splits["train"].sample(config.max_train_samples, seed=config.seed)
    if config.max_eval_samples:
        for key in ("dev", "test"):
            if key in splits:
                splits[key] = splits[key].sample(config.max_eval_samples, seed=config.seed)
    label_names = splits["train"].label_names
    for key, split in splits.items():
        if split.label_names != label_names:
            raise ConfigError(f"split {key!r} has labels {split.label_names[:3]}…, not those of train")
    return splits


def train_batches(train: EncodedSplit, config: TrainConfig, rank: int = 0, world_size: int = 1) -> LengthBucketBatches:
    """This process's share of the length-bucketed batches, ordered by (seed, epoch) alone: resuming replays it."""
    return LengthBucketBatches(train.lengths, config.batch_size, seed=config.seed, rank=rank, world_size=world_size)
