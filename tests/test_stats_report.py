"""Tables, plots, the sample page and the `goemo stats` verb.

Plots are checked for what a reader would notice: a valid PNG, and tick labels and bar
annotations that do not overlap each other (measured on the drawn figure).
"""

from __future__ import annotations

import csv
import io
import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from goemo.cli import app
from goemo.data.split import Split
from goemo.data.stats import compute_stats
from goemo.data.stats_report import (
    cooccurrence_figure,
    label_frequency_figure,
    plot_cooccurrence,
    plot_label_frequency,
    render_tables,
    sample_html,
    sample_records,
    write_outputs,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def official_rows(path: Path) -> list[list[str]]:
    """Independent reader: the csv module on the official TSV."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))


def random_split(n: int, names: list[str], seed: int, name: str) -> Split:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(names))) < 0.15).astype(np.uint8)
    texts = [" ".join(["word"] * int(k)) for k in rng.integers(1, 30, size=n)]
    return Split(texts, [f"{name}{i}" for i in range(n)], y, names, name)


def long_names(k: int = 28) -> list[str]:
    base = ["admiration", "embarrassment", "disappointment", "nervousness", "realization", "disapproval"]
    return [f"{base[i % len(base)]}_{i}" for i in range(k)]


class RowCounter(HTMLParser):
    """Counts table rows inside <tbody> and collects the text of the cells."""

    def __init__(self) -> None:
        super().__init__()
        self.in_body = False
        self.rows = 0
        self.cells: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.in_body |= tag == "tbody"
        self.rows += tag == "tr" and self.in_body
        self.scripts += tag == "script"

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False

    def handle_data(self, data):
        if self.in_body:
            self.cells.append(data)


def no_overlap(texts, renderer) -> None:
    """Level texts must not share pixels; rotated tick labels must be a line height apart.

    Bounding boxes of rotated texts always overlap, so for those the distance between two
    neighbouring labels' baselines (tick spacing x sin(angle)) is compared to the font height.
    """
    angle = texts[0].get_rotation() if texts else 0.0
    if angle % 180:
        xs = sorted(t.get_window_extent(renderer).x1 for t in texts)  # right ends are the anchors
        gap = min(np.diff(xs)) * abs(np.sin(np.radians(angle)))
        height = max(t.get_fontsize() for t in texts) * texts[0].figure.dpi / 72
        assert gap >= 1.1 * height, f"rotated labels {gap:.1f}px apart, text is {height:.1f}px high"
        return
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text() and t.get_visible()]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"


def inside_figure(fig, texts, renderer) -> None:
    frame = fig.bbox
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1, f"{t.get_text()!r} is cut off"
        assert box.y0 >= frame.y0 - 1 and box.y1 <= frame.y1 + 1, f"{t.get_text()!r} is cut off"


# --------------------------------------------------------------------------- tables and plots


@pytest.fixture(scope="module")
def synthetic():
    names = long_names()
    splits = {k: random_split(n, names, seed, k) for seed, (k, n) in enumerate([("train", 400), ("dev", 60)])}
    return splits, compute_stats(splits)


def test_tables_show_every_label_untruncated_at_80_columns(synthetic):
    splits, stats = synthetic
    buf = io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    for table in render_tables(stats):
        console.print(table)
    text = buf.getvalue()
    for name in stats.label_names:
        assert name in text
    top = max(stats.splits["train"].labels, key=lambda r: r.count)
    assert f"{top.count:,}" in text
    assert "400" in text and "token lengths skipped" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_label_frequency_plot_is_readable(synthetic, tmp_path):
    _, stats = synthetic
    fig = label_frequency_figure(stats)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    ticks = ax.get_yticklabels()
    assert [t.get_text() for t in ticks][::-1][:3] == [
        r.label for r in sorted(stats.splits["train"].labels, key=lambda r: (-r.count, r.label))
    ][:3]
    no_overlap(ticks, renderer)
    no_overlap(ax.texts, renderer)  # the count written beside each bar
    inside_figure(fig, ticks + ax.texts, renderer)
    path = plot_label_frequency(stats, tmp_path / "f.png")
    width, height = png_size(path)
    assert width >= 800 and height >= 800


def test_cooccurrence_plot_is_readable(synthetic, tmp_path):
    splits, _ = synthetic
    train = splits["train"]
    fig = cooccurrence_figure(train.labels, train.label_names, "train")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert len(ticks) == 28
        no_overlap(ticks, renderer)
        inside_figure(fig, ticks, renderer)
    shown = np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan)
    assert np.isnan(np.diag(shown)).all() and not np.isnan(shown[0, 1])  # diagonal left blank
    png_size(plot_cooccurrence(train.labels, train.label_names, tmp_path / "c.png"))


# --------------------------------------------------------------------------- sample page


def test_sample_is_seeded_and_names_labels():
    split = random_split(50, ["joy", "fear"], seed=0, name="train")
    a, b = sample_records(split, 10, seed=1), sample_records(split, 10, seed=1)
    assert a == b and a != sample_records(split, 10, seed=2)
    assert len({r["id"] for r in a}) == 10
    for r in a:
        i = r["row"] - 1
        assert r["id"] == split.ids[i]
        expected = [n for n, on in zip(["joy", "fear"], split.labels[i]) if on]
        assert r["labels"] == ", ".join(expected)
        assert r["label_ids"] == ",".join(str(j) for j, on in enumerate(split.labels[i]) if on)
    assert len(sample_records(split, 1000)) == 50


def test_sample_page_escapes_text():
    nasty = '<script>alert("x")</script> & </td></tr>'
    split = Split([nasty, "fine"], ["<b>id</b>", "2"], np.array([[1], [0]], np.uint8), ["a&b"], "train")
    page = sample_html(sample_records(split, 2), "title <i>", note="note & co")
    assert "<script>alert" not in page and "<b>id</b>" not in page and "<i>" not in page
    parser = RowCounter()
    parser.feed(page)
    assert parser.rows == 2 and parser.scripts == 1  # only the page's own filter script
    assert nasty in "".join(parser.cells)  # round-trips to the original text
    assert "a&b" in "".join(parser.cells)


# --------------------------------------------------------------------------- the real data through the CLI

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_out(shared_data: Path, tmp_path_factory):
    """One full run as `make run` does it: table format, token counts, --out."""
    out = tmp_path_factory.mktemp("analysis")
    result = runner.invoke(app, ["stats", "--data-dir", str(shared_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result, out


def test_cli_table_shows_real_numbers(cli_out):
    result, _ = cli_out
    for expected in ("43,410", "5,426", "5,427", "14,219", "neutral", "grief", "tokens p95"):
        assert expected in result.stdout


def test_cli_out_writes_valid_files(cli_out, shared_data):
    _, out = cli_out
    names = {p.name for p in out.iterdir()}
    assert names == {
        "stats.json",
        "stats.csv",
        "label_frequency.png",
        "cooccurrence.png",
        "sample_train.csv",
        "sample_train.html",
    }  # and no temporary files left behind
    for png in ("label_frequency.png", "cooccurrence.png"):
        width, height = png_size(out / png)
        assert width >= 800 and height >= 800
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["dev"]["texts"] == 5426 and stats["splits"]["train"]["tokens"]["max"] > 0
    rows = list(csv.DictReader((out / "stats.csv").read_text().splitlines()))
    assert len(rows) == 3 + 3 * 28


def test_cli_sample_matches_the_source_file(cli_out, shared_data):
    _, out = cli_out
    source = official_rows(shared_data / "train.tsv")
    names = (shared_data / "emotions.txt").read_text().split()
    with open(out / "sample_train.csv", newline="", encoding="utf-8") as f:
        sample = list(csv.DictReader(f))
    assert len(sample) == 1000 and len({r["id"] for r in sample}) == 1000
    for r in sample:
        text, ids, comment_id = source[int(r["row"]) - 1]
        assert (r["text"], r["id"]) == (text, comment_id)
        assert r["labels"] == ", ".join(names[int(i)] for i in sorted(map(int, ids.split(","))))
        assert r["label_ids"] == ",".join(map(str, sorted(map(int, ids.split(",")))))  # the file's own ids
    parser = RowCounter()
    page = (out / "sample_train.html").read_text(encoding="utf-8")
    parser.feed(page)
    assert parser.rows == 1000 and "<th>label ids</th>" in page


def test_cli_json_format(shared_data):
    result = runner.invoke(app, ["stats", "--data-dir", str(shared_data), "--format", "json", "--no-tokens"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert {k: v["texts"] for k, v in d["splits"].items()} == {"train": 43410, "dev": 5426, "test": 5427}
    assert d["splits"]["test"]["tokens"] is None
    neutral = [row for row in d["splits"]["test"]["labels"] if row["label"] == "neutral"][0]
    assert neutral["cooccurrence_pct"] >= 9.8


def test_cli_csv_format(shared_data):
    result = runner.invoke(app, ["stats", "--data-dir", str(shared_data), "--format", "csv", "--no-tokens"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    split_rows = {r["split"]: r for r in rows if r["level"] == "split"}
    assert {k: int(r["texts"]) for k, r in split_rows.items()} == {"train": 43410, "dev": 5426, "test": 5427}
    grief = next(r for r in rows if r["split"] == "train" and r["label"] == "grief")
    assert grief["count"] == "77"


def test_cli_ekman_taxonomy(shared_data):
    result = runner.invoke(
        app, ["stats", "--data-dir", str(shared_data), "--taxonomy", "ekman", "--format", "json", "--no-tokens"]
    )
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["label_names"] == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    # independent count: texts of train.tsv with any of the fear group's ids (fear, nervousness)
    names = (shared_data / "emotions.txt").read_text().split()
    fear_ids = {str(names.index("fear")), str(names.index("nervousness"))}
    expected = sum(bool(fear_ids & set(r[1].split(","))) for r in official_rows(shared_data / "train.tsv"))
    fear = next(r for r in d["splits"]["train"]["labels"] if r["label"] == "fear")
    assert fear["count"] == expected


def test_cli_missing_data_dir_is_one_line(tmp_path):
    result = runner.invoke(app, ["stats", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "data folder not found" in result.stderr and "Traceback" not in result.output


def test_cli_bad_format_is_a_usage_error(shared_data):
    result = runner.invoke(app, ["stats", "--data-dir", str(shared_data), "--format", "xml"])
    assert result.exit_code == 2


def test_write_outputs_without_train_uses_first_split(synthetic, tmp_path):
    splits, _ = synthetic
    only_dev = {"dev": splits["dev"]}
    written = write_outputs(compute_stats(only_dev), only_dev, tmp_path, sample_size=5, seed=0)
    assert "sample_dev.html" in written
    parser = RowCounter()
    parser.feed(written["sample_dev.html"].read_text())
    assert parser.rows == 5


# --------------------------------------------------------------------------- the sample in the trackers


def test_cli_logs_the_sample_to_tensorboard_and_wandb(shared_data, tmp_path, monkeypatch):
    """``--tracker``: the sample as a TensorBoard markdown table and a W&B Table (offline), the key figures as scalars."""
    for package in ("tensorboard", "wandb"):
        pytest.importorskip(package, reason="the track extra is not installed: pip install 'goemo[track]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "analysis"
    args = ["stats", "--data-dir", str(shared_data), "--out", str(out), "--no-tokens", "--format", "json"]
    result = runner.invoke(app, [*args, "--tracker", "tensorboard", "--tracker", "wandb"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["dev"]["texts"] == 5426  # stdout stays the JSON alone
    assert "logged to tensorboard, wandb" in result.stderr
    with open(out / "sample_train.csv", newline="", encoding="utf-8") as f:
        sample = [[r["text"], r["label_ids"], r["labels"]] for r in csv.DictReader(f)]

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert "data_sample/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("data_sample/text_summary")[0].tensor_proto.string_val[0].decode()
    lines = text.splitlines()
    assert lines[0] == "| text | label_ids | labels |" and len(lines) == 2 + 1000
    first = sample[0]
    assert (
        lines[2]
        == "| " + " | ".join(" ".join(c.replace("\\", "\\\\").replace("|", "\\|").split()) for c in first) + " |"
    )
    assert acc.Scalars("data/dev/texts")[0].value == 5426
    assert acc.Scalars("data/train/pct_multi_label")[0].value == pytest.approx(
        json.loads((out / "stats.json").read_text())["splits"]["train"]["pct_multi_label"], abs=1e-3
    )

    (table_file,) = out.glob("wandb/offline-run-*/files/media/table/data_sample_*.table.json")
    table = json.loads(table_file.read_text(encoding="utf-8"))
    assert table["columns"] == ["text", "label_ids", "labels"]
    assert table["data"] == sample  # the same 1,000 records as the CSV


def test_cli_tracker_needs_out_and_a_known_name(shared_data, tmp_path):
    no_out = runner.invoke(app, ["stats", "--data-dir", str(shared_data), "--no-tokens", "--tracker", "tensorboard"])
    assert no_out.exit_code == 2 and "--out" in no_out.output
    out = tmp_path / "analysis"
    typo = runner.invoke(
        app, ["stats", "--data-dir", str(shared_data), "--out", str(out), "--no-tokens", "--tracker", "tensorbord"]
    )
    assert typo.exit_code == 1 and "unknown tracker 'tensorbord'" in typo.stderr
    assert not out.exists()  # refused before anything was computed or written
