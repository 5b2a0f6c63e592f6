"""The Typer app every verb is registered on, its root options, and the one error policy.

Errors from the library (`GoemoError`) become one line on stderr and exit code 1;
``--debug`` shows the traceback instead. Usage errors exit 2 (Typer's default).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import typer

from goemo.core.errors import GoemoError

app = typer.Typer(
    name="goemo",
    help="Multi-label emotion classification: data, training, evaluation, sweeps, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}
Opt = typer.Option  # the verbs have many options; a short name keeps them one per line


def sub_app(help: str) -> typer.Typer:  # noqa: A002 - Typer's own name for it
    """A group of verbs (``goemo baseline ...``, ``goemo cluster ...``) with the app's settings."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it between invocations)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; ignore
        pass


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """goemo: fine-tune, evaluate and serve multi-label emotion classifiers."""
    _state["debug"] = debug
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def command(name: str | None = None, *, group: typer.Typer | None = None, **kwargs) -> Callable:
    """Register a verb on `app` (or on ``group``) whose `GoemoError`s are reported in one line (exit 1).

    Ctrl-C exits 130 with one line too. ``kwargs`` go to `typer.Typer.command` (``epilog``, ...).
    """

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

        return (group or app).command(name, **kwargs)(wrapper)

    return decorate
