"""`goemo report`: a run folder's results as ``report.md``, ``report.html`` and ``plots/*.png``.

The report answers, in order: how does the model compare with the paper (Tables 4 and 5),
which labels are problematic and why (F1 and ROC-AUC worst-first, precision-recall curves,
threshold sweep), what does it say when it misses a label (label confusion with example
texts, and the words behind a few errors), how did training go (curves, time, memory), and
what exactly was run (config).

Numbers are computed from cached test-set predictions (`goemo.predict.cache.predict_split`),
so building a report a second time does not run the model over the split (only over the few
texts whose errors are explained, `goemo.report.explanations`). Two sets of thresholds are shown
side by side: the paper's single 0.3, which is what makes the comparison with the paper
fair, and the per-label thresholds tuned on the dev split during training. Nothing is ever
tuned on the split being reported.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import goemo
from goemo.core.errors import EvaluationError
from goemo.core.fileio import atomic_write_bytes, atomic_write_text
from goemo.core.folder import CARD_FILE, ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.core.thresholds import PAPER_THRESHOLD, THRESHOLD_CONVENTION, binarize
from goemo.data.source import DataSource, read_split
from goemo.data.split import Split
from goemo.data.taxonomy import labels_said, load_taxonomy
from goemo.evaluation.evaluate import EvaluationResult, score_predictions
from goemo.predict.cache import Predictions, predict_split
from goemo.report import plots
from goemo.report.confusion import label_confusion, pair_examples
from goemo.report.explanations import explained_errors_section
from goemo.report.reference import PaperTable, citation, paper_table
from goemo.report.render import Bullets, Code, Document, Image, Link, Paragraph, Section, Table, to_html, to_markdown
from goemo.report.run_data import RunData
from goemo.scoring.bootstrap import Interval
from goemo.scoring.metrics import LabelMetrics, MetricsReport, sort_labels

GROUPINGS = ("ekman", "sentiment")
DATA_ANALYSIS_DIR = "data-analysis"
EXAMPLE_CHARS = 200
EXAMPLES_PER_PAIR = 2  # texts shown for each confused pair of labels


@dataclass
class ScoredRun:
    """One run's predictions on the report's split, scored at 0.3 and at its dev-tuned thresholds."""

    run: RunData
    folder: ModelFolder
    data: Split
    predictions: Predictions
    fixed: EvaluationResult
    tuned: EvaluationResult | None
    tuned_note: str | None
    groups: dict[str, tuple[EvaluationResult, EvaluationResult | None]] = field(default_factory=dict)
    sampled_from: int | None = None  # the split's size when a subset was scored

    @property
    def taxonomy(self) -> str:
        return self.folder.taxonomy

    def macro_f1(self, taxonomy: str, tuned: bool = False) -> float | None:
        if taxonomy == self.taxonomy:
            result = self.tuned if tuned else self.fixed
        elif taxonomy in self.groups:
            result = self.groups[taxonomy][1 if tuned else 0]
        else:
            return None
        return None if result is None else result.report.macro.f1


@dataclass(frozen=True)
class ScoringOptions:
    """How `build_report` scores the run and every run it compares (`score_run`): ``max_samples``
    (a seeded random subset of the split, for quick looks), ``settings`` (how the model runs,
    `goemo.core.run_settings.RunSettings`; default: the predictions training cached) and
    ``cache`` (False runs the model even when cached predictions exist, and stores none).
    """

    max_samples: int | None = None
    settings: RunSettings | None = None
    cache: bool = True


@dataclass
class ReportResult:
    """Where the report went, and the evaluations it was built from."""

    markdown: Path
    html: Path
    plots: dict[str, Path]
    scored: ScoredRun
    compared: list[ScoredRun]
    model_ran: bool


def score_run(
    run: RunData, split: str | Path, source: DataSource | None = None, scoring: ScoringOptions | None = None
) -> ScoredRun:
    """Predict (or read cached predictions) and score at 0.3, dev-tuned, and on the groupings.

    The split comes from ``source``, by default the model's training data, as `goemo evaluate` reads it;
    ``scoring`` says how the model runs on it (`ScoringOptions`).
    """
    scoring = scoring or ScoringOptions()
    folder = ModelFolder.open(run.model_dir)
    native = folder.taxonomy
    data = read_split(folder, split, source)
    full = len(data)
    if scoring.max_samples:
        data = data.sample(scoring.max_samples, seed=0)
    preds = predict_split(folder, data, scoring.settings, cache=scoring.cache)

    def score(thresholds: Any, taxonomy: str, sweep: bool) -> EvaluationResult:
        kwargs = {} if sweep else {"sweep": None}
        return score_predictions(preds, data, folder, thresholds=thresholds, taxonomy=taxonomy, **kwargs)

    fixed = score(PAPER_THRESHOLD, native, True)
    tuned, note = None, None
    try:
        tuned = score("tuned", native, False)
    except EvaluationError as e:  # no tuned thresholds, or they were tuned on this very split
        note = str(e)
    scored = ScoredRun(run, folder, data, preds, fixed, tuned, note, sampled_from=full if len(data) < full else None)
    if native == "goemotions" and data.label_names == list(load_taxonomy("goemotions").labels):
        for tax in GROUPINGS:
            scored.groups[tax] = (
                score(PAPER_THRESHOLD, tax, False),
                score("tuned", tax, False) if tuned is not None else None,
            )
    return scored


def build_report(
    run_dir: str | Path,
    *,
    split: str | Path = "test",
    source: DataSource | None = None,
    compare: Sequence[str | Path] = (),
    data_analysis: str | Path | None = None,
    scoring: ScoringOptions | None = None,
    sort: str | None = None,
) -> ReportResult:
    """Write ``report.md``, ``report.html`` (self-contained) and ``plots/*.png`` into ``run_dir``.

    ``compare`` adds a side-by-side table of other runs scored on the same split.
    ``data_analysis`` is the folder of ``goemo stats --out`` (default: ``data-analysis``
    beside the run folder); its plots and sample page are included when it exists.
    ``source`` is where the split comes from (default: the model's training data); ``scoring``
    (`ScoringOptions`) how each run is scored: a seeded random subset of the split
    (``max_samples``, quick looks only), how the model runs (``settings``; default: the
    predictions training cached) and whether the prediction cache is used. ``sort`` orders the per-label
    tables by a column (`goemo.scoring.metrics.SORT_KEYS`; scores worst first, at the dev-tuned
    thresholds where the run has them), so the problem classes lead.

        result = build_report("runs/minilm", compare=["runs/tiny"])
        result.html
        # -> PosixPath('runs/minilm/report.html')
    """
    run = RunData.load(run_dir)
    score_one = partial(score_run, split=split, source=source, scoring=scoring)
    scored = score_one(run) if sort is None else _sorted_labels(score_one(run), sort)
    for result in (scored.fixed, scored.tuned):
        if result is not None:
            result.add_intervals()  # 95%, 1,000 seeded resamples: the summary's and Table 4's intervals
    scored.fixed.add_calibration()  # ECE and the reliability diagram: thresholds play no part
    compared = [score_one(RunData.load(other)) for other in compare]
    analysis = Path(data_analysis) if data_analysis is not None else run.path.parent / DATA_ANALYSIS_DIR

    images: dict[str, Image] = {}
    paths: dict[str, Path] = {}
    for name, (fig, alt, caption) in _figures(scored).items():
        png = plots.png_bytes(fig)
        paths[name] = atomic_write_bytes(run.path / "plots" / f"{name}.png", png)
        images[name] = Image(f"plots/{name}.png", png, alt, caption)

    doc = Document(
        title=f"goemo report: {run.name}",
        intro=_intro(scored),
        sections=[
            _summary_section(scored),
            *_paper_sections(scored),
            _problem_section(scored, images),
            _threshold_section(scored, images),
            *([_calibration_section(scored, images)] if "reliability" in images else []),
            _confusion_section(scored, images, EXAMPLES_PER_PAIR),
            _errors_section(scored),
            _training_section(run, images),
            _resources_section(run),
            _config_section(run),
            _data_section(analysis, run.path),
            *([_comparison_section(scored, compared)] if compared else []),
            _notes_section(scored),
        ],
    )
    md = atomic_write_text(run.path / "report.md", to_markdown(doc))
    page = atomic_write_text(run.path / "report.html", to_html(doc))
    model_ran = not all(s.predictions.from_cache for s in [scored, *compared])
    return ReportResult(md, page, paths, scored, compared, model_ran)


# --------------------------------------------------------------------------- figures


def _figures(s: ScoredRun) -> dict[str, tuple[Any, str, str]]:
    paper = paper_table(s.taxonomy)
    paper_f1 = {k: v[2] for k, v in paper.labels.items()} if paper else None
    fixed = s.fixed.report
    tuned = s.tuned.report if s.tuned else None
    y, p, names = s.data.labels, s.predictions.probs, s.predictions.label_names
    out: dict[str, tuple[Any, str, str]] = {
        "per_label_f1": (
            plots.f1_bars_figure(fixed, tuned, paper_f1),
            "Per-label F1, worst first",
            "Bars: F1 at the paper's threshold 0.3. Diamonds: F1 at the per-label thresholds tuned on dev."
            + (" Red ticks: the paper's BERT-base F1." if paper_f1 else ""),
        ),
        "per_label_auc": (
            plots.auc_bars_figure(fixed),
            "Per-label ROC-AUC, worst first",
            "ROC-AUC does not depend on a threshold: a label near 0.5 is one the model cannot rank at all.",
        ),
        "pr_curves": (
            plots.pr_curves_figure(y, p, names, k=4, threshold=PAPER_THRESHOLD),
            "Precision-recall curves of the worst and best labels",
            "Dots: where the threshold 0.3 puts each label on its curve.",
        ),
        "threshold_sweep": (
            plots.threshold_sweep_figure(fixed, tuned.macro.f1 if tuned else None, PAPER_THRESHOLD),
            "Scores at each threshold of the paper's sweep",
            "One global threshold for all labels; the dash-dotted line is the macro F1 of the dev-tuned per-label thresholds.",
        ),
    }
    conf = label_confusion(y, binarize(p, _decision(s).thresholds.value), names)
    out["label_confusion"] = (
        plots.confusion_figure(conf),
        "Label confusion heat map",
        f"Rows: true labels the model missed; columns: the wrong labels it predicted instead "
        f"(decisions: {_decision(s).thresholds.description}). Values: % of the row label's texts.",
    )
    if s.fixed.calibration is not None:
        out["reliability"] = (
            plots.reliability_figure(s.fixed.calibration),
            "Reliability diagram",
            "Pooled over labels, 15 equal-width bins: how often a text carries a label, against the "
            "probability the model gave it. The raw model's curve is shown where the folder is calibrated.",
        )
    if s.run.epochs:
        out["training_curves"] = (
            plots.training_curves_figure(s.run.epochs, s.run.best_epoch),
            "Training curves",
            "Per epoch, from metrics.jsonl (dev metrics at the training threshold).",
        )
    return out


def _decision(s: ScoredRun) -> EvaluationResult:
    """The thresholds for confusion analysis: the dev-tuned ones when available (what prediction uses)."""
    return s.tuned or s.fixed


# --------------------------------------------------------------------------- sections


def _intro(s: ScoredRun) -> list[Any]:
    cfg = s.folder.meta.get("training_config") or s.run.config
    pooling = s.folder.meta.get("pooling") or cfg.get("pooling", "?")
    sample = f" (a seeded random sample of its {s.sampled_from:,})" if s.sampled_from else ""
    thresholds = (
        f", and {s.tuned.thresholds.description} during training (stored in best/goemo.json). "
        f"They were tuned on {s.tuned.thresholds.tuned_on}, never on {s.data.name}."
        if s.tuned is not None
        else f". Dev-tuned per-label thresholds are not shown: {s.tuned_note}"
    )
    out = [
        Paragraph(
            f"Model {s.run.model_dir} ({cfg.get('model', '?')}, {pooling} pooling, {labels_said(s.taxonomy)}), "
            f"evaluated on the {s.data.name} split, {len(s.data):,} texts{sample}. "
            f"Generated by goemo {goemo.__version__} on {_dt.date.today().isoformat()}."
        ),
        Paragraph(
            f"Thresholds: the paper's single threshold {PAPER_THRESHOLD:g} ({THRESHOLD_CONVENTION}) wherever the "
            f"paper is compared{thresholds}"
        ),
    ]
    card = s.run.model_dir / CARD_FILE
    if card.is_file():
        rel = _rel(card, s.run.path)
        about = "how to load it with plain transformers or goemo, per-label scores, data, limitations"
        upload = "the README.md `goemo push` uploads to the Hugging Face Hub"
        out.append(Paragraph([f"Model card ({about}; {upload}): ", Link(rel, rel), "."]))
    return out


def _paper_f1(taxonomy: str) -> float | None:
    """The paper's macro F1 for ``taxonomy`` (Tables 4 and 5), None where it has none."""
    ref = paper_table(taxonomy)
    return ref.macro[2] if ref else None


def _summary_section(s: ScoredRun) -> Section:
    f, t = s.fixed.report, (s.tuned.report if s.tuned else None)
    paper = paper_table(s.taxonomy)
    pm = paper.macro if paper else (None, None, None)
    rows: list[list[Any]] = [
        ["macro precision", f.macro.precision, t.macro.precision if t else None, pm[0]],
        ["macro recall", f.macro.recall, t.macro.recall if t else None, pm[1]],
        ["macro F1", f.macro.f1, t.macro.f1 if t else None, pm[2]],
        ["micro F1", f.micro.f1, t.micro.f1 if t else None, None],
        ["weighted F1", f.weighted.f1, t.weighted.f1 if t else None, None],
        ["samples F1", f.samples.f1, t.samples.f1 if t else None, None],
        ["exact match", f.exact_match, t.exact_match if t else None, None],
        ["macro ROC-AUC (no threshold)", f.macro.auc, f.macro.auc if t else None, None],
        ["micro ROC-AUC (no threshold)", f.micro.auc, f.micro.auc if t else None, None],
        ["macro average precision (no threshold)", f.macro.ap, f.macro.ap if t else None, None],
    ]
    rows += [
        [f"{tax} macro F1 (projected)", s.macro_f1(tax), s.macro_f1(tax, tuned=True), _paper_f1(tax)]
        for tax in GROUPINGS
        if tax in s.groups
    ]
    bands = (s.fixed.intervals, s.tuned.intervals if s.tuned else None)
    if any(bands):
        rows.insert(3, ["macro F1, 95% interval", *(_band(b.f1_macro if b else None) for b in bands), None])
        rows.insert(9, ["macro ROC-AUC, 95% interval", *(_band(b.auc_macro if b else None) for b in bands), None])
    headers = ["metric", f"threshold {PAPER_THRESHOLD:g}", "dev-tuned thresholds", "paper (BERT-base, 0.3)"]
    drawn = next((b for b in bands if b), None)
    how = (
        f" Intervals: {drawn.confidence:.0%} percentile bootstrap, {drawn.n_resamples:,} resamples of the texts "
        f"(seed {drawn.seed}); where two runs' intervals overlap, call them on par (`goemo compare` tests the difference)."
        if drawn
        else ""
    )
    caption = f"{s.data.name} split, {len(s.data):,} texts, {labels_said(s.taxonomy)}. Paper: {citation()}.{how}"
    return Section("Summary", [Table(headers, rows, caption=caption)])


def _band(interval: Interval | None) -> str | None:
    """``0.505–0.556``: an interval's ends, as the tables print them."""
    if interval is None or interval.low is None or interval.high is None:
        return None
    return f"{interval.low:.3f}–{interval.high:.3f}"


def _paper_sections(s: ScoredRun) -> list[Section]:
    native = paper_table(s.taxonomy)
    title = {
        "goemotions": "Per-emotion results beside the paper (Table 4)",
        "ekman": "Ekman groups beside the paper (Table 5)",
        "sentiment": "Sentiment groups beside the paper (Table 5)",
    }.get(s.taxonomy, "Per-label results")
    sections = [Section(title, _paper_blocks(s.fixed.report, s.tuned, native))]
    if s.groups:
        blocks: list[Any] = [
            Paragraph(
                "The 28-label model scored on the paper's coarser groupings without retraining: a group's "
                "probability is the max of its members' (so a group is predicted exactly when one of its "
                "members is), as in Table 5."
            )
        ]
        for tax, (fixed, tuned) in s.groups.items():
            blocks += [
                Paragraph(f"{tax.capitalize()} grouping:"),
                *_paper_blocks(fixed.report, tuned, paper_table(tax)),
            ]
        sections.append(Section("Ekman and sentiment groupings beside the paper (Table 5)", blocks))
    return sections


def _sorted_labels(scored: ScoredRun, key: str) -> ScoredRun:
    """``scored`` with its per-label rows in ``key``'s order: the tuned scores' order where there are
    some (what the reader acts on), the same order for the 0.3 rows."""
    ranked = sort_labels((scored.tuned or scored.fixed).report.per_label, key)
    position = {m.name: i for i, m in enumerate(ranked)}

    def ordered(result: EvaluationResult) -> EvaluationResult:
        rows = tuple(sorted(result.report.per_label, key=lambda m: position.get(m.name, len(position))))
        return replace(result, report=replace(result.report, per_label=rows))

    return replace(scored, fixed=ordered(scored.fixed), tuned=None if scored.tuned is None else ordered(scored.tuned))


def _paper_blocks(fixed: MetricsReport, tuned: EvaluationResult | None, paper: PaperTable | None) -> list[Any]:
    """The per-label table beside the paper's (Table 4 or 5), and the paper's note on how it was checked.

    Built as columns (header, one value per label, the macro row's, the std row's) kept only
    where they apply, so every row gets the same cells.
    """
    labels, defined = fixed.per_label, [m for m in fixed.per_label if m.defined]
    refs = [paper.labels.get(m.name) if paper else None for m in labels]
    cols: list[tuple[str, list[Any], Any, Any]] = [("n", [m.support for m in labels], fixed.macro.support, None)]
    if paper:
        cols += [
            (f"paper {k}", [r[i] if r else None for r in refs], paper.macro[i], paper.std[i])
            for i, k in enumerate(("P", "R", "F1"))
        ]
    for k, a in (("P", "precision"), ("R", "recall"), ("F1", "f1")):
        values = [getattr(m, a) for m in labels]
        cols.append((f"{k} @0.3", values, getattr(fixed.macro, a), _std([getattr(m, a) for m in defined])))
    if paper:
        delta = [_delta(m.f1, r) for m, r in zip(labels, refs)]
        cols.append(("ΔF1 vs paper", delta, _delta(fixed.macro.f1, paper.macro), None))
    if tuned:
        by_name = {m.name: m.f1 for m in tuned.report.per_label}
        per_label_t = {} if tuned.projected else tuned.thresholds.value.by_label()  # type: ignore[union-attr]
        if per_label_t:
            cols.append(("tuned t", [per_label_t.get(m.name) for m in labels], None, None))
        tuned_std = _std([m.f1 for m in tuned.report.per_label if m.defined])
        cols.append(("F1 tuned", [by_name.get(m.name) for m in labels], tuned.report.macro.f1, tuned_std))
        if bands := tuned.intervals:
            per_label = [_band(bands.f1_per_label.get(m.name)) for m in labels]
            cols.append(("F1 tuned, 95% interval", per_label, _band(bands.f1_macro), None))
    cols.append(("ROC-AUC", [m.auc for m in labels], fixed.macro.auc, _std([m.auc for m in defined])))
    rows = [[m.name, *values] for m, *values in zip(labels, *(c[1] for c in cols))]
    rows += [["macro average", *(c[2] for c in cols)], ["std across labels", *(c[3] for c in cols)]]
    caption = (
        "n: positive examples in the split. @0.3: predicted when prob > 0.3, the paper's setting."
        + (" Tuned: per-label thresholds tuned on dev." if tuned else "")
        + (f" Paper: {paper.table} of {paper.citation}, BERT-base on the test split." if paper else "")
    )
    table = Table(["label", *(c[0] for c in cols)], rows, caption=caption, bold_rows=frozenset({len(rows) - 2}))
    return [table, Paragraph([paper.verification], note=True)] if paper else [table]


def _delta(f1: float | None, paper: Sequence[float] | None) -> str | None:
    """F1 minus the paper's (its third number), signed; None where either is missing."""
    return None if f1 is None or not paper else f"{f1 - paper[2]:+.3f}"


def _std(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else None


def _worst(result: EvaluationResult) -> list[LabelMetrics]:
    """The labels with a defined F1, lowest F1 first (ties by name)."""
    return sorted((m for m in result.report.per_label if m.defined), key=lambda m: (m.f1, m.name))


def _problem_section(s: ScoredRun, images: dict[str, Image]) -> Section:
    defined = [m for m in s.fixed.report.per_label if m.defined]
    worst = _worst(s.fixed)[:5]
    items = ["Lowest F1 at 0.3: " + ", ".join(f"{m.name} {m.f1:.2f} (n={m.support})" for m in worst) + "."]
    if never := [m.name for m in defined if m.predicted == 0]:
        items.append(f"Never predicted at 0.3: {', '.join(never)}.")
    if low_auc := sorted((m for m in defined if m.auc is not None), key=lambda m: m.auc or 0.0)[:3]:
        items.append("Lowest ROC-AUC: " + ", ".join(f"{m.name} {m.auc:.2f}" for m in low_auc) + ".")
    figures = [images[k] for k in ("per_label_f1", "per_label_auc", "pr_curves")]
    return Section("Problematic classes", [Bullets(items), *figures])


def _calibration_section(s: ScoredRun, images: dict[str, Image]) -> Section:
    """Expected calibration error per label and macro (15 bins), before and after the folder's calibration."""
    c = s.fixed.calibration
    assert c is not None  # the section is made only with the diagram
    raw = set(c.methods) != {"none"}
    headers = ["label", *(["method", "ECE, raw model"] if raw else []), "ECE", "log-loss"]
    rows: list[list[Any]] = [
        [r["label"], *([r["method"], r["ece_before"]] if raw else []), r["ece_after"], r["log_loss_after"]]
        for r in c.rows()
    ]
    rows.append(
        ["macro", *(["", c.macro_ece_before] if raw else []), c.macro_ece_after, float(c.log_loss_after.mean())]
    )
    how = (
        "The folder is calibrated (fitted on dev at the end of training, or by goemo calibrate); the raw "
        "model's scores are its maps undone (not for an isotonic map, a step function: n/a, left out of "
        "the macro figure, and its calibrated scores drawn in the raw curve)."
        if raw
        else "The folder has no calibration (goemo calibrate fits one on dev)."
    )
    summary = Paragraph([f"Macro ECE on {c.split} ({c.texts:,} texts, {c.bins} bins): {c.macro_ece_after:.4f}. {how}"])
    return Section("Calibration", [summary, images["reliability"], Table(headers, rows, digits=4)])


# The threshold sweep table's columns: header -> `goemo.scoring.metrics.ThresholdMetrics` field.
SWEEP_COLUMNS = {
    "macro P": "macro_precision",
    "macro R": "macro_recall",
    "macro F1": "macro_f1",
    "micro P": "micro_precision",
    "micro R": "micro_recall",
    "micro F1": "micro_f1",
    "exact match": "exact_match",
}


def _threshold_section(s: ScoredRun, images: dict[str, Image]) -> Section:
    rows = [
        [f"{r.threshold:g}", *(getattr(r, k) for k in SWEEP_COLUMNS.values())] for r in s.fixed.report.at_thresholds
    ]
    caption = "One global threshold for every label, the paper's list of thresholds."
    blocks: list[Any] = [images["threshold_sweep"], Table(["threshold", *SWEEP_COLUMNS], rows, caption=caption)]
    if s.tuned is not None:
        f1s = f"{s.tuned.report.macro.f1:.3f} (at 0.3: {s.fixed.report.macro.f1:.3f})"
        blocks.insert(0, Paragraph(f"Macro F1 with the dev-tuned per-label thresholds: {f1s}."))
    return Section("Threshold sweep", blocks)


def _confusion_section(s: ScoredRun, images: dict[str, Image], examples: int) -> Section:
    decision = _decision(s)
    y, p, names = s.data.labels, s.predictions.probs, s.predictions.label_names
    pred = binarize(p, decision.thresholds.value)
    pairs = label_confusion(y, pred, names).top_pairs(10)
    table = Table(
        ["true label (missed)", "predicted instead", "texts", "% of true label's texts"],
        [[a, b, n, rate * 100] for a, b, n, rate in pairs],
        digits=1,
        caption=f"Decisions: {decision.thresholds.description}.",
    )
    items: list[str] = []
    index = {n: j for j, n in enumerate(names)}
    for a, b, _, _ in pairs[:5]:
        for i in pair_examples(y, pred, index[a], index[b], k=examples, probs=p):
            true = ", ".join(n for n, v in zip(names, y[i]) if v)
            said = ", ".join(n for n, v in zip(names, pred[i]) if v)
            text = s.data.texts[i]
            text = text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"
            items.append(f"{a} → {b}: “{text}” (true: {true}; predicted: {said}; p({b}) = {p[i, index[b]]:.2f})")
    blocks: list[Any] = [
        Paragraph(
            "For each true label the model missed, the labels it predicted instead (labels the text "
            "does not carry); the last column counts misses with no wrong label at all."
        ),
        images["label_confusion"],
        table,
    ]
    if items:
        blocks += [Paragraph("Examples of the most frequent confusions (most confident first):"), Bullets(items)]
    elif not pairs:
        blocks.append(Paragraph("No confusions: the model never predicted a wrong label for a missed one."))
    return Section("Label confusion", blocks)


def _errors_section(s: ScoredRun) -> Section:
    """A few errors of the labels with the lowest F1, explained word by word (`goemo.report.explanations`)."""
    d = _decision(s)
    worst = [m.name for m in _worst(d)]
    args = (s.predictions.probs, s.predictions.settings, d.thresholds.value, d.thresholds.description, worst)
    return explained_errors_section(s.folder, s.data, *args)


EPOCH_KEYS = (
    "train_loss",
    "val_loss",
    "auc_micro",
    "auc_macro",
    "f1_micro",
    "f1_macro",
    "epoch_time_s",
    "examples_per_s",
)


def _training_section(run: RunData, images: dict[str, Image]) -> Section:
    if not run.epochs:
        return Section("Training", [Paragraph(f"No per-epoch records in {run.path / 'metrics.jsonl'}.")])
    rows = [
        [str(r["epoch"]) + (" *" if r["epoch"] == run.best_epoch else ""), *(_num(r.get(k)) for k in EPOCH_KEYS)]
        for r in run.epochs
    ]
    select = run.summary.get("select_metric", "the selection metric")
    if select == "auc_score":  # the W&B report's name for macro ROC-AUC, shown here as auc_macro
        select = "auc_score (macro ROC-AUC: the auc_macro column)"
    threshold = run.summary.get("threshold", run.config.get("threshold", "?"))
    caption = (
        f"* best epoch by {select} on dev (weights kept in best/). Dev metrics at the training threshold {threshold}."
    )
    return Section(
        "Training", [images["training_curves"], Table(["epoch", *EPOCH_KEYS], rows, digits=4, caption=caption)]
    )


def _num(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _resources_section(run: RunData) -> Section:
    res = run.summary.get("resources") or {}
    if not res:
        return Section("Resources", [Paragraph(f"No resource summary in {run.path / 'summary.json'}.")])
    epochs = res.get("epoch_time_s") or []
    speed = [v for r in run.epochs if (v := r.get("examples_per_s"))]
    rows: list[list[Any]] = [
        ["wall time", _seconds(res.get("wall_time_s"))],
        ["time per epoch", ", ".join(_duration(float(t)) for t in epochs) if epochs else None],
        ["training speed", f"{np.mean(speed):,.0f} examples/s (mean over epochs)" if speed else None],
        ["evaluation time (dev, all epochs)", _seconds(res.get("eval_time_s"))],
        ["checkpoint saving", _seconds(res.get("time_to_save_s"))],
        ["peak host memory (RSS)", f"{res['peak_rss_mb']:,.0f} MiB" if res.get("peak_rss_mb") else None],
        ["precision", res.get("precision")],
        ["processes", res.get("num_processes")],
    ]
    rows += [
        [
            f"GPU {gpu.get('device', '')} {gpu.get('name', '')}".strip(),
            f"peak allocated {gpu.get('peak_allocated_mb', 0):,.0f} MiB, "
            f"reserved {gpu.get('peak_reserved_mb', 0):,.0f} MiB",
        ]
        for gpu in res.get("gpu_memory") or []
    ]
    rows += [[f"hardware: {key}", str(value)] for key, value in (res.get("hardware") or {}).items()]
    return Section("Resources", [Table(["", "value"], rows, align="ll")])


def _seconds(value: Any) -> str | None:
    return None if value is None else _duration(float(value))


def _duration(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"


CONFIG_KEYS = tuple(
    "model pooling taxonomy epochs lr head_lr batch_size max_length loss pos_weight ema_decay threshold "
    "select_metric seed max_train_samples".split()
)  # the options the report's configuration table shows; the whole config.yaml follows it


def _config_section(run: RunData) -> Section:
    if not run.config_text:
        return Section("Run configuration", [Paragraph(f"No config.yaml in {run.path}.")])
    rows = [[k, "none" if run.config[k] is None else str(run.config[k])] for k in CONFIG_KEYS if k in run.config]
    code = Code(run.config_text, summary="config.yaml (all options)")
    return Section("Run configuration", [Table(["option", "value"], rows, align="ll"), code])


def _data_section(analysis: Path, run_dir: Path) -> Section:
    title = "Data exploration"
    if not analysis.is_dir():
        missing = (
            f"No data analysis found in {analysis}; `goemo stats --out {analysis}` writes one "
            f"(label frequencies, co-occurrence, a 1,000-record sample page)."
        )
        return Section(title, [Paragraph(missing, note=True)])
    blocks: list[Any] = [Paragraph(f"From `goemo stats --out {analysis}`.")]
    for name, alt in (
        ("label_frequency.png", "Label frequency per split"),
        ("cooccurrence.png", "Label co-occurrence on the training split"),
    ):
        path = analysis / name
        if path.is_file():
            blocks.append(Image(_rel(path, run_dir), path.read_bytes(), alt, alt + "."))
    if samples := sorted(analysis.glob("sample_*.html")):
        links = [x for i, p in enumerate(samples) for x in ([", "] if i else []) + [Link(p.name, _rel(p, run_dir))]]
        blocks.append(Paragraph(["Browse a random sample of the data (with a filter box): ", *links]))
    return Section(title, blocks)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


# The comparison table's columns: header, and a run's value.
COMPARISON_COLUMNS: tuple[tuple[str, Callable[[ScoredRun], Any]], ...] = (
    ("run", lambda r: r.run.name),
    ("model", lambda r: (r.folder.meta.get("training_config") or r.run.config).get("model")),
    ("taxonomy", lambda r: r.taxonomy),
    ("best epoch", lambda r: r.run.best_epoch),
    ("macro P @0.3", lambda r: r.fixed.report.macro.precision),
    ("macro R @0.3", lambda r: r.fixed.report.macro.recall),
    ("macro F1 @0.3", lambda r: r.fixed.report.macro.f1),
    ("macro F1 tuned", lambda r: r.tuned.report.macro.f1 if r.tuned else None),
    ("micro F1 @0.3", lambda r: r.fixed.report.micro.f1),
    ("macro ROC-AUC", lambda r: r.fixed.report.macro.auc),
    ("exact match @0.3", lambda r: r.fixed.report.exact_match),
    ("ekman F1 @0.3", lambda r: r.macro_f1("ekman")),
    ("sentiment F1 @0.3", lambda r: r.macro_f1("sentiment")),
    ("wall time", lambda r: _seconds((r.run.summary.get("resources") or {}).get("wall_time_s"))),
)


def _comparison_section(s: ScoredRun, others: list[ScoredRun]) -> Section:
    headers = [h for h, _ in COMPARISON_COLUMNS]
    rows = [[get(r) for _, get in COMPARISON_COLUMNS] for r in [s, *others]]
    paper = paper_table("goemotions")
    macro = dict(zip(headers[4:7], paper.macro)) if paper else {}  # Table 4's macro P, R, F1
    groupings = {"ekman F1 @0.3": _paper_f1("ekman"), "sentiment F1 @0.3": _paper_f1("sentiment")}  # Table 5's
    from_paper = {"run": "paper", "model": "BERT-base", "taxonomy": "goemotions", **macro, **groupings}
    rows.append([from_paper.get(h) for h in headers])
    caption = (
        f"All runs scored on the same {s.data.name} texts ({len(s.data):,}). Macro values of a run's "
        f"own taxonomy; ekman/sentiment by projection for 28-label models."
    )
    return Section(
        "Comparison of runs", [Table(headers, rows, align="lll" + "r" * (len(headers) - 3), caption=caption)]
    )


def _notes_section(s: ScoredRun) -> Section:
    items: list[Any] = [
        f"Threshold convention: {THRESHOLD_CONVENTION} (strict), as in the paper's code.",
        f"Thresholds compared with the paper: {PAPER_THRESHOLD:g} for every label.",
    ]
    if s.tuned is not None:
        items.append(f"Tuned thresholds: {s.tuned.thresholds.description}; never tuned on {s.data.name}.")
    elif s.tuned_note:
        items.append(f"No tuned thresholds: {s.tuned_note}")
    items += [n for n in s.fixed.report.notes if not n.startswith("Threshold convention")]
    ref = paper_table(s.taxonomy)
    if ref is not None:
        where = ", stored in goemo/report/paper_reference.json with how each table was checked."
        items.append(["Paper numbers: ", Link(citation(), ref.url), where])
    cache = s.predictions.cache_path
    how = "read from the cache" if s.predictions.from_cache else "computed by running the model"
    items.append(f"Predictions: {how}" + (f" ({cache})" if cache else "") + ".")
    return Section("About these numbers", [Bullets(items)])
