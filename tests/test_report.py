"""`goemo report`: every section renders for a tiny trained run, images are embedded, tables
hold the labels and the paper's numbers, plots keep their text apart, and the pieces
(label confusion, epoch records, paper reference, HTML escaping) are right on small cases."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.data.source import DataSource
from goemo.data.taxonomy import load_taxonomy
from goemo.evaluation.evaluate import evaluate
from goemo.report import ScoringOptions, build_report
from goemo.report import plots as P
from goemo.report.confusion import NOTHING, label_confusion, pair_examples
from goemo.report.explanations import error_cases, explained_errors_section
from goemo.report.reference import paper_table
from goemo.report.render import Bullets, Document, Image, Link, Mark, Paragraph, Section, Table, to_html, to_markdown
from goemo.report.run_data import epoch_records

N = 300
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = list(load_taxonomy("goemotions").labels)
SECTIONS = [
    "Summary",
    "Per-emotion results beside the paper (Table 4)",
    "Ekman and sentiment groupings beside the paper (Table 5)",
    "Problematic classes",
    "Threshold sweep",
    "Calibration",
    "Label confusion",
    "Why the model erred",
    "Training",
    "Resources",
    "Run configuration",
    "Data exploration",
    "About these numbers",
]


class Page(HTMLParser):
    """Collects section titles, image sources, tables (as rows of cell texts) and links."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.tables: list[list[list[str]]] = []
        self._in: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th", "h2"):
            self._in, self._text = tag, ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._in == tag:
            self.tables[-1][-1].append(self._text.strip())
            self._in = None
        elif tag == "h2" and self._in == "h2":
            self.h2.append(self._text.strip())
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._text += data

    def table_with(self, header: str, first: str | None = None) -> list[list[str]]:
        for t in self.tables:
            if t and header in t[0] and (first is None or (len(t) > 1 and t[1] and t[1][0] == first)):
                return t
        raise AssertionError(f"no table with column {header!r} and first row {first!r}")


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session's tiny run (reports and caches are written into it)."""
    dest = tmp_path_factory.mktemp("report") / "tiny"
    shutil.copytree(tiny_model_dir.parent, dest, ignore=shutil.ignore_patterns("last", "predictions"))
    return dest


@pytest.fixture(scope="module")
def analysis(run: Path) -> Path:
    """A stand-in for `goemo stats --out`: one plot and a sample page beside the run."""
    folder = run.parent / "data-analysis"
    fig = P.new_figure(3, 2)
    fig.subplots().bar([0, 1], [1, 2])
    P.save_png(fig, folder / "label_frequency.png")
    (folder / "sample_train.html").write_text("<html></html>")
    return folder


@pytest.fixture(scope="module")
def built(run: Path, analysis: Path, shared_data: Path):
    result = build_report(run, source=DataSource.folder(shared_data), scoring=ScoringOptions(max_samples=N))
    page = Page()
    page.feed(result.html.read_text(encoding="utf-8"))
    return result, page


def _row(table: list[list[str]], first: str) -> dict[str, str]:
    header = table[0]
    for row in table[1:]:
        if row[0] == first:
            return dict(zip(header, row))
    raise AssertionError(f"no row {first!r}")


# --------------------------------------------------------------------------- the whole report


def test_report_has_every_section_and_writes_its_files(built, run):
    result, page = built
    assert page.h2 == SECTIONS
    assert result.markdown == run / "report.md" and result.html == run / "report.html"
    md = result.markdown.read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f"## {title}" in md
    for name, path in result.plots.items():
        assert path == run / "plots" / f"{name}.png" and path.read_bytes()[:8] == PNG_MAGIC
        assert f"](plots/{name}.png)" in md
    assert set(result.plots) == {
        "per_label_f1",
        "per_label_auc",
        "pr_curves",
        "threshold_sweep",
        "reliability",
        "label_confusion",
        "training_curves",
    }


def test_html_is_self_contained_with_embedded_pngs(built):
    result, page = built
    assert len(page.images) == len(result.plots) + 1  # + the data-analysis plot
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert "script" not in page.tags and "link" not in page.tags
    assert not [h for h in page.links if h.startswith(("http:", "https:")) and "arxiv.org" not in h]


def test_table4_holds_all_28_labels_beside_the_paper(built, run, shared_data):
    _, page = built
    table = page.table_with("paper F1", first="admiration")
    assert [r[0] for r in table[1:29]] == LABELS
    paper = paper_table("goemotions")
    for name in ("gratitude", "grief", "neutral", "relief"):
        row = _row(table, name)
        assert (row["paper P"], row["paper R"], row["paper F1"]) == tuple(f"{v:.3f}" for v in paper.labels[name])
    assert _row(table, "macro average")["paper F1"] == "0.460"
    # this model's own numbers are the evaluation's, at the paper's threshold 0.3
    ours = evaluate(run / "best", "test", max_samples=N, thresholds=0.3, source=DataSource.folder(shared_data)).report
    for m in ours.per_label:
        row = _row(table, m.name)
        assert row["n"] == f"{m.support:,}"
        assert row["F1 @0.3"] == ("n/a" if m.f1 is None else f"{m.f1:.3f}")
    assert _row(table, "macro average")["F1 @0.3"] == f"{ours.macro.f1:.3f}"
    tuned = evaluate(
        run / "best", "test", max_samples=N, thresholds="tuned", source=DataSource.folder(shared_data)
    ).report
    assert _row(table, "macro average")["F1 tuned"] == f"{tuned.macro.f1:.3f}"
    stored = json.loads((run / "best" / "goemo.json").read_text())["thresholds"]["per_label"]
    assert _row(table, "joy")["tuned t"] == f"{stored['joy']:.3f}"


def test_table5_groupings_beside_the_paper(built):
    _, page = built
    ekman = page.table_with("paper F1", first="anger")
    sentiment = page.table_with("paper F1", first="positive")
    assert [r[0] for r in ekman[1:8]] == list(load_taxonomy("ekman").labels)
    assert [r[0] for r in sentiment[1:5]] == list(load_taxonomy("sentiment").labels)
    assert _row(ekman, "joy")["paper F1"] == "0.820" and _row(ekman, "macro average")["paper F1"] == "0.640"
    assert _row(sentiment, "macro average")["paper F1"] == "0.690"
    summary = page.table_with("paper (BERT-base, 0.3)")
    assert _row(summary, "ekman macro F1 (projected)")["paper (BERT-base, 0.3)"] == "0.640"


def test_report_says_which_thresholds_and_where_they_were_tuned(built):
    result, _ = built
    md = result.markdown.read_text(encoding="utf-8")
    assert "the paper's single threshold 0.3" in md
    assert "tuned on dev" in md and "never on test" in md
    assert "arXiv 2005.00547" in md


def test_training_resources_config_and_data_sections(built, run, analysis):
    result, page = built
    epochs = page.table_with("train_loss")
    records = epoch_records(run / "metrics.jsonl")
    assert len(epochs) - 1 == len(records) >= 1
    assert epochs[1][0].startswith("1") and epochs[1][1] == f"{records[0]['train_loss']:.4f}"
    resources = page.table_with("value", first="wall time")
    assert _row(resources, "peak host memory (RSS)")["value"].endswith("MiB")
    config = page.table_with("option")
    assert _row(config, "model")["value"] == "tiny-random-bert"
    assert "../data-analysis/sample_train.html" in page.links  # relative to the report
    assert "../data-analysis/sample_train.html" in result.markdown.read_text(encoding="utf-8")


def test_confusion_section_lists_pairs(built, run, shared_data):
    _, page = built
    table = page.table_with("predicted instead")
    for row in table[1:]:
        assert row[0] in LABELS and row[1] in LABELS and row[0] != row[1]


def test_a_few_errors_are_explained_word_by_word(built):
    result, _ = built
    s = result.scored
    html = result.html.read_text(encoding="utf-8")
    section = html.split('id="why-the-model-erred"')[1].split("</section>")[0]
    assert "word occlusion" in section and '<mark class="pos"' in section
    md = result.markdown.read_text(encoding="utf-8").split("## Why the model erred")[1].split("\n## ")[0]
    assert 1 <= len([line for line in md.splitlines() if line.startswith("- ")]) <= 6

    # the scores shown are the cached predictions' own: the predictor is loaded with their settings
    names = list(s.data.label_names)
    probs, t = s.predictions.probs, 0.3
    worst = [n for n in names if ((probs[:, names.index(n)] > t) != s.data.labels[:, names.index(n)]).any()][:2]
    cases = [c for c in error_cases(s.data.labels, probs, t, names, worst) if len(s.data.texts[c[2]]) <= 300]
    got = explained_errors_section(s.folder, s.data, probs, s.predictions.settings, t, "0.3", worst)
    items = got.blocks[1].items
    assert len(items) == len(cases) >= 1
    for item, (label, kind, i) in zip(items, cases):
        assert item[0].startswith(f"{label}, {kind} (p = {probs[i, names.index(label)]:.2f}, threshold 0.30")
        words = [p for p in item if isinstance(p, Mark)]
        assert "".join(p if isinstance(p, str) else p.text for p in item[1:-2]) == s.data.texts[i]
        assert max(abs(w.weight) for w in words) == pytest.approx(1.0)


def test_error_cases_pick_the_most_confident_errors():
    y = np.array([[1, 0], [0, 1], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.1, 0.2], [0.9, 0.8], [0.6, 0.1], [0.4, 0.0], [0.7, 0.9]])
    # a: false positives rows 1 (0.9), 2, 4; misses rows 0 (0.1), 3; b: a false positive in row 4, no miss
    assert error_cases(y, p, 0.5, ["a", "b"], ["b", "a"]) == [
        ("b", "false positive", 4),
        ("a", "false positive", 1),
        ("a", "missed", 0),
    ]


def test_comparison_mode(run, analysis, shared_data, tmp_path):
    other = tmp_path / "other-run"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("predictions", "plots", "report.*"))
    result = build_report(
        run, compare=[other], source=DataSource.folder(shared_data), scoring=ScoringOptions(max_samples=N)
    )
    page = Page()
    page.feed(result.html.read_text(encoding="utf-8"))
    assert page.h2[-2:] == ["Comparison of runs", "About these numbers"]
    table = page.table_with("macro F1 @0.3", first="tiny")
    assert [r[0] for r in table[1:]] == ["tiny", "other-run", "paper"]
    assert table[1][2:12] == table[2][2:12]  # same weights, same texts: same scores
    assert _row(table, "paper")["macro F1 @0.3"] == "0.460"


def test_cli_report_reuses_cached_predictions(built, run, shared_data, tmp_path, monkeypatch):
    from goemo.predict.classifier import EmotionClassifier

    def boom(*args, **kwargs):
        raise AssertionError("a second report must read the cached predictions")

    monkeypatch.setattr(EmotionClassifier, "split_logits", boom)
    args = [
        "report",
        str(run),
        "--data-dir",
        str(shared_data),
        "--max-samples",
        str(N),
        "--data-analysis",
        str(tmp_path / "none"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "report:" in res.stdout and "report.html" in res.stdout and "from the cache" in res.stdout
    assert "goemo stats --out" in (run / "report.md").read_text(encoding="utf-8")  # no data analysis there
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and res.stderr.startswith("goemo: error:") and "no such run folder" in res.stderr


# --------------------------------------------------------------------------- pieces


def test_label_confusion_counts_missed_to_wrong_pairs():
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    p = np.array([[0, 1, 1], [0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]])
    conf = label_confusion(y, p, ["a", "b", "c"])
    # a missed in rows 0, 1, 3: -> b and c in row 0; nothing in row 1; -> c in row 3 (b is true there)
    assert conf.counts.tolist() == [[0, 1, 2, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert conf.columns[-1] == NOTHING
    np.testing.assert_allclose(conf.rates[0], [0, 1 / 3, 2 / 3, 1 / 3])
    assert conf.top_pairs(2) == [("a", "c", 2, 2 / 3), ("a", "b", 1, 1 / 3)]
    probs = np.array([[0.1, 0.6, 0.4], [0, 0, 0], [0, 0, 0], [0.1, 0.9, 0.95], [0.8, 0, 0]])
    assert pair_examples(y, p, 0, 2, probs=probs).tolist() == [3, 0]  # most confident first


def test_epoch_records_keep_the_last_record_of_each_epoch(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"event": "epoch", "epoch": 1, "train_loss": 0.9},
        {"event": "step", "epoch": 2, "train_loss": 0.5},
        {"event": "epoch", "epoch": 2, "train_loss": 0.7},
        {"event": "resume", "epoch": 1},
        {"event": "epoch", "epoch": 2, "train_loss": 0.6},
    ]
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"event": "epo')  # torn last line
    assert [(r["epoch"], r["train_loss"]) for r in epoch_records(path)] == [(1, 0.9), (2, 0.6)]


def test_paper_reference_is_consistent():
    t4 = paper_table("goemotions")
    assert set(t4.labels) == set(LABELS) and len(t4.labels) == 28
    values = np.array(list(t4.labels.values()))
    np.testing.assert_allclose(values.mean(axis=0), t4.macro, atol=0.005)  # the paper's macro row
    np.testing.assert_allclose(values.std(axis=0, ddof=1), t4.std, atol=0.005)
    for p, r, f in values:
        if p + r:
            assert abs(2 * p * r / (p + r) - f) < 0.011
    for tax in ("ekman", "sentiment"):
        t = paper_table(tax)
        assert set(t.labels) == set(load_taxonomy(tax).labels) and t.table == "Table 5"
    assert paper_table("ekman").macro[2] == 0.64 and paper_table("sentiment").macro[2] == 0.69
    assert "2005.00547" in t4.citation and paper_table("mine") is None


def test_html_escapes_every_text():
    evil = '<img src=x onerror="alert(1)">'
    doc = Document(
        "t <b>",
        [Paragraph([evil, Link("x", 'a" onclick="y')])],
        [Section("s", [Bullets([evil]), Table(["h<"], [[evil]]), Image("p.png", PNG_MAGIC, 'a"b', evil)])],
    )
    doc.sections[0].blocks.append(Paragraph([Mark(evil, 0.9, evil), Mark(evil, -0.05, evil)]))
    page = to_html(doc)
    assert "<img src=x" not in page and 'onclick="y' not in page and "<b>" not in page
    assert page.count("&lt;img src=x") == 8
    assert "| &lt;" not in to_markdown(doc)  # Markdown keeps text as is


# --------------------------------------------------------------------------- plots: readable text


def _no_overlap(texts, renderer) -> None:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text() and t.get_visible()]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            assert not box_a.overlaps(box_b), f"{a!r} and {b!r} overlap"


def _inside(fig, artists, renderer) -> None:
    frame = fig.bbox
    for t in artists:
        box = t.get_window_extent(renderer)
        assert (
            box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y0 >= frame.y0 - 1 and box.y1 <= frame.y1 + 1
        ), f"{t} is cut off"


@pytest.fixture(scope="module")
def synthetic_report():
    from goemo.scoring.metrics import compute_metrics

    rng = np.random.default_rng(0)
    y = (rng.random((400, 28)) < 0.08).astype(np.uint8)
    probs = np.clip(0.6 * y + 0.5 * rng.random(y.shape), 0, 1)
    return y, probs, compute_metrics(y, probs, LABELS, thresholds=0.3, split="test")


def test_bar_plots_keep_labels_and_legend_apart(synthetic_report):
    _, _, report = synthetic_report
    f1s = {m.name: m.f1 for m in report.per_label}
    paper_f1 = {k: v[2] for k, v in paper_table("goemotions").labels.items()}
    for fig in (P.f1_bars_figure(report, report, paper_f1), P.auc_bars_figure(report)):
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        ax = fig.axes[0]
        ticks = ax.get_yticklabels()
        assert len(ticks) == 28
        _no_overlap(ticks, renderer)
        _inside(fig, ticks, renderer)
        legend = ax.get_legend()
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    fig = P.f1_bars_figure(report)
    fig.canvas.draw()
    names = [t.get_text().split(" (")[0] for t in fig.axes[0].get_yticklabels()]
    assert f1s[names[-1]] == min(f1s.values()) and f1s[names[0]] == max(
        f1s.values()
    )  # ticks run bottom-up: worst on top


def test_confusion_heat_map_labels_are_readable(synthetic_report):
    y, probs, _ = synthetic_report
    fig = P.confusion_figure(label_confusion(y, probs > 0.3, LABELS))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    ys = ax.get_yticklabels()
    _no_overlap(ys, renderer)
    xs = ax.get_xticklabels()
    assert len(xs) == 29 and xs[-1].get_text() == NOTHING
    gap = min(np.diff(sorted(t.get_window_extent(renderer).x1 for t in xs))) * np.sin(np.radians(55))
    assert gap >= 1.1 * xs[0].get_fontsize() * fig.dpi / 72
    _inside(fig, [*xs, *ys], renderer)


def test_curves_have_legends_outside_the_data(synthetic_report):
    y, probs, report = synthetic_report
    epochs = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.1 / e,
            "auc_micro": 0.8,
            "auc_macro": 0.7,
            "f1_micro": 0.5,
            "f1_macro": 0.4,
        }
        for e in (1, 2, 3)
    ]
    for fig in (
        P.pr_curves_figure(y, probs, LABELS),
        P.training_curves_figure(epochs, best_epoch=2),
        P.threshold_sweep_figure(report, 0.5),
    ):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
            _inside(fig, [legend], renderer)


def test_cli_report_sort_puts_the_problem_classes_first(run, shared_data, tmp_path):
    """`goemo report --sort f1`: Table 4's rows by dev-tuned F1, worst first; the same columns as evaluate's."""
    args = ["report", str(run), "--data-dir", str(shared_data), "--max-samples", str(N)]
    res = CliRunner().invoke(app, [*args, "--data-analysis", str(tmp_path / "none"), "--sort", "f1"])
    assert res.exit_code == 0, res.output
    page = Page()
    page.feed((run / "report.html").read_text(encoding="utf-8"))
    table = page.table_with("paper F1")
    rows = [r for r in table[1:] if r[0] in LABELS]
    assert len(rows) == len(LABELS) and [r[0] for r in rows] != LABELS  # reordered
    tuned = [r[table[0].index("F1 tuned")] for r in rows]
    defined = [float(v) for v in tuned if v != "n/a"]
    assert defined == sorted(defined) and tuned[: len(defined)] == [f"{v:.3f}" for v in defined]
    bad = CliRunner().invoke(app, [*args, "--sort", "colour"])
    assert bad.exit_code == 2 and "'colour': expected one of label" in bad.output


def test_summary_and_table4_give_bootstrap_intervals(built, run, shared_data):
    """The report's intervals are `goemo evaluate`'s: 95%, 1,000 seeded resamples, at the same thresholds."""
    _, page = built
    summary = page.table_with("paper (BERT-base, 0.3)")
    source = DataSource.folder(shared_data)
    tuned = evaluate(run / "best", "test", max_samples=N, thresholds="tuned", source=source)
    b = tuned.add_intervals()
    assert b is not None and b.n_resamples == 1000
    assert (
        _row(summary, "macro F1, 95% interval")["dev-tuned thresholds"] == f"{b.f1_macro.low:.3f}–{b.f1_macro.high:.3f}"
    )
    auc = _row(summary, "macro ROC-AUC, 95% interval")["dev-tuned thresholds"]
    assert auc == f"{b.auc_macro.low:.3f}–{b.auc_macro.high:.3f}"
    table = page.table_with("F1 tuned, 95% interval", first="admiration")
    for name, interval in b.f1_per_label.items():
        cell = _row(table, name)["F1 tuned, 95% interval"]
        assert cell == ("n/a" if interval.low is None else f"{interval.low:.3f}–{interval.high:.3f}")


def test_calibration_section_gives_ece_before_and_after(built, run, shared_data):
    """Per-label and macro ECE (15 bins) of the scores and of the raw model's (the folder's maps undone)."""
    from goemo.core.folder import ModelFolder
    from goemo.scoring.calibration import expected_calibration_error

    _, page = built
    table = page.table_with("ECE", first="admiration")
    result = evaluate(run / "best", "test", max_samples=N, source=DataSource.folder(shared_data))
    probs = result.predictions.probs
    after = expected_calibration_error(result.labels, probs, 15)
    cal = ModelFolder.open(run / "best").calibration
    assert cal is not None  # training calibrates by default
    before = expected_calibration_error(result.labels, cal.uncalibrate_probs(probs), 15)
    assert _row(table, "macro")["ECE"] == f"{after.mean():.4f}"
    assert _row(table, "macro")["ECE, raw model"] == f"{before.mean():.4f}"
    assert _row(table, "joy")["ECE"] == f"{after[result.predictions.label_names.index('joy')]:.4f}"
