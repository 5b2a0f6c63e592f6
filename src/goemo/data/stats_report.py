"""Turn `goemo.data.stats` numbers into things people read: tables, plots, a sample page.

The 1,000-record sample (`data_sample`) is what the W&B GoEmotions report showed as its data
table: text, label ids and label names. It is written as CSV and HTML here; ``goemo stats
--tracker`` also logs it (and `DataStats.key_figures`) to W&B / TensorBoard, through
`goemo.training.tracking.log_dataset` (the CLI joins the two layers).

Plots use matplotlib's object API with the Agg canvas (never ``pyplot``), so no global
backend is switched and nothing needs a display. Every file goes through
`goemo.core.fileio`'s atomic writes: a report folder is never left with a half-written PNG.
"""

from __future__ import annotations

import csv
import html
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich import box
from rich.table import Table

from goemo.core.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from goemo.data.split import Split
from goemo.data.stats import DataStats, LengthStats, compute_stats, cooccurrence, load_default_tokenizer

log = logging.getLogger(__name__)

SAMPLE_SIZE = 1000
#: The sample's columns in a tracker's table (the W&B report's data table).
SAMPLE_COLUMNS = ["text", "label_ids", "labels"]
_SPLIT_COLORS = ("#2f6db5", "#e08a2c", "#4a9c5d", "#a35db0", "#8c8c8c")


# --------------------------------------------------------------------------- tables


def _length_rows(stats: DataStats, unit: str) -> list[list[str]]:
    rows = []
    for key in ("mean", "median", "p95", "max"):
        cells = []
        for s in stats.splits.values():
            lengths: LengthStats | None = getattr(s, unit)
            value = None if lengths is None else getattr(lengths, key)
            cells.append("-" if value is None else f"{value:.1f}" if key == "mean" else f"{value:g}")
        rows.append([f"{unit} {key}", *cells])
    return rows


def render_tables(stats: DataStats) -> list[Any]:
    """Two `rich.table.Table`s (splits, labels) for a terminal; the caller prints them.

    Splits are columns so both tables fit an 80-column terminal; labels are sorted by
    their count in the first split, so the imbalance reads top-down.

        from rich.console import Console
        for table in render_tables(stats): Console().print(table)
    """
    summary = Table(title="Splits", title_justify="left", box=box.SIMPLE_HEAD, min_width=62)
    summary.add_column("")
    for name in stats.splits:
        summary.add_column(name, justify="right")
    splits = list(stats.splits.values())
    summary.add_row("texts", *(f"{s.texts:,}" for s in splits))
    summary.add_row("labels per text", *(f"{s.label_cardinality:.3f}" for s in splits))
    summary.add_row("multi-label texts %", *(f"{s.pct_multi_label:.1f}" for s in splits), end_section=True)
    for row in _length_rows(stats, "words"):
        summary.add_row(*row)
    if stats.tokenizer:
        summary.rows[-1].end_section = True
        for row in _length_rows(stats, "tokens"):
            summary.add_row(*row)
        summary.caption = f"tokens: word pieces without [CLS]/[SEP]\ntokenizer: {stats.tokenizer}"
    else:
        summary.caption = "token lengths skipped (no tokenizer)"
    summary.caption_justify = "left"

    labels = Table(
        title="Labels",
        title_justify="left",
        caption="n: texts with the label; %: of all texts; co%: of the label's texts that carry another label",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    labels.add_column("label", no_wrap=True)
    for name in stats.splits:
        for unit in ("n", "%", "co%"):
            labels.add_column(f"{name}\n{unit}", justify="right")
    for label in _labels_by_count(stats):
        cells = [label]
        for s in splits:
            lab = s.label(label)
            cells += [f"{lab.count:,}", f"{lab.pct_texts:.1f}", f"{lab.cooccurrence_pct:.1f}"]
        labels.add_row(*cells)
    return [summary, labels]


def _labels_by_count(stats: DataStats) -> list[str]:
    first = next(iter(stats.splits.values()))
    return [row.label for row in sorted(first.labels, key=lambda r: (-r.count, r.label))]


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Any:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def plot_label_frequency(stats: DataStats, path: str | Path) -> Path:
    """Save `label_frequency_figure` as a PNG at ``path``.

    plot_label_frequency(stats, "runs/data-analysis/label_frequency.png")
    """
    return _save_png(label_frequency_figure(stats), Path(path))


def label_frequency_figure(stats: DataStats) -> Any:
    """Grouped horizontal bars: % of texts carrying each label, one bar per split.

    Percent rather than counts makes splits of different sizes comparable (a dev/test
    distribution that drifts from train shows as bars of unequal length); the first split's
    count is written beside its bar. Horizontal bars keep all label names level and readable.

        fig = label_frequency_figure(stats)
    """
    order = _labels_by_count(stats)[::-1]  # most frequent at the top
    splits = list(stats.splits.values())
    k, n_labels = len(splits), len(order)
    fig = _new_figure(10, 1.2 + 0.16 * n_labels * max(k, 2))
    ax = fig.subplots()
    height = 0.8 / k
    y = np.arange(n_labels)
    for i, s in enumerate(splits):
        values = [s.label(label).pct_texts for label in order]
        offset = (k - 1 - i - (k - 1) / 2) * height
        ax.barh(
            y + offset,
            values,
            height=height,
            color=_SPLIT_COLORS[i % len(_SPLIT_COLORS)],
            label=f"{s.name} ({s.texts:,} texts)",
        )
        if i == 0:
            for yy, label, v in zip(y + offset, order, values):
                ax.text(v, yy, f" {s.label(label).count:,}", va="center", fontsize=7, color="#333333")
    ax.set_yticks(y, order, fontsize=9)
    ax.set_ylim(-0.6, n_labels - 0.4)
    ax.set_xlabel("% of texts with the label")
    ax.set_xlim(0, max(r.pct_texts for s in splits for r in s.labels) * 1.15 or 1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="lower right", frameon=True, fontsize=9)
    ax.set_title(f"Label frequency per split (numbers: texts with the label in {splits[0].name})", fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def plot_cooccurrence(labels: np.ndarray, label_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Save `cooccurrence_figure` as a PNG at ``path``.

    plot_cooccurrence(split.labels, split.label_names, "cooc.png", "train")
    """
    return _save_png(cooccurrence_figure(labels, label_names, title), Path(path))


def cooccurrence_figure(labels: np.ndarray, label_names: Sequence[str], title: str = "") -> Any:
    """Heat map of P(column label | row label); the diagonal (always 1) is left blank.

    Row-normalised because raw counts would only repeat label frequency: a rare label that
    nearly always comes with another (e.g. grief with sadness) is what this plot should show.
    Cells of at least 5% carry their value in percent.

        fig = cooccurrence_figure(split.labels, split.label_names, "train")
    """
    p = cooccurrence(labels, normalize="row")
    counts = (np.asarray(labels) > 0).sum(axis=0)
    n = len(label_names)
    shown = p.copy()
    np.fill_diagonal(shown, np.nan)
    size = max(5.0, 0.42 * n + 3.0)
    fig = _new_figure(size + 1.2, size)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#e6e6e6")
    vmax = max(float(np.nanmax(shown)) if n > 1 and np.isfinite(shown).any() else 0.0, 0.01)
    image = ax.imshow(shown * 100, cmap=cmap, vmin=0, vmax=vmax * 100, aspect="equal")
    for i in range(n):
        for j in range(n):
            if i != j and p[i, j] >= 0.05:
                ax.text(
                    j,
                    i,
                    f"{p[i, j] * 100:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white" if p[i, j] > 0.6 * vmax else "#222222",
                )
    row_names = [f"{name} ({c:,})" for name, c in zip(label_names, counts)]
    ax.set_xticks(range(n), label_names, rotation=55, ha="right", rotation_mode="anchor", fontsize=8.5)
    ax.set_yticks(range(n), row_names, fontsize=8.5)
    ax.set_xlabel("column label: also present")
    ax.set_ylabel("row label (texts with it)")
    ax.tick_params(length=0)
    cbar = fig.colorbar(image, ax=ax, shrink=0.6)
    cbar.set_label("% of row-label texts that also carry the column label")
    ax.set_title(f"Label co-occurrence P(column | row){' - ' + title if title else ''}", fontsize=11)
    return fig


# --------------------------------------------------------------------------- sample page


def sample_records(split: Split, n: int = SAMPLE_SIZE, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` random records (file order kept) with label ids and names, for reading the data by eye.

    ``label_ids`` are the label columns' indices (``split.label_names``), comma-joined as in the
    official TSV files: for the 28 emotions they are the files' own ids, so a record can be
    checked against its source line.

        sample_records(split, 2, seed=0)
        # -> [{'row': 17, 'id': 'eebbqej', 'text': '...', 'label_ids': '27', 'labels': 'neutral'}, ...]
    """
    size = min(n, len(split))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(split), size=size, replace=False)) if size else np.array([], int)
    names = split.label_names
    records = []
    for i in rows:
        on = np.flatnonzero(split.labels[i])
        records.append(
            {
                "row": int(i) + 1,
                "id": split.ids[i],
                "text": split.texts[i],
                "label_ids": ",".join(str(j) for j in on),
                "labels": ", ".join(names[j] for j in on),
            }
        )
    return records


def data_sample(
    splits: Mapping[str, Split], sample_split: str = "train", n: int = SAMPLE_SIZE, seed: int = 0
) -> tuple[str, list[dict[str, Any]]]:
    """The split the sample comes from (``sample_split``, or the first when it is absent) and its `sample_records`.

    One function for the files and the trackers, so the CSV, the page and a tracker's table are
    the same records.
    """
    key = sample_split if sample_split in splits else next(iter(splits))
    return key, sample_records(splits[key], n, seed)


def sample_rows(records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The sample as rows of `SAMPLE_COLUMNS`, for a tracker's table (``wandb.Table(columns, data)``)."""
    return [[r[c] for c in SAMPLE_COLUMNS] for r in records]


_RECORD_FIELDS = ["row", "id", "text", "label_ids", "labels"]


def write_sample_csv(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """The sample as CSV (header ``row,id,text,label_ids,labels``; ``row`` is the 1-based record number
    in the source, ``label_ids`` the comma-joined label indices as in the official TSV)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_RECORD_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return atomic_write_text(path, buf.getvalue())


_PAGE_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:70em;color:#222}
h1{font-size:1.3em}p.note{color:#555}
input{font:inherit;padding:.3em .5em;width:22em;margin-bottom:.8em}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}
td.n,td.id{color:#777;white-space:nowrap;font-size:.9em}
span.l{display:inline-block;background:#e3edf9;border-radius:.7em;padding:0 .55em;margin:0 .2em .2em 0;font-size:.9em}
"""

_PAGE_SCRIPT = """
document.getElementById('q').addEventListener('input',function(e){
 var q=e.target.value.toLowerCase(),shown=0;
 document.querySelectorAll('tr.rec').forEach(function(r){
  var ok=r.textContent.toLowerCase().indexOf(q)>=0;r.style.display=ok?'':'none';if(ok)shown++;});
 document.getElementById('count').textContent=shown;});
"""


def sample_html(records: Sequence[Mapping[str, Any]], title: str, note: str = "") -> str:
    """A self-contained page (inline CSS and a small filter script, no external files); all text escaped."""
    esc = html.escape
    rows = []
    for r in records:
        chips = "".join(f'<span class="l">{esc(label)}</span>' for label in str(r["labels"]).split(", ") if label)
        rows.append(
            f'<tr class="rec"><td class="n">{r["row"]}</td><td class="id">{esc(str(r["id"]))}</td>'
            f'<td>{esc(str(r["text"]))}</td><td class="id">{esc(str(r["label_ids"]))}</td><td>{chips}</td></tr>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_PAGE_STYLE}</style></head><body>\n"
        f'<h1>{esc(title)}</h1><p class="note">{esc(note)}</p>\n'
        '<input id="q" type="search" placeholder="filter: text, id or label"> '
        f'<span id="count">{len(records)}</span> shown\n'
        "<table><thead><tr><th>row</th><th>id</th><th>text</th><th>label ids</th><th>labels</th></tr></thead>"
        "<tbody>\n" + "\n".join(rows) + f"\n</tbody></table>\n<script>{_PAGE_SCRIPT}</script>\n</body></html>\n"
    )


# --------------------------------------------------------------------------- output folder


def write_outputs(
    stats: DataStats,
    splits: Mapping[str, Split],
    out_dir: str | Path,
    sample_split: str = "train",
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
) -> dict[str, Path]:
    """Write stats.json, stats.csv, the two plots and the sample (CSV + HTML) into ``out_dir``.

    The co-occurrence plot and the sample use ``sample_split`` (or the first split when it
    is absent): the largest split gives the steadiest estimates.

        write_outputs(stats, splits, "runs/data-analysis")
        # -> {'stats.json': PosixPath('runs/data-analysis/stats.json'), ...}
    """
    out = Path(out_dir)
    key, records = data_sample(splits, sample_split, sample_size, seed)
    split = splits[key]
    source = f" ({split.source})" if split.source else ""
    note = (
        f"{len(records):,} records drawn at random (seed {seed}) from the {len(split):,} texts of "
        f"split '{key}'{source}; 'row' is the record's position in the source file (1-based)."
    )
    written = {
        "stats.json": atomic_write_json(out / "stats.json", stats.to_dict()),
        "stats.csv": atomic_write_text(out / "stats.csv", stats.to_csv()),
        "label_frequency.png": plot_label_frequency(stats, out / "label_frequency.png"),
        "cooccurrence.png": plot_cooccurrence(
            split.labels, split.label_names, out / "cooccurrence.png", f"{key} ({len(split):,} texts)"
        ),
        f"sample_{key}.csv": write_sample_csv(records, out / f"sample_{key}.csv"),
        f"sample_{key}.html": atomic_write_text(
            out / f"sample_{key}.html", sample_html(records, f"GoEmotions sample: {key}", note)
        ),
    }
    log.info("wrote %d files to %s", len(written), out)
    return written


def analyse_splits(
    splits: Mapping[str, Split],
    out_dir: str | Path | None = None,
    tokens: bool = True,
    seed: int = 0,
) -> DataStats:
    """Everything ``goemo stats`` does once the splits are read: compute, optionally write files.

    from goemo.data.source import DataSource
    stats = analyse_splits(DataSource.folder("data/goemotions").splits(), out_dir="runs/data-analysis")
    """
    stats = compute_stats(splits, load_default_tokenizer() if tokens else None)
    if out_dir is not None:
        write_outputs(stats, splits, out_dir, seed=seed)
    return stats
