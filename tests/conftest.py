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
