"""``goemo train --init-from``: a run that starts from a trained model folder.

With the folder's labels the whole model continues (its head included); with other labels the
encoder is the folder's and the head is new. The weights are checked as training built them,
before its first step (a spy on `build_from_folder` as the loop calls it), against the source
folder's safetensors.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import goemo.training.loop as loop
from goemo.cli.sweep import BASE_OPTIONS
from goemo.core.config import TrainConfig
from goemo.core.errors import EvaluationError, ModelError
from goemo.core.folder import ModelFolder
from goemo.data.source import read_split
from goemo.evaluation.evaluate import check_taxonomy
from goemo.models.modeling import build_from_folder, build_tiny_model, model_pooling, resolve_model_name, save_model
from goemo.training.preflight import check_init_from

OWN_LABELS = ["praise", "complaint", "question"]
OWN_ROWS = [
    ("Great service, thank you all!", "praise"),
    ("The parcel came late and broken.", "complaint"),
    ("Do you ship to Norway?", "question"),
    ("Late again and nobody answers, why?", "complaint,question"),
    ("Lovely staff, quick answers.", "praise"),
    ("How long does a refund take?", "question"),
]


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """The weights `train` built from ``--init-from``, copied before the first step."""
    seen: dict[str, torch.Tensor] = {}
    real = loop.build_from_folder

    def spy(*args, **kwargs):
        model, kept = real(*args, **kwargs)
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model, kept

    monkeypatch.setattr(loop, "build_from_folder", spy)
    return seen


def _own_files(folder: Path) -> dict[str, str]:
    """train.csv and dev.csv with a label set of their own (three labels GoEmotions does not have)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, repeat in (("train", 8), ("dev", 4)):
        path = folder / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "labels"])
            writer.writerows(OWN_ROWS * repeat)
        paths[name] = str(path)
    return paths


def _card(best: Path) -> str:
    return (best / "README.md").read_text(encoding="utf-8")


def test_same_labels_continue_the_source_head(tiny_model_dir: Path, tiny_config, started) -> None:
    result = loop.train(tiny_config.replace(epochs=1, max_train_samples=200, init_from=str(tiny_model_dir)))
    source = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(started) == set(source)
    for name in ("classifier.weight", "classifier.bias"):
        assert torch.equal(started[name], source[name])
    assert torch.equal(
        started["bert.embeddings.word_embeddings.weight"], source["bert.embeddings.word_embeddings.weight"]
    )
    meta = json.loads((result.best_dir / "goemo.json").read_text())
    assert meta["init_from"] == {
        "path": str(tiny_model_dir.resolve()),
        "labels_kept": True,
        "model": "tiny-random-bert",
    }
    assert ModelFolder.open(result.best_dir).init_from == meta["init_from"]
    assert f"Fine-tuned from `{tiny_model_dir.resolve()}`: its encoder, with its classification head continued" in (
        _card(result.best_dir)
    )


def test_new_labels_get_a_new_head_on_the_source_encoder(tiny_model_dir: Path, tiny_config, tmp_path, started) -> None:
    files = _own_files(tmp_path / "own")
    config = tiny_config.replace(
        data_dir=None, train_file=files["train"], dev_file=files["dev"], epochs=1, init_from=str(tiny_model_dir)
    )
    result = loop.train(config)
    source = load_file(str(tiny_model_dir / "model.safetensors"))
    encoder = [k for k in source if k.startswith("bert.")]
    assert encoder and all(torch.equal(started[k], source[k]) for k in encoder)
    hidden = source["classifier.weight"].shape[1]
    assert started["classifier.weight"].shape == (len(OWN_LABELS), hidden)
    assert torch.count_nonzero(started["classifier.bias"]) == 0  # BERT's fresh head: normal weights, zero bias
    assert not torch.equal(started["classifier.weight"], source["classifier.weight"][: len(OWN_LABELS)])
    best = ModelFolder.open(result.best_dir)
    assert sorted(best.label_names) == sorted(OWN_LABELS)
    assert best.init_from == {"path": str(tiny_model_dir.resolve()), "labels_kept": False, "model": "tiny-random-bert"}
    assert "with a new classification head for these labels" in _card(result.best_dir)
    # labels of its own: not GoEmotions, so no taxonomy claims it and nothing projects it onto groups
    assert best.taxonomy == "own" and "(3 labels, labels of its own)" in _card(result.best_dir)
    with pytest.raises(EvaluationError, match="labels of its own"):
        check_taxonomy(best, "ekman")
    assert read_split(best, "dev").label_names == best.label_names  # its own data, read as recorded
    # the tokenizer is the source folder's
    assert AutoTokenizer.from_pretrained(result.best_dir).get_vocab() == (
        AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()
    )


def test_a_hugging_face_dataset_starts_from_the_folder_too(
    tiny_model_dir: Path, tiny_config, go_emotions_dataset
) -> None:
    path, _ = go_emotions_dataset
    config = tiny_config.replace(data_dir=None, dataset=str(path), epochs=1, init_from=str(tiny_model_dir))
    result = loop.train(config)
    assert ModelFolder.open(result.best_dir).init_from["labels_kept"] is True


def test_a_mean_pooling_source_keeps_its_head_type_and_encoder(tmp_path: Path) -> None:
    source = build_tiny_model(["joy", "anger"], pooling="mean")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    save_model(source, tokenizer, tmp_path / "src", {})
    model, kept = build_from_folder(tmp_path / "src", OWN_LABELS, dropout=0.2)
    assert not kept and model_pooling(model) == "mean" and model.config.classifier_dropout == 0.2
    assert model.classifier.weight.shape[0] == len(OWN_LABELS)
    before = source.encoder.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in model.encoder.state_dict().items())
    again, kept = build_from_folder(tmp_path / "src", ["joy", "anger"])
    assert kept and torch.equal(again.classifier.weight, source.classifier.weight)
    # the same names in another order are another head: each row scores a label by its place
    _, kept = build_from_folder(tmp_path / "src", ["anger", "joy"])
    assert not kept


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: root / "missing", "no such folder"),
        (lambda root: _touch(root / "empty" / "config.json", "{}"), "holds neither model.onnx nor model.safetensors"),
        (lambda root: Path(resolve_model_name("minilm")), "not a trained classifier"),
        (
            lambda root: _touch(root / "run" / "best" / "config.json", "{}").parent,
            "a run folder; give its model folder",
        ),
    ],
    ids=["missing", "no-weights", "plain-encoder", "run-folder"],
)
def test_a_folder_that_cannot_start_a_run_is_one_line_and_exit_1(tmp_path: Path, shared_data, make, expected) -> None:
    from typer.testing import CliRunner

    from goemo.cli import app

    folder = make(tmp_path)
    args = ["train", "--init-from", str(folder), "--data-dir", str(shared_data), "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"--init-from {folder}" in lines[0] and expected in lines[0]
    assert not (tmp_path / "out").exists()  # refused before the run folder is touched
    with pytest.raises(ModelError, match=expected):
        check_init_from(TrainConfig(init_from=str(folder)))


def _touch(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.parent


def test_sweeps_take_init_from_as_a_base_option() -> None:
    assert "init_from" in BASE_OPTIONS
    assert TrainConfig(init_from="runs/a/best").encoder_source == "runs/a/best"
    assert TrainConfig(model="minilm").encoder_source == "minilm"
