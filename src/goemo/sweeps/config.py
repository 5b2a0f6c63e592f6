"""Sweep configs in W&B's format, checked and translated to goemo's names and to Optuna.

A W&B sweep config becomes a `SweepSpec`: each searched parameter a `ParamSpec` that knows its
Optuna suggestion and its grid points; ``value:`` entries become fixed training options. W&B's
parameter names are goemo's aliases (`goemo.core.config.ALIASES`); the metric is a key of goemo's
per-epoch record (``auc_score``, the W&B report's name, is macro ROC-AUC) or one of
`METRIC_ALIASES`. What W&B accepts and goemo cannot honour is refused with the reason, or
ignored with a note.

The sweep optimises ``metric`` across trials, while each trial keeps its best epoch by its own
``select_metric: {value: val_loss}`` (fixed, as a W&B agent would pass it to the program), else
the base options', else the sweep metric (`goemo.sweeps.objective`).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from goemo.core.config import NOT_SWEEPABLE_FIELDS, SELECT_METRICS, normalize_keys
from goemo.core.errors import ConfigError

if TYPE_CHECKING:
    import optuna

METHODS = ("grid", "random", "bayes")
# Common spellings of metric names -> keys of goemo's per-epoch record. ``auc_score`` (the W&B
# report's name) is a record key itself: macro ROC-AUC. An unqualified AUC means what
# scikit-learn's ``roc_auc_score`` (and so the report) computes by default, the macro average:
# ``auc_macro``, the same number as ``auc_score``; only ``micro_auc`` asks for the micro one.
METRIC_ALIASES = {
    **dict.fromkeys(("auc", "roc_auc", "val_auc", "eval_auc", "macro_auc"), "auc_macro"),
    **dict.fromkeys(("eval_loss", "validation_loss", "valid_loss"), "val_loss"),
    **dict.fromkeys(("f1", "macro_f1", "eval_f1"), "f1_macro"),
    **{"micro_auc": "auc_micro", "micro_f1": "f1_micro"},
}
# Top-level keys of a W&B sweep config that only mean something to W&B's own agent.
IGNORED_KEYS = ("program", "command", "project", "entity", "description", "controller", "job", "image_uri")
# Training options a sweep sets itself, or that would break the run folder layout: those
# marked ``sweepable=False`` in TrainConfig. ``select_metric`` is among them but may be fixed
# (``{value: ..}``): it is the trials' selection rule, not a searched dimension.
NOT_SWEEPABLE = NOT_SWEEPABLE_FIELDS

# ---------------------------------------------------------------- the sweep config


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a W&B ``parameters`` entry turned into an Optuna suggestion.

    >>> p = ParamSpec("lr", "learning_rate", "float", low=1e-5, high=1e-3, log=True)
    >>> p.describe()
    'log-uniform [1e-05, 0.001]'
    """

    name: str  # goemo's field name
    source: str  # the name in the config file
    kind: str  # "categorical" | "float" | "int"
    values: tuple[Any, ...] = ()
    low: float = 0.0  # the range of "float" and "int" parameters
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list[Any]:
        """The points a grid sweep visits (W&B grids take ``values`` and ``int_uniform`` ranges)."""
        if self.kind == "categorical":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ConfigError(
            f"parameters.{self.source}: a grid needs a list of values, not a continuous range; "
            f"use values: [...] or method: random|bayes"
        )

    def describe(self) -> str:
        if self.kind == "categorical":
            return "one of " + ", ".join(map(str, self.values))
        kind = "log-uniform" if self.log else ("integer" if self.kind == "int" else "uniform")
        step = f" step {self.step:g}" if self.step and not (self.kind == "int" and self.step == 1) else ""
        return f"{kind} [{self.low:g}, {self.high:g}]{step}"


@dataclass
class SweepSpec:
    """A parsed sweep config: what to search, what to optimise, how to stop early."""

    method: str
    metric_name: str
    metric: str
    direction: Literal["maximize", "minimize"]
    params: dict[str, ParamSpec]
    fixed: dict[str, Any]
    early_terminate: dict[str, Any] | None = None
    run_cap: int | None = None
    name: str | None = None
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    # The metric that picks each trial's kept epoch, from ``parameters.select_metric: {value: ..}``;
    # None: the base options decide (`goemo.sweeps.runner.prepare_sweep`).
    select_metric: str | None = None

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the grid, in a fixed order (the first parameter varies slowest)."""
        names = list(self.params)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.params[n].grid_values() for n in names))]

    def slot_params(self, count: int, seed: int | None) -> list[dict[str, Any]]:
        """The parameters fixed in each of ``count`` slots ({} = left to the sampler).

        A grid puts one point in each slot. A random sweep over a finite space draws points
        without replacement while there are unused ones, so no run repeats another (W&B's
        agent draws with replacement). Continuous and bayes sweeps leave slots to the sampler.
        """
        if self.method == "grid":
            return self.grid()[:count]
        if self.method == "random" and all(p.kind in ("categorical", "int") for p in self.params.values()):
            size = math.prod(len(p.grid_values()) for p in self.params.values())
            if size <= 100_000:
                points = self.grid()
                random.Random(seed).shuffle(points)
                return [points[i] if i < len(points) else {} for i in range(count)]
        return [{} for _ in range(count)]

    def default_count(self) -> int:
        if self.method == "grid":
            return len(self.grid()) if self.run_cap is None else min(self.run_cap, len(self.grid()))
        if self.run_cap is None:
            raise ConfigError(f"a {self.method} sweep needs --count N (or run_cap: N in the sweep config)")
        return self.run_cap

    def sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        import optuna  # noqa: PLC0415  (optional extra: sweep; `goemo --help` imports this module)

        if self.method == "grid":
            return _grid_sampler({n: p.grid_values() for n, p in self.params.items()}, seed)
        return {"random": optuna.samplers.RandomSampler, "bayes": optuna.samplers.TPESampler}[self.method](seed=seed)

    def pruner(self) -> optuna.pruners.BasePruner:
        import optuna  # noqa: PLC0415  (optional extra: sweep; `goemo --help` imports this module)

        if not self.early_terminate:
            return optuna.pruners.NopPruner()
        et = self.early_terminate
        return optuna.pruners.HyperbandPruner(
            min_resource=int(et.get("min_iter", 1)),
            max_resource=int(et["max_iter"]) if et.get("max_iter") else "auto",
            reduction_factor=int(et.get("eta", 3)),
        )


def _grid_sampler(search_space: dict[str, list[Any]], seed: int | None) -> optuna.samplers.GridSampler:
    """A `GridSampler` without its end-of-grid `Study.stop`: the sweep's slots hold the grid
    points and decide when it is done (and `Study.stop` only works inside `Study.optimize`)."""
    import optuna  # noqa: PLC0415  (optional extra: sweep; `goemo --help` imports this module)

    class SlotGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
            return None

    return SlotGridSampler(search_space, seed=seed)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _yaml_number(value: Any) -> Any:
    """``5e-5`` as a float: PyYAML (YAML 1.1) reads exponents without a dot as strings."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def _number(value: Any, where: str) -> float:
    value = _yaml_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def _parse_param(source: str, name: str, entry: Any, where: str, notes: list[str]) -> ParamSpec | tuple[str, Any]:
    """A `ParamSpec`, or ``("fixed", value)`` for ``value:`` entries."""
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: expected a mapping such as {{values: [...]}} or {{min: .., max: ..}}, got {entry!r}"
        )
    if "parameters" in entry:
        raise ConfigError(f"{where}: nested parameters are not supported; goemo's options are flat")
    dist = entry.get("distribution")
    if "value" in entry and dist in (None, "constant"):
        return ("fixed", _yaml_number(entry["value"]))
    if "values" in entry and dist in (None, "categorical"):
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: expected a non-empty list, got {values!r}")
        values = [_yaml_number(v) for v in values]
        for v in values:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ConfigError(f"{where}.values: {v!r} is not a number, string or boolean")
        if "probabilities" in entry:
            notes.append(f"parameters.{source}: probabilities ignored (Optuna picks values uniformly)")
        return ParamSpec(name, source, "categorical", values=tuple(values))
    if "min" not in entry or "max" not in entry:
        raise ConfigError(f"{where}: give value, values, or min and max (with a distribution)")
    low, high = _number(entry["min"], f"{where}.min"), _number(entry["max"], f"{where}.max")
    if low > high:
        raise ConfigError(f"{where}: min {low} is above max {high}")
    if dist is None:  # W&B's rule: two integers mean int_uniform, else uniform
        dist = "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
    q = entry.get("q")
    if dist == "int_uniform":
        return ParamSpec(name, source, "int", low=int(low), high=int(high), step=int(q or 1))
    if dist == "uniform":
        return ParamSpec(name, source, "float", low=float(low), high=float(high))
    if dist == "q_uniform":
        step = _number(q if q is not None else 1, f"{where}.q")
        if isinstance(low, int) and isinstance(high, int) and isinstance(step, int):
            return ParamSpec(name, source, "int", low=low, high=high, step=step)
        return ParamSpec(name, source, "float", low=float(low), high=float(high), step=float(step))
    if dist == "log_uniform_values":
        if low <= 0:
            raise ConfigError(f"{where}: log_uniform_values needs min > 0, got {low}")
        return ParamSpec(name, source, "float", low=float(low), high=float(high), log=True)
    if dist == "log_uniform":  # W&B's older form: min and max are natural-log exponents
        return ParamSpec(name, source, "float", low=math.exp(low), high=math.exp(high), log=True)
    raise ConfigError(
        f"{where}: distribution {dist!r} is not supported (supported: constant, categorical, "
        f"int_uniform, uniform, q_uniform, log_uniform, log_uniform_values)"
    )


def _metric(name: str, where: str) -> str:
    """A metric name of the config as the key of goemo's per-epoch record, or the reason it is none."""
    metric = METRIC_ALIASES.get(name, name)
    if metric not in SELECT_METRICS:
        valid = sorted(set(SELECT_METRICS) | set(METRIC_ALIASES))
        raise ConfigError(f"{where} {name!r} is not a dev metric goemo records (valid: {', '.join(valid)})")
    return metric


def _select_metric(entry: Any, where: str) -> str:
    """``parameters.select_metric``: a fixed value only. Searching it would rank trials whose kept
    epochs were chosen by different rules, which answers no question about the other parameters."""
    if not isinstance(entry, dict) or "value" not in entry or entry.get("distribution") not in (None, "constant"):
        raise ConfigError(
            f"{where}: select_metric picks each trial's kept epoch and is fixed, not searched: "
            f"write select_metric: {{value: val_loss}} (or another dev metric)"
        )
    return _metric(str(entry["value"]), where)


def parse_sweep_config(raw: dict[str, Any], origin: str = "sweep config") -> SweepSpec:
    """Check a W&B-format sweep config and translate it to goemo's names.

    >>> spec = parse_sweep_config({
    ...     "method": "random", "metric": {"name": "auc_score", "goal": "maximize"},
    ...     "parameters": {"learning_rate": {"values": [5e-5, 3e-5]}, "epochs": {"value": 10}}})
    >>> spec.metric, spec.direction, list(spec.params), spec.fixed
    ('auc_score', 'maximize', ['lr'], {'epochs': 10})
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping with method, metric and parameters")
    notes: list[str] = []
    known = {"method", "metric", "parameters", "early_terminate", "run_cap", "name", *IGNORED_KEYS}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{origin}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
    if ignored := [k for k in IGNORED_KEYS if k in raw]:
        notes.append(f"ignored (they configure W&B's own agent): {', '.join(ignored)}")

    method = raw.get("method")
    if method not in METHODS:
        raise ConfigError(f"{origin}: method {method!r}: expected one of {', '.join(METHODS)}")

    metric_cfg = raw.get("metric") or {}
    if not isinstance(metric_cfg, dict) or "name" not in metric_cfg:
        raise ConfigError(f"{origin}: metric: expected {{name: ..., goal: maximize|minimize}}")
    metric_name = str(metric_cfg["name"])
    metric = _metric(metric_name, f"{origin}: metric.name")
    goal = metric_cfg.get("goal")
    if goal is None:
        goal = "minimize" if metric == "val_loss" else "maximize"
        notes.append(f"metric.goal not given: {goal} {metric}")
    if goal not in ("maximize", "minimize"):
        raise ConfigError(f"{origin}: metric.goal {goal!r}: expected maximize or minimize")
    direction: Literal["maximize", "minimize"] = "maximize" if goal == "maximize" else "minimize"
    if "target" in metric_cfg:
        notes.append("metric.target ignored: the sweep runs its full count")
    if metric_name != metric:
        notes.append(f"metric {metric_name} is goemo's {metric}")

    params_cfg = raw.get("parameters")
    if not isinstance(params_cfg, dict) or not params_cfg:
        raise ConfigError(f"{origin}: parameters: expected a mapping of name: {{values|value|min/max}}")
    params: dict[str, ParamSpec] = {}
    fixed: dict[str, Any] = {}
    select_metric: str | None = None
    for source, entry in params_cfg.items():
        where = f"{origin}: parameters.{source}"
        name = next(iter(normalize_keys({source: None}, f"{origin}: parameters")))
        if name == "select_metric":
            select_metric = _select_metric(entry, where)
            continue
        if name in NOT_SWEEPABLE:
            raise ConfigError(f"{where}: {name} is set by the sweep itself and cannot be a parameter")
        if name in params or name in fixed:
            raise ConfigError(f"{where}: {name} is given twice (W&B and goemo names of the same option)")
        parsed = _parse_param(str(source), name, entry, where, notes)
        if isinstance(parsed, tuple):
            fixed[name] = parsed[1]
        else:
            params[name] = parsed
        if name != source:
            notes.append(f"parameter {source} is goemo's {name}")
    if not params:
        raise ConfigError(f"{origin}: every parameter has a single value: nothing to search")

    et = raw.get("early_terminate")
    if et is not None:
        if not isinstance(et, dict) or et.get("type") != "hyperband":
            raise ConfigError(f"{origin}: early_terminate: only type: hyperband is supported")
        if "s" in et:
            notes.append(
                "early_terminate.s ignored: Optuna's Hyperband sets its brackets from min_iter, max_iter and eta"
            )
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise ConfigError(f"{origin}: run_cap: expected an integer >= 1, got {run_cap!r}")
    spec = SweepSpec(
        method, metric_name, metric, direction, params, fixed, et, run_cap, raw.get("name"), notes, raw, select_metric
    )
    if method == "grid":
        spec.grid()  # raises for continuous ranges
    return spec


def load_sweep_config(path: str | Path) -> SweepSpec:
    """Read a W&B-format sweep YAML (or JSON) file; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep config not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    return parse_sweep_config(raw, str(p))
