"""The model card (README.md of best/ and of exports): Hub metadata, measured numbers, per-label table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from goemo.core.folder import ModelFolder
from goemo.models.card import (
    BASE_MODELS,
    CardFacts,
    DataOrigin,
    LabelRow,
    base_model,
    build_model_card,
    default_model_name,
    write_model_card,
)

# model-index metric name -> summary.json key
INDEX_KEYS = {
    "Macro F1 @ 0.3": "f1_macro",
    "Macro F1 @ dev-tuned thresholds": "f1_macro_tuned",
    "Micro F1 @ 0.3": "f1_micro",
    "Macro ROC-AUC": "auc_macro",
}
SPLITS = {"validation": "dev", "test": "test"}


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table under ``heading``."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def check_index_matches(card: ModelCard, metrics: dict) -> int:
    """Every model-index value equals ``metrics[split][key]``; returns how many there are."""
    seen = 0
    for result in card.data.eval_results:
        split = SPLITS[result.dataset_split]
        assert result.metric_value == metrics[split][INDEX_KEYS[result.metric_name]], result
        assert result.task_type == "text-classification" and result.dataset_type == "go_emotions"
        seen += 1
    return seen


def test_card_after_training_parses_and_matches_summary(tiny_model_dir: Path) -> None:
    summary = json.loads((tiny_model_dir.parent / "summary.json").read_text())
    card = ModelCard.load(tiny_model_dir / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert data["license"] == "apache-2.0" and data["datasets"] == ["go_emotions"] and data["language"] == "en"
    assert "base_model" not in data  # the tiny random model has none
    assert {"goemo", "multi-label-classification", "go_emotions"} <= set(data["tags"])
    index = data["model-index"]
    assert len(index) == 1 and index[0]["name"] == "goemo-run"
    assert check_index_matches(card, summary) == 8  # 4 metrics x dev and test (all finite here)

    text = card.text
    rows = _table_rows(text, "## Per-label results")
    folder = ModelFolder.open(tiny_model_dir)
    assert [r[0] for r in rows] == folder.label_names and len(rows) == 28
    assert [float(r[1]) for r in rows] == pytest.approx(folder.thresholds().tolist(), abs=5e-4)
    assert "On the test split, at the per-label thresholds tuned on dev" in text
    for heading in (
        "## How to use",
        "## Results",
        "## How the thresholds and the epoch were chosen",
        "## Training data",
        "## Training configuration",
        "## Hardware and time",
        "## Limitations",
    ):
        assert heading in text, heading
    assert 'pipeline("text-classification"' in text and "cfg.thresholds" in text and "EmotionClassifier" in text
    assert "trust_remote_code" not in text  # BERT's own head needs no custom code
    # the data: sizes and checksums of the splits trained and scored on
    data_rows = {r[0]: r for r in _table_rows(text, "## Training data")}
    assert data_rows["train"][1] == "400" and data_rows["test"][1] == "100"
    assert data_rows["dev"][2] == f"`{folder.data_checksums['dev']}`"
    # rare labels come from the training label counts kept in goemo.json
    counts = CardFacts.from_dict(folder.card_facts).train_label_counts
    assert sum(counts.values()) > 0
    rare = [n for n, c in counts.items() if c < 100]
    assert rare and all(f"{n} ({counts[n]})" in text for n in rare)
    assert "Reddit" in text and "disagree" in text
    # the intervals: bootstrap_scores on the test probabilities training cached, at the tuned thresholds
    facts = CardFacts.from_dict(folder.card_facts)
    assert facts.intervals is not None and facts.intervals["n_resamples"] == 1000
    f1 = facts.intervals["f1_macro"]
    assert f1["low"] <= summary["test"]["f1_macro_tuned"] <= f1["high"]
    assert f1["estimate"] == pytest.approx(summary["test"]["f1_macro_tuned"], abs=1e-9)
    spans = {r[0]: r[5] for r in rows}
    for name, interval in facts.intervals["f1_per_label"].items():
        want = "–" if interval["low"] is None else f"{interval['low']:.3f}–{interval['high']:.3f}"
        assert spans[name] == want
    assert f"({f1['low']:.3f}–{f1['high']:.3f})" in text and "1,000 resamples of the 100 texts" in text


def test_card_from_a_folder_and_its_summary_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What `make run`'s folder gets: the builder on best/ + summary.json, facts from goemo.json."""
    summary = json.loads((tiny_model_dir.parent / "summary.json").read_text())
    card = build_model_card(tiny_model_dir, summary, model_name="goemo-x", license="mit")
    path = write_model_card(tmp_path, card)
    again = ModelCard.load(path)
    assert again.data.license == "mit" and again.data.model_name == "goemo-x"
    assert check_index_matches(again, summary) == 8
    assert len(_table_rows(again.text, "## Per-label results")) == 28


def _folder(tmp_path: Path, model: str, **meta) -> ModelFolder:
    names = ["joy", "anger", "grief"]
    config = {"id2label": dict(enumerate(names)), "model_type": "goemo-mean-pool", "encoder": {}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return ModelFolder(
        tmp_path,
        {"label_names": names, "training_config": {"model": model, "data_dir": "data/goemotions"}, **meta},
    )


def test_base_model_of_aliases_hub_ids_and_local_folders(tmp_path: Path) -> None:
    assert base_model("minilm") == BASE_MODELS["minilm"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model("roberta-base") == "roberta-base"
    assert base_model("squeezebert/squeezebert-uncased") == "squeezebert/squeezebert-uncased"
    assert base_model(str(tmp_path)) is None and base_model("runs/x/best") is None
    assert base_model("tiny-random-bert") is None and base_model(None) is None
    card = build_model_card(_folder(tmp_path, "minilm"))
    assert card.data.to_dict()["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_card_without_measurements_still_parses(tmp_path: Path) -> None:
    """A folder no training finished (no metrics, no facts): metadata and usage, no model-index."""
    folder = _folder(tmp_path, "roberta-base")
    card = build_model_card(folder)
    write_model_card(tmp_path, card)
    again = ModelCard.load(tmp_path / "README.md")
    data = again.data.to_dict()
    assert data["base_model"] == "roberta-base" and "model-index" not in data
    assert "trust_remote_code=True" in again.text and "modeling_goemo.py" in again.text
    assert "## Per-label results" not in again.text


def test_per_label_rows_show_undefined_scores_and_rare_labels(tmp_path: Path) -> None:
    facts = CardFacts(
        per_label=[
            LabelRow("joy", 0.4, 0.5, 0.25, 0.333, 0.8, 4),
            LabelRow("anger", 0.35, 1.0, 0.5, 0.667, 0.9, 2),
            LabelRow("grief", 0.5, None, None, None, None, 0),
        ],
        per_label_split="dev",
        train_label_counts={"joy": 1200, "anger": 300, "grief": 77},
    )
    text = build_model_card(_folder(tmp_path, "minilm"), facts=facts).text
    rows = _table_rows(text, "## Per-label results")
    assert rows[2] == ["grief", "0.500", "–", "–", "–", "–", "0", "77"]
    assert "On the dev split" in text
    assert re.search(r"Rare labels, under 100 training examples: grief \(77\)\.", text)
    assert CardFacts.from_dict(facts.to_dict()) == facts


def _trained_on(tmp_path: Path, facts: CardFacts | None = None, **data: str) -> ModelCard:
    """The card of a folder whose training read ``data`` (dataset, dataset_config, train_file...)."""
    names = ["joy", "anger"]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": dict(enumerate(names)), "model_type": "bert"}))
    metrics = {"dev": {"f1_macro": 0.5, "f1_micro": 0.6, "auc_macro": 0.7}}
    training = {"model": "minilm", "data_dir": "data/goemotions", **data}  # data_dir: its default, always there
    folder = ModelFolder(tmp_path, {"label_names": names, "training_config": training, "metrics": metrics})
    return build_model_card(folder, facts=facts)


def test_a_local_dataset_folder_is_named_and_not_linked_to_the_hub(tmp_path: Path) -> None:
    local = tmp_path / "my-data"
    local.mkdir()
    card = _trained_on(tmp_path, dataset=str(local))
    data = card.data.to_dict()
    assert "datasets" not in data and "language" not in data and "go_emotions" not in data["tags"]
    assert "huggingface.co/datasets" not in card.text and "Demszky" not in card.text and "Reddit" not in card.text
    assert f"A local dataset: `{local}` (not from the Hugging Face Hub)." in card.text
    assert f"fine-tuned on a local dataset (`{local}`)" in card.text
    (result,) = [r for r in card.data.eval_results if r.metric_name == "Macro ROC-AUC"]
    assert (result.dataset_type, result.dataset_name, result.dataset_config) == ("custom", "my-data", None)


def test_the_data_origin_training_saw_is_kept_for_a_card_made_elsewhere(tmp_path: Path) -> None:
    """``data/mine`` looks like a Hub id (OWNER/NAME) where it does not exist: training recorded it as local."""
    assert DataOrigin("local", "data/mine").hub_id is None
    facts = CardFacts(data_origin={"kind": "local", "name": "data/mine", "config": None})
    card = _trained_on(tmp_path, facts=facts, dataset="data/mine")
    assert "datasets" not in card.data.to_dict() and "A local dataset: `data/mine`" in card.text
    assert CardFacts.from_dict(facts.to_dict()) == facts
    assert "datasets" in _trained_on(tmp_path, dataset="data/mine").data.to_dict()  # judged now: a Hub id


def test_a_hub_dataset_is_named_by_its_id(tmp_path: Path) -> None:
    card = _trained_on(tmp_path, dataset="dair-ai/emotion", dataset_config="split")
    assert card.data.to_dict()["datasets"] == ["dair-ai/emotion"] and "language" not in card.data.to_dict()
    assert "The Hugging Face dataset [`dair-ai/emotion`](https://huggingface.co/datasets/dair-ai/emotion)" in card.text
    assert "configuration `split`" in card.text and "Demszky" not in card.text and "Reddit" not in card.text
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_name, result.dataset_config) == (
        "dair-ai/emotion",
        "dair-ai/emotion",
        "split",
    )
    hub_goemotions = _trained_on(tmp_path, dataset="go_emotions", dataset_config="raw")
    assert hub_goemotions.data.to_dict()["datasets"] == ["go_emotions"]
    assert hub_goemotions.data.to_dict()["language"] == "en" and "GoEmotions (Demszky" in hub_goemotions.text
    assert hub_goemotions.data.eval_results[0].dataset_config == "raw"


def test_training_files_are_named_and_a_goemotions_folder_links_the_hub_dataset(tmp_path: Path) -> None:
    files = _trained_on(tmp_path, train_file="mine/train.csv", dev_file="mine/dev.csv")
    assert "datasets" not in files.data.to_dict() and "huggingface.co/datasets" not in files.text
    assert "Files: `mine/train.csv`, `mine/dev.csv`." in files.text
    folder = _trained_on(tmp_path)
    assert folder.data.to_dict()["datasets"] == ["go_emotions"]
    assert "[GoEmotions](https://huggingface.co/datasets/go_emotions)" in folder.text


def test_default_model_names() -> None:
    assert default_model_name("runs/reproduce/best") == "goemo-reproduce"
    assert default_model_name("runs/reproduce/best-onnx-int8") == "goemo-reproduce"
    assert default_model_name("models/goemo") == "goemo-goemo"


def test_a_cleaned_model_says_what_cleaned_it(tmp_path: Path) -> None:
    cleaning = {
        "texts_excluded": 1234,
        "labels_changed": 56,
        "added": 20,
        "removed": 36,
        "unchanged": 0,
        "exclude": {"file": "/data/audit/exclude.csv", "sha256": "ab" * 32},
        "corrections": {"file": "/data/audit/corrections.csv", "sha256": "cd" * 32},
    }
    card = build_model_card(_folder(tmp_path, "minilm", cleaning=cleaning))
    data = card.text.split("## Training data", 1)[1].split("##", 1)[0]
    assert (
        "Cleaned with: 1,234 texts excluded, 56 labels changed (20 added, 36 removed), from "
        f"`/data/audit/exclude.csv` sha256 `{'ab' * 32}` and `/data/audit/corrections.csv` sha256 `{'cd' * 32}`. "
        "Dev and test were not changed." in data
    )
    assert "Cleaned with" not in build_model_card(_folder(tmp_path, "minilm", cleaning=None)).text
