"""Command-line options generated from dataclass fields: one declaration per option.

`TrainConfig`, `RunSettings` and `DataOptions` declare their options as field metadata (a help
text, a ``cli`` name when not ``--field-name``); `with_options` turns the fields into Typer
options and `gather` the parsed values back into the dataclass. Every generated option
defaults to ``None``, "not given", so the dataclass's own defaults (or the presets) decide.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union

import typer

T = TypeVar("T")
_TYPER_KEYS = ("min", "max", "metavar")  # field metadata passed to typer.Option as they are


def option_declarations(f: dataclasses.Field, hint: Any = None) -> tuple[str, ...]:
    """The option names of a field: ``--field-name``, ``--x/--no-x`` for booleans, or its ``cli``; then ``aliases``.

    >>> from goemo.core.config import TrainConfig
    >>> fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    >>> option_declarations(fields["eval_test"]), option_declarations(fields["lr"])
    (('--eval-test/--no-eval-test',), ('--lr', '--learning-rate'))
    """
    aliases = tuple(f.metadata.get("aliases", ()))
    if f.metadata.get("cli"):
        return (f.metadata["cli"], *aliases)
    name = "--" + f.name.replace("_", "-")
    if (f.type if hint is None else hint) in (bool, "bool"):  # f.type is a string under postponed annotations
        return (f"{name}/--no-{name[2:]}", *aliases)
    return (name, *aliases)


def option_type(name: str, hint: Any, path: bool) -> Any:
    """The type Typer parses a field as: its own (Literal: the values' type), Path for paths, list[...] for lists."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{name}: no command-line type for {hint}")
        hint = rest[0]
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return list[option_type(name, item, path)]  # type: ignore[misc]
    if path:
        return Path
    if typing.get_origin(hint) is Literal:
        kinds = {type(v) for v in typing.get_args(hint)}
        if len(kinds) != 1:
            raise TypeError(f"{name}: no command-line type for {hint}")
        hint = kinds.pop()
    if hint not in (str, int, float, bool):
        raise TypeError(f"{name}: no command-line type for {hint}")
    return hint


def _shown_default(f: dataclasses.Field, decls: tuple[str, ...]) -> str:
    """The field's default as ``--help`` shows it (click's style: a boolean shows its flag's name)."""
    if f.default is dataclasses.MISSING or f.default is None:  # None, or a list factory: nothing to show
        return ""
    if isinstance(f.default, bool):
        on, _, off = decls[0].partition("/")
        return (on if f.default else off).lstrip("-") if off else ""
    return str(f.default)


def field_parameter(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    """One option for a dataclass field, as a keyword parameter Typer reads."""
    decls = option_declarations(f, hint)
    kind = option_type(f.name, hint, f.metadata.get("path", False))
    shown = _shown_default(f, decls)
    help_text = f.metadata.get("help", "") + (f"  [default: {shown}]" if shown else "")
    checks = {k: f.metadata[k] for k in _TYPER_KEYS if f.metadata.get(k) is not None}
    option = typer.Option(None, *decls, help=help_text, show_default=False, **checks)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are options: all but those whose metadata has ``no_cli``."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("no_cli")]


def with_options(
    *classes: type,
    order: Callable[[dataclasses.Field], Any] | None = None,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
) -> Callable:
    """Give ``func(own options..., **options)`` one more option per field of each of ``classes``.

    The own parameters come first, then the fields (sorted by ``order``; only those in ``only``;
    none of ``skip``). Typer reads the result through ``__signature__`` and ``__annotations__``.
    """
    skipped = set(skip)

    def decorate(func: Callable) -> Callable:
        own = inspect.signature(func).parameters.values()
        hints = typing.get_type_hints(func)
        params = [p.replace(annotation=hints[p.name]) for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
        for cls in classes:
            fields = [f for f in option_fields(cls) if f.name not in skipped and (only is None or f.name in set(only))]
            clash = {p.name for p in params} & {f.name for f in fields}
            if clash:
                raise TypeError(f"{func.__name__}: parameters {sorted(clash)} are also {cls.__name__} fields")
            field_hints = typing.get_type_hints(cls)
            fields = sorted(fields, key=order) if order is not None else fields
            params += [field_parameter(f, field_hints[f.name]) for f in fields]
        func.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return decorate


def plain(value: Any) -> Any:
    """Dataclass fields hold plain strings: Path -> str, also inside lists."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def given(cls: type, values: dict[str, Any], names: Iterable[str] | None = None) -> dict[str, Any]:
    """Remove ``cls``'s option values from ``values``; return those given (not None), as plain values."""
    out = {}
    for f in option_fields(cls):
        if names is not None and f.name not in names:
            continue
        value = values.pop(f.name, None)
        if value is not None:
            out[f.name] = plain(value)
    return out


def gather(cls: type[T], values: dict[str, Any]) -> T:
    """The ``cls`` instance the parsed options in ``values`` describe (removed from ``values``)."""
    return cls(**given(cls, values))
