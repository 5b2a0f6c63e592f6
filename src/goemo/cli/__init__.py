"""The `goemo` command line: each verb parses options and calls one library function.

One module per group of verbs, each registering its commands on the one Typer `app`
(`goemo.cli.common`, which also holds ``--debug`` and the error policy):

- `goemo.cli.data`: download, stats, fetch-model
- `goemo.cli.train`: train (options generated from `TrainConfig`), reproduce, baseline tfidf
- `goemo.cli.audit`: audit (which labels are wrong; training options as train's)
- `goemo.cli.evaluate`: evaluate, report, ensemble
- `goemo.cli.calibrate`: calibrate (a model's scores, on dev)
- `goemo.cli.compare`: compare (two models, paired bootstrap)
- `goemo.cli.predict`: predict, export, serve
- `goemo.cli.explain`: explain (the words behind each emotion)
- `goemo.cli.hub`: push (a model folder to the Hugging Face Hub)
- `goemo.cli.sweep`: sweep, sweep-report
- `goemo.cli.cluster`: cluster render

Errors from the library (`GoemoError`) become one line on stderr and exit code 1;
``--debug`` shows the traceback instead. Usage errors exit 2 (Typer's default).
"""

from __future__ import annotations

# Each module registers its verbs on `app` when imported; this order is the order of `goemo --help`.
from goemo.cli import calibrate, cluster, compare, data, evaluate, explain, hub, predict, sweep, train  # noqa: F401, I001
from goemo.cli.common import app, command

__all__ = ["app", "command", "main"]

# after train, so that `goemo --help` lists audit after train and reproduce
from goemo.cli import audit  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    app()
