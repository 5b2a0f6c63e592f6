"""EmotionClassifier on a tiny trained run and a mean-pool head: order, batching, thresholds, top_k, taxonomy."""

from __future__ import annotations

import copy
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import ModelFolder
from goemo.core.thresholds import sigmoid
from goemo.data.split import Split
from goemo.predict.classifier import EmotionClassifier

# Deliberately mixed lengths (1 to ~120 word pieces), so length-sorted batches reorder them.
TEXTS = [
    "This is the best day of my life, thank you all so much for the kind words and the support!",
    "ok",
    "",
    "Why would anyone ever do that? I'm honestly confused and a bit angry about the whole thing.",
    "lol",
    "I miss her every day.",
    " ".join(["so much to say about this"] * 20),
    "Wow. Just wow.",
    "I am scared of what happens next",
    "Congrats!!",
]


@pytest.fixture(scope="module")
def mean_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """goemo's mean-pooling head on the tiny encoder, with the trained run's goemo.json.

    Random weights, saved in a second: unlike the briefly trained run, whose probabilities
    barely depend on the text, its outputs differ clearly from text to text, so a mix-up of
    rows cannot pass the order tests.
    """
    from goemo.models.modeling import build_tiny_model, load_tokenizer, save_model

    meta = json.loads((tiny_model_dir / "goemo.json").read_text())
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mean-head") / "best"
    save_model(build_tiny_model(meta["label_names"], "mean").eval(), load_tokenizer("minilm"), folder, meta)
    return folder


@pytest.fixture(scope="module")
def clf(mean_run: Path) -> EmotionClassifier:
    return EmotionClassifier.load(mean_run, backend="torch", device="cpu")


def test_load_reads_labels_thresholds_and_length_from_a_trained_run(tiny_model_dir: Path) -> None:
    clf = EmotionClassifier.load(tiny_model_dir, backend="auto")
    meta = json.loads((tiny_model_dir / "goemo.json").read_text())
    assert clf.label_names == meta["label_names"] and len(clf.label_names) == 28
    per_label = meta["thresholds"]["per_label"]
    assert per_label, "the run should have dev-tuned thresholds"
    assert clf.thresholds.tolist() == pytest.approx([per_label[n] for n in clf.label_names])
    assert (clf.backend, clf.device, clf.precision, clf.max_length) == ("torch", "cpu", "fp32", meta["max_length"])
    assert "backend='torch'" in repr(clf)


def test_auto_never_exports_and_describe_says_what_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``auto`` (evaluation's default) runs the folder's own weights; only ``fastest`` makes a CPU export."""
    from goemo.predict.fastest import EXPORT_DIR

    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns(".*"))
    clf = EmotionClassifier.load(folder, device="cpu", backend="auto")
    assert clf.choice is None and not (folder / EXPORT_DIR).exists()
    assert clf.num_threads == torch.get_num_threads()
    head = f"torch fp32 on cpu, {clf.num_threads} thread{'s' * (clf.num_threads != 1)} ({folder})"
    rule = "texts over 48 tokens: pieces (sentences, else 32-token windows overlapping by 16), max of logits"
    assert clf.describe() == f"{head}; {rule}"
    with pytest.raises(ConfigError, match="fastest"):
        EmotionClassifier.load(tiny_model_dir, backend="quickest")  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["trained", "mean"])
def test_probabilities_equal_a_direct_model_call_text_by_text(which: str, tiny_model_dir: Path, mean_run: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_model_dir if which == "trained" else mean_run
    clf = EmotionClassifier.load(folder, backend="torch", device="cpu", long_text="truncate")  # as the direct call
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    expected = []
    with torch.no_grad():
        for text in TEXTS:
            enc = tok([text], truncation=True, max_length=clf.max_length, return_tensors="pt")
            expected.append(torch.sigmoid(model(**enc).logits)[0].numpy())
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), 28) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, np.stack(expected), atol=1e-6 if which == "trained" else 1e-5)
    if which == "mean":  # here the check could fail: rows differ far more than the tolerance
        assert np.ptp(probs, axis=0).max() > 1e-3


def test_input_order_is_kept_whatever_the_batching(clf: EmotionClassifier) -> None:
    one_by_one = np.stack([clf.predict_proba([t])[0] for t in TEXTS])
    clf3 = EmotionClassifier.load(clf.path, backend="torch", device="cpu", batch_size=3)
    np.testing.assert_allclose(clf3.predict_proba(TEXTS), one_by_one, atol=1e-5)
    reversed_probs = clf.predict_proba(TEXTS[::-1])
    np.testing.assert_allclose(reversed_probs[::-1], one_by_one, atol=1e-5)
    # Swapping two rows would be caught: they are not interchangeable.
    assert np.abs(one_by_one[0] - one_by_one[1]).max() > 1e-4


def test_max_length_truncates(clf: EmotionClassifier) -> None:
    long_text = TEXTS[6]
    short = EmotionClassifier.load(clf.path, backend="torch", device="cpu", max_length=8, long_text="truncate")
    head = clf.tokenizer.decode(clf.tokenizer(long_text)["input_ids"][1:7])
    np.testing.assert_allclose(short.predict_proba([long_text]), clf.predict_proba([head]), atol=1e-5)
    assert np.abs(short.predict_proba([long_text]) - clf.predict_proba([long_text])).max() > 1e-5


def test_predict_uses_each_labels_threshold_strictly_and_sorts(clf: EmotionClassifier) -> None:
    probs = clf.predict_proba(TEXTS)
    results = clf.predict(TEXTS)
    assert len(results) == len(TEXTS)
    for row, labels in zip(probs, results):
        expected = {clf.label_names[j] for j in np.flatnonzero(row > clf.thresholds)}
        assert {d["label"] for d in labels} == expected
        scores = [d["score"] for d in labels]
        assert scores == sorted(scores, reverse=True)
        for d in labels:
            assert d["score"] == pytest.approx(float(row[clf.label_names.index(d["label"])]))


def test_threshold_equal_to_the_probability_is_not_predicted(clf: EmotionClassifier) -> None:
    probs = np.zeros((1, 28), np.float32)
    probs[0, 3], probs[0, 5] = 0.3, 0.31
    out = clf.predict_from_proba(probs, threshold=0.3)
    assert out == [[{"label": clf.label_names[5], "score": pytest.approx(0.31)}]]


def test_threshold_override(clf: EmotionClassifier) -> None:
    probs = clf.predict_proba(TEXTS[:3])
    cut = float(np.median(probs))
    for row, labels in zip(probs, clf.predict(TEXTS[:3], threshold=cut)):
        assert {d["label"] for d in labels} == {clf.label_names[j] for j in np.flatnonzero(row > cut)}
    assert all(len(r) == 28 for r in clf.predict(TEXTS[:3], threshold=0.0))
    assert clf.predict(TEXTS[:3], threshold=1.0) == [[], [], []]


def test_top_k(clf: EmotionClassifier) -> None:
    probs = clf.predict_proba(TEXTS)
    for row, labels in zip(probs, clf.predict(TEXTS, top_k=3)):
        assert [d["label"] for d in labels] == [clf.label_names[j] for j in np.argsort(-row, kind="stable")[:3]]
    assert all(len(r) == 28 for r in clf.predict(TEXTS[:2], top_k=100))
    # With a threshold too: at most k, all above it.
    cut = float(np.quantile(probs[0], 0.9))  # about 3 labels above
    above = int((probs[0] > cut).sum())
    got = clf.predict([TEXTS[0]], top_k=2, threshold=cut)[0]
    assert len(got) == min(2, above) and all(d["score"] > cut for d in got)
    assert len(clf.predict([TEXTS[0]], top_k=10, threshold=cut)[0]) == above


def test_ekman_projection_takes_the_max_and_any_member(clf: EmotionClassifier) -> None:
    from goemo.data.taxonomy import load_taxonomy

    ekman = load_taxonomy("ekman")
    probs = clf.predict_proba(TEXTS)
    grouped = clf.predict_proba(TEXTS, taxonomy="ekman")
    assert (
        clf.label_names_for("ekman")
        == list(ekman.labels)
        == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    )
    for j, group in enumerate(ekman.labels):
        members = [clf.label_names.index(m) for m in ekman.groups[group]]
        np.testing.assert_array_equal(grouped[:, j], probs[:, members].max(axis=1))

    # A group is on when any member clears its *own* threshold, and scores its members' max.
    custom = copy.copy(clf)
    names = clf.label_names
    custom.thresholds = np.full(28, 0.5, np.float32)
    custom.thresholds[names.index("annoyance")] = 0.2
    custom.thresholds[names.index("anger")] = 0.9
    crafted = np.zeros((1, 28), np.float32)
    crafted[0, names.index("annoyance")] = 0.3  # above its own 0.2
    crafted[0, names.index("anger")] = 0.6  # the larger score, below its own 0.9
    crafted[0, names.index("joy")] = 0.45  # below 0.5: joy stays off
    out = custom.predict_from_proba(crafted, taxonomy="ekman")[0]
    assert out == [{"label": "anger", "score": pytest.approx(0.6)}]
    # With one threshold for all, the group is on exactly when its max is above it.
    assert [d["label"] for d in custom.predict_from_proba(crafted, threshold=0.4, taxonomy="ekman")[0]] == [
        "anger",
        "joy",
    ]
    assert clf.predict_from_proba(crafted * 0, taxonomy="ekman") == [[]]
    top = clf.predict(TEXTS[:2], taxonomy="ekman", top_k=7)
    assert all(len(r) == 7 and {d["label"] for d in r} == set(ekman.labels) for r in top)


def test_bad_inputs_fail_with_one_clear_line(clf: EmotionClassifier) -> None:
    with pytest.raises(ConfigError, match="wrap it"):
        clf.predict_proba("a single string")
    with pytest.raises(ConfigError, match=r"texts\[1\] is int"):
        clf.predict_proba(["fine", 3])
    with pytest.raises(ConfigError, match="top_k"):
        clf.predict(["x"], top_k=0)
    with pytest.raises(ConfigError, match="threshold"):
        clf.predict(["x"], threshold=1.5)
    with pytest.raises(ConfigError, match="unknown taxonomy"):
        clf.predict(["x"], taxonomy="plutchik")
    assert clf.predict_proba([]).shape == (0, 28)
    assert clf.predict([]) == []


def test_load_errors(tmp_path: Path, mean_run: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        EmotionClassifier.load(tmp_path / "nope", backend="auto")
    with pytest.raises(ModelError, match="goemo export"):
        EmotionClassifier.load(mean_run, backend="onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither"):
        EmotionClassifier.load(tmp_path / "empty", backend="auto")
    with pytest.raises(ConfigError, match="backend"):
        EmotionClassifier.load(mean_run, backend="tensorflow")
    with pytest.raises(ConfigError, match="fp16"):
        EmotionClassifier.load(mean_run, device="cpu", precision="fp16", backend="auto")


def test_a_plain_transformers_folder_gets_labels_from_config_and_threshold_half(tmp_path: Path, mean_run: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(mean_run, plain)
    (plain / "goemo.json").unlink()
    clf = EmotionClassifier.load(plain, backend="torch", device="cpu")
    assert clf.thresholds.tolist() == [0.5] * 28
    assert clf.label_names[0] == "admiration" and clf.label_names[-1] == "neutral"
    assert clf.max_length == 512  # the tokenizer's limit, capped
    (plain / "goemo.json").write_text('{"thresholds": {"global": 0.3, "per_label": null}}')
    assert ModelFolder.open(plain).thresholds().tolist() == pytest.approx([0.3] * 28)


def test_concurrent_calls_each_get_their_own_answer(clf: EmotionClassifier) -> None:
    expected = {i: clf.predict_proba(TEXTS[i:] + TEXTS[:i]) for i in range(4)}
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                got[i] = clf.predict_proba(TEXTS[i:] + TEXTS[:i])
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_allclose(got[i], expected[i], atol=1e-5)


def test_bf16_on_request_stays_close_to_fp32(clf: EmotionClassifier) -> None:
    bf16 = EmotionClassifier.load(clf.path, backend="torch", device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    np.testing.assert_allclose(bf16.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=2e-2)


def test_sigmoid_is_stable_and_public_api_is_exported() -> None:
    import goemo

    assert goemo.EmotionClassifier is EmotionClassifier
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0], atol=1e-7)


# --------------------------------------------------------------------------- max length against the model


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random RoBERTa classifier with 34 positions: RoBERTa numbers them from pad_token_id + 1 = 2."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from goemo.models.modeling import load_tokenizer, save_model

    names = ["joy", "anger", "fear"]
    config = RobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=34,
        num_labels=3,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        problem_type="multi_label_classification",
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("roberta") / "best"
    save_model(
        RobertaForSequenceClassification(config).eval(), load_tokenizer("minilm"), folder, {"label_names": names}
    )
    return folder


def test_roberta_position_offset_is_taken_off_its_positions(roberta_dir: Path) -> None:
    long_text = " ".join(["word"] * 200)
    assert ModelFolder.open(roberta_dir).position_limit == 32  # 34 positions less the offset of 2
    clf = EmotionClassifier.load(roberta_dir, device="cpu", backend="auto")
    assert clf.max_length == 32  # the default: the most it takes
    assert clf.predict_proba([long_text, "hi"]).shape == (2, 3)  # 32 tokens fit
    with pytest.raises(
        ConfigError,
        match=r"max_length=33: the model takes at most 32 tokens \(config.json max_position_embeddings 34 less 2\)",
    ):
        EmotionClassifier.load(roberta_dir, device="cpu", max_length=33, backend="auto")


def test_max_length_beyond_the_tokenizers_own_limit_is_refused(tmp_path: Path, mean_run: Path) -> None:
    folder = tmp_path / "short-tokenizer"
    shutil.copytree(mean_run, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 64
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert EmotionClassifier.load(folder, device="cpu", max_length=64, backend="auto").max_length == 64
    with pytest.raises(
        ConfigError,
        match=r"max_length=65: the model's tokenizer takes at most 64 tokens .*tokenizer_config.json model_max_length",
    ):
        EmotionClassifier.load(folder, device="cpu", max_length=65, backend="auto")
    with pytest.raises(
        ConfigError,
        match=r"max_length=513: the model takes at most 512 tokens \(config.json encoder.max_position_embeddings 512\)",
    ):
        EmotionClassifier.load(folder, device="cpu", max_length=513, backend="auto")
    (folder / "goemo.json").unlink()  # a plain checkpoint: the default is the tokenizer's limit
    assert EmotionClassifier.load(folder, device="cpu", backend="auto").max_length == 64


def test_a_tokenizer_with_more_tokens_than_embeddings_is_refused(tmp_path: Path, mean_run: Path) -> None:
    folder = tmp_path / "small-embeddings"
    shutil.copytree(mean_run, folder)
    clf = EmotionClassifier.load(folder, device="cpu", backend="auto")
    clf.tokenizer.add_tokens(["brandnewtoken"])  # 30523 tokens, 30522 rows of embeddings
    clf.tokenizer.save_pretrained(folder)
    with pytest.raises(ModelError, match=r"the tokenizer has 30523 tokens but config.json encoder.vocab_size is 30522"):
        EmotionClassifier.load(folder, device="cpu", backend="auto")


# ---------------------------------------------------------------- long texts in pieces

LONG = (
    "I waited three weeks for this order and checked the tracking every day. "
    "When it finally came the box was crushed and half the parts were missing! "
    "Thank you so much to the shop, though, they sent the rest the very next morning. "
    "Honestly I am still a bit annoyed about the wait"
)
SHORT = [t for t in TEXTS if len(t.split()) < 30]


@pytest.fixture(scope="module")
def mean_onnx(mean_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from goemo.export import export_onnx

    return export_onnx(mean_run, tmp_path_factory.mktemp("mean-onnx") / "onnx").path


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_short_texts_score_the_same_whatever_the_long_text_mode(backend: str, mean_run: Path, mean_onnx: Path) -> None:
    folder = mean_run if backend == "torch" else mean_onnx
    pieces, truncating = (
        EmotionClassifier.load(folder, backend=backend, device="cpu", long_text=mode) for mode in ("pieces", "truncate")
    )
    assert pieces.encode_pieces(SHORT).long == 0
    np.testing.assert_array_equal(pieces.predict_proba(SHORT), truncating.predict_proba(SHORT))  # bit for bit
    # Beside long texts (whose pieces join the batches) a short text's scores stay those it gets alone.
    mixed = [LONG, *SHORT, LONG + " " + LONG]
    got = pieces.predict_proba(mixed)[1:-1]
    np.testing.assert_allclose(got, truncating.predict_proba(SHORT), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_long_text_scores_the_max_of_its_sentences_alone(backend: str, mean_run: Path, mean_onnx: Path) -> None:
    from goemo.predict.pieces import sentence_starts

    folder = mean_run if backend == "torch" else mean_onnx
    clf = EmotionClassifier.load(folder, backend=backend, device="cpu")
    assert len(clf.tokenizer(LONG)["input_ids"]) > clf.max_length
    starts = sentence_starts(LONG)
    sentences = [LONG[a:b].strip() for a, b in zip(starts, [*starts[1:], len(LONG)])]
    assert len(sentences) == 4
    expected = clf.predict_logits(sentences).max(axis=0)
    np.testing.assert_allclose(clf.predict_logits([LONG])[0], expected, atol=1e-5)
    spans = clf.predict_spans([LONG])[0]["pieces"]
    assert [LONG[p["start"] : p["end"]] for p in spans] == sentences


def test_evaluation_scores_long_texts_in_pieces_too(mean_run: Path, goemotions_splits) -> None:
    """`split_logits` (evaluate, report) reads the token cache and cuts the long texts as `predict_logits` does."""
    split = goemotions_splits["test"].sample(6, seed=1)
    texts = [LONG, *split.texts[1:]]
    long_split = Split(texts, split.ids, split.labels, split.label_names, name="long")
    clf = EmotionClassifier.load(mean_run, backend="torch", device="cpu")
    np.testing.assert_allclose(clf.split_logits(long_split), clf.predict_logits(texts), atol=1e-6)
