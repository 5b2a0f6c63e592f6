"""The Typer app every verb is registered on, its root options, and the one error policy.

Errors from the library (`GoemoError`) become one line on stderr and exit code 1, and so
does a write the disk refuses (full, over quota, read-only; `goemo.core.errors.DISK_ERRNOS`);
``--debug`` shows the traceback instead. Usage errors exit 2 (Typer's default).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from goemo.cli.options import given
from goemo.core.config import SORT_KEYS
from goemo.core.errors import DISK_ERRNOS, GoemoError
from goemo.core.run_settings import DataOptions

if TYPE_CHECKING:
    from goemo.data.source import DataSource

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
LOG_WIDTH = 400  # columns of a console that writes to a file or pipe: wide enough for every goemo table


def make_console(stderr: bool = False) -> Console:
    """The rich Console every verb prints its tables with: a terminal's width, else `LOG_WIDTH` (or ``$COLUMNS``).

    Elsewhere rich would assume 80 columns and cut a log file's table cells to ``f1_mac…``.

    >>> make_console().width >= 80
    True
    """
    stream = sys.stderr if stderr else sys.stdout
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        interactive = False
    columns = os.environ.get("COLUMNS", "")
    if interactive or (columns.isdigit() and int(columns) > 0):
        return Console(stderr=stderr)  # rich reads the terminal's size, or $COLUMNS
    return Console(stderr=stderr, width=LOG_WIDTH)


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
            except OSError as e:  # a disk that refused a write outside goemo's own writers (full, read-only)
                if _state["debug"] or e.errno not in DISK_ERRNOS:
                    raise
                where = f"{e.filename}: " if e.filename else ""
                typer.echo(f"goemo: error: {where}{os.strerror(e.errno)}; {DISK_ERRNOS[e.errno]}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo("goemo: interrupted", err=True)
                raise typer.Exit(130) from None

        return (group or app).command(name, **kwargs)(wrapper)

    return decorate


def data_source(options: dict[str, Any]) -> DataSource | None:
    """The `DataSource` a verb's `DataOptions` name (removed from ``options``), or None: the model's own data."""
    values = given(DataOptions, options)
    if not values:
        return None
    from goemo.data.source import DataSource  # noqa: PLC0415  (numpy: kept out of `goemo --help`)

    if values.get("dataset") and values.get("data_dir"):  # a usage error (exit 2), as Typer's own are
        raise typer.BadParameter("give --dataset or --data-dir, not both", param_hint="--dataset")
    return DataSource.from_options(**values)


def _checked_sort(value: str | None) -> str | None:
    if value is not None and value not in SORT_KEYS:
        raise typer.BadParameter(f"{value!r}: expected one of {', '.join(SORT_KEYS)}")
    return value


def sort_option() -> Any:
    """``--sort COLUMN`` of `evaluate` and `report`: one definition, so both take the same columns."""
    return Opt(
        None,
        "--sort",
        callback=_checked_sort,
        help=f"Order the labels by {', '.join(SORT_KEYS)} "
        "(scores: worst first, so the problem classes lead; default: the model's label order).",
    )
