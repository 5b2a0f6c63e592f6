"""Explanations: words and spans, a model whose answer is known, both methods, the CLI and the report's pieces.

The known-answer model sums its word embeddings and applies a linear head, so a word's effect
on each label is set by hand: the word whose embedding points along a label's head weights is
decisive for that label and every other word does nothing. Occlusion and integrated gradients
must both rank that word first, and follow it when the weights move it to another word.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import goemo.predict.explain_gradients as gradients
from goemo.cli import app
from goemo.cli.common import make_console
from goemo.cli.explain import print_explanation
from goemo.core.errors import ConfigError, GoemoError
from goemo.models.modeling import load_model, load_tokenizer
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.explain import (
    METHODS,
    Explanation,
    LabelExplanation,
    OcclusionPlan,
    WordAttribution,
    chosen_labels,
    explain_occlusion,
    label_indices,
    only_spans,
    without_spans,
    word_spans,
)
from goemo.predict.torch_backend import TorchBackend

NAMES = ["joy", "anger", "neutral"]
TEXT = "What a wonderful day, I can't complain!"
needs_captum = pytest.mark.skipif(
    importlib.util.find_spec("captum") is None, reason="the explain extra (captum) is missing"
)


@dataclass
class Output:
    logits: torch.Tensor


class BagOfWords(torch.nn.Module):
    """logits = bias + head(sum of the token embeddings): each word's effect on each label is set by hand."""

    def __init__(self, vocab_size: int, dim: int = 4) -> None:
        super().__init__()
        self.embeddings = torch.nn.Embedding(vocab_size, dim)
        self.head = torch.nn.Linear(dim, len(NAMES))
        with torch.no_grad():
            self.embeddings.weight.zero_()
            self.head.weight.zero_()
            self.head.weight[0, 0] = 4.0  # joy reads dimension 0
            self.head.weight[1, 1] = 4.0  # anger reads dimension 1
            self.head.bias.copy_(torch.tensor([-2.0, -2.0, 0.0]))

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Output:
        summed = (self.embeddings(input_ids) * attention_mask.unsqueeze(-1)).sum(dim=1)
        return Output(self.head(summed))

    def make_decisive(self, tokenizer, word: str, dim: int) -> None:
        """The embedding of ``word``'s (single) token points along ``dim``; every other token's is zero."""
        (token,) = tokenizer(word, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            self.embeddings.weight.zero_()
            self.embeddings.weight[token, dim] = 1.0


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture()
def known(tokenizer):
    """An `EmotionClassifier` over `BagOfWords` (torch backend, built through the public constructor)."""
    model = BagOfWords(len(tokenizer)).eval()
    model.make_decisive(tokenizer, "wonderful", 0)
    clf = EmotionClassifier(TorchBackend(model, "cpu", "fp32"), tokenizer, NAMES, np.full(3, 0.5), max_length=32)
    return clf, model


class CountingScorer:
    """A predictor that is no `EmotionClassifier` at all (any backend): records every model call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.label_names = inner.label_names
        self.thresholds = inner.thresholds
        self.calls: list[int] = []

    def predict_proba(self, texts):
        self.calls.append(len(texts))
        return self.inner.predict_proba(texts)


# ----------------------------------------------------------------------------- words


def test_words_are_as_written_with_their_spans():
    text = "I can't believe it!!  Sooo unbelievable 😭"
    spans = word_spans(text)
    assert [text[s:e] for s, e in spans] == ["I", "can't", "believe", "it", "!!", "Sooo", "unbelievable", "😭"]
    assert without_spans(text, [spans[1], spans[4]]) == "I  believe it  Sooo unbelievable 😭"
    assert only_spans(text, [spans[6], spans[0]]) == "I unbelievable"
    assert word_spans("   ") == [] and without_spans("ab", []) == "ab"


def test_labels_asked_for_and_chosen():
    assert label_indices(NAMES, None) is None
    assert label_indices(NAMES, "anger, joy") == [1, 0] and label_indices(NAMES, ["joy", "joy"]) == [0]
    with pytest.raises(ConfigError, match="sadness not among the model's labels"):
        label_indices(NAMES, "joy,sadness")
    with pytest.raises(ConfigError, match="at least one"):
        label_indices(NAMES, " , ")
    probs = np.array([[0.9, 0.7, 0.1], [0.2, 0.3, 0.1]])
    # above the thresholds, highest first; none above: the most probable one
    assert chosen_labels(probs, np.full(3, 0.5), None) == [[0, 1], [1]]
    assert chosen_labels(probs, np.full(3, 0.5), [2, 0]) == [[0, 2], [0, 2]]


# ----------------------------------------------------------------------------- the known answer


@pytest.mark.parametrize("method", [m if m == "occlusion" else pytest.param(m, marks=needs_captum) for m in METHODS])
def test_the_decisive_word_ranks_first_and_moves_with_the_weights(known, tokenizer, method):
    clf, model = known
    [e] = clf.explain([TEXT], method=method)
    assert [x.label for x in e.labels] == ["joy"]  # the only label above 0.5
    joy = e.labels[0]
    assert joy.method == method and joy.score == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))), abs=1e-6)
    assert [w.word for w in joy.words] == ["What", "a", "wonderful", "day", ",", "I", "can't", "complain", "!"]
    assert all(TEXT[w.start : w.end] == w.word for w in joy.words)
    assert joy.top(1)[0].word == "wonderful" and joy.top(1)[0].attribution > 0
    others = [w.attribution for w in joy.words if w.word != "wonderful"]
    assert np.allclose(others, 0.0, atol=1e-6)  # words the model ignores get nothing
    if method == "occlusion":  # the probability lost when the word goes: sigmoid(2) - sigmoid(-2)
        assert joy.top(1)[0].attribution == pytest.approx(float(torch.sigmoid(torch.tensor(2.0)) * 2 - 1), abs=1e-5)
    else:  # integrated gradients of a linear model: exact, in logit units
        assert joy.top(1)[0].attribution == pytest.approx(4.0, abs=1e-4)

    model.make_decisive(tokenizer, "complain", 1)  # now "complain" alone drives anger, nothing drives joy
    [e] = clf.explain([TEXT], labels="anger,joy", method=method)
    anger, joy = e.labels
    assert anger.label == "anger" and anger.top(1)[0].word == "complain"
    assert max(abs(w.attribution) for w in joy.words) < 1e-6


@needs_captum
def test_a_word_split_into_pieces_gets_the_sum_of_its_pieces(known, tokenizer):
    clf, model = known
    text = "unbelievably wonderful"
    assert len(tokenizer("unbelievably", add_special_tokens=False)["input_ids"]) > 1
    with torch.no_grad():  # every piece of "unbelievably" adds 1 to joy's dimension
        for token in tokenizer("unbelievably", add_special_tokens=False)["input_ids"]:
            model.embeddings.weight[token, 0] = 1.0
    pieces = len(tokenizer("unbelievably", add_special_tokens=False)["input_ids"])
    [e] = clf.explain([text], labels="joy", method="integrated-gradients")
    words = e.labels[0].words
    assert [(w.word, w.start, w.end) for w in words] == [("unbelievably", 0, 12), ("wonderful", 13, 22)]
    assert words[0].attribution == pytest.approx(4.0 * pieces, abs=1e-3)
    assert words[1].attribution == pytest.approx(4.0, abs=1e-3)


def test_occlusion_scores_every_variant_in_one_call_on_any_backend(known):
    clf, _ = known
    scorer = CountingScorer(clf)
    texts = [TEXT, "ok", ""]
    out = explain_occlusion(scorer, texts, labels=["joy"])
    assert scorer.calls == [len(texts) + sum(len(word_spans(t)) for t in texts)]
    assert [len(e.labels[0].words) for e in out] == [9, 1, 0]
    assert out[0].labels[0].top(1)[0].word == "wonderful"
    plan = OcclusionPlan.of(texts)
    with pytest.raises(ValueError, match="probabilities of shape"):
        plan.finish(np.zeros((2, 3)), NAMES, np.full(3, 0.5), None)


def test_integrated_gradients_needs_torch(known):
    clf, model = known
    other = EmotionClassifier(_NotTorch(model), clf.tokenizer, NAMES, np.full(3, 0.5), max_length=32)
    with pytest.raises(ConfigError, match="needs the torch backend"):
        other.explain([TEXT], method="integrated-gradients")
    with pytest.raises(ConfigError, match="method='lime'"):
        clf.explain([TEXT], method="lime")
    with pytest.raises(ConfigError, match="one string"):
        clf.explain(TEXT)


class _NotTorch:
    """A token backend that is not torch (as ONNX is): occlusion works on it, gradients do not."""

    name, device, precision, takes_tokens, num_threads = "onnx", "cpu", "fp32", True, 1

    def __init__(self, model: torch.nn.Module) -> None:
        self.torch = TorchBackend(model, "cpu", "fp32")

    def __call__(self, input_ids, attention_mask):
        return self.torch(input_ids, attention_mask)


def test_occlusion_on_a_backend_without_gradients(known):
    clf, model = known
    other = EmotionClassifier(_NotTorch(model), clf.tokenizer, NAMES, np.full(3, 0.5), max_length=32)
    [e] = other.explain([TEXT])
    assert e.labels[0].method == "occlusion" and e.labels[0].top(1)[0].word == "wonderful"


# ----------------------------------------------------------------------------- a real transformer


@needs_captum
def test_integrated_gradients_on_a_transformer_add_up_to_the_logit_change(tiny_clf, tiny_model_dir):
    """Completeness: a text's word attributions sum to its logit less the baseline's (all pieces padded)."""
    text = "Thank you so much, this made my day!"
    [e] = tiny_clf.explain([text], labels="gratitude,anger", method="integrated-gradients")
    loaded = load_model(tiny_model_dir)
    ids = torch.tensor([tiny_clf.tokenizer(text)["input_ids"]])
    special = torch.tensor(
        [tiny_clf.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)]
    )
    base = torch.where(special.bool(), ids, torch.full_like(ids, tiny_clf.tokenizer.pad_token_id))
    with torch.no_grad():
        change = loaded.model(input_ids=ids).logits - loaded.model(input_ids=base).logits
    for label in e.labels:
        j = tiny_clf.label_names.index(label.label)
        total = sum(w.attribution for w in label.words)
        assert total == pytest.approx(float(change[0, j]), abs=0.02 + 0.05 * abs(float(change[0, j])))
        assert label.score == pytest.approx(float(tiny_clf.predict_proba([text])[0, j]), abs=1e-6)


# ----------------------------------------------------------------------------- command line


def test_cli_json_and_text(tiny_model_dir, tmp_path):
    runner = CliRunner()
    base = ["explain", "--model", str(tiny_model_dir), "--backend", "torch"]
    res = runner.invoke(app, [*base, "--format", "json", "--labels", "joy,anger", TEXT, "ok then"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["id"] for r in lines] == ["1", "2"] and lines[0]["text"] == TEXT
    first = lines[0]["labels"]
    assert sorted(x["label"] for x in first) == ["anger", "joy"]
    for x in first:
        assert x["method"] == "occlusion" and 0 <= x["score"] <= 1
        assert [w["word"] for w in x["words"]] == [TEXT[s:e] for s, e in word_spans(TEXT)]
        assert all(TEXT[w["start"] : w["end"]] == w["word"] for w in x["words"])

    source = tmp_path / "texts.txt"
    source.write_text(f"{TEXT}\nso sad\n", encoding="utf-8")
    res = runner.invoke(app, [*base, "--input", str(source), "--labels", "sadness", "--top", "2"])
    assert res.exit_code == 0, res.output
    assert "[1] " + TEXT in res.stdout and "[2] so sad" in res.stdout
    assert "sadness" in res.stdout and "(occlusion)" in res.stdout and "for: " in res.stdout

    res = runner.invoke(app, [*base, "--labels", "joy,nope", TEXT])
    assert res.exit_code == 1 and res.stderr.strip() == (
        "goemo: error: labels: nope not among the model's labels (admiration, amusement, anger, annoyance, "
        "approval, caring, ...)"
    )
    res = runner.invoke(app, [*base, "--input", str(source), TEXT])
    assert res.exit_code == 1 and "not both" in res.stderr


@needs_captum
def test_cli_integrated_gradients_loads_torch_by_itself(tiny_model_dir):
    runner = CliRunner()
    res = runner.invoke(
        app, ["explain", "--model", str(tiny_model_dir), "--method", "integrated-gradients", "--format", "json", TEXT]
    )
    assert res.exit_code == 0, res.output
    assert {x["method"] for x in json.loads(res.stdout)["labels"]} == {"integrated-gradients"}


def test_python_api_explains_the_predicted_labels(tiny_clf):
    texts = ["Thank you so much!", "This is the worst."]
    explained = tiny_clf.explain(texts)
    predicted = tiny_clf.predict(texts)
    for e, text, labels in zip(explained, texts, predicted):
        assert e.text == text
        expected = [d["label"] for d in labels] or [
            tiny_clf.label_names[int(np.argmax(tiny_clf.predict_proba([text])[0]))]
        ]
        assert [x.label for x in e.labels] == expected
        assert json.loads(json.dumps(e.to_dict()))["labels"][0]["words"][0]["start"] == 0
    with pytest.raises(GoemoError):
        tiny_clf.explain(["x"], labels=["not-a-label"])


def test_integrated_gradients_without_captum_is_one_line(known, monkeypatch):
    clf, _ = known
    monkeypatch.setattr(gradients, "LayerIntegratedGradients", None)
    with pytest.raises(GoemoError, match=r"needs captum: pip install 'goemo\[explain\]'"):
        clf.explain([TEXT], method="integrated-gradients")
    assert clf.explain([TEXT])[0].labels[0].method == "occlusion"  # the default needs nothing more


def test_text_format_lists_only_words_whose_number_prints(capsys):
    """A word whose number rounds to +0.000 or -0.000 is noise: it is neither "for" nor "against" the label."""
    text = "so very sad today"
    numbers = [0.00004, 0.0002, 0.31, -0.00003]
    words = tuple(WordAttribution(text[s:e], s, e, a) for (s, e), a in zip(word_spans(text), numbers))
    explanation = Explanation(text, (LabelExplanation("sadness", 0.8, "occlusion", words),))
    print_explanation(make_console(), "1", explanation, 5)
    out = capsys.readouterr().out
    assert "for: sad +0.310" in out and "very" not in out.split("for:")[1]
    assert "against" not in out and "+0.000" not in out and "-0.000" not in out


def test_the_server_singles_out_the_decisive_word(known):
    """POST /explain on the known-answer model: "wonderful" alone carries joy, every other word gets 0."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient  # noqa: PLC0415  (optional extra: serve)

    from goemo.serve.app import create_app  # noqa: PLC0415  (optional extra: serve)

    clf, _ = known
    with TestClient(create_app(clf), base_url="http://127.0.0.1") as c:
        r = c.post("/explain", json={"texts": [TEXT]})
    assert r.status_code == 200, r.text
    [joy] = r.json()["results"][0]["labels"]
    assert joy["label"] == "joy"
    words = {w["word"]: w["attribution"] for w in joy["words"]}
    assert words.pop("wonderful") == pytest.approx(float(torch.sigmoid(torch.tensor(2.0)) * 2 - 1), abs=1e-5)
    assert np.allclose(list(words.values()), 0.0, atol=1e-6)
