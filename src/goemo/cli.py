"""The `goemo` command line: each verb parses options and calls one library function.

Errors from the library (`GoemoError`) become one line on stderr and exit code 1;
``--debug`` shows the traceback instead. Usage errors exit 2 (Typer's default).
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from goemo.errors import GoemoError

app = typer.Typer(
    name="goemo",
    help="Multi-label emotion classification: data, training, evaluation, sweeps, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """goemo: fine-tune, evaluate and serve multi-label emotion classifiers."""
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a verb whose `GoemoError`s are reported in one line (exit 1)."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kw):
            try:
                return func(*args, **kw)
            except GoemoError as e:
                if _state["debug"]:
                    raise
                typer.echo(f"goemo: error: {e}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo("goemo: interrupted", err=True)
                raise typer.Exit(130) from None

        return app.command(name, **kwargs)(wrapper)

    return decorate


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # python -m goemo.cli
    main()
