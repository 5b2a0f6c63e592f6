"""The `goemo` command line: each verb parses options and calls one library function.

One module per group of verbs, each registering its commands on the one Typer `app`
(`goemo.cli.common`, which also holds ``--debug`` and the error policy). Modules that pull
numpy, torch or the web stack are imported inside the commands, so ``goemo --help`` stays fast.
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
