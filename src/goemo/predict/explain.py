"""Why the model said it: a signed attribution for every word of a text, per label.

An `Explanation` holds, per text and label, the words as written (with their character spans)
and a signed number each: positive when the word raises the label's probability. Two methods:

* ``occlusion`` (the default): each word deleted in turn, every variant of every text scored in
  one `predict_proba` call through the predictor itself, so it works on every backend; a word's
  number is the probability the label loses without it.
* ``integrated-gradients``: captum on a torch model's word embeddings
  (`goemo.predict.explain_gradients`, the ``explain`` extra), in logit units.

Occlusion is the default for its reach, its plain reading and the measured figures
(``benchmarks/explain_faithfulness.py``, docs/benchmarks.md "Explanations": 5.5 times random at
65 ms a text, against 5.4 times at 419 ms). Words are runs of letters and digits (``can't`` is one)
and runs of other non-space characters (``!!!``, ``:)``, an emoji): punctuation carries emotion.

    clf = EmotionClassifier.load("runs/goemo/best")
    [e] = clf.explain(["Thank you so much!"])
    e.labels[0].label, e.labels[0].top(2)
    # -> ('gratitude', [WordAttribution(word='Thank', start=0, end=5, attribution=0.61), ...])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from goemo.core.errors import ConfigError
from goemo.core.thresholds import binarize
from goemo.data.records import check_texts

METHODS = ("occlusion", "integrated-gradients")
DEFAULT_METHOD = "occlusion"
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")


class Scorer(Protocol):
    """What occlusion needs of a predictor: `goemo.predict.classifier.EmotionClassifier` fits."""

    label_names: list[str]
    thresholds: np.ndarray

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class WordAttribution:
    """One word as written (``text[start:end]``) and its signed attribution to a label."""

    word: str
    start: int
    end: int
    attribution: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelExplanation:
    """The words behind one label of one text: ``score`` is the label's probability on the whole text;
    the numbers are in probability (``occlusion``) or logit units (``integrated-gradients``)."""

    label: str
    score: float
    method: str
    words: tuple[WordAttribution, ...]

    def top(self, k: int) -> list[WordAttribution]:
        """The ``k`` words that raise the label most, highest first (ties: in text order)."""
        order = sorted(range(len(self.words)), key=lambda i: (-self.words[i].attribution, i))
        return [self.words[i] for i in order[:k]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "words": [w.to_dict() for w in self.words]}


@dataclass(frozen=True)
class Explanation:
    """One text and the explanation of each of its labels (predicted or asked for), highest score first."""

    text: str
    labels: tuple[LabelExplanation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "labels": [label.to_dict() for label in self.labels]}


# ----------------------------------------------------------------------------- words


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (module docstring), in order.

    >>> text = "I can't believe it!!"
    >>> [text[s:e] for s, e in word_spans(text)]
    ['I', "can't", 'believe', 'it', '!!']
    """
    return [m.span() for m in _WORD.finditer(text)]


def without_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the characters of ``spans`` deleted (the rest as it was, spaces included).

    >>> without_spans("so happy for you", [(3, 8)])
    'so  for you'
    """
    out, at = [], 0
    for start, end in sorted(spans):
        out.append(text[at:start])
        at = max(at, end)
    out.append(text[at:])
    return "".join(out)


def only_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The words of ``spans`` alone, in text order, one space apart.

    >>> only_spans("so happy for you", [(13, 16), (3, 8)])
    'happy you'
    """
    return " ".join(text[s:e] for s, e in sorted(spans))


# ----------------------------------------------------------------------------- labels


def label_indices(names: Sequence[str], labels: Sequence[str] | str | None) -> list[int] | None:
    """The column of each asked-for label (``"joy,anger"`` or a list), or None for "the predicted ones"."""
    if labels is None:
        return None
    asked = [x.strip() for x in labels.split(",")] if isinstance(labels, str) else [str(x).strip() for x in labels]
    asked = [x for x in asked if x]
    if not asked:
        raise ConfigError("labels: give at least one label name")
    unknown = [x for x in asked if x not in names]
    if unknown:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise ConfigError(f"labels: {', '.join(unknown)} not among the model's labels ({shown})")
    return list(dict.fromkeys(names.index(x) for x in asked))


def chosen_labels(probs: np.ndarray, thresholds: np.ndarray, asked: list[int] | None) -> list[list[int]]:
    """Per text, the labels to explain: those asked for, else those above their thresholds, highest
    first, else its most probable one, so that every text has something to show."""
    if asked is not None:
        return [sorted(asked, key=lambda j: -row[j]) for row in probs]
    # Compared in float32, as `EmotionClassifier.decide` does: the labels explained are the labels predicted.
    probs = np.asarray(probs, dtype=np.float32)
    on = binarize(probs, np.asarray(thresholds, np.float32)) if len(probs) else np.zeros(probs.shape, np.uint8)
    out = []
    for row, row_on in zip(probs, on):
        idx = np.flatnonzero(row_on)
        idx = idx[np.argsort(-row[idx], kind="stable")] if len(idx) else np.array([int(np.argmax(row))])
        out.append([int(j) for j in idx])
    return out


# ----------------------------------------------------------------------------- occlusion


@dataclass(frozen=True)
class OcclusionPlan:
    """The texts to score for an occlusion: the originals first, then each text without each of its words.

    Apart from the scoring, so that the server's micro-batcher scores `texts` and hands them to `finish`.
    """

    originals: tuple[str, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]
    texts: tuple[str, ...]

    @classmethod
    def of(cls, texts: Sequence[str]) -> OcclusionPlan:
        originals = tuple(check_texts(texts))
        spans = tuple(tuple(word_spans(t)) for t in originals)
        variants = [without_spans(t, [s]) for t, sp in zip(originals, spans) for s in sp]
        return cls(originals, spans, (*originals, *variants))

    def finish(
        self, probs: np.ndarray, names: Sequence[str], thresholds: np.ndarray, asked: list[int] | None
    ) -> list[Explanation]:
        """The explanations, from the probabilities ``(len(self.texts), L)`` of `texts`."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(self.texts), len(names)):
            raise ValueError(
                f"probabilities of shape {probs.shape} for {len(self.texts)} texts and {len(names)} labels"
            )
        n = len(self.originals)
        full = probs[:n]
        out = []
        at = n
        for text, spans, row, labels in zip(self.originals, self.spans, full, chosen_labels(full, thresholds, asked)):
            without = probs[at : at + len(spans)]
            at += len(spans)
            drops = row[None, :] - without  # (words, L): how much each word's deletion lowers each label
            out.append(explanation(text, spans, row, names, "occlusion", [(j, drops[:, j]) for j in labels]))
        return out


def explanation(
    text: str,
    spans: Sequence[tuple[int, int]],
    row: np.ndarray,
    names: Sequence[str],
    method: str,
    per_label: Sequence[tuple[int, Sequence[float] | np.ndarray]],
) -> Explanation:
    """One text's `Explanation` from ``(label index, one number per word)`` pairs, for every method."""
    return Explanation(
        text,
        tuple(
            LabelExplanation(
                names[j],
                float(row[j]),
                method,
                tuple(WordAttribution(text[s:e], s, e, float(a)) for (s, e), a in zip(spans, scores)),
            )
            for j, scores in per_label
        ),
    )


def explain_occlusion(
    scorer: Scorer, texts: Sequence[str], labels: Sequence[str] | str | None = None
) -> list[Explanation]:
    """Word occlusion through ``scorer``: every variant of every text in one `predict_proba` call.

    explain_occlusion(clf, ["so happy for you"], labels="joy")[0].labels[0].top(1)
    # -> [WordAttribution(word='happy', start=3, end=8, attribution=0.52)]
    """
    names = list(scorer.label_names)
    asked = label_indices(names, labels)
    plan = OcclusionPlan.of(texts)
    if not plan.originals:
        return []
    return plan.finish(scorer.predict_proba(list(plan.texts)), names, np.asarray(scorer.thresholds), asked)


def explain_texts(
    scorer: Scorer,
    texts: Sequence[str],
    labels: Sequence[str] | str | None = None,
    *,
    method: str | None = None,
    backend: Any = None,
    tokenizer: Any = None,
    max_length: int | None = None,
) -> list[Explanation]:
    """Explanations of ``texts`` by ``method`` (`EmotionClassifier.explain`); ``integrated-gradients``
    needs the scorer's torch ``backend``, ``tokenizer`` and ``max_length``, and reports its probabilities."""
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: expected {' or '.join(METHODS)}")
    if method == "occlusion":
        return explain_occlusion(scorer, texts, labels)
    if getattr(backend, "name", None) != "torch" or getattr(backend, "model", None) is None:
        shown = getattr(backend, "name", "this")
        raise ConfigError(
            f"method integrated-gradients needs the torch backend (the model's gradients), not {shown}: "
            f"load the model with backend='torch' (--backend torch), or use method occlusion"
        )
    from goemo.predict.explain_gradients import integrated_gradients  # noqa: PLC0415  (optional extra: explain, captum)

    names = list(scorer.label_names)
    asked = label_indices(names, labels)
    texts = check_texts(texts)
    if not texts:
        return []
    probs = np.asarray(scorer.predict_proba(texts), dtype=np.float64)
    chosen = chosen_labels(probs, np.asarray(scorer.thresholds), asked)
    all_spans = [word_spans(t) for t in texts]
    per_text = integrated_gradients(
        backend.model, tokenizer, texts, all_spans, chosen, max_length=int(max_length or 512)
    )
    return [
        explanation(text, spans, row, names, "integrated-gradients", list(zip(labels_of, word_scores)))
        for text, spans, row, labels_of, word_scores in zip(texts, all_spans, probs, chosen, per_text)
    ]
