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
from goemo.data.hf_datasets import describe, load_hf_dataset
from goemo.data.io import load_goemotions, load_split, read_label_names
from goemo.data.split import Split


def load_training_data(config: TrainConfig) -> dict[str, Split]:
    """The splits named by the config: a Hugging Face dataset, explicit files, or a GoEmotions folder.

    >>> splits = load_training_data(TrainConfig(data_dir="data/goemotions"))  # doctest: +SKIP
    >>> sorted(splits)  # doctest: +SKIP
    ['dev', 'test', 'train']
    >>> hub = load_training_data(TrainConfig(dataset="go_emotions", dataset_config="simplified"))  # doctest: +SKIP
    >>> hub["dev"].source  # doctest: +SKIP
    'dataset go_emotions/simplified:validation'
    """
    if config.dataset:
        return _load_dataset(config, config.dataset)
    if config.train_file:
        names = read_label_names(config.labels_file) if config.labels_file else None
        out: dict[str, Split] = {}
        for key, path in (("train", config.train_file), ("dev", config.dev_file), ("test", config.test_file)):
            if path:
                out[key] = load_split(
                    path, label_names=names, text_column=config.text_column, label_column=config.label_column
                )
                names = names or out[key].label_names
        if "dev" not in out:
            raise ConfigError("--dev FILE is needed with --train (model selection uses the dev split)")
        return out
    if not config.data_dir:
        raise ConfigError("no data: give --data-dir or --train/--dev files")
    return load_goemotions(config.data_dir, taxonomy=config.taxonomy)


def _load_dataset(config: TrainConfig, dataset: str) -> dict[str, Split]:
    """``--dataset``: its train, validation (goemo's dev) and test splits; the first two are needed."""
    loaded = load_hf_dataset(
        dataset,
        config.dataset_config,
        text_column=config.text_column,
        label_column=config.label_column,
        label_names=read_label_names(config.labels_file) if config.labels_file else None,
        taxonomy=config.taxonomy,
    )
    missing = [name for key, name in (("train", "train"), ("dev", "validation")) if key not in loaded]
    if missing:
        has = ", ".join(str(split.source).rpartition(":")[2] for split in loaded.values())
        raise ConfigError(
            f"dataset {describe(dataset, config.dataset_config)} has splits {has}; "
            f"training needs {' and '.join(missing)} too (validation, or dev, selects the model)"
        )
    return {key: loaded[key] for key in ("train", "dev", "test") if key in loaded}


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
