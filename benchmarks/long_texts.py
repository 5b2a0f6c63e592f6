"""Long texts: truncation against pieces, on documents whose right answer is known.

GoEmotions comments are short, so long documents are built from them: ``--docs`` documents
(default 300) of 10 to 20 test comments each, drawn with a fixed seed and joined by spaces; a
document's labels are the union of its comments'. The same documents again with every sentence
end removed (lower-cased, no punctuation at all) stand for transcripts and chat logs. Each set
is scored by:

- ``truncate``: the first ``max_length`` tokens only (goemo before pieces);
- ``windows-64``: back-to-back windows as long as the model reads (64 tokens for ``fast``);
- ``windows-32/16``: windows of 32 tokens, each overlapping the next by 16;
- ``sentences``: goemo's default: sentence pieces, ``windows-32/16`` within a sentence that is
  too long or a text without sentence ends (`goemo.predict.pieces.DEFAULT_RULE`);
- ``oracle``: each comment scored alone, the document's logits the max over its comments
  (what a perfect segmentation would give).

Every way takes a label's max logit over its pieces and decides with the model's own per-label
thresholds (tuned on dev when it was trained), and is reported as macro-F1 over the labels that
occur and as a share of the oracle's. Targets (the ``make run`` model, max_length 64): pieces
reach >= 95% of the oracle on punctuated documents and >= 85% on unpunctuated ones.

Then bulk throughput, in tokens of the texts per second through ``predict_records`` (what
``goemo predict --input`` runs), of the punctuated documents against their comments as short
texts (the same words; special tokens not counted): target within 10%. Best of ``--repeats``
runs each, alternated.

    python benchmarks/long_texts.py --model runs/reproduce/best
    python benchmarks/long_texts.py --model /tmp/lt-model/best --docs 100 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from common import REPO, find_data, machine

DEFAULT_MODEL = REPO / "runs" / "reproduce" / "best"


def build_documents(texts: list[str], n: int, seed: int) -> list[tuple[list[int], str]]:
    """``n`` documents of 10 to 20 distinct comments each: (comment indices, text joined by spaces)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        idx = rng.choice(len(texts), size=int(rng.integers(10, 21)), replace=False).tolist()
        docs.append((idx, " ".join(texts[i].strip() for i in idx)))
    return docs


def unpunctuated(text: str) -> str:
    """Lower-cased, every punctuation character dropped, white space collapsed: no sentence ends left."""
    kept = "".join(c for c in text.lower() if not unicodedata.category(c).startswith("P"))
    return re.sub(r"\s+", " ", kept).strip()


def document_logits(clf: Any, texts: list[str], mode: str, rule: Any) -> np.ndarray:
    from goemo.predict.pieces import encode_pieces

    pieces = encode_pieces(texts, clf.tokenizer, clf.max_length, mode, rule)
    return pieces.aggregate(clf.logits_for_encoded(pieces.encoded))


def oracle_logits(clf: Any, docs: list[tuple[list[int], str]], comments: list[str]) -> np.ndarray:
    """Each comment alone, then each document's max over its comments."""
    flat = [comments[i] for idx, _ in docs for i in idx]
    logits = clf.predict_logits(flat)
    starts = np.cumsum([0] + [len(idx) for idx, _ in docs[:-1]])
    return np.maximum.reduceat(logits, starts, axis=0)


def throughput(clf: Any, texts: list[str]) -> float:
    """Seconds ``predict_records`` takes to label ``texts`` into JSON Lines in memory."""
    from goemo.data.records import Record
    from goemo.predict.prediction_writer import PredictionWriter
    from goemo.predict.stream import predict_records

    records = [Record(str(i), t) for i, t in enumerate(texts)]
    writer = PredictionWriter(io.StringIO(), "jsonl", clf.label_names)
    start = time.perf_counter()
    predict_records(clf, records, writer)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from goemo.data.io import load_goemotions
    from goemo.predict.classifier import EmotionClassifier

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (default: the make run model)")
    ap.add_argument("--data-dir", default=None, help="GoEmotions folder (default: ../shared/goemotions or data/)")
    ap.add_argument("--docs", type=int, default=300, help="documents per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto", help="auto (the folder's own weights), onnx, fastest, torch")
    ap.add_argument("--repeats", type=int, default=2, help="throughput runs per side (best kept)")
    ap.add_argument("--parts", default="quality,throughput", help="what to measure: quality, throughput or both")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if not Path(args.model, "goemo.json").is_file():
        raise SystemExit(f"{args.model}: not a model folder (train one: make run, or see docs/benchmarks.md)")

    clf = EmotionClassifier.load(args.model, backend=args.backend, device="cpu")
    test = load_goemotions(find_data(args.data_dir), splits=["test"])["test"]
    if list(test.label_names) != list(clf.label_names):
        raise SystemExit("the model's labels are not GoEmotions' 28")
    docs = build_documents(test.texts, args.docs, args.seed)
    y = np.stack([test.labels[idx].max(axis=0) for idx, _ in docs])
    tokens = [len(ids) for ids in clf.tokenizer([text for _, text in docs])["input_ids"]]
    print(f"{machine()}; {dt.date.today()}; {clf.describe()}")
    print(
        f"{len(docs)} documents of 10-20 test comments: {np.mean(tokens):.0f} tokens on average "
        f"({min(tokens)}-{max(tokens)}), max_length {clf.max_length}; {int(y.sum(axis=0).astype(bool).sum())} labels occur"
    )
    figures: dict[str, Any] = {"machine": machine(), "date": str(dt.date.today()), "model": str(args.model)}
    figures["describe"] = clf.describe()
    parts = set(args.parts.split(","))
    if "quality" in parts:
        figures["macro_f1"] = quality(clf, docs, y, test.texts)
    if "throughput" in parts:
        figures |= throughput_figures(clf, docs, test.texts, args.repeats)
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def quality(clf: Any, docs: list[tuple[list[int], str]], y: np.ndarray, texts: list[str]) -> dict[str, Any]:
    """Macro-F1 of every way on both sets, printed as a table with the share of the oracle."""
    from goemo.core.thresholds import sigmoid
    from goemo.predict.pieces import DEFAULT_RULE, PieceRule
    from goemo.scoring.metrics import summary

    ways = {
        "truncate": ("truncate", DEFAULT_RULE),
        f"windows-{clf.max_length}": ("pieces", PieceRule(sentences=False, window=10**9, overlap=0)),
        "windows-32/16": ("pieces", PieceRule(sentences=False, window=32, overlap=16)),
        "sentences": ("pieces", DEFAULT_RULE),
    }
    sets = {
        "punctuated": ([text for _, text in docs], texts),
        "unpunctuated": ([unpunctuated(text) for _, text in docs], [unpunctuated(t) for t in texts]),
    }
    print("\n| way | " + " | ".join(f"{s}: macro-F1 (share of oracle)" for s in sets) + " |")
    print("|---|" + "---:|" * len(sets))
    table: dict[str, dict[str, float]] = {}
    for name, (doc_texts, comments) in sets.items():
        oracle = summary(y, sigmoid(oracle_logits(clf, docs, comments)), clf.thresholds)["f1_macro"]
        table.setdefault("oracle", {})[name] = float(oracle)
        for way, (mode, rule) in ways.items():
            probs = sigmoid(document_logits(clf, doc_texts, mode, rule))
            table.setdefault(way, {})[name] = float(summary(y, probs, clf.thresholds)["f1_macro"])
    for way, row in table.items():
        cells = [f"{row[s]:.4f} ({row[s] / table['oracle'][s]:.1%})" for s in sets]
        print(f"| {way} | " + " | ".join(cells) + " |")
    share = {s: table["sentences"][s] / table["oracle"][s] for s in sets}
    print(
        f"targets: punctuated {share['punctuated']:.1%} of the oracle (>= 95%), unpunctuated {share['unpunctuated']:.1%} (>= 85%)"
    )
    return table


def throughput_figures(clf: Any, docs: list[tuple[list[int], str]], texts: list[str], repeats: int) -> dict[str, Any]:
    """Tokens per second of the punctuated documents and of their comments, best of ``repeats``.

    Tokens of the texts themselves, not counting the special tokens the model adds around each
    text or piece ([CLS], [SEP]): those depend on how a text is cut, not on the text, and both
    sides hold the very same words.
    """
    comments_used = [texts[i] for idx, _ in docs for i in idx]
    doc_texts = [text for _, text in docs]
    specials = clf.tokenizer.num_special_tokens_to_add(pair=False)
    doc_tokens = sum(clf.count_tokens(doc_texts)) - specials * len(doc_texts)
    short_tokens = sum(clf.count_tokens(comments_used)) - specials * len(comments_used)
    model_tokens = {
        "short": int(clf.encode(comments_used).lengths.sum()),
        "documents": int(clf.encode_pieces(doc_texts).encoded.lengths.sum()),
    }
    best = {"short": float("inf"), "documents": float("inf")}
    for _ in range(repeats):  # alternated: a machine whose load drifts favours neither side
        best["short"] = min(best["short"], throughput(clf, comments_used))
        best["documents"] = min(best["documents"], throughput(clf, doc_texts))
    rates = {"short": short_tokens / best["short"], "documents": doc_tokens / best["documents"]}
    ratio = rates["documents"] / rates["short"]
    print(
        f"\nbulk throughput (predict_records, best of {repeats}, tokens of the texts): short comments "
        f"{rates['short']:,.0f} tokens/s ({len(comments_used):,} texts, {short_tokens:,} tokens; the model reads "
        f"{model_tokens['short']:,} with special tokens), documents in pieces {rates['documents']:,.0f} tokens/s "
        f"({len(doc_texts):,} texts, {doc_tokens:,} tokens; the model reads {model_tokens['documents']:,}): "
        f"{ratio:.2f} of short texts' (target >= 0.90)"
    )
    return {
        "throughput_tokens_per_s": rates,
        "throughput_ratio": ratio,
        "seconds": best,
        "model_tokens": model_tokens,
    }


if __name__ == "__main__":
    raise SystemExit(main())
