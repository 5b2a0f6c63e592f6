"""The report's pictures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every function returns a `matplotlib.figure.Figure`; `save_png` writes one atomically. Label
names go on the y axis of horizontal bars so that all 28 stay level and readable; figure
heights grow with the number of labels so that tick labels never overlap.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from goemo.core.fileio import atomic_write_bytes
from goemo.core.thresholds import binarize
from goemo.report.confusion import LabelConfusion
from goemo.scoring.calibration import CalibrationReport
from goemo.scoring.metrics import MetricsReport

BAR = "#4C78A8"
TUNED = "#222222"
PAPER = "#E45756"
GREY = "#9D9D9D"
COLORS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D")
DPI = 110


def new_figure(width: float, height: float) -> Any:
    """A Figure on an Agg canvas with constrained layout (keeps labels inside the frame)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_png(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    return atomic_write_bytes(Path(path), png_bytes(fig))


def _finish(ax: Any, legend: str = "below", ncol: int = 1, grid: str | None = "both") -> None:
    """The look every plot shares: no top or right spine, a light grid behind the data, the legend outside.

    Legends go outside the axes: inside, they end up covering bars or curves on some model.
    """
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_axisbelow(True)
    if grid:
        ax.grid(axis=grid, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    where = {
        "above": dict(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=ncol, borderaxespad=0.0),
        "right": dict(loc="upper left", bbox_to_anchor=(1.02, 1.0)),
        "below": dict(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=ncol),
    }[legend]
    ax.legend(handles, labels, fontsize=8, frameon=False, **where)  # type: ignore[arg-type]


def _label_bars(rows: Sequence[Any], values: Sequence[Any], xlabel: str, **bar: Any) -> tuple[Any, Any]:
    """A figure of horizontal bars, one per label (``rows``, bottom-up), its height grown with their number."""
    n = len(rows)
    fig = new_figure(8.5, 1.9 + 0.27 * n)
    ax = fig.subplots()
    ax.barh(np.arange(n), values, height=0.7, color=BAR, **bar)
    ax.set_yticks(np.arange(n), [f"{m.name} ({m.support:,})" for m in rows], fontsize=8.5)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(f"{xlabel} (label name: positive examples in the split)")
    return fig, ax


# --------------------------------------------------------------------------- per-label bars


def f1_bars_figure(
    fixed: MetricsReport,
    tuned: MetricsReport | None = None,
    paper_f1: Mapping[str, float] | None = None,
    title: str = "",
) -> Any:
    """Per-label F1 at the fixed threshold, worst at the top; tuned-threshold F1 and the paper's as markers.

    Sorting worst-first puts the "problematic classes" where the eye starts. Labels with no
    positive example have no F1 and are left out (the title says how many).

        fig = f1_bars_figure(report_at_03, report_tuned, {"joy": 0.51})
    """
    rows = [m for m in fixed.per_label if m.defined]
    rows.sort(key=lambda m: (m.f1, m.name), reverse=True)  # barh draws bottom-up: best at the bottom
    fixed_label = f"F1 at threshold {fixed.threshold:g}" if isinstance(fixed.threshold, float) else "F1"
    fig, ax = _label_bars(rows, [m.f1 for m in rows], "F1", label=fixed_label)
    tuned_f1 = {m.name: m.f1 for m in tuned.per_label if m.f1 is not None} if tuned is not None else {}
    markers = [
        (tuned_f1, dict(marker="D", s=22, color=TUNED, zorder=3, label="F1 at dev-tuned per-label thresholds")),
        (
            paper_f1 or {},
            dict(marker="|", s=160, linewidths=2.2, color=PAPER, zorder=4, label="paper (BERT-base, threshold 0.3)"),
        ),
    ]
    for f1, style in markers:
        if at := [(i, f1[m.name]) for i, m in enumerate(rows) if m.name in f1]:
            ax.scatter([v for _, v in at], [i for i, _ in at], **style)
    ax.set_xlim(0, 1)
    _finish(ax, "above", ncol=3, grid="x")
    excluded = len(fixed.per_label) - len(rows)
    note = f"; {excluded} label(s) without positives left out" if excluded else ""
    fig.suptitle(
        title or f"Per-label F1, worst first ({fixed.split or 'split'}, {fixed.n_examples:,} texts{note})",
        fontsize=10.5,
    )
    return fig


def auc_bars_figure(report: MetricsReport, title: str = "") -> Any:
    """Per-label ROC-AUC, worst at the top, with the 0.5 chance line.

    AUC does not depend on any threshold, so it separates "the model cannot rank this label"
    (AUC near 0.5) from "the threshold is badly placed" (good AUC, poor F1).
    """
    rows = [m for m in report.per_label if m.auc is not None]
    rows.sort(key=lambda m: (m.auc, m.name), reverse=True)
    values = [m.auc for m in rows if m.auc is not None]  # all of them: rows hold only labels with an AUC
    fig, ax = _label_bars(rows, values, "ROC-AUC")
    for yy, v in enumerate(values):
        ax.text(v + 0.006, yy, f"{v:.3f}", va="center", fontsize=7, color="#333333")
    ax.axvline(0.5, color=PAPER, linestyle="--", linewidth=1, label="chance (0.5)")
    ax.set_xlim(0, 1.07)  # room for the value of a bar near 1
    ax.set_xticks(np.linspace(0, 1, 6))
    _finish(ax, "above", grid="x")
    macro = f"macro {report.macro.auc:.3f}" if report.macro.auc is not None else ""
    fig.suptitle(title or f"Per-label ROC-AUC, worst first ({macro})", fontsize=10.5)
    return fig


# --------------------------------------------------------------------------- precision-recall


def pr_curves_figure(
    y_true: np.ndarray, probs: np.ndarray, label_names: Sequence[str], k: int = 4, threshold: float = 0.3
) -> Any:
    """Precision-recall curves of the ``k`` worst and ``k`` best labels by average precision.

    A dot marks where the fixed threshold puts each label, so the reader sees how much
    better a per-label operating point on the same curve could do.
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    defined = [j for j in range(y.shape[1]) if 0 < y[:, j].sum()]
    ap = {j: float(average_precision_score(y[:, j], p[:, j])) for j in defined}
    order = sorted(defined, key=lambda j: (ap[j], label_names[j]))
    k = max(1, min(k, (len(order) + 1) // 2))
    groups = [("worst", order[:k]), ("best", order[::-1][:k])]
    fig = new_figure(11, 5.6)
    axes = fig.subplots(1, 2, sharey=True)
    pred = binarize(p, threshold)
    for ax, (which, labels) in zip(axes, groups):
        for c, j in enumerate(labels):
            precision, recall, _ = precision_recall_curve(y[:, j], p[:, j])
            color = COLORS[c % len(COLORS)]
            name = f"{label_names[j]} (AP {ap[j]:.2f}, n={int(y[:, j].sum())})"
            ax.plot(recall, precision, color=color, linewidth=1.6, label=name)
            tp = int((pred[:, j] & (y[:, j] == 1)).sum())
            npred = int(pred[:, j].sum())
            r_op = tp / max(int(y[:, j].sum()), 1)
            p_op = tp / npred if npred else 0.0
            ax.plot([r_op], [p_op], "o", color=color, markersize=6, markeredgecolor="white")
        ax.set(xlim=(0, 1.01), ylim=(0, 1.02), xlabel="recall")
        _finish(ax, ncol=2)
        ax.set_title(f"{len(labels)} {which} labels by average precision", fontsize=10.5)
    axes[0].set_ylabel("precision")
    fig.suptitle(f"Precision-recall curves (dots: operating point at threshold {threshold:g})", fontsize=11)
    return fig


# --------------------------------------------------------------------------- confusion


def confusion_figure(conf: LabelConfusion, title: str = "") -> Any:
    """Row-normalised heat map: when label i (row) is missed, which label j (column) is said instead.

    Cells of at least 3% carry their value in percent; the last column is "missed, and no
    wrong label predicted either". The diagonal is impossible by construction and is grey.
    """
    rates = conf.rates * 100
    L = len(conf.label_names)
    shown = rates.copy().astype(float)
    shown[np.arange(L), np.arange(L)] = np.nan
    shown[conf.support == 0, :] = np.nan
    size = max(6.0, 0.36 * L + 3.2)
    fig = new_figure(size + 1.6, size)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["Reds"].with_extremes(bad="#ececec")
    finite = shown[:, :L][np.isfinite(shown[:, :L])]
    vmax = max(float(finite.max()) if finite.size else 0.0, 1.0)
    image = ax.imshow(np.minimum(shown, vmax), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for i in range(L):
        for j in range(L + 1):
            v = shown[i, j]
            if np.isfinite(v) and v >= 3.0:
                color = "white" if v > 0.6 * vmax else "#222222"
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6.5, color=color)
    ax.set_xticks(range(L + 1), conf.columns, rotation=55, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(L), [f"{n} ({s:,})" for n, s in zip(conf.label_names, conf.support)], fontsize=8)
    ax.axvline(L - 0.5, color="#555555", linewidth=0.8)
    ax.set_xlabel("predicted instead (a label the text does not carry)")
    ax.set_ylabel("true label that was missed (texts with it)")
    ax.tick_params(length=0)
    cbar = fig.colorbar(image, ax=ax, shrink=0.6)
    cbar.set_label("% of the row label's texts (colour capped at the largest off-column value)")
    ax.set_title(title or "Label confusion: what the model says when it misses a label", fontsize=10.5)
    return fig


# --------------------------------------------------------------------------- training and thresholds


def training_curves_figure(epochs: Sequence[Mapping[str, Any]], best_epoch: int | None = None) -> Any:
    """Train/dev loss, dev ROC-AUC and dev F1 per epoch, side by side; the best epoch dashed."""
    fig = new_figure(12, 4.2)
    axes = fig.subplots(1, 3)
    x = [int(r["epoch"]) for r in epochs]
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "dev")]),
        ("dev ROC-AUC", [("auc_micro", "micro"), ("auc_macro", "macro")]),
        ("dev F1", [("f1_micro", "micro"), ("f1_macro", "macro")]),
    ]
    for ax, (title, series) in zip(axes, panels):
        for c, (key, name) in enumerate(series):
            values = [r.get(key) for r in epochs]
            pts = [(a, float(b)) for a, b in zip(x, values) if b is not None and np.isfinite(float(b))]
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", color=COLORS[c], label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color=GREY, linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_title(title, fontsize=10.5)
        ax.set_xlabel("epoch")
        ax.set_xticks(x if len(x) <= 12 else x[:: max(1, len(x) // 10)])
        _finish(ax, ncol=3)
    return fig


def threshold_sweep_figure(
    report: MetricsReport, tuned_macro_f1: float | None = None, paper_threshold: float = 0.3
) -> Any:
    """Macro and micro F1, macro precision and recall at each of the paper's thresholds."""
    rows = list(report.at_thresholds)
    fig = new_figure(9.5, 4.2)
    ax = fig.subplots()
    t = [r.threshold for r in rows]
    for c, key in enumerate(("macro_f1", "micro_f1", "macro_precision", "macro_recall")):
        pts = [(a, b) for a, b in zip(t, (getattr(r, key) for r in rows)) if b is not None]
        style = dict(marker="o", markersize=4, color=COLORS[c], linestyle="-" if "f1" in key else ":")
        ax.plot([a for a, _ in pts], [b for _, b in pts], label=key.replace("_", " ").replace("f1", "F1"), **style)
    ax.axvline(paper_threshold, color=GREY, linestyle="--", linewidth=1, label=f"paper's threshold {paper_threshold:g}")
    if tuned_macro_f1 is not None:
        name = f"macro F1, dev-tuned thresholds ({tuned_macro_f1:.3f})"
        ax.axhline(tuned_macro_f1, color=TUNED, linestyle="-.", linewidth=1, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="global threshold (predicted when prob > threshold)")
    _finish(ax, "right")
    ax.set_title("Scores at each threshold of the paper's sweep", fontsize=10.5)
    return fig


def reliability_figure(report: CalibrationReport) -> Any:
    """A reliability diagram pooled over labels: for each probability bin, the share of its (text,
    label) pairs that carry the label against the bin's mean probability, for the raw model's
    scores and the calibrated ones; on the diagonal, a probability means what it says."""
    fig = new_figure(5.5, 5.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="perfectly calibrated")
    sides = [("scores as given", report.reliability_after, report.macro_ece_after, COLORS[0])]
    if set(report.methods) != {"none"}:
        sides.insert(0, ("raw model", report.reliability_before, report.macro_ece_before, COLORS[1]))
    for name, rel, ece, color in sides:
        if rel is not None:
            keep = rel.all_counts > 0
            label = f"{name} (macro ECE {ece:.4f})"
            ax.plot(
                rel.all_confidence[keep], rel.all_accuracy[keep], marker="o", markersize=4, color=color, label=label
            )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean probability in the bin")
    ax.set_ylabel("share of the bin's pairs that carry the label")
    _finish(ax, grid=None)
    return fig
