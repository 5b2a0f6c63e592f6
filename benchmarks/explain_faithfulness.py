"""How faithful goemo's explanations are: ERASER's comprehensiveness and sufficiency against random words.

On (test text, predicted label) pairs of one model, for every method goemo offers, and for
deleting as many random words (seeded) in the same run (DeYoung et al., "ERASER: A Benchmark
to Evaluate Rationalized NLP Models", ACL 2020, section 4):

- comprehensiveness at k: the label's probability on the text less its probability with the
  top k% of words (by attribution, ceil(k * words), at least one) deleted. Higher: the words
  the method names are the ones the model needs;
- sufficiency at k: the probability on the text less the probability on those words alone.
  Lower: they are enough by themselves;
- AOPC: each averaged over k = 1, 5, 10, 20, 50% (ERASER's bins).

Random words get the same counts, so each row reads as ratios to random: the comprehensiveness
ratio ("top 20% lowers the label 4x as much as random 20%"; above 1 is better) and the
sufficiency ratio (below 1 is better). Every score comes from the predictor that made the
explanation, the texts in one batched call per bin. Time per text is wall time for all its
predicted labels: batched (texts explained 32 at a time, as ``goemo explain`` does; beside it,
``predict_proba`` alone on the same texts, the unit the cost reads in) and alone (one text per
call, as the web page asks).

    python benchmarks/explain_faithfulness.py --model runs/reproduce/best --split data/goemotions/test.tsv
    python benchmarks/explain_faithfulness.py --model runs/reproduce/best --data-dir data/goemotions --split test
    python benchmarks/explain_faithfulness.py --model /tmp/ex-model/best --backends torch --pairs 500
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import find_data, machine

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)
HEADLINE = 0.20
BATCH = 32  # texts per explain call in the batched timing


@dataclass
class Scores:
    """Per pair: comprehensiveness and sufficiency at each bin."""

    comp: list[list[float]] = field(default_factory=list)
    suff: list[list[float]] = field(default_factory=list)

    def at(self, what: str, k: float) -> float:
        return float(np.mean([row[BINS.index(k)] for row in getattr(self, what)]))

    def aopc(self, what: str) -> float:
        return float(np.mean(getattr(self, what)))


def counts(n_words: int) -> list[int]:
    """Words deleted at each bin: ceil(k * n), at least one, at most n."""
    return [min(n_words, max(1, math.ceil(k * n_words - 1e-9))) for k in BINS]


def pairs_of(clf, texts: list[str], want: int, rng: np.random.Generator) -> tuple[list[str], list[list[str]]]:
    """Texts in a seeded random order with their predicted labels, until ``want`` (text, label) pairs."""
    from goemo.predict.explain import word_spans

    order = rng.permutation(len(texts))
    chosen, labels, total = [], [], 0
    for at in range(0, len(order), 256):
        batch = [texts[i] for i in order[at : at + 256] if word_spans(texts[i])]
        for text, predicted in zip(batch, clf.predict(batch)):
            if predicted and total < want:
                chosen.append(text)
                labels.append([d["label"] for d in predicted])
                total += len(predicted)
        if total >= want:
            break
    return chosen, labels


def faithfulness(clf, explained: list, ranking: str, seed: int) -> Scores:
    """ERASER's scores of ``explained`` (one `Explanation` per text), or of random words (``ranking="random"``)."""
    from goemo.predict.explain import only_spans, without_spans

    jobs = []  # per pair: the label's column and its probability on the whole text
    variants: list[str] = []  # per pair and bin: the text without the top words, then the top words alone
    pair = 0
    for x in explained:
        for label in x.labels:
            spans = [(w.start, w.end) for w in label.words]
            if ranking == "random":
                order = np.random.default_rng([seed, pair]).permutation(len(spans))
            else:
                order = np.array(sorted(range(len(spans)), key=lambda i: (-label.words[i].attribution, i)))
            for m in counts(len(spans)):
                top = [spans[i] for i in order[:m]]
                variants += [without_spans(x.text, top), only_spans(x.text, top)]
            jobs.append((clf.label_names.index(label.label), label.score))
            pair += 1
    probs = clf.predict_proba(variants).astype(np.float64)
    out = Scores()
    at = 0
    for j, full in jobs:
        comp, suff = [], []
        for _ in BINS:
            comp.append(full - probs[at, j])
            suff.append(full - probs[at + 1, j])
            at += 2
        out.comp.append(comp)
        out.suff.append(suff)
    return out


def ratio(method: float, random: float) -> float:
    """``method / random``, NaN when random words lower the label by nothing or raise it (no scale to read in)."""
    return method / random if random > 0 else float("nan")


def predict_ms(clf, texts: list[str]) -> float:
    """ms per text of `predict_proba` alone on the same texts, 32 a call: the unit the cost of an explanation is read in.

    On a loaded machine every wall time grows; the ratio of two measured side by side moves far less.
    """
    clf.predict_proba(texts[:BATCH])
    start = time.perf_counter()
    for at in range(0, len(texts), BATCH):
        clf.predict_proba(texts[at : at + BATCH])
    return (time.perf_counter() - start) * 1000 / max(1, len(texts))


def timed(clf, texts: list[str], labels: list[list[str]], method: str, alone: int) -> tuple[list, float, list[float]]:
    """The explanations of ``texts`` (their predicted labels), ms per text batched, and ms of ``alone`` texts one by one."""
    clf.explain(texts[:1], method=method)  # warm-up: the first call pays for lazy initialisation
    explained = []
    start = time.perf_counter()
    for at in range(0, len(texts), BATCH):
        explained += clf.explain(texts[at : at + BATCH], method=method)
    batched = (time.perf_counter() - start) * 1000 / max(1, len(texts))
    single = []
    for text in texts[:alone]:
        t0 = time.perf_counter()
        clf.explain([text], method=method)
        single.append((time.perf_counter() - t0) * 1000)
    # the labels explained are the predicted ones, as chosen in `pairs_of`
    assert [[x.label for x in e.labels] for e in explained] == labels, "explained labels differ from predicted ones"
    return explained, batched, single


def main(argv: list[str] | None = None) -> int:
    from goemo.core.folder import ModelFolder
    from goemo.core.run_settings import RunSettings
    from goemo.data.source import DataSource, read_split
    from goemo.predict.classifier import EmotionClassifier
    from goemo.predict.explain import METHODS, word_spans

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (runs/NAME/best)")
    ap.add_argument(
        "--data-dir",
        default=None,
        help="folder of a named --split (default: ../shared/goemotions, else data/goemotions); a --split file "
        "is read with the columns of the model's own data",
    )
    ap.add_argument(
        "--split", default="test", help="a split name of the data (test) or a data file (data/goemotions/test.tsv)"
    )
    ap.add_argument("--pairs", type=int, default=500, help="(text, predicted label) pairs to score, at least")
    ap.add_argument(
        "--backends", default="torch,fastest", help="predictors to explain with (integrated gradients: torch only)"
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--alone", type=int, default=50, help="texts timed one per call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of the model (default: all cores)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    folder = ModelFolder.open(args.model)
    given = DataSource.folder(find_data(args.data_dir)) if args.data_dir or not Path(args.split).is_file() else None
    split = read_split(folder, args.split, given)  # a file is read with the model's own data's columns
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"model: {args.model}; split: {args.split} ({len(split):,} texts)")
    rows, figures = [], {"machine": machine(), "model": str(args.model), "results": []}
    for backend in args.backends.split(","):
        clf = EmotionClassifier.load(folder, RunSettings(backend=backend, device="cpu", num_threads=args.threads))
        texts, labels = pairs_of(clf, split.texts, args.pairs, np.random.default_rng(args.seed))
        n_pairs = sum(len(x) for x in labels)
        words = np.mean([len(word_spans(t)) for t in texts])
        print(f"\n{backend}: {clf.describe()}; {len(texts)} texts, {n_pairs} pairs, {words:.1f} words per text")
        random_scores = None
        for method in args.methods.split(","):
            if method == "integrated-gradients" and clf.backend != "torch":
                continue
            explained, batched, single = timed(clf, texts, labels, method, args.alone)
            plain = predict_ms(clf, texts)  # right after, under the same load
            scores = faithfulness(clf, explained, "ranked", args.seed)
            if random_scores is None:
                random_scores = faithfulness(clf, explained, "random", args.seed)
            row = {
                "backend": f"{clf.backend} {clf.precision}",
                "method": method,
                "pairs": n_pairs,
                "comp@20%": scores.at("comp", HEADLINE),
                "random comp@20%": random_scores.at("comp", HEADLINE),
                "ratio@20%": ratio(scores.at("comp", HEADLINE), random_scores.at("comp", HEADLINE)),
                "comp AOPC": scores.aopc("comp"),
                "random comp AOPC": random_scores.aopc("comp"),
                "suff@20%": scores.at("suff", HEADLINE),
                "random suff@20%": random_scores.at("suff", HEADLINE),
                "suff ratio@20%": ratio(scores.at("suff", HEADLINE), random_scores.at("suff", HEADLINE)),
                "suff AOPC": scores.aopc("suff"),
                "random suff AOPC": random_scores.aopc("suff"),
                "comp by bin": [scores.at("comp", k) for k in BINS],
                "random comp by bin": [random_scores.at("comp", k) for k in BINS],
                "ms/text batched": batched,
                "ms/text predict": plain,
                "explain/predict": batched / max(plain, 1e-9),
                "ms/text alone p50": float(np.median(single)) if single else None,
                "ms/text alone p90": float(np.percentile(single, 90)) if single else None,
            }
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if "bin" not in k}))
    figures["results"] = rows
    figures["load_average"] = os.getloadavg()[0]
    print(
        "\n| predictor | method | pairs | comp@20% (random) | comp ratio | comp AOPC (random) | suff@20% (random) "
        "| suff ratio | suff AOPC (random) | ms/text batched (x predict) | alone p50 / p90 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['method']} | {r['pairs']} | {r['comp@20%']:.3f} ({r['random comp@20%']:.3f}) "
            f"| **{r['ratio@20%']:.1f}x** | {r['comp AOPC']:.3f} ({r['random comp AOPC']:.3f}) "
            f"| {r['suff@20%']:.3f} ({r['random suff@20%']:.3f}) | {r['suff ratio@20%']:.2f}x "
            f"| {r['suff AOPC']:.3f} ({r['random suff AOPC']:.3f}) "
            f"| {r['ms/text batched']:.0f} ({r['explain/predict']:.1f}x) "
            f"| {r['ms/text alone p50']:.0f} / {r['ms/text alone p90']:.0f} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
