"""The report's "Why the model erred" section: the words behind a few errors of each problematic label.

For the labels with the lowest F1 at the report's decision thresholds, the most confident
false positive (the label said, not given) and the most confident miss (given, not said)
are explained by word occlusion (`goemo.predict.explain`): each word deleted in turn,
every variant scored in one call. The predictor is loaded with the settings of the cached
predictions the report scores (`goemo.predict.cache.Predictions.settings`), so the scores
shown are the report's own, and the work is a few dozen texts however large the split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from goemo.core.errors import GoemoError
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import BACKENDS, PRECISIONS, RunSettings
from goemo.core.thresholds import binarize
from goemo.data.split import Split
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.explain import Explanation, LabelExplanation
from goemo.report.render import Bullets, Inline, Mark, Paragraph, Section

log = logging.getLogger(__name__)

TITLE = "Why the model erred"
LABELS_EXPLAINED = 3  # problematic labels with an error to show
TOP_WORDS = 3
EXAMPLE_CHARS = 300  # longer texts are not explained here (their highlight would not fit a line)


def error_cases(
    y: np.ndarray, probs: np.ndarray, thresholds: Any, names: Sequence[str], labels: Sequence[str]
) -> list[tuple[str, str, int]]:
    """``(label, kind, row)`` for each label of ``labels``: its most confident false positive, then its most confident miss.

    A false positive is confident when its probability is high, a miss when it is low.
    Labels without an error, and texts longer than `EXAMPLE_CHARS`, are skipped.

    >>> y = np.array([[1, 0], [0, 1], [0, 0]]); p = np.array([[0.1, 0.2], [0.9, 0.8], [0.6, 0.1]])
    >>> error_cases(y, p, 0.5, ["a", "b"], ["a", "b"])
    [('a', 'false positive', 1), ('a', 'missed', 0)]
    """
    pred = binarize(np.asarray(probs, dtype=np.float32), thresholds)
    out = []
    for label in labels:
        j = list(names).index(label)
        false_pos = np.flatnonzero((pred[:, j] == 1) & (y[:, j] == 0))
        missed = np.flatnonzero((pred[:, j] == 0) & (y[:, j] == 1))
        if len(false_pos):
            out.append((label, "false positive", int(false_pos[np.argmax(probs[false_pos, j])])))
        if len(missed):
            out.append((label, "missed", int(missed[np.argmin(probs[missed, j])])))
    return out


def explained_errors_section(
    folder: ModelFolder,
    data: Split,
    probs: np.ndarray,
    settings: dict[str, Any],
    thresholds: Any,
    decision: str,
    worst: Sequence[str],
) -> Section:
    """The section: for each of ``worst`` labels (lowest F1 first) with an error, up to two explained errors."""
    names = list(data.label_names)
    cases = error_cases(data.labels, probs, thresholds, names, worst)
    cases = [c for c in cases if len(data.texts[c[2]]) <= EXAMPLE_CHARS]
    labels = list(dict.fromkeys(label for label, _, _ in cases))[:LABELS_EXPLAINED]
    cases = [c for c in cases if c[0] in labels]
    intro = Paragraph(
        [
            f"The most confident false positive and the most confident miss of the {len(labels)} labels with "
            f"the lowest F1 that have errors to show (decisions: {decision}), explained by word occlusion: each word is deleted in turn "
            "and the text scored again. Green words raise the label's probability, red ones lower it; the "
            "numbers are the probability lost when the word is deleted."
        ]
    )
    if not cases:
        return Section(TITLE, [intro, Paragraph(["No errors to explain among these labels."])])
    try:
        clf = _predictor(folder, settings)
        rows = sorted({i for _, _, i in cases})
        explained = dict(zip(rows, clf.explain([data.texts[i] for i in rows], labels=labels)))
    except GoemoError as e:
        return Section(TITLE, [intro, Paragraph([f"Not explained: {e}"], note=True)])
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(names),))
    items: list[Sequence[Inline]] = []
    for label, kind, i in cases:
        true = ", ".join(n for n, v in zip(names, data.labels[i]) if v) or "none"
        items.append(_item(label, kind, explained[i], true, t[names.index(label)]))
    return Section(TITLE, [intro, Bullets(items)])


def _predictor(folder: ModelFolder, used: dict[str, Any]) -> EmotionClassifier:
    """The predictor that made the cached probabilities (same backend, precision, batch size and max length).

    On a machine without the device they were made on (a GPU run reported on a laptop), the
    folder's own backend on this machine's default device.
    """
    backend = used.get("backend") if used.get("backend") in BACKENDS else "auto"
    precision = used.get("precision") if backend == "torch" and used.get("precision") in PRECISIONS else None
    cached = RunSettings(
        backend=backend,
        device=str(used.get("device") or "auto"),
        precision=precision,
        batch_size=used.get("batch_size"),
        max_length=used.get("max_length"),
    )
    try:
        return EmotionClassifier.load(folder, cached)
    except GoemoError as e:
        log.info("explaining errors with the folder's own backend: %s", e)
        return EmotionClassifier.load(folder, RunSettings(backend="auto", max_length=used.get("max_length")))


def _item(label: str, kind: str, explanation: Explanation, true: str, threshold: float) -> list[Inline]:
    """One explained error: the text with its words marked, and the words that pushed most each way."""
    ex = next(x for x in explanation.labels if x.label == label)
    head = f"{label}, {kind} (p = {ex.score:.2f}, threshold {threshold:.2f}; true: {true}): “"
    parts: list[Inline] = [head, *_marked(explanation.text, ex), "”"]
    support = [w for w in ex.top(TOP_WORDS) if w.attribution > 0]
    against = sorted((w for w in ex.words if w.attribution < 0), key=lambda w: w.attribution)[:TOP_WORDS]
    sides = (("for", support), ("against", against))
    said = [f"{side} " + ", ".join(f"{w.word} {w.attribution:+.2f}" for w in words) for side, words in sides if words]
    parts.append(f" ({'; '.join(said)})" if said else " (no word moves it)")
    return parts


def _marked(text: str, ex: LabelExplanation) -> list[Inline]:
    largest = max((abs(w.attribution) for w in ex.words), default=0.0)
    out: list[Inline] = []
    at = 0
    for w in ex.words:
        if w.start > at:
            out.append(text[at : w.start])
        weight = w.attribution / largest if largest > 0 else 0.0
        out.append(Mark(w.word, weight, f"{w.attribution:+.3f}"))
        at = w.end
    if at < len(text):
        out.append(text[at:])
    return out
