"""The splits a run trains on: read them, leave out a cross-fitting fold, sample them, check
them, and batch the training texts.

Kept apart from the loop because the sweep runner reads the data once for all of its trials
(`load_training_data`) and the loop then narrows each trial's copy (`prepare_splits`); both must
see exactly the texts training used.
"""

from __future__ import annotations

import numpy as np

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.data.batching import EncodedSplit, LengthBucketBatches
from goemo.data.folds import fold_of
from goemo.data.source import DataSource
from goemo.data.split import Split


def load_training_data(config: TrainConfig) -> dict[str, Split]:
    """The splits the config's data source names (`goemo.data.source.DataSource.from_config`).

    A source that has no dev split is refused here: the dev split selects the model.

        splits = load_training_data(TrainConfig(data_dir="data/goemotions"))
        sorted(splits)
        # -> ['dev', 'test', 'train']
    """
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


def prepare_splits(config: TrainConfig, splits: dict[str, Split]) -> dict[str, Split]:
    """``splits`` as this run trains on them: without the held-out fold, sampled, checked.

    The narrowed splits are written back into ``splits`` (and it is returned): a caller that
    passed its own dict, like the sweep runner, sees the dev texts training scored.
    """
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
    """This process's share of the length-bucketed training batches.

    The order is a function of (seed, epoch) alone, so a resumed run replays it exactly
    (``set_epoch(epoch, start=batches_done)``).
    """
    return LengthBucketBatches(train.lengths, config.batch_size, seed=config.seed, rank=rank, world_size=world_size)
