"""`goemo audit`: confident-learning scores, planted label errors found first, reuse and resumption of
the fold models, the review page and its corrections export, and the command line."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from goemo.audit.page import LOGIC_SCRIPT_ID, render_review_page
from goemo.audit.quality import label_quality
from goemo.audit.runner import (
    ISSUE_COLUMNS,
    OOF_FILE,
    fold_dir,
    load_audit_data,
    run_audit,
    score_audit,
    train_fold,
)
from goemo.cli import app
from goemo.core.errors import ConfigError
from goemo.data.corrections import read_corrections
from goemo.data.io import load_goemotions
from goemo.training.data import clean_train

runner = CliRunner()
NODE = shutil.which("node")

# ---------------------------------------------------------------- the scores, on numbers


def test_thresholds_are_the_mean_probability_of_each_class_and_flags_pass_them() -> None:
    given = np.array([[1, 0], [1, 0], [1, 1], [0, 0], [0, 1]], dtype=np.uint8)
    probs = np.array([[0.9, 0.1], [0.7, 0.2], [0.05, 0.6], [0.8, 0.1], [0.3, 0.9]], dtype=np.float32)
    q = label_quality(given, probs, ["joy", "anger"])
    # t_joy = mean p over texts with joy; a_joy = mean p over texts without it
    assert q.present_mean[0] == pytest.approx((0.9 + 0.7 + 0.05) / 3)
    assert q.absent_mean[0] == pytest.approx((0.8 + 0.3) / 2)
    assert q.present_mean[1] == pytest.approx((0.6 + 0.9) / 2)
    assert q.absent_mean[1] == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    flagged = {(i, q.label_names[j], q.kind(i, j)) for i, j in q.ranking()}
    # text 3 lacks joy at 0.8 >= t_joy 0.55: missing; text 2 has joy at 0.05 <= a_joy 0.55: spurious
    assert flagged == {(3, "joy", "missing"), (2, "joy", "spurious")}
    # the score is p(other value) - p(given value)
    assert q.score[3, 0] == pytest.approx(0.8 - 0.2) and q.score[2, 0] == pytest.approx(0.95 - 0.05)
    assert q.score[0, 0] == pytest.approx(0.1 - 0.9) and q.score[0, 1] == pytest.approx(0.1 - 0.9)
    assert q.ranking() == [(2, 0), (3, 0)]  # surest first
    rows = {r["label"]: r for r in q.summary()}
    assert rows["joy"]["missing"] == 1 and rows["joy"]["spurious"] == 1 and rows["joy"]["suspected_rate"] == 0.4
    assert rows["anger"]["suspected"] == 0


def test_the_ranking_puts_surer_issues_first_across_labels_and_kinds() -> None:
    rng = np.random.default_rng(0)
    given = (rng.random((400, 3)) < 0.3).astype(np.uint8)
    probs = np.where(given == 1, 0.8, 0.05).astype(np.float32) + rng.normal(0, 0.01, given.shape).astype(np.float32)
    probs[7, 1], given[7, 1] = 0.99, 0  # very sure it is missing
    probs[9, 2], given[9, 2] = 0.0005, 1  # very sure it is spurious
    probs[11, 0], given[11, 0] = 0.85, 0  # a weaker missing one, just past t_a (about 0.8)
    q = label_quality(given, probs, ["a", "b", "c"])
    top = q.ranking()[:3]
    assert set(top[:2]) == {(7, 1), (9, 2)} and top[2] == (11, 0)


def test_a_label_no_text_carries_is_never_flagged_missing() -> None:
    given = np.array([[0, 1], [0, 1], [0, 0]], dtype=np.uint8)
    probs = np.array([[0.99, 0.9], [0.5, 0.8], [0.9, 0.1]], dtype=np.float32)
    q = label_quality(given, probs, ["never", "often"])
    assert not q.flagged[:, 0].any()
    assert q.summary()[0]["mean_prob_given"] is None and q.summary()[0]["spurious_rate"] is None


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="same"):
        label_quality(np.zeros((2, 2)), np.zeros((2, 3)), ["a", "b"])


# ---------------------------------------------------------------- planted errors in a certain data set


def _plant(folder: Path, rows: list[tuple[str, list[int]]]) -> dict[tuple[str, str], str]:
    """Flip four (id, label) pairs in ``folder/train.tsv``: each label taken from a text that says its
    keyword (now *missing*) and given to one that does not (now *spurious*); returns {(id, label): kind}."""
    names = ["joy", "anger"]
    lines = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
    kinds: dict[tuple[str, str], str] = {}
    for j, name in enumerate(names):
        for want, kind in ((True, "missing"), (False, "spurious")):
            n = next(n for n, (_, labels) in enumerate(rows) if (j in labels) == want and n > 2 + 7 * len(kinds))
            text_id, labels = rows[n]
            text, _, _ = lines[n].split("\t")
            lines[n] = "\t".join([text, ",".join(map(str, sorted(set(labels) ^ {j}))), text_id])
            kinds[(text_id, name)] = kind
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return kinds


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, keyword_data, keyword_config):
    """One audit (3 folds of the tiny model) of a keyword data set with four planted label errors."""
    root = tmp_path_factory.mktemp("audit")
    clean = root / "clean"
    rows = keyword_data(clean)
    noisy = root / "noisy"
    shutil.copytree(clean, noisy)
    kinds = _plant(noisy, rows["train"])
    config = keyword_config(noisy, root)
    result = run_audit(config, root / "out", folds=3)
    return {"root": root, "clean": clean, "noisy": noisy, "kinds": kinds, "config": config, "result": result}


def _issues(out: Path) -> list[dict[str, str]]:
    with open(out / "label_issues.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_planted_label_errors_rank_first(planted) -> None:
    issues = _issues(planted["root"] / "out")
    top = {(r["id"], r["label"]): r["kind"] for r in issues[:4]}
    assert top == planted["kinds"] and sorted(top.values()) == ["missing", "missing", "spurious", "spurious"]
    assert [int(r["rank"]) for r in issues] == list(range(1, len(issues) + 1))
    scores = [float(r["score"]) for r in issues]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0
    for r in issues[:4]:
        assert r["given"] == ("1" if r["kind"] == "spurious" else "0")


def test_the_audit_folder_holds_every_output(planted) -> None:
    out = planted["root"] / "out"
    result = planted["result"]
    with open(out / "label_issues.csv", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(ISSUE_COLUMNS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["texts"] == 240 and summary["folds"] == 3 and summary["split"] == "train"
    assert [r["label"] for r in summary["per_label"]] == ["joy", "anger"]
    with open(out / "summary.csv", encoding="utf-8") as f:
        per_label = list(csv.DictReader(f))
    assert [r["label"] for r in per_label] == ["joy", "anger"] and "suspected_rate" in per_label[0]
    flagged = sum(int(r["suspected"]) for r in per_label)
    assert flagged == len(_issues(out)) == sum(result.flagged.values())
    with np.load(out / OOF_FILE) as saved:
        assert saved["probs"].shape == (240, 2) and not np.isnan(saved["probs"]).any()
    for k in range(3):
        fold = fold_dir(out, k)
        assert (fold / "best" / "goemo.json").is_file() and (fold / OOF_FILE).is_file()
        assert json.loads((fold / "best" / "goemo.json").read_text())["training_config"]["holdout_fold"] == k
    audit = json.loads((out / "audit.json").read_text())
    assert audit["training_config"]["model"] == "tiny-random-bert" and audit["folds"] == 3
    page = (out / "review.html").read_text(encoding="utf-8")
    assert "<script" in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained


def test_each_text_is_predicted_by_the_fold_model_that_never_saw_it(planted) -> None:
    from goemo.data.folds import fold_of
    from goemo.predict.cache import predict_split

    out = planted["root"] / "out"
    data = load_audit_data(planted["config"])
    with np.load(out / OOF_FILE) as saved:
        probs = saved["probs"]
    folds = fold_of(data.audited.ids, 3)
    for k in range(3):
        rows = np.flatnonzero(folds == k)
        own = predict_split(fold_dir(out, k) / "best", data.audited.subset(rows)).probs
        assert np.allclose(probs[rows], own, atol=1e-5)
        trained_on = json.loads((fold_dir(out, k) / "best" / "goemo.json").read_text())["data_checksums"]["train"]
        assert trained_on == data.audited.subset(np.flatnonzero(folds != k)).checksum()


def test_finished_folds_are_reused_and_a_killed_fold_resumes(planted, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(planted["root"] / "out", out)
    config = planted["config"]
    metrics = (fold_dir(out, 0) / "metrics.jsonl").read_text()
    assert train_fold(config, out, 0, 3).trained is False
    assert (fold_dir(out, 0) / "metrics.jsonl").read_text() == metrics  # nothing was trained again
    # a fold killed after its last checkpoint, before the final evaluation: no summary.json, no predictions
    (fold_dir(out, 1) / "summary.json").unlink()
    (fold_dir(out, 1) / OOF_FILE).unlink()
    assert train_fold(config, out, 1, 3).trained is True
    events = [json.loads(x)["event"] for x in (fold_dir(out, 1) / "metrics.jsonl").read_text().splitlines()]
    assert "resume" in events and events.count("epoch") == 12  # continued from last/, no epoch trained twice
    again = score_audit(config, out, 3)
    assert _issues(out)[:4] == _issues(planted["root"] / "out")[:4]
    assert again.flagged == planted["result"].flagged


def test_folds_trained_with_other_settings_or_texts_are_refused(planted, tmp_path: Path) -> None:
    out = planted["root"] / "out"
    with pytest.raises(ConfigError, match=r"fold 0 .* other settings \(lr: 0\.005 -> 0\.02\).*--overwrite"):
        train_fold(planted["config"].replace(lr=0.02), out, 0, 3)
    with pytest.raises(ConfigError, match=r"fold 0 .* other settings \(seed: 0 -> 1\)"):
        score_audit(planted["config"].replace(seed=1), out, 3)
    with pytest.raises(ConfigError, match="fold 0 .* trained on other texts"):  # the data folder may move, not change
        train_fold(planted["config"].replace(data_dir=str(planted["clean"])), out, 0, 3)


def test_score_only_names_the_folds_still_to_run(planted, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(planted["root"] / "out", out)
    (fold_dir(out, 2) / OOF_FILE).unlink()
    with pytest.raises(ConfigError, match=r"fold\(s\) 2 of 3 .* --fold K"):
        score_audit(planted["config"], out, 3)


# ---------------------------------------------------------------- the review page and its export


def _node_export(page: str, rows_js: str, function: str) -> str:
    logic = re.search(rf'<script id="{LOGIC_SCRIPT_ID}">(.*?)</script>', page, re.S)
    assert logic is not None
    data = re.search(r'<script type="application/json" id="audit-data">(.*?)</script>', page, re.S)
    assert data is not None
    program = f"{logic.group(1)}\nconst DATA = JSON.parse({json.dumps(data.group(1))});\n" + (
        f"process.stdout.write({function}({rows_js}));\n"
    )
    done = subprocess.run([NODE, "-e", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(NODE is None, reason="node runs the page's export functions")
def test_the_pages_export_is_a_corrections_file_training_reads(planted, tmp_path: Path) -> None:
    """Check the planted rows on the page, export: goemo train --corrections gives back the clean labels."""
    page = (planted["root"] / "out" / "review.html").read_text(encoding="utf-8")
    csv_text = _node_export(page, "DATA.issues.filter(r => r.rank <= 4)", "correctionsCsv")
    path = tmp_path / "corrections.csv"
    path.write_text(csv_text, encoding="utf-8")
    fixes = read_corrections(path)
    assert {(f.id, f.label) for f in fixes} == set(planted["kinds"])
    assert all(f.action == ("add" if planted["kinds"][(f.id, f.label)] == "missing" else "remove") for f in fixes)
    noisy = load_goemotions(planted["noisy"], splits=["train"])
    cleaning = clean_train(planted["config"].replace(corrections=str(path)), noisy)
    clean = load_goemotions(planted["clean"], splits=["train"])["train"]
    assert noisy["train"].checksum() == clean.checksum()
    assert cleaning is not None and cleaning.labels_changed == 4 and cleaning.texts_excluded == 0
    ids = _node_export(page, "DATA.issues.filter(r => r.rank <= 4)", "exclusionsCsv")
    assert ids.splitlines()[0] == "id" and set(ids.splitlines()[1:]) == {i for i, _ in planted["kinds"]}


@pytest.mark.skipif(NODE is None, reason="node runs the page's export functions")
def test_the_export_quotes_ids_and_labels_as_csv(tmp_path: Path) -> None:
    issues = [
        {"rank": 1, "id": 'a,"b"', "text": "x</script>y", "label": "joy", "given": 0, "score": 1.0, "probability": 0.9,
         "kind": "missing", "labels": []},
        {"rank": 2, "id": " c", "text": "y", "label": "anger", "given": 1, "score": 0.5, "probability": 0.1,
         "kind": "spurious", "labels": ["anger"]},
    ]  # fmt: skip
    page = render_review_page(issues, [], ["joy", "anger"], {"texts": 2, "folds": 2, "split": "train", "source": "x"})
    assert "x</script>y" not in page  # the text cannot end the data's script element
    path = tmp_path / "fix.csv"
    path.write_text(_node_export(page, "DATA.issues", "correctionsCsv"), encoding="utf-8")
    assert [(f.id, f.label, f.action) for f in read_corrections(path)] == [
        ('a,"b"', "joy", "add"),
        ("c", "anger", "remove"),  # the reader strips each field
    ]
    filtered = _node_export(page, "filterRows(DATA.issues, {kind: 'spurious'})", "correctionsCsv")
    assert filtered.splitlines() == ["id,label,action", '" c",anger,remove']


# A stand-in for the browser's DOM, enough for the page's own script: elements that hold values,
# children and listeners, and a Blob / URL pair that records what an export button saves.
FAKE_DOM = r"""
const vm = require("vm");
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.listeners = {};
                     this.value = ""; this.textContent = ""; this.hidden = false; this.checked = false; }
  setAttribute(k, v) { this.attrs[k] = v; }
  append(...c) { this.children.push(...c); }
  replaceChildren() { this.children = []; }
  addEventListener(t, f) { (this.listeners[t] = this.listeners[t] || []).push(f); }
  fire(t) { for (const f of this.listeners[t] || []) f(); }
  click() { this.fire("click"); }
  remove() {}
}
const ids = {};
const saved = [];
globalThis.document = {
  getElementById: id => ids[id] || (ids[id] = new El("div")),
  createElement: tag => new El(tag),
  body: new El("body"),
};
globalThis.Blob = class { constructor(parts) { this.text = parts.join(""); } };
globalThis.URL = { createObjectURL: b => { saved.push(b.text); return "blob:" + saved.length; } };
const [data, ...scripts] = JSON.parse(require("fs").readFileSync(0, "utf8"));
document.getElementById("audit-data").textContent = data;
for (const code of scripts) vm.runInThisContext(code);
"""


@pytest.mark.skipif(NODE is None, reason="node runs the page's script")
def test_the_page_filters_checks_and_exports_what_was_checked(planted) -> None:
    page = (planted["root"] / "out" / "review.html").read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="audit-data">(.*?)</script>', page, re.S)
    scripts = re.findall(r"<script(?: id=\"[^\"]*\")?>(.*?)</script>", page, re.S)
    assert data is not None and len(scripts) == 2  # the logic, then the page's own
    steps = r"""
    const listed = () => ids.rows.children.length;
    const result = {all: listed(), status: ids.status.textContent};
    ids.kind.value = "spurious"; ids.kind.fire("change");
    result.spurious = listed();
    ids["check-shown"].click();
    ids.kind.value = ""; ids.kind.fire("change");
    result.checked = ids.checked.textContent;
    ids.export.click();
    ids["export-ids"].click();
    result.saved = saved;
    const firstRow = ids.rows.children[0];
    result.first = firstRow.children.map(td => td.children.length ? td.children[0].checked ?? null : td.textContent);
    process.stdout.write(JSON.stringify(result));
    """
    done = subprocess.run(
        [NODE, "-e", FAKE_DOM + steps],
        input=json.dumps([data.group(1), *scripts]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    issues = _issues(planted["root"] / "out")
    spurious = [r for r in issues if r["kind"] == "spurious"]
    assert got["all"] == len(issues) and got["status"].startswith(f"{len(issues)} of {len(issues)} pairs")
    assert got["spurious"] == len(spurious) and got["checked"] == f"{len(spurious)} checked"
    corrections, exclude = got["saved"]
    assert corrections.splitlines() == ["id,label,action", *(f"{r['id']},{r['label']},remove" for r in spurious)]
    assert exclude.splitlines() == ["id", *dict.fromkeys(r["id"] for r in spurious)]
    # the first row again, unfiltered: its box is ticked if it is spurious, then rank, score, kind, label, p
    top = issues[0]
    assert got["first"][0] is (top["kind"] == "spurious")
    kind = "missing (add?)" if top["kind"] == "missing" else "spurious (remove?)"
    score, p = f"{float(top['score']):.3f}", f"{float(top['probability']):.3f}"
    assert got["first"][1:6] == [int(top["rank"]), score, kind, top["label"], p]


# ---------------------------------------------------------------- the command line


def _cli_args(planted) -> list[str]:
    c = planted["config"]
    return [
        "--data-dir", str(planted["noisy"]), "--model", c.model, "--pooling", c.pooling, "--epochs", "12",
        "--lr", "0.005", "--head-lr", "0.02", "--select-metric", "val_loss", "--batch-size", "8", "--max-length", "12", "--cache-dir", c.cache_dir,
        "--precision", "fp32", "--device", "cpu", "--seed", "0", "--num-threads", "1", "--log-every", "1000",
        "--folds", "3",
    ]  # fmt: skip


def test_cli_fold_and_score_only_reuse_the_folds(planted, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(planted["root"] / "out", out)
    for name in ("label_issues.csv", "review.html", "summary.csv", "summary.json"):
        (out / name).unlink()
    done = runner.invoke(app, ["audit", *_cli_args(planted), "--out", str(out), "--fold", "2"])
    assert done.exit_code == 0, done.output
    assert "fold 2 of 3: reused" in done.output and "held-out texts predicted" in done.output
    done = runner.invoke(app, ["audit", *_cli_args(planted), "--out", str(out), "--score-only"])
    assert done.exit_code == 0, done.output
    assert "missing and" in done.output and "review.html" in done.output
    assert _issues(out) == _issues(planted["root"] / "out")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fold", "3"], "--fold 3: expected 0 to 2 with --folds 3"),
        (["--fold", "0", "--score-only"], "give one of them"),
        (["--split", "dev", "--exclude", "x.txt"], "--exclude and --corrections clean the train split"),
    ],
)
def test_cli_errors_are_one_line(planted, extra: list[str], message: str, tmp_path: Path) -> None:
    done = runner.invoke(app, ["audit", *_cli_args(planted), "--out", str(tmp_path / "o"), *extra])
    assert done.exit_code == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_cli_audit_has_trains_options_but_not_the_per_fold_ones() -> None:
    import typer

    params = {p.name for p in typer.main.get_command(app).commands["audit"].params}
    assert {"preset", "lr", "model", "max_train_samples", "exclude", "corrections", "folds", "fold"} <= params
    assert not {"output", "holdout_fold", "num_folds", "resume", "eval_test"} & params


# ---------------------------------------------------------------- the documented commands run as written

ROOT = Path(__file__).resolve().parents[1]


def _bash_lines(page: Path, needle: str = "") -> list[str]:
    """The commands of a page's ```bash blocks (continuation lines joined) that contain ``needle``."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    joined = [re.sub(r"\\\n\s*", " ", block) for block in blocks]
    return [line.strip() for block in joined for line in block.splitlines() if line.strip() and needle in line]


def test_the_documented_commands_parse_and_reach_the_library(monkeypatch, tmp_path: Path) -> None:
    """Every goemo line of docs/audit.md (and the audit job of docs/cluster.md), run through the real
    command line with training stood in for: the options exist and reach the config as written."""
    import types

    import goemo.audit.runner as audit_runner
    import goemo.training.loop as loop

    seen: list[tuple[str, object]] = []
    q = label_quality(np.array([[1, 0]], dtype=np.uint8), np.array([[0.9, 0.1]], dtype=np.float32), ["a", "b"])
    fake = types.SimpleNamespace(quality=q, texts=1, folds=3, flagged={"missing": 0, "spurious": 0}, files={
        "issues": "i", "page": "p", "summary_csv": "s"})  # fmt: skip
    monkeypatch.setattr(
        audit_runner,
        "run_audit",
        lambda config, out, folds, split="train": seen.append(("audit", config, out, folds)) or fake,
    )
    monkeypatch.setattr(
        loop, "train", lambda config: seen.append(("train", config)) or types.SimpleNamespace(is_main_process=False)
    )
    monkeypatch.chdir(tmp_path)
    lines = _bash_lines(ROOT / "docs" / "audit.md") + _bash_lines(ROOT / "docs" / "cluster.md", "--stage audit")
    assert len(lines) >= 4
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "goemo", line
        done = runner.invoke(app, argv[1:])
        assert done.exit_code == 0, f"{line}\n{done.output}"
    kinds = [s[0] for s in seen]
    assert kinds.count("audit") == 1 and kinds.count("train") == 2
    audit = next(s for s in seen if s[0] == "audit")
    assert audit[1].preset == "fast" and audit[3] == 3 and str(audit[2]) == "runs/audit"
    trains = [s[1] for s in seen if s[0] == "train"]
    assert trains[0].corrections == "runs/audit/corrections.csv" and trains[1].exclude == "runs/audit/exclude.csv"
    assert (tmp_path / "jobs" / "audit.sh").is_file() and (tmp_path / "jobs" / "audit-merge.sh").is_file()
    python = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "audit.md").read_text(encoding="utf-8"), re.S)
    for block in python:
        exec(compile(block, "docs/audit.md", "exec"), {})  # noqa: S102 - the page's own example
    assert seen[-1][0] == "audit" and seen[-1][3] == 3
