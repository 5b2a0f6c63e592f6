"""``goemo cluster render``: SGE and Slurm job scripts for each stage of the cluster workflow."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from goemo.cli.common import Opt, app, command, sub_app
from goemo.cluster import JobSpec, make_log_dir, merge_script_path, render_job, write_job
from goemo.core.errors import ConfigError

cluster_app = sub_app("Job scripts for SGE and Slurm clusters: setup, fetch, train, sweep, evaluate, predict, audit.")
app.add_typer(cluster_app, name="cluster")


class ClusterScheduler(str, Enum):
    """Batch schedulers `goemo cluster render` writes for."""

    sge = "sge"
    slurm = "slurm"


class ClusterStage(str, Enum):
    """The jobs of the cluster workflow, in the order they run."""

    setup = "setup"
    fetch = "fetch"
    train = "train"
    sweep = "sweep"
    evaluate = "evaluate"
    predict = "predict"
    audit = "audit"


@command(
    "render",
    group=cluster_app,
    epilog=(
        "Example: goemo cluster render --scheduler slurm --stage train --gpus 4 --nodes 2 "
        "--env 'venv:~/goemo-env' --cache-dir '$SCRATCH/hf' --out train.sh -- --model bert-base-cased --epochs 4"
    ),
)
def cluster_render_command(
    scheduler: ClusterScheduler = Opt(..., help="sge (qsub, #$ lines) or slurm (sbatch, #SBATCH lines)."),
    stage: ClusterStage = Opt(..., help="setup | fetch | train | sweep | evaluate | predict | audit"),
    goemo_args: Optional[list[str]] = typer.Argument(
        None,
        help="After --: arguments for the stage's goemo verb, as typed; $NAME and ${NAME} expand on the node "
        "($(...) and backquotes are refused).",
    ),
    gpus: Optional[int] = Opt(
        None, help="GPUs per node (default 1 for train/sweep/evaluate/predict/audit, 0 otherwise)."
    ),
    nodes: int = Opt(1, help="Nodes (train only; >1 launches accelerate on every node)."),
    cpus: Optional[int] = Opt(None, help="CPU cores per node (default 4 per GPU, at least 2)."),
    time: Optional[str] = Opt(
        None,
        "--time",
        help="Wall-clock limit HH:MM:SS or D-HH:MM:SS (default 04:00:00 train/sweep/audit, else 01:00:00).",
    ),
    mem: Optional[str] = Opt(None, help="Memory per node, e.g. 32G (default 32G on GPU stages, 8G otherwise)."),
    queue: Optional[str] = Opt(None, "--queue", "--partition", help="SGE queue or Slurm partition."),
    env: Optional[str] = Opt(
        None, help="venv:PATH, conda:NAME or conda:PATH (a prefix; setup creates it, other stages activate it)."
    ),
    module: Optional[list[str]] = Opt(None, "--module", help="`module load` this first (repeatable), e.g. cuda/12.4."),
    cache_dir: Optional[str] = Opt(
        None, help="HF_HOME on shared storage (fetch fills it; GPU stages read it offline; the hub cache is its hub/)."
    ),
    hub_cache: Optional[str] = Opt(
        None,
        help="The hub cache itself, HF_HUB_CACHE (models--*/ inside): the folder TRANSFORMERS_CACHE names "
        "in the cluster guide.",
    ),
    data_dir: Optional[str] = Opt(
        None, help="GoEmotions folder on shared storage (fetch fills it; default data/goemotions)."
    ),
    array: Optional[int] = Opt(
        None,
        help="N array tasks: sweep, each a worker of the same study; predict, each a shard of the input, "
        "then a merge job (written beside --out as NAME-merge.sh); audit, each one of N fold models, then "
        "a scoring job (NAME-merge.sh).",
    ),
    model: Optional[list[str]] = Opt(
        None, "--model", help="Fetch only: hub model to download into HF_HOME (repeatable)."
    ),
    package: Optional[list[str]] = Opt(
        None,
        "--package",
        help="Setup only: what pip installs (repeatable; default goemo): a checkout's path, a git URL, goemo[track]…",
    ),
    torch_index: Optional[str] = Opt(
        None, help="Setup only: PyTorch wheel index for the cluster's CUDA, e.g. https://download.pytorch.org/whl/cu126"
    ),
    job_name: Optional[str] = Opt(None, help="Job name (default goemo-STAGE)."),
    log_dir: str = Opt(
        "logs",
        help="Folder for the scheduler's log files, written absolute (from this folder) and created here.",
    ),
    port: Optional[int] = Opt(None, help="Rendezvous port of multi-GPU runs (default 20000 + job id mod 20000)."),
    report_run: Optional[str] = Opt(
        None, help="Evaluate only: run folder to report on (default: the parent of --model RUN/best)."
    ),
    directive: Optional[list[str]] = Opt(
        None, "--directive", help="Raw scheduler line after '#$ ' or '#SBATCH ' (repeatable), e.g. '-l coproc_v100=1'."
    ),
    sge_pe: Optional[str] = Opt(None, help="SGE parallel environment (default smp, or mpi for --nodes > 1)."),
    sge_gpu_resource: str = Opt("gpu", help="SGE resource that counts GPUs: -l NAME=N."),
    sge_mem_resource: str = Opt(
        "h_vmem", help="SGE memory resource (per slot): h_vmem, mem_free, h_rss; 'none' to leave it out."
    ),
    out: Optional[Path] = Opt(None, "--out", help="Write the script here (default: print it)."),
) -> None:
    """Write a ready-to-submit SGE or Slurm job script for one stage of the cluster workflow.

    setup makes the environment, fetch puts data and models on shared storage, train runs
    offline on 1 GPU, several GPUs or several nodes, sweep is an array of Optuna workers,
    evaluate evaluates and reports, predict labels a file (with --array N: N shards and a
    merge job), audit finds likely label errors (with --array K: one fold model per task, then a
    scoring job). Walk-through: docs/cluster.md
    """
    spec = JobSpec(
        scheduler=scheduler.value,
        stage=stage.value,
        goemo_args=tuple(goemo_args or ()),
        gpus=gpus,
        nodes=nodes,
        cpus=cpus,
        time=time,
        mem=mem,
        queue=queue,
        env=env,
        modules=tuple(module or ()),
        cache_dir=cache_dir,
        hub_cache=hub_cache,
        data_dir=data_dir,
        array=array,
        job_name=job_name,
        log_dir=log_dir,
        directives=tuple(directive or ()),
        models=tuple(model or ()),
        packages=tuple(package or ("goemo",)),
        torch_index=torch_index,
        port=port,
        report_run=report_run,
        sge_pe=sge_pe,
        sge_gpu_resource=sge_gpu_resource,
        sge_mem_resource=None if sge_mem_resource.lower() == "none" else sge_mem_resource,
    )
    if out is None and stage in (ClusterStage.predict, ClusterStage.audit) and array is not None:
        raise ConfigError(
            f"--stage {stage.value} --array N writes two scripts (the array and its merge job): give --out FILE"
        )
    if out is not None:
        job = write_job(spec, out)
    else:
        job = render_job(spec)
        make_log_dir(job)  # `render ... > job.sh` needs it as much as --out does
    for warning in job.warnings:
        typer.echo(f"goemo: warning: {warning}", err=True)
    if out is None:
        typer.echo(job.text, nl=False)
        return
    s = job.spec
    shape = f"{s.nodes} node(s) x {s.gpus} GPU(s), {s.cpus} cores, {s.mem}/node, {s.time}"
    typer.echo(f"wrote {out}: {s.scheduler} {s.stage} job, {shape}; logs go to {s.log_dir}/")
    if job.merge is not None:
        merge = merge_script_path(out)
        what = "scoring" if s.stage == "audit" else "merge"
        typer.echo(f"wrote {merge}: its {what} job, held until all {s.array} array tasks have succeeded")
        typer.echo(f"submit from this folder: {job.submit_line(out, merge)}")
        return
    typer.echo(f"submit from this folder: {job.submit_command} {out}")
