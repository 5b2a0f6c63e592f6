"""Shared fixtures: the official data beside the checkout, and tiny models for fast tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GOEMO_SHARED_DATA", REPO.parent / "shared" / "goemotions"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The official simplified split (`../shared/goemotions`); never copied into the repo."""
    if not (SHARED_DATA / "train.tsv").is_file():
        pytest.fail(f"GoEmotions data not found at {SHARED_DATA}; set GOEMO_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def goemotions_splits(shared_data: Path):
    """The three official splits, read once per test session."""
    from goemo.data.io import load_goemotions

    return load_goemotions(shared_data)


@pytest.fixture()
def small_splits(goemotions_splits):
    """2,000 training and 300 dev/test texts: enough for a tiny model to learn something."""
    return {
        "train": goemotions_splits["train"].sample(2000, seed=1),
        "dev": goemotions_splits["dev"].sample(300, seed=1),
        "test": goemotions_splits["test"].sample(300, seed=1),
    }


def _tiny_run_config(root: Path, data: Path, **changes):
    from goemo.core.config import TrainConfig

    settings = dict(
        data_dir=str(data),
        model="tiny-random-bert",
        epochs=1,
        lr=1e-3,
        batch_size=32,
        max_length=48,
        max_train_samples=400,
        max_eval_samples=100,
        output=str(root / "run"),
        cache_dir=str(root / "cache"),
        precision="fp32",
    )
    return TrainConfig(**(settings | changes))


@pytest.fixture(scope="session")
def tiny_run_config(shared_data: Path):
    """``make(root, **changes)``: the TrainConfig of the session's tiny model (`tiny_model_dir`)
    under ``root``, with ``changes``, for tests that train another run like it (a second seed,
    bf16)."""
    return lambda root, **changes: _tiny_run_config(root, shared_data, **changes)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """``best/`` of a tiny run trained once per session (~10 s): for predict, serve and export tests."""
    from goemo.training.loop import train

    return Path(train(_tiny_run_config(tmp_path_factory.mktemp("tiny-model"), shared_data)).best_dir)


@pytest.fixture()
def tiny_config(tmp_path: Path, shared_data: Path):
    """A TrainConfig for the tiny random BERT on a data sample; tests override what they need."""
    from goemo.core.config import TrainConfig

    return TrainConfig(
        data_dir=str(shared_data),
        model="tiny-random-bert",
        epochs=2,
        lr=1e-3,
        batch_size=16,
        max_length=48,
        max_train_samples=2000,
        max_eval_samples=300,
        output=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        log_every=10,
        precision="fp32",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need CUDA: skipped, and said so, where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def go_emotions_dataset(tmp_path_factory: pytest.TempPathFactory, goemotions_splits):
    """A ``save_to_disk`` folder in the exact schema of the Hub's ``go_emotions`` / ``simplified``
    (text, labels: Sequence(ClassLabel(28 names)), id; splits train/validation/test), built from
    a sample of ``../shared/goemotions``; with the `Split`s `load_goemotions` read for those rows."""
    import datasets
    import numpy as np

    rows = {
        "train": goemotions_splits["train"].sample(400, seed=7),
        "dev": goemotions_splits["dev"].sample(120, seed=7),
        "test": goemotions_splits["test"].sample(120, seed=7),
    }
    names = rows["train"].label_names
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=names)),
            "id": datasets.Value("string"),
        }
    )
    parts = {}
    for hf_name, key in (("train", "train"), ("validation", "dev"), ("test", "test")):
        split = rows[key]
        labels = [np.flatnonzero(row).tolist() for row in split.labels]
        parts[hf_name] = datasets.Dataset.from_dict(
            {"text": split.texts, "labels": labels, "id": split.ids}, features=features
        )
    path = tmp_path_factory.mktemp("hf-datasets") / "go_emotions_simplified"
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path, rows


@pytest.fixture(scope="session")
def tiny_clf(tiny_model_dir: Path):
    """The tiny model loaded once, torch on the CPU: for tests of what runs around a model."""
    from goemo.predict.classifier import EmotionClassifier

    return EmotionClassifier.load(tiny_model_dir, backend="torch", device="cpu")


# Words that carry no label, and the one word that carries each label of `keyword_data`.
FILLER = (
    "the a of and to in is it that was for on are with as at be this have from or by one had not but what all were"
).split()
KEYWORDS = {"joy": "happy", "anger": "angry"}


def _write_keyword_data(folder: Path, train_texts: int = 240, seed: int = 0) -> dict[str, list[tuple[str, list[int]]]]:
    """A GoEmotions folder where each label is certain: a text carries ``joy`` exactly when it
    says "happy" and ``anger`` exactly when it says "angry" (four filler words besides). Ids are
    ``tr0``, ``de0``, ``te0``, ...; returns {split: [(id, label ids)]}.

    Small enough for the tiny random BERT to learn in seconds, so a planted label error is the
    one thing its out-of-fold predictions disagree with.
    """
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(KEYWORDS)
    written: dict[str, list[tuple[str, list[int]]]] = {}
    for split, count in (("train", train_texts), ("dev", 40), ("test", 20)):
        rows = []
        with open(folder / f"{split}.tsv", "w", encoding="utf-8") as f:
            for i in range(count):
                labels = [j for j in range(len(names)) if rng.random() < 0.35]
                words = rng.sample(FILLER, 4) + [KEYWORDS[names[j]] for j in labels]
                rng.shuffle(words)
                text_id = f"{split[:2]}{i}"
                f.write(" ".join(words) + "\t" + ",".join(map(str, labels)) + f"\t{text_id}\n")
                rows.append((text_id, labels))
        written[split] = rows
    (folder / "emotions.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return written


def _keyword_config(data: Path, root: Path, **changes):
    """A TrainConfig on which the tiny random BERT learns `_write_keyword_data`'s keywords (mean
    pooling, a high learning rate, twelve short epochs, the epoch of least dev loss): about 15 s for
    three folds on a quiet CPU. Checked to find four planted errors, and nothing else, with data seeds 0-3."""
    from goemo.core.config import TrainConfig

    settings = dict(
        data_dir=str(data),
        model="tiny-random-bert",
        pooling="mean",
        epochs=12,
        lr=5e-3,
        head_lr=2e-2,
        select_metric="val_loss",
        batch_size=8,
        max_length=12,
        cache_dir=str(root / "cache"),
        precision="fp32",
        device="cpu",
        seed=0,
        num_threads=1,
        log_every=1000,
    )
    return TrainConfig(**(settings | changes))


@pytest.fixture(scope="session")
def keyword_data():
    """``write(folder, train_texts=240, seed=0)``: a GoEmotions folder where each label is certain
    (`_write_keyword_data`), for tests that plant label errors in it."""
    return _write_keyword_data


@pytest.fixture(scope="session")
def keyword_config():
    """``make(data, root, **changes)``: the TrainConfig that learns `keyword_data` (`_keyword_config`)."""
    return _keyword_config
