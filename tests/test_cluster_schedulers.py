"""The rendered job scripts on real schedulers: a single-node Slurm and SGE started by .ci/run.

`.ci/schedulers.sh` starts them (Debian's slurm-wlm + munge and gridengine packages) and exports
``GOEMO_TEST_SLURM=1`` / ``GOEMO_TEST_SGE=1``; elsewhere these tests are skipped, saying so.

Each scheduler gets the workflow's jobs, rendered by `goemo.cluster` and submitted with its own
tools as docs/cluster.md submits them: train (submitted from another folder, so its log must
still land in the log folder); a predict array of two tasks on the trained model, held until
train has succeeded, with its merge job held on the array (the renderer's own submit line); a
sweep array of two workers on one study. The test waits, with a bound, then checks every job's
state, its log and its output. Tiny settings: the tiny random BERT on 64 texts, one CPU per task
(two for train), no GPU.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import yaml

from goemo.cluster import JobSpec, merge_script_path, write_job
from goemo.predict.shards import shard_path

pytestmark = pytest.mark.slow

WAIT_S = 900  # every job of one scheduler done, on a busy 2-core CI machine
TEXTS = 5000  # more than one chunk of 4,096 per task: both predict tasks label something
TINY = ["--model", "tiny-random-bert", "--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "64"]
TINY += ["--precision", "fp32", "--no-eval-test"]
TERMINAL_SLURM = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _needs(variable: str, name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        os.environ.get(variable) != "1",
        reason=f"{variable} is not 1: no {name} running here (.ci/run starts one with .ci/schedulers.sh)",
    )


@dataclass
class Scheduler:
    """How to submit to, ask about and name the logs of one scheduler, from its command-line tools."""

    name: str
    env: dict[str, str]
    submitted: list[str] = field(default_factory=list)  # job ids, cancelled when the test ends

    def sh(self, line: str, cwd: Path) -> str:
        """Run a submit line in bash, as a user types it; its stdout."""
        done = subprocess.run(["bash", "-c", line], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
        return done.stdout

    def submit(self, script: Path, cwd: Path, after: str | None = None) -> str:
        """Submit ``script`` (held until job ``after`` has succeeded); the job id."""
        if self.name == "slurm":
            hold = f" --dependency=afterok:{after}" if after else ""
            return self.sh(f"sbatch --parsable{hold} {script}", cwd).strip().split(";")[0]
        hold = f" -hold_jid {after}" if after else ""
        return self.sh(f"qsub -terse{hold} {script}", cwd).strip().split(".")[0]

    def running(self, ids: list[str]) -> list[str]:
        """Which of ``ids`` have a task not finished yet; fails at once on an SGE job in error state."""
        if self.name == "slurm":
            left = []
            for job in ids:  # an array job's lines are its tasks'; a job long gone is finished
                out = self.sh(f"scontrol show job -o {job} 2>/dev/null || true", Path("/"))
                if any(state not in TERMINAL_SLURM for state in re.findall(r"JobState=(\S+)", out)):
                    left.append(job)
            return left
        rows = [line.split() for line in self.sh("qstat -u '*'", Path("/")).splitlines()[2:] if line.strip()]
        for job, state in ((row[0], row[4]) for row in rows):
            if job in ids and "E" in state:  # SGE keeps such a job forever: say why now
                pytest.fail(f"SGE job {job} is in error state:\n{self.sh(f'qstat -j {job}', Path('/'))}")
        return sorted({row[0] for row in rows if row[0] in ids})

    def outcomes(self, job: str) -> list[tuple[str, str]]:
        """(state, exit code) of every task of a finished job."""
        if self.name == "slurm":
            out = self.sh(f"scontrol show job -o {job}", Path("/"))
            return re.findall(r"JobState=(\S+) .*?ExitCode=(\S+)", out)
        deadline = time.monotonic() + 60  # the accounting file is written a second or so after the end
        while True:
            done = subprocess.run(["qacct", "-j", job], env=self.env, capture_output=True, text=True)
            if done.returncode == 0:
                failed = re.findall(r"^failed\s+(.+?)\s*$", done.stdout, flags=re.M)
                status = re.findall(r"^exit_status\s+(\S+)", done.stdout, flags=re.M)
                return [("COMPLETED" if f == "0" else f"failed {f}", s) for f, s in zip(failed, status)]
            assert time.monotonic() < deadline, f"qacct -j {job}: {done.stderr}"
            time.sleep(1)

    def log(self, logs: Path, name: str, job: str, task: int | None = None) -> str:
        """What a job (task) wrote: Slurm's one file, or SGE's .o and .e together."""
        if self.name == "slurm":
            path = logs / (f"{name}-{job}_{task}.out" if task else f"{name}-{job}.out")
            return path.read_text()
        suffix = f"{job}.{task}" if task else job
        return (logs / f"{name}.o{suffix}").read_text() + (logs / f"{name}.e{suffix}").read_text()

    def cancel(self, ids: list[str]) -> None:
        if not ids:
            return
        tool = ["scancel", *ids] if self.name == "slurm" else ["qdel", *ids]
        subprocess.run(tool, env=self.env, capture_output=True)


@pytest.fixture
def scheduler(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scheduler]:
    """The scheduler of the test's parameter; jobs a failed test leaves are cancelled."""
    env = {**os.environ, "GOEMO_CACHE_DIR": str(tmp_path / "token-cache"), "HF_HUB_OFFLINE": "1"}
    made = Scheduler(request.param, env)
    yield made
    made.cancel(made.submitted)


def _wait(sched: Scheduler, ids: list[str], logs: Path) -> float:
    start = time.monotonic()
    while left := sched.running(ids):
        if time.monotonic() - start > WAIT_S:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.iterdir()))
            pytest.fail(f"{sched.name}: jobs {left} not done after {WAIT_S}s\n{tails}")
        time.sleep(2)
    return time.monotonic() - start


def _texts(shared_data: Path, path: Path) -> list[str]:
    with open(shared_data / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = [row for _, row in zip(range(TEXTS), csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))]
    path.write_text("".join(json.dumps({"id": r[2], "text": r[0]}) + "\n" for r in rows), encoding="utf-8")
    return [r[2] for r in rows]


@pytest.mark.parametrize(
    "scheduler",
    [
        pytest.param("slurm", marks=_needs("GOEMO_TEST_SLURM", "Slurm")),
        pytest.param("sge", marks=_needs("GOEMO_TEST_SGE", "SGE")),
    ],
    indirect=True,
)
def test_train_predict_array_merge_and_sweep_array_run_on_the_scheduler(
    scheduler: Scheduler, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    for d in (project / "jobs", elsewhere):
        d.mkdir(parents=True)
    monkeypatch.chdir(project)  # rendered in the project folder, as on a cluster's login node
    ids = _texts(shared_data, project / "texts.jsonl")
    (project / "sweep.yaml").write_text(
        yaml.safe_dump(
            {
                "method": "grid",
                "metric": {"name": "f1_macro"},
                "parameters": {"lr": {"values": [1e-3, 3e-3]}, "max_length": {"value": 32}},
            }
        )
    )
    common = dict(gpus=0, cpus=1, mem="4G", time="00:30:00", env=f"venv:{sys.prefix}", data_dir=str(shared_data))
    # SGE passes a job none of the submitter's environment unless asked (-V): PYTHONPATH of a checkout
    # run without installing, GOEMO_CACHE_DIR. Slurm passes it all by default.
    sge = {"directives": ("-V",)} if scheduler.name == "sge" else {}
    run = project / "runs" / "tiny"
    train = write_job(
        JobSpec(
            scheduler.name, "train", (*TINY, "--max-length", "32", "--output", str(run)), **{**common, "cpus": 2}, **sge
        ),
        project / "jobs" / "train.sh",
    )
    predict_args = ("--model", "runs/tiny/best", "--input", "texts.jsonl", "--id-column", "id")
    predict = write_job(
        JobSpec(scheduler.name, "predict", (*predict_args, "--output", "labels/all.jsonl"), array=2, **common, **sge),
        project / "jobs" / "predict.sh",
    )
    sweep_args = ("--config", "sweep.yaml", "--study", "tiny", "--output", "sweeps/tiny", *TINY)
    sweep = write_job(
        JobSpec(scheduler.name, "sweep", (*sweep_args, "--num-threads", "1"), array=2, **common, **sge),
        project / "jobs" / "sweep.sh",
    )
    assert train.warnings == [] and predict.warnings == []
    assert len(sweep.warnings) == 1 and "2 array tasks share the default SQLite file" in sweep.warnings[0]
    logs = project / "logs"
    assert logs.is_dir()

    started = time.monotonic()
    # train, submitted from another folder: its log still goes to the project's log folder
    train_id = scheduler.submit(project / "jobs" / "train.sh", cwd=elsewhere)
    scheduler.submitted.append(train_id)
    # the predict array held on train, and its merge held on the array: the renderer's own line
    line = predict.submit_line("jobs/predict.sh", merge_script_path("jobs/predict.sh"))
    first = "sbatch --parsable " if scheduler.name == "slurm" else "qsub -terse "
    assert line.startswith(f"ARRAY=$({first}")
    hold = f"--dependency=afterok:{train_id} " if scheduler.name == "slurm" else f"-hold_jid {train_id} "
    out = scheduler.sh(line.replace(first, first + hold, 1) + ' && echo "array=$ARRAY"', cwd=project)
    array_id = re.search(r"^array=(\d+)", out, flags=re.M)[1]  # type: ignore[index]
    merge_id = re.search(r"(?:Submitted batch job|Your job) (\d+)", out)[1]  # type: ignore[index]
    sweep_id = scheduler.submit(project / "jobs" / "sweep.sh", cwd=project)
    scheduler.submitted += [array_id, merge_id, sweep_id]
    waited = _wait(scheduler, [train_id, array_id, merge_id, sweep_id], logs)

    # states: every job and every task succeeded
    for job, tasks in ((train_id, 1), (array_id, 2), (merge_id, 1), (sweep_id, 2)):
        assert scheduler.outcomes(job) == [("COMPLETED", "0:0" if scheduler.name == "slurm" else "0")] * tasks, job
    # logs: in the log folder, each ending with the job's own footer
    train_log = scheduler.log(logs, "goemo-train", train_id)
    assert f"in {elsewhere}" in train_log and f"job {train_id} ended with exit status 0" in train_log
    for k in (1, 2):
        task_log = scheduler.log(logs, "goemo-predict", array_id, k)
        assert f"predict shard {k} of 2" in task_log and "ended with exit status 0" in task_log
        assert ", 1 thread (" in task_log  # --cpus 1: ONNX Runtime on one core, not the node's all
        assert f"sweep worker {k} of 2" in scheduler.log(logs, "goemo-sweep", sweep_id, k)
    assert f"merged 2 shards ({TEXTS:,} records)" in scheduler.log(logs, "goemo-predict-merge", merge_id)
    # outputs: the model, every text labelled once in input order, both shards used, two trials
    assert (run / "best" / "config.json").is_file()
    merged = [json.loads(x) for x in (project / "labels" / "all.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in merged] == ids
    sizes = [len(shard_path(project / "labels" / "all.jsonl", k, 2).read_text().splitlines()) for k in (1, 2)]
    assert sizes == [4096, TEXTS - 4096]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{project / 'sweeps' / 'tiny' / 'study.db'}")
    assert sorted(t.state.name for t in study.get_trials()) == ["COMPLETE", "COMPLETE"]
    with capsys.disabled():
        print(
            f"\n{scheduler.name}: 4 jobs (6 tasks) done {waited:.0f}s after submission, {time.monotonic() - started:.0f}s"
        )
