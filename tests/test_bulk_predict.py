"""Bulk labelling (`goemo.predict.files`, `.progress`, `.shards`): order and ids, resume, refusals, shards and their merge, kill -9."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.errors import ConfigError, RunFolderError
from goemo.predict.classifier import EmotionClassifier
from goemo.predict.files import BulkOptions, predict_file
from goemo.predict.prediction_writer import Labelling
from goemo.predict.progress import progress_path
from goemo.predict.shards import merge_predictions, parse_shard, shard_path, shard_range
from goemo.predict.stream import DEFAULT_CHUNK

CHUNK = 4
KEYED = BulkOptions(columns=("text", "key"), chunk_size=CHUNK)  # the test files' id column, small chunks
N_TEXTS = 30


@pytest.fixture(scope="module")
def clf(tiny_clf: EmotionClassifier) -> EmotionClassifier:
    return tiny_clf


def texts(n: int = N_TEXTS) -> list[str]:
    """Texts of many lengths (so batches are length-sorted), with quotes, commas and line breaks."""
    out = []
    for i in range(n):
        t = f"text {i} " + "word " * (i * 7 % 23)
        if i % 5 == 1:
            t += ' he said "no", then left'
        if i % 7 == 3:
            t += "\nsecond line"
        out.append(t)
    return out


def write_jsonl_input(path: Path, items: list[str], ids: list[str] | None = None) -> Path:
    ids = ids or [f"id-{(i * 7919) % 1000:03d}-{i}" for i in range(len(items))]  # not sorted
    path.write_text("".join(json.dumps({"key": k, "text": t}) + "\n" for k, t in zip(ids, items)), encoding="utf-8")
    return path


def write_csv_input(path: Path, items: list[str]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "text"])
        for i, t in enumerate(items):
            w.writerow([f"z{len(items) - i}", t])
    return path


def records_of(out: Path) -> list[dict]:
    text = out.read_text(encoding="utf-8")
    if out.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines()]


def label_sets(rows: list[dict]) -> list[list[str]]:
    return [r["labels"].split(",") if isinstance(r["labels"], str) else [d["label"] for d in r["labels"]] for r in rows]


def progress_of(out: Path) -> dict:
    return json.loads(progress_path(out).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- order and ids


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_order_and_ids_are_the_inputs(clf: EmotionClassifier, tmp_path: Path, suffix: str) -> None:
    items = texts()
    if suffix == ".csv":
        src = write_csv_input(tmp_path / "in.csv", items)
        ids = [f"z{len(items) - i}" for i in range(len(items))]
    else:
        src = write_jsonl_input(tmp_path / "in.jsonl", items)
        ids = [json.loads(line)["key"] for line in src.read_text().splitlines()]
    out = tmp_path / f"out{suffix}"
    result = predict_file(clf, src, out, Labelling(top_k=2), KEYED)
    assert (result.labelled, result.resumed_at, result.records) == (len(items), 0, len(items))
    rows = records_of(out)
    assert [r["id"] for r in rows] == ids and [r["text"] for r in rows] == items
    assert label_sets(rows) == [[d["label"] for d in p] for p in clf.predict(items, top_k=2)]
    doc = progress_of(out)
    assert doc["complete"] is True and doc["records"] == len(items) and doc["bytes"] == out.stat().st_size


def test_an_empty_input_gives_an_empty_complete_output(clf: EmotionClassifier, tmp_path: Path) -> None:
    src = tmp_path / "empty.txt"
    src.write_text("", encoding="utf-8")
    for name, content in (("out.jsonl", ""), ("out.csv", "id,text,labels,scores\n")):
        assert predict_file(clf, src, tmp_path / name).records == 0
        assert (tmp_path / name).read_text() == content and progress_of(tmp_path / name)["complete"] is True


# ----------------------------------------------------------------------------- resume


def interrupted(out: Path, clean: bytes, cut: int) -> None:
    """What a job killed after writing ``cut`` bytes leaves: those bytes, and its unfinished progress file."""
    doc = progress_of(out)
    out.write_bytes(clean[:cut])
    for key in ("records", "bytes", "finished"):
        doc.pop(key)
    doc["complete"] = False
    progress_path(out).write_text(json.dumps(doc), encoding="utf-8")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_after_a_torn_output_equals_an_uninterrupted_run(
    clf: EmotionClassifier, tmp_path: Path, suffix: str
) -> None:
    src = write_jsonl_input(tmp_path / "in.jsonl", texts())
    out = tmp_path / f"out{suffix}"
    predict_file(clf, src, out, Labelling(all_scores=True), KEYED)
    clean = out.read_bytes()
    ends = [i + 1 for i, b in enumerate(clean) if b == ord("\n")]
    whole = [e for e in ends if clean[:e].count(b'"') % 2 == 0]  # record ends outside CSV quotes
    header = whole.pop(0) if suffix == ".csv" else 0
    cuts = {
        0: 0,  # nothing written
        header + 3: 0,  # a torn first record
        whole[CHUNK - 1]: CHUNK,  # exactly one whole chunk
        whole[CHUNK - 1] + 5: CHUNK,  # a chunk and a torn record
        whole[CHUNK + 1] + 2: CHUNK,  # a chunk, two records of the next and a torn one: the torn chunk again
        whole[-2] + 1: (N_TEXTS - 1) // CHUNK * CHUNK,  # all but a torn last record
        len(clean): N_TEXTS,  # all written, killed before the progress file said so
    }
    if suffix == ".csv":
        cuts[5] = 0  # a torn header
    for cut, kept in cuts.items():
        interrupted(out, clean, cut)
        news: list[str] = []
        result = predict_file(
            clf,
            src,
            out,
            Labelling(all_scores=True),
            KEYED,
            notify=news.append,
        )
        assert out.read_bytes() == clean, f"cut at byte {cut}"
        assert (result.resumed_at, result.labelled, result.records) == (kept, N_TEXTS - kept, N_TEXTS)
        assert progress_of(out)["complete"] is True
        if 0 < kept < N_TEXTS:
            assert news == [f"resuming at record {kept + 1:,}: {out} holds the first {kept:,} records of this job"]


def test_a_complete_output_is_left_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = write_jsonl_input(tmp_path / "in.jsonl", texts(5))
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(tiny_model_dir), "--backend", "torch", "--input", str(src), "--output", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.stderr.endswith(f"{out} is complete (5 records); nothing to do (--overwrite labels again)\n")
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    relabel = CliRunner().invoke(app, [*args, "--overwrite"])
    assert relabel.exit_code == 0 and "5 texts labelled" in relabel.stderr and out.read_bytes() == before[0]


def test_an_output_of_another_job_is_refused(clf: EmotionClassifier, tmp_path: Path) -> None:
    a = write_jsonl_input(tmp_path / "a.jsonl", texts(10))
    b = write_jsonl_input(tmp_path / "b.jsonl", texts(12))
    out = tmp_path / "out.jsonl"
    predict_file(clf, a, out, options=KEYED)
    kept = out.read_bytes()
    with pytest.raises(RunFolderError, match=rf"^{out} is the output of another job \(the input is not the same file"):
        predict_file(clf, b, out, options=KEYED)
    with pytest.raises(RunFolderError, match=r"all_scores was False, now True"):
        predict_file(clf, a, out, Labelling(all_scores=True), KEYED)
    assert out.read_bytes() == kept
    # A progress file that agrees (same size, same time), beside records that are not this
    # input's: caught by the ids.
    interrupted(out, kept, len(kept))
    ids = [f"xx-{(i * 7919) % 1000:03d}-{i}" for i in range(10)]
    other = write_jsonl_input(tmp_path / "c.jsonl", texts(10), ids=ids).read_bytes()
    st = os.stat(a)
    assert len(other) == st.st_size
    a.write_bytes(other)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(RunFolderError, match=r"record 1 has id 'id-000-0', the input's record 1 has id 'xx-000-0'"):
        predict_file(clf, a, out, options=KEYED)
    # A file goemo did not write is never appended to.
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"note": 1}\n', encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"mine.jsonl exists, without the mine.jsonl.goemo-progress.json"):
        predict_file(clf, b, mine)


# ----------------------------------------------------------------------------- shards and merging


def test_shard_names_and_ranges() -> None:
    assert shard_path(Path("out/labels.jsonl"), 3, 8) == Path("out/labels.shard-3-of-8.jsonl")
    assert shard_path(Path("labels.csv"), 1, 1) == Path("labels.shard-1-of-1.csv")
    assert parse_shard("3/8") == (3, 8) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/3", "4/3", "3", "a/b", "-1/3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    for total in (0, 1, 7, 30, 1000):
        for n in (1, 2, 3, 8):
            ranges = [shard_range(total, k, n, CHUNK) for k in range(1, n + 1)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no overlap
            assert all(start % CHUNK == 0 for start, _ in ranges)  # whole chunks


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_shards_merge_into_the_unsharded_output(clf: EmotionClassifier, tmp_path: Path, suffix: str) -> None:
    src = write_jsonl_input(tmp_path / "in.jsonl", texts())
    whole = tmp_path / f"whole{suffix}"
    predict_file(clf, src, whole, Labelling(all_scores=True), KEYED)
    out = tmp_path / f"labels{suffix}"
    n = 3
    for k in range(1, n + 1):
        result = predict_file(clf, src, out, Labelling(all_scores=True), replace(KEYED, shard=(k, n)))
        assert result.output == shard_path(out, k, n)
    parts = [records_of(shard_path(out, k, n)) for k in range(1, n + 1)]
    assert [r["id"] for part in parts for r in part] == [r["id"] for r in records_of(whole)]  # ids of the whole input
    merged = merge_predictions(out, n)
    assert merged.records == N_TEXTS and not merged.already_merged
    assert out.read_bytes() == whole.read_bytes()
    assert progress_of(out)["job"] == progress_of(whole)["job"]
    assert all(shard_path(out, k, n).exists() for k in range(1, n + 1))
    again = merge_predictions(out, n, remove_shards=True)
    assert again.already_merged and again.removed == n
    assert not list(tmp_path.glob("labels.shard-*"))
    assert predict_file(clf, src, out, Labelling(all_scores=True), KEYED).already_complete


def test_merge_refuses_a_missing_or_incomplete_shard(clf: EmotionClassifier, tmp_path: Path) -> None:
    src = write_jsonl_input(tmp_path / "in.jsonl", texts())
    out = tmp_path / "labels.jsonl"
    for k in (1, 3):
        predict_file(clf, src, out, options=replace(KEYED, shard=(k, 3)))
    with pytest.raises(
        RunFolderError, match=r"^shard 2 of 3 \(.*labels.shard-2-of-3.jsonl\) is missing: run array task 2"
    ):
        merge_predictions(out, 3)
    predict_file(clf, src, out, options=replace(KEYED, shard=(2, 3)))
    third = shard_path(out, 3, 3)
    interrupted(third, third.read_bytes(), 50)
    with pytest.raises(
        RunFolderError, match=r"^shard 3 of 3 \(.*\) is incomplete \(0 of 10 records\): run array task 3"
    ):
        merge_predictions(out, 3)
    assert not out.exists()
    with pytest.raises(RunFolderError, match=r"shard 1 of 4 .* is missing"):
        merge_predictions(out, 4)
    assert predict_file(clf, src, out, options=replace(KEYED, shard=(3, 3))).resumed_at == 0
    assert merge_predictions(out, 3).records == N_TEXTS


def test_array_tasks_then_merge_through_the_cli(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts(9000)).replace("\nsecond line", " second line") + "\n", encoding="utf-8")
    out = tmp_path / "labels.csv"
    base = ["predict", "--model", str(tiny_model_dir), "--backend", "torch", "--input", str(src), "--output", str(out)]
    for k in (2, 1, 3):  # array tasks run in any order
        result = CliRunner().invoke(app, [*base, "--shard", f"{k}/3", "--no-text"])
        assert result.exit_code == 0, result.output
    early = CliRunner().invoke(app, ["merge-predictions", "--output", str(out), "--shards", "4"])
    assert early.exit_code == 1 and early.stderr.startswith("goemo: error: shard 1 of 4 (")
    merged = CliRunner().invoke(app, ["merge-predictions", "--output", str(out), "--shards", "3", "--remove-shards"])
    assert merged.exit_code == 0, merged.output
    assert merged.stderr == f"merged 3 shards (9,000 records) into {out}; removed 3 shard files\n"
    rows = records_of(out)
    assert [r["id"] for r in rows] == [str(i) for i in range(1, 9001)]
    bad = CliRunner().invoke(app, [*base, "--shard", "4/3"])
    assert bad.exit_code == 1 and bad.stderr == "goemo: error: --shard 4/3: expected K/N with 1 <= K <= N\n"


# ----------------------------------------------------------------------------- a real kill


@pytest.mark.slow
def test_kill_9_mid_output_leaves_whole_records_and_the_rerun_completes_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(f"text number {i} " + "word " * (i % 40) for i in range(12_000)) + "\n", encoding="utf-8")
    out, clean = tmp_path / "out.jsonl", tmp_path / "clean.jsonl"
    cmd = [sys.executable, "-m", "goemo", "predict", "--model", str(tiny_model_dir), "--backend", "torch"]
    cmd += ["--input", str(src)]
    proc = subprocess.Popen([*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") > DEFAULT_CHUNK:  # a whole chunk and more
                break
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    lines = out.read_bytes().split(b"\n")
    assert all(json.loads(line)["id"] for line in lines[:-1])  # whole records; lines[-1]: torn or b""
    assert 0 < len(lines) - 1 < 12_000 and not progress_of(out)["complete"]
    resumed = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at record " in resumed.stderr
    assert subprocess.run([*cmd, "--output", str(clean)], capture_output=True).returncode == 0
    assert out.read_bytes() == clean.read_bytes()
