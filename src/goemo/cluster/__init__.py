"""Job scripts for SGE and Slurm clusters: setup, fetch, train (1 GPU to many nodes), sweep, evaluate, predict.

>>> from goemo.cluster import JobSpec, render_job
>>> job = render_job(JobSpec("sge", "train", ("--model", "bert-base-cased"), gpus=1, env="venv:~/goemo-env"))
>>> "#$ -l h_rt=04:00:00" in job.text
True
"""

from goemo.cluster.render import (
    ARRAY_STAGES,
    GPU_STAGES,
    SCHEDULERS,
    STAGES,
    JobSpec,
    RenderedJob,
    make_log_dir,
    merge_script_path,
    render_job,
    shell_arg,
    shell_path,
    write_job,
)

__all__ = [
    "ARRAY_STAGES",
    "GPU_STAGES",
    "SCHEDULERS",
    "STAGES",
    "JobSpec",
    "RenderedJob",
    "make_log_dir",
    "merge_script_path",
    "render_job",
    "shell_arg",
    "shell_path",
    "write_job",
]
