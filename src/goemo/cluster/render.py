"""Render SGE and Slurm job scripts for goemo's cluster workflow from template files.

Why a renderer rather than example scripts to copy: the details that go wrong on a
cluster are the ones people retype — memory per slot on SGE, the rendezvous of a
multi-node launch, the offline switch on GPU nodes, quoting of user arguments. Python
validates the request and computes the values (times, per-slot memory, the launch
arguments, shell-quoted strings); the shell itself lives in ``templates/*.sh.j2`` so a
site can read and adapt it.

Stages, in the order a cluster user runs them: ``setup`` (CPU: create the environment),
``fetch`` (CPU node with network: data and hub models onto shared storage), ``train``
(GPU, offline; 1 GPU, many GPUs, or many nodes), ``sweep`` (a job array of Optuna
workers on one shared study), ``evaluate`` (evaluation and report), ``predict`` (label a
file; with ``--array N`` one input is cut into N shards, one per array task, and a second
job merges them in input order once every task has succeeded), ``audit`` (a label audit;
with ``--array K`` each array task trains one of K fold models, and a second job scores them
once every task has succeeded).

Log paths are written absolute (``--log-dir`` resolved where the script is rendered): the
scheduler opens them before the script runs, so a relative one, read from another submit
folder, fails the job before it can say why.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from goemo.core.errors import ConfigError, GoemoError
from goemo.core.fileio import atomic_write_text

SCHEDULERS = ("sge", "slurm")
STAGES = ("setup", "fetch", "train", "sweep", "evaluate", "predict", "audit")
GPU_STAGES = ("train", "sweep", "evaluate", "predict", "audit")  # default one GPU and offline; --gpus 0 runs on CPUs
ARRAY_STAGES = ("sweep", "predict", "audit")
MERGE_STAGES = ("predict", "audit")  # with --array, a second job runs once every task has succeeded
TEMPLATE_DIR = Path(__file__).with_name("templates")
NODE_SCRIPT_END = "GOEMO_NODE_SCRIPT_END"  # heredoc end; safe because every value is one line (validated)

_TIME = re.compile(r"^(?:(\d+)-)?(\d{1,4}):([0-5]\d):([0-5]\d)$")
_MEM = re.compile(r"^(\d+)\s*([KMGT])(?:i?B)?$", re.IGNORECASE)
_JOB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.,@*:-]+$")
_WORD = re.compile(r"^[A-Za-z0-9_.+/:=@-]+$")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# In a path: a variable ($NAME, ${NAME}), else a character that double quotes must escape.
_PATH_TOKEN = re.compile(rf'\$(?:\{{(?P<braced>{_NAME})\}}|(?P<bare>{_NAME}))|["\\`$]')
# In a goemo argument: an escaped dollar, a variable, a dollar / backquote that would be anything else
# (refused), else a character that double quotes must escape.
_ARG_TOKEN = re.compile(rf'(?P<literal>\\\$)|\$(?:\{{(?P<braced>{_NAME})\}}|(?P<bare>{_NAME}))|(?P<refused>[$`])|["\\]')
_CONDA_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


@dataclass(frozen=True)
class JobSpec:
    """What to run and what to ask the scheduler for; unset values get per-stage defaults.

    ``gpus``, ``cpus`` and ``mem`` are per node; ``goemo_args`` go to the stage's goemo verb as
    typed, except that ``$NAME`` / ``${NAME}`` expand on the node (`shell_arg`). Paths (``env``
    venv or conda prefix, ``cache_dir``, ``hub_cache``, ``data_dir``) may use ``~`` and ``$VARS``
    such as ``$SCRATCH``, expanded on the node when the job runs. ``env`` is ``venv:PATH``,
    ``conda:NAME`` or ``conda:PATH`` (a prefix, as ``conda create -p`` makes). ``cache_dir`` is
    ``HF_HOME`` (the hub cache is its ``hub/``); ``hub_cache`` is the hub cache itself
    (``HF_HUB_CACHE``, the folder the cluster guide's ``TRANSFORMERS_CACHE`` names). ``log_dir``
    becomes absolute, resolved against the current folder (`resolved`).

    >>> spec = JobSpec("slurm", "train", ("--model", "bert-base-cased"), gpus=4, nodes=2)
    >>> spec.resolved().cpus, spec.resolved().time
    (16, '04:00:00')
    """

    scheduler: str
    stage: str
    goemo_args: tuple[str, ...] = ()
    gpus: int | None = None
    nodes: int = 1
    cpus: int | None = None
    time: str | None = None
    mem: str | None = None
    queue: str | None = None
    env: str | None = None
    modules: tuple[str, ...] = ()
    cache_dir: str | None = None
    hub_cache: str | None = None
    data_dir: str | None = None
    array: int | None = None
    job_name: str | None = None
    log_dir: str = "logs"
    directives: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    packages: tuple[str, ...] = ("goemo",)
    torch_index: str | None = None
    port: int | None = None
    report_run: str | None = None
    sge_pe: str | None = None
    sge_gpu_resource: str = "gpu"
    sge_mem_resource: str | None = "h_vmem"

    def resolved(self) -> JobSpec:
        """This spec validated, with the stage's defaults filled in and ``log_dir`` made absolute."""
        _validate(self)
        gpu_stage = self.stage in GPU_STAGES
        gpus = self.gpus if self.gpus is not None else (1 if gpu_stage else 0)
        log_dir = os.path.abspath(self.log_dir)
        if not _WORD.match(log_dir):
            raise ConfigError(
                f"--log-dir {self.log_dir!r}: the scripts name it by its absolute path, {log_dir!r}, which has "
                "spaces or shell characters; give an absolute --log-dir without them"
            )
        return dataclasses.replace(
            self,
            gpus=gpus,
            log_dir=log_dir,
            cpus=self.cpus if self.cpus is not None else max(2, 4 * gpus),
            time=self.time or ("04:00:00" if self.stage in ("train", "sweep", "audit") else "01:00:00"),
            mem=_normalise_mem(self.mem or ("32G" if gpu_stage else "8G")),
            job_name=self.job_name or f"goemo-{self.stage}",
            sge_pe=self.sge_pe or ("smp" if self.nodes == 1 else "mpi"),
        )


@dataclass
class RenderedJob:
    """A job script and what the user should know before submitting it.

    ``merge`` is the job that must run after this one has succeeded (``predict --array N``:
    the merge of the N shards; ``audit --array K``: the scoring of the K folds); it is
    submitted with a dependency on this job, see `submit_line`.
    """

    spec: JobSpec
    text: str
    warnings: list[str] = field(default_factory=list)
    merge: RenderedJob | None = None

    @property
    def submit_command(self) -> str:
        """``qsub FILE`` or ``sbatch FILE``."""
        return "qsub" if self.spec.scheduler == "sge" else "sbatch"

    def submit_line(self, path: str | Path, merge_path: str | Path | None = None) -> str:
        """The shell line that submits this job (and its merge job, held until it has succeeded).

        The scheduler prints the array's id, which the second submission waits on: SGE's
        ``-terse`` prints ``ID.1-N:1`` for an array, Slurm's ``--parsable`` ``ID`` or ``ID;CLUSTER``.

        >>> job = render_job(JobSpec("slurm", "predict", ("--model", "m", "--input", "a", "--output", "b"), array=2))
        >>> job.submit_line("p.sh", "p-merge.sh")
        'ARRAY=$(sbatch --parsable p.sh) && sbatch --dependency=afterok:"${ARRAY%%;*}" p-merge.sh'
        """
        first = shlex.quote(str(path))
        if self.merge is None:
            return f"{self.submit_command} {first}"
        second = shlex.quote(str(merge_path if merge_path is not None else merge_script_path(path)))
        if self.spec.scheduler == "sge":
            return f'ARRAY=$(qsub -terse {first}) && qsub -hold_jid "${{ARRAY%%.*}}" {second}'
        return f'ARRAY=$(sbatch --parsable {first}) && sbatch --dependency=afterok:"${{ARRAY%%;*}}" {second}'


def merge_script_path(path: str | Path) -> Path:
    """Where `write_job` puts the merge job beside ``path``: ``jobs/predict.sh`` -> ``jobs/predict-merge.sh``.

    >>> merge_script_path("jobs/predict.sh").as_posix()
    'jobs/predict-merge.sh'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}-merge{path.suffix}")


# ---------------------------------------------------------------- validation


def _validate(spec: JobSpec) -> None:
    """Reject what no scheduler would accept, in one line naming the option."""
    if spec.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {spec.scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
    if spec.stage not in STAGES:
        raise ConfigError(f"--stage {spec.stage!r}: expected one of {', '.join(STAGES)}")
    if spec.time is not None and not _TIME.match(spec.time):
        raise ConfigError(f"--time {spec.time!r}: expected HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00 or 1-12:00:00")
    if spec.mem is not None:
        _normalise_mem(spec.mem)
    if spec.gpus is not None and spec.gpus < 0:
        raise ConfigError(f"--gpus {spec.gpus}: expected an integer >= 0 (GPUs per node)")
    if spec.nodes < 1:
        raise ConfigError(f"--nodes {spec.nodes}: expected an integer >= 1")
    if spec.cpus is not None and spec.cpus < 1:
        raise ConfigError(f"--cpus {spec.cpus}: expected an integer >= 1 (cores per node)")
    if spec.array is not None and spec.array < 1:
        raise ConfigError(f"--array {spec.array}: expected an integer >= 1 (number of tasks)")
    if spec.array is not None and spec.stage not in ARRAY_STAGES:
        raise ConfigError(
            "--array is for --stage sweep (workers of one study), --stage predict (shards of one input) and "
            "--stage audit (one fold model per task); other stages run once"
        )
    if spec.port is not None and not 1024 <= spec.port <= 65535:
        raise ConfigError(f"--port {spec.port}: expected 1024..65535")
    if spec.nodes > 1 and spec.stage != "train":
        raise ConfigError(f"--nodes {spec.nodes}: only --stage train spans nodes")
    if spec.nodes > 1 and spec.gpus == 0:
        raise ConfigError("--nodes > 1 needs --gpus >= 1: multi-node training is data-parallel over GPUs (NCCL)")
    if spec.stage == "sweep" and spec.gpus is not None and spec.gpus > 1:
        raise ConfigError(f"--gpus {spec.gpus}: a sweep worker trains on one GPU; add workers with --array instead")
    if spec.stage == "setup":
        if not spec.env:
            raise ConfigError(
                "--stage setup needs --env venv:PATH, conda:NAME or conda:PATH (the environment to create)"
            )
        if spec.goemo_args:
            raise ConfigError("--stage setup takes no goemo arguments after --; use --package to say what to install")
    if spec.stage == "predict":
        _validate_predict(spec)
    if spec.stage == "audit":
        _validate_audit(spec)
    if spec.env is not None:
        kind, _, value = spec.env.partition(":")
        if kind not in ("venv", "conda") or not value:
            raise ConfigError(f"--env {spec.env!r}: expected venv:PATH, conda:NAME or conda:PATH (a prefix)")
        if kind == "conda" and not _is_conda_prefix(value) and not _CONDA_NAME.match(value):
            raise ConfigError(
                f"--env {spec.env!r}: a conda environment name is letters, digits and _.+- "
                "(a prefix path starts with /, ~, . or $)"
            )
    if spec.job_name is not None and not _JOB_NAME.match(spec.job_name):
        raise ConfigError(f"--job-name {spec.job_name!r}: expected a letter then letters, digits, _ . - (max 64)")
    if spec.queue is not None and not _QUEUE.match(spec.queue):
        raise ConfigError(f"--queue {spec.queue!r}: expected a queue/partition name without spaces")
    if not _WORD.match(spec.log_dir):
        raise ConfigError(f"--log-dir {spec.log_dir!r}: expected a path without spaces or shell characters")
    if not spec.packages:
        raise ConfigError("--package: give at least one thing for pip to install (default goemo)")
    for name, values in (("--module", spec.modules), ("--model", spec.models)):
        for value in values:
            if not _WORD.match(value):
                raise ConfigError(f"{name} {value!r}: expected a name without spaces or shell characters")
    for word, opt in (
        (spec.sge_pe, "--sge-pe"),
        (spec.sge_gpu_resource, "--sge-gpu-resource"),
        (spec.sge_mem_resource, "--sge-mem-resource"),
    ):
        if word is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", word):
            raise ConfigError(f"{opt} {word!r}: expected a resource name such as h_vmem or gpu")
    for name in ("cache_dir", "hub_cache", "data_dir"):
        if getattr(spec, name) is not None and not getattr(spec, name).strip():
            raise ConfigError(f"--{name.replace('_', '-')} '': expected a folder (is the variable you gave it set?)")
    singles = [("--directive", d) for d in spec.directives] + [
        ("--" + k.replace("_", "-"), getattr(spec, k))
        for k in ("cache_dir", "hub_cache", "data_dir", "torch_index", "report_run", "env")
    ]
    singles += [("--package", p) for p in spec.packages]
    singles += [("goemo argument", a) for a in spec.goemo_args]
    for opt, value in singles:
        if value is not None and ("\n" in value or "\r" in value or "\0" in value):
            raise ConfigError(f"{opt} {value!r}: must be one line")
    for arg in spec.goemo_args:
        shell_arg(arg)  # refuses command substitution and the other $ forms, naming the argument


def _validate_predict(spec: JobSpec) -> None:
    """A predict job labels a file into a file: the shards of an array are named after ``--output``."""
    missing = [name for name in ("--model", "--input", "--output") if _option_value(spec.goemo_args, name) is None]
    if missing:
        raise ConfigError(
            f"--stage predict needs {', '.join(missing)} in the goemo arguments after -- "
            "(e.g. -- --model runs/NAME/best --input texts.jsonl --output labels.jsonl)"
        )
    if spec.array is not None and _option_value(spec.goemo_args, "--shard") is not None:
        raise ConfigError("--stage predict --array N gives each task its --shard K/N; leave --shard out after --")


def _validate_audit(spec: JobSpec) -> None:
    """An audit array runs fold K-1 in task K, and its merge job scores: the array sets --fold and --score-only."""
    args = spec.goemo_args
    if spec.array is None:
        return
    if spec.array < 2:
        raise ConfigError(
            f"--stage audit --array {spec.array}: the array is one task per fold, and an audit needs >= 2"
        )
    for own in ("--fold", "--score-only"):
        if own in args or any(a.startswith(own + "=") for a in args):
            raise ConfigError(f"--stage audit --array K gives each task its {own}; leave {own} out after --")
    folds = _option_value(args, "--folds")
    if folds is not None and folds != str(spec.array):
        raise ConfigError(
            f"--stage audit --array {spec.array} with --folds {folds}: one array task per fold, so give the same number"
        )


def _is_conda_prefix(value: str) -> bool:
    """A conda env given by its folder (``conda create -p``) rather than by name: names have no ``/``."""
    return "/" in value or value.startswith(("~", "$", "."))


def _normalise_mem(mem: str) -> str:
    """'32g' -> '32G'; an amount with a unit that both schedulers read."""
    m = _MEM.match(mem.strip())
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"--mem {mem!r}: expected an amount with a unit, e.g. 32G or 16000M")
    return f"{int(m.group(1))}{m.group(2).upper()}"


def _per_slot(mem: str, slots: int) -> str:
    """SGE counts h_vmem/mem_free per slot: the node's amount divided by its slots, rounded up."""
    if slots == 1:
        return mem
    m = _MEM.match(mem)
    assert m is not None
    mb = math.ceil(int(m.group(1)) * _MB[m.group(2).upper()] / slots)
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


def _sge_time(time: str) -> str:
    """SGE's h_rt has no day field: D-HH:MM:SS -> (24*D+HH):MM:SS."""
    m = _TIME.match(time)
    assert m is not None
    hours = int(m.group(1) or 0) * 24 + int(m.group(2))
    return f"{hours:02d}:{m.group(3)}:{m.group(4)}"


# ---------------------------------------------------------------- shell quoting


def shell_path(path: str) -> str:
    """Quote a path for bash, keeping ``~/`` and ``$VAR`` / ``${VAR}`` for the node to expand.

    >>> shell_path("$SCRATCH/hf cache")
    '"${SCRATCH}/hf cache"'
    >>> shell_path("~/venvs/goemo")
    '"${HOME}/venvs/goemo"'
    """
    if path == "~" or path.startswith("~/"):
        path = "$HOME" + path[1:]
    return _double_quoted(path, _PATH_TOKEN)


def _double_quoted(text: str, tokens: re.Pattern[str]) -> str:
    """``text`` in double quotes: each match of ``tokens`` a variable (``${NAME}``), a literal ``\\$``, or escaped."""

    def one(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        return "${" + name + "}" if name else "\\$" if m.group().startswith("\\$") else "\\" + m.group()

    return '"' + tokens.sub(one, text) + '"'


def shell_arg(arg: str) -> str:
    r"""Quote one goemo argument for bash: ``$NAME`` and ``${NAME}`` expand on the node, ``\$``
    is a literal ``$``, everything else arrives as typed.

    Why not plain `shlex.quote`: cluster users write ``--output '$SCRATCH/runs/x'`` and mean
    the node's scratch. Why not leave the shell free: ``$(...)``, backquotes and the rest of
    bash's ``$`` forms would run on the node with the job's rights; they are refused (`ConfigError`).

    >>> shell_arg("$SCRATCH/runs/my run")
    '"${SCRATCH}/runs/my run"'
    >>> shell_arg("bert-base-cased"), shell_arg(r"costs \$5")
    ('bert-base-cased', '"costs \\$5"')
    """
    if "$" not in arg and "`" not in arg:
        return shlex.quote(arg)
    refused = next((m for m in _ARG_TOKEN.finditer(arg) if m.group("refused")), None)
    if refused is not None:
        raise ConfigError(
            f"goemo argument {arg!r}: only $NAME and ${{NAME}} are expanded on the node; "
            "command substitution ($(...), backquotes) and other $ forms are refused (write \\$ for a literal $)"
        )
    return _double_quoted(arg, _ARG_TOKEN)


def _option_value(args: tuple[str, ...], name: str) -> str | None:
    """The value given to ``name`` in a goemo argument list (``--x V`` or ``--x=V``), if any."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1 :]
    return None


# ---------------------------------------------------------------- rendering


def _torch_requirement() -> str:
    """``torch==`` the version goemo runs with here (less a local tag such as ``+cpu``).

    So the cluster's set-up installs, from the CUDA index, the torch release this install was
    tested with; the library itself only asks for a range. Without torch: the range.
    """
    try:
        return "torch==" + importlib.metadata.version("torch").split("+", 1)[0]
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        for req in importlib.metadata.requires("goemo") or []:
            name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
            if name == "torch" and ";" not in req:
                return req.replace(" ", "")
    except importlib.metadata.PackageNotFoundError:
        pass
    return "torch"


def _stage_command(spec: JobSpec, warnings: list[str]) -> dict[str, Any]:
    """The goemo command line(s) of the stage, as shell text."""
    args = tuple(spec.goemo_args)
    reads_data = spec.stage in ("train", "sweep", "evaluate") or (
        spec.stage == "audit" and not any(_option_value(args, o) for o in ("--dataset", "--train"))
    )
    if spec.data_dir and reads_data and _option_value(args, "--data-dir") is None:
        data_arg = '--data-dir "$GOEMO_DATA"'
    else:
        data_arg = ""
    quoted = " ".join(x for x in (*(shell_arg(a) for a in args), data_arg) if x)
    ctx: dict[str, Any] = {"args": quoted}
    if spec.stage == "sweep":
        storage = _option_value(args, "--storage")
        workers = spec.array or 1
        if workers > 1 and (storage is None or storage.startswith("sqlite")):
            where = "the default SQLite file in the sweep folder" if storage is None else f"SQLite ({storage})"
            warnings.append(
                f"{workers} array tasks share {where}: fine for a few workers of a small sweep on a "
                "shared filesystem, but NFS/Lustre locking is unreliable under load; prefer "
                "--storage postgresql://USER@HOST/DB"
            )
        if _option_value(args, "--study") is None and workers > 1:
            warnings.append("no --study NAME in the goemo arguments: make sure all tasks join the same study")
    if spec.stage == "evaluate":
        report = spec.report_run
        model = _option_value(args, "--model")
        if report is None and model is not None and Path(model).name in ("best", "last"):
            report = str(Path(model).parent)
        ctx["report_run"] = shell_path(report) if report else None
    if spec.stage == "audit":
        ctx["shards"] = spec.array
        if spec.array is not None and _option_value(args, "--folds") is None:
            ctx["args"] += f" --folds {spec.array}"
    if spec.stage == "predict":
        if _option_value(args, "--num-threads") is None:
            # ONNX Runtime sizes its pool from the cores the process may run on, which a scheduler
            # without CPU binding leaves at the whole node: the job's own --cpus says how many are its
            ctx["args"] += f" --num-threads {_launch(spec)['threads']}"
        ctx["shards"] = spec.array
        ctx["predict_output"] = shell_arg(_option_value(args, "--output") or "")
        if spec.array is not None and spec.array > 1:
            idle = _idle_tasks(args, spec.array)
            if idle:
                warnings.append(idle)
    return ctx


def _idle_tasks(args: tuple[str, ...], tasks: int) -> str | None:
    """A warning when a predict array has tasks with nothing to label, if the input can be read here.

    Shards are runs of whole chunks (`goemo.predict.shards.shard_range`), so an input of fewer than
    ``tasks`` chunks leaves tasks empty. Known only when ``--input`` is a file this machine can read
    (no ``$VARIABLES``); at most ``(tasks - 1)`` chunks are read, as more give every task work.
    """
    given = _option_value(args, "--input")
    if given is None or "$" in given or not Path(given).is_file():  # ~ stays ~ on the node too (shell_arg)
        return None
    # numpy, through the predict package: imported only here, so that `goemo --help` stays light
    from goemo.data.records import read_records  # noqa: PLC0415
    from goemo.predict.shards import shard_range  # noqa: PLC0415
    from goemo.predict.stream import DEFAULT_CHUNK  # noqa: PLC0415

    text_column = _option_value(args, "--text-column") or "text"
    records = read_records(Path(given), text_column, _option_value(args, "--id-column"))
    try:
        total = sum(1 for _ in itertools.islice(records, (tasks - 1) * DEFAULT_CHUNK + 1))
    except (GoemoError, OSError, UnicodeDecodeError):
        return None  # the job says what is wrong with the file, in its own words
    ranges = [shard_range(total, k, tasks) for k in range(1, tasks + 1)]
    empty = [k for k, (start, end) in enumerate(ranges, start=1) if start == end]
    if not empty:
        return None
    chunks = -(-total // DEFAULT_CHUNK)
    return (
        f"{given} has {total:,} texts, {chunks} chunk(s) of {DEFAULT_CHUNK:,}: {len(empty)} of the {tasks} array "
        f"tasks will label nothing (each shard is whole chunks); --array {max(chunks, 1)} does the same work"
    )


def _cache_warnings(spec: JobSpec) -> list[str]:
    """A ``--cache-dir`` that holds a hub cache itself (``models--*/``): the jobs would look in its ``hub/``.

    The cluster guide's ``TRANSFORMERS_CACHE`` names such a folder; checked only where it exists here.
    """
    if not spec.cache_dir:
        return []
    folder = Path(os.path.expanduser(os.path.expandvars(spec.cache_dir)))
    if "$" in str(folder) or not folder.is_dir() or (folder / "hub").is_dir():
        return []
    if not any(folder.glob("models--*")):
        return []
    return [
        f"--cache-dir {spec.cache_dir} holds models--*/ itself: it is a hub cache (what TRANSFORMERS_CACHE or "
        f"HF_HUB_CACHE names), but as HF_HOME the jobs would look in {spec.cache_dir}/hub; use --hub-cache instead"
    ]


def _launch(spec: JobSpec) -> dict[str, Any]:
    """How train starts: plain goemo, accelerate on one node, or accelerate on every node."""
    gpus, nodes = spec.gpus or 0, spec.nodes
    threads = max(1, (spec.cpus or 1) // max(gpus, 1))
    mode = "multi_node" if nodes > 1 else "multi_gpu" if gpus > 1 else "single"
    return {"mode": mode, "num_processes": gpus * nodes, "threads": threads}


def render_job(spec: JobSpec) -> RenderedJob:
    """Render the job script for ``spec`` (validated, defaults filled in).

    ``--stage predict`` and ``--stage audit`` with ``array`` also render the merge job (`RenderedJob.merge`).

    >>> job = render_job(JobSpec("slurm", "train", ("--model", "bert-base-cased"), gpus=1))
    >>> "#SBATCH --gres=gpu:1" in job.text, "HF_HUB_OFFLINE=1" in job.text
    (True, True)
    """
    spec = spec.resolved()
    job = _render(spec)
    if spec.stage in MERGE_STAGES and spec.array is not None:
        job.merge = _render(_merge_spec(spec), merge_shards=spec.array)
    return job


def _merge_spec(spec: JobSpec) -> JobSpec:
    """The merge job of a predict or audit array: one core and no GPU (it concatenates the shards
    in order, or scores the folds' saved probabilities).

    It keeps the queue, the directives (an account, a project) and the environment of the array."""
    return dataclasses.replace(
        spec, array=None, gpus=0, cpus=1, mem="4G", job_name=f"{spec.job_name}-merge"[:64]
    ).resolved()


def _render(spec: JobSpec, merge_shards: int | None = None) -> RenderedJob:
    """One script from the templates, for a resolved ``spec``; ``merge_shards``: the merge job of that many shards."""
    warnings: list[str] = []
    if spec.stage in ("setup", "fetch") and spec.gpus:
        warnings.append(f"--stage {spec.stage} is CPU work; asking for {spec.gpus} GPU(s) only adds queue time")
    if merge_shards is None:
        warnings += _cache_warnings(spec)
    slots = (spec.cpus or 1) * spec.nodes
    env_kind, _, env_value = (spec.env or "").partition(":")
    ctx: dict[str, Any] = {
        "s": spec,
        "version": _version(),
        "sge_time": _sge_time(spec.time or ""),
        "slots": slots,
        "sge_mem": _per_slot(spec.mem or "", spec.cpus or 1) if spec.sge_mem_resource else None,
        "env_kind": env_kind or None,
        # a venv's folder or a conda prefix (quoted, expanded on the node), else a conda env's name
        "env_path": shell_path(env_value) if env_kind == "venv" or _is_conda_prefix(env_value) else None,
        "env_name": env_value if env_kind == "conda" and not _is_conda_prefix(env_value) else None,
        "cache_dir": shell_path(spec.cache_dir) if spec.cache_dir else None,
        "hub_cache": shell_path(spec.hub_cache) if spec.hub_cache else None,
        "data_dir": shell_path(spec.data_dir or "data/goemotions"),
        "gpu_stage": (spec.gpus or 0) > 0,
        "offline": spec.stage in GPU_STAGES,
        "launch": _launch(spec),
        "port": spec.port,
        "torch_req": shlex.quote(_torch_requirement()),
        "torch_index": shlex.quote(spec.torch_index) if spec.torch_index else None,
        "packages": " ".join(
            shell_path(p) if p.startswith(("/", "~", ".", "$")) else shlex.quote(p) for p in spec.packages
        ),
        "models": spec.models,
        "node_end": NODE_SCRIPT_END,
        "warnings": warnings,
        "merge_shards": merge_shards,
    }
    ctx.update(_stage_command(spec, warnings))
    if spec.stage == "audit" and merge_shards and _option_value(spec.goemo_args, "--folds") is None:
        ctx["args"] += f" --folds {merge_shards}"  # the scoring job gathers as many folds as the array trained
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # shell, not HTML: values are quoted by the renderer
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        comment_start_string="<#--",  # bash's ${#ARRAY[@]} would open a Jinja comment
        comment_end_string="--#>",
    )
    text = env.get_template("job.sh.j2").render(**ctx)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return RenderedJob(spec=spec, text=text, warnings=warnings)


def write_job(spec: JobSpec, path: str | Path) -> RenderedJob:
    """Render and write the script atomically, executable by its owner; a merge job goes
    beside it (`merge_script_path`). The log folder is made too (`make_log_dir`).

        job = write_job(JobSpec("sge", "fetch", data_dir="$HOME/goemotions"), "/tmp/fetch.sh")
    """
    job = render_job(spec)
    for text, where in ((job.text, path), (job.merge.text if job.merge else None, merge_script_path(path))):
        if text is not None:
            os.chmod(atomic_write_text(where, text), 0o755)
    make_log_dir(job)
    return job


def make_log_dir(job: RenderedJob) -> bool:
    """Create the job's log folder, which the scheduler needs before the script starts.

    Without it Slurm fails the job with no log at all (JobLaunchFailure) and SGE holds it in
    error state ("can't open output file"). Where it cannot be made here (rendered on another
    machine than the cluster), a warning is added to ``job.warnings`` and False returned.

        make_log_dir(render_job(JobSpec("slurm", "fetch", log_dir="/tmp/goemo-logs")))
        # -> True
    """
    try:
        Path(job.spec.log_dir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        job.warnings.append(
            f"could not create the log folder {job.spec.log_dir} here ({err.strerror}): create it on the cluster "
            "before submitting, or the scheduler fails the job before it starts"
        )
        return False
    return True


def _version() -> str:
    try:
        return importlib.metadata.version("goemo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
