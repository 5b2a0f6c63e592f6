"""Mutation testing: do the tests fail when the code is wrong? A score per module, with Cosmic Ray.

Cosmic Ray (``pip install -e '.[dev]'``) changes one thing in a module at a time (an operator
flipped, a number moved by one, a comparison turned round, ``True`` for ``False``, a loop run
zero times) and runs the tests that exercise that module; a mutant the tests do not fail on
*survived*. The score is the share killed. Each module runs against its own few test files
(`MODULES`), in a throw-away copy of ``src/`` and ``tests/``, so the checkout is never edited.

A module has hundreds of mutants and each costs a test run, so a fixed-seed random sample is
run (``--sample``; 0 runs all). Mutants inside type annotations are left out: with
``from __future__ import annotations`` they are never evaluated, so no test could kill them.

    python benchmarks/mutation.py                       # the four core modules, 45 mutants each
    python benchmarks/mutation.py --modules core/thresholds.py --sample 0 --survivors

Not run in CI: a module takes 20-30 minutes on 2 busy cores (results: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from common import REPO, find_data, machine

# Module (under src/goemo) -> the test files that exercise it: quick ones, run on every mutant.
MODULES: dict[str, list[str]] = {
    "core/thresholds.py": ["tests/test_thresholds.py", "tests/test_metrics.py"],
    "scoring/metrics.py": ["tests/test_metrics.py"],
    "data/io.py": ["tests/test_io.py", "tests/test_readers_fuzz.py"],
    "predict/prediction_writer.py": ["tests/test_prediction_writer.py"],
    "core/fileio.py": ["tests/test_fileio.py"],
    "core/errors.py": ["tests/test_io.py", "tests/test_config.py"],
    "core/run_folder.py": ["tests/test_run_folder.py"],
    "core/config.py": ["tests/test_config.py"],
    "core/folder.py": ["tests/test_model_folder.py"],
    "predict/shards.py": ["tests/test_bulk_predict.py"],
    "predict/stream.py": ["tests/test_stream.py"],
}
DEFAULT = ["core/thresholds.py", "scoring/metrics.py", "data/io.py", "predict/prediction_writer.py"]


@dataclass
class Score:
    module: str
    total: int  # mutants Cosmic Ray made (annotations left out)
    run: int
    killed: int
    survivors: list[str]  # diffs
    incompetent: int
    seconds: float

    @property
    def score(self) -> float:
        return self.killed / max(1, self.killed + len(self.survivors))


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((line, column), (end line, end column)) of each type annotation in the module at ``path``."""
    spans = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        note = None
        if isinstance(node, (ast.arg, ast.AnnAssign)):
            note = node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            note = node.returns
        if note is not None and note.end_lineno is not None and note.end_col_offset is not None:
            spans.append(((note.lineno, note.col_offset), (note.end_lineno, note.end_col_offset)))
    return spans


def in_annotation(spans: list[tuple[tuple[int, int], tuple[int, int]]], start: tuple[int, int]) -> bool:
    """Whether a mutation starting at ``start`` (line, column) lies inside an annotation."""
    return any(a <= tuple(start) < b for a, b in spans)


def _where(m: Any) -> tuple[int, int, str, int]:
    return (*m.start_pos, m.operator_name, m.occurrence)


def run_module(module: str, tests: list[str], sample: int, seed: int, data: Path, keep: bool) -> Score:
    """Copy the tree, run the tests once unmutated, then a sample of mutants; count the killed."""
    work = Path(tempfile.mkdtemp(prefix="goemo-mutation-"))
    try:
        return _run_in(work, module, tests, sample, seed, data)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _run_in(work: Path, module: str, tests: list[str], sample: int, seed: int, data: Path) -> Score:
    from cosmic_ray.work_db import WorkDB, use_db  # noqa: PLC0415 (the dev extra)
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult  # noqa: PLC0415 (the dev extra)

    cosmic = Path(sys.executable).with_name("cosmic-ray")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(REPO / "src", work / "src", ignore=ignore)
    shutil.copytree(REPO / "tests", work / "tests", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
    env = os.environ | {"PYTHONPATH": str(work / "src"), "GOEMO_SHARED_DATA": str(data), "PYTHONDONTWRITEBYTECODE": "1"}
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.perf_counter()
    base = subprocess.run(pytest, cwd=work, env=env, capture_output=True, text=True)
    baseline_s = time.perf_counter() - started
    if base.returncode != 0:
        sys.exit(f"{module}: the tests fail unmutated:\n{base.stdout[-2000:]}")
    target = Path("src/goemo") / module
    config = work / "cosmic-ray.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{target}"\n'
        f"timeout = {max(30.0, 4 * baseline_s):.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(shlex.join(pytest))}\n"
        '\n[cosmic-ray.distributor]\nname = "local"\n'
    )
    session = work / "session.sqlite"
    subprocess.run([str(cosmic), "init", str(config), str(session)], cwd=work, env=env, check=True)
    spans = annotation_spans(work / target)
    with use_db(str(session), WorkDB.Mode.open) as db:
        # Sorted by what they change: job ids are random, the sample must not be.
        items = sorted(db.pending_work_items, key=lambda i: _where(i.mutations[0]))
        kept = [i for i in items if not in_annotation(spans, i.mutations[0].start_pos)]
        chosen = {i.job_id for i in random.Random(seed).sample(kept, min(sample, len(kept)) if sample else len(kept))}
        for item in items:
            if item.job_id not in chosen:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="not sampled"))
    print(
        f"{module}: {len(kept)} mutants ({len(items) - len(kept)} in annotations left out), running {len(chosen)}; "
        f"tests {' '.join(tests)} take {baseline_s:.0f} s unmutated",
        flush=True,
    )
    subprocess.run([str(cosmic), "exec", str(config), str(session)], cwd=work, env=env, check=True)
    killed, incompetent, survivors = 0, 0, []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for _, result in db.results:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.KILLED:
                killed += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                survivors.append(result.diff or "")
            else:
                incompetent += 1
    return Score(module, len(kept), len(chosen), killed, survivors, incompetent, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--modules",
        nargs="+",
        default=DEFAULT,
        choices=sorted(MODULES),
        metavar="MODULE",
        help=f"modules under src/goemo (default: {' '.join(DEFAULT)}; known: {', '.join(sorted(MODULES))})",
    )
    ap.add_argument("--sample", type=int, default=45, help="mutants per module, a fixed-seed random sample (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    ap.add_argument("--keep", action="store_true", help="keep the throw-away copy (its session.sqlite: cr-report)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    data = find_data(args.data_dir)
    try:
        tool = f"cosmic-ray {version('cosmic-ray')}"
    except PackageNotFoundError:
        sys.exit("Cosmic Ray is not installed: pip install -e '.[dev]'")
    print(f"{machine()}; {tool}; sample {args.sample or 'all'} (seed {args.seed})", flush=True)
    scores = []
    for module in args.modules:
        score = run_module(module, MODULES[module], args.sample, args.seed, data, args.keep)
        scores.append(score)
        print(
            f"{module}: {score.score:.0%} killed ({score.killed}/{score.killed + len(score.survivors)}; "
            f"{score.incompetent} incompetent) in {score.seconds / 60:.1f} min",
            flush=True,
        )
        if args.survivors:
            for diff in score.survivors:
                print(diff, flush=True)
    print("\n| module | mutants (sampled/all) | killed | score |\n|---|---:|---:|---:|")
    for s in scores:
        print(f"| `{s.module}` | {s.run}/{s.total} | {s.killed}/{s.killed + len(s.survivors)} | {s.score:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
