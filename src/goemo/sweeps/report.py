"""`goemo sweep-report`: what a sweep found, as ``sweep_report.md``, ``sweep_report.html`` and plots.

It answers the questions of W&B's sweep panels from the Optuna study and the trials' run folders
alone (no account, no network): the best trial and its model; every trial, sorted by the metric;
per-trial training curves (from ``metrics.jsonl``, the kept epoch marked); which hyperparameters
matter (fANOVA importance and correlation, parameters with no measurable effect flagged instead of
ranked); parallel coordinates, Optuna's slice and history plots; and the best trials' dev ROC-AUC
per class, worst first (from each trial's ``dev_metrics.json``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goemo.core.fileio import atomic_write_bytes, atomic_write_text
from goemo.report.render import Bullets, Code, Document, Image, Link, Paragraph, Section, Table, to_html, to_markdown
from goemo.report.run_data import epoch_records
from goemo.sweeps.objective import metric_value

if TYPE_CHECKING:
    import optuna

# `goemo.cli` imports this module, and `goemo --help` must not wait for numpy, Optuna or
# matplotlib: those (and the runner, which needs Optuna and training) are imported where used.

log = logging.getLogger(__name__)

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
# The per-epoch numbers the curves need, kept from each trial's metrics.jsonl (with the sweep
# metric and the select metric, whatever they are).
CURVE_KEYS = ("train_loss", "val_loss", "auc_score", "auc_micro", "auc_macro")
AUC_METRICS = ("auc_score", "auc_macro", "auc_micro")


@dataclass
class TrialRow:
    """One trial as the report shows it."""

    number: int
    state: str
    value: float | None  # the objective; for a pruned trial, its last reported value
    params: dict[str, Any]
    run_dir: str | None
    error: str | None = None
    retry_of: int | None = None
    best_epoch: int | None = None
    epochs_reported: int = 0
    duration_s: float | None = None
    dev: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    worker_gone: bool = False  # RUNNING, but its worker process on this host has ended
    select_metric: str | None = None  # what picked best_epoch (the kept epoch)
    metric_best_epoch: int | None = None  # where the sweep metric itself peaked
    curve: list[dict[str, Any]] = field(default_factory=list)  # per-epoch records (CURVE_KEYS), from metrics.jsonl
    interval: dict[str, Any] | None = None  # `goemo.scoring.bootstrap` figures training put in best/'s card facts

    @property
    def scored(self) -> bool:
        """Completed with a finite value: a trial the analysis can rank."""
        return self.state == "COMPLETE" and self.value is not None and math.isfinite(self.value)


@dataclass
class SweepAnalysis:
    """Everything in the report, as data (``goemo sweep-report --format json`` prints it)."""

    sweep_dir: Path
    study_name: str
    storage: str
    method: str
    metric: str
    metric_name: str
    direction: str
    param_names: list[str]
    log_params: list[str]
    rows: list[TrialRow]
    counts: dict[str, int]
    importance: dict[str, float] | None
    importance_note: str | None
    correlation: dict[str, float | None]
    label_auc: dict[int, dict[str, float | None]]
    label_auc_note: str | None
    notes: list[str] = field(default_factory=list)
    select_metric: str = ""  # what each trial's kept epoch was chosen by ("" = the metric itself)
    param_choices: dict[str, list[Any]] = field(default_factory=dict)  # categorical parameters' values
    no_effect: dict[str, str] = field(default_factory=dict)  # parameter -> why it made no measurable difference

    @property
    def best(self) -> TrialRow | None:
        complete = [r for r in self.rows if r.state == "COMPLETE"]
        return complete[0] if complete else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sweep_dir"] = str(self.sweep_dir)
        out["best"] = self.best.number if self.best else None
        return out


# ---------------------------------------------------------------- analysis


def _row(t: optuna.trial.FrozenTrial) -> TrialRow:
    value = t.value
    if t.state.name == "PRUNED" and t.intermediate_values:
        value = t.intermediate_values[max(t.intermediate_values)]
    duration = None
    if t.datetime_start and t.datetime_complete:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    from goemo.sweeps.runner import worker_gone  # noqa: PLC0415  (optional extra: sweep)

    keys = ("run_dir", "error", "retry_of", "best_epoch", "select_metric", "metric_best_epoch")
    attrs: dict[str, Any] = {key: t.user_attrs.get(key) for key in keys}
    return TrialRow(
        number=t.number,
        state=t.state.name,
        value=value,
        params=dict(t.params),
        worker_gone=t.state.name == "RUNNING" and worker_gone(t),
        epochs_reported=len(t.intermediate_values),
        duration_s=duration,
        dev=t.user_attrs.get("dev") or {},
        test=t.user_attrs.get("test") or {},
        **attrs,
    )


def _sort_key(row: TrialRow, maximize: bool) -> tuple:
    value = row.value if row.value is not None and math.isfinite(row.value) else None
    rank = _STATE_ORDER.get(row.state, 5)
    if rank > 1 or value is None:
        return (rank, 1, 0.0, row.number)
    return (rank, 0, -value if maximize else value, row.number)


def _importance(
    study: optuna.Study, rows: list[TrialRow], params: list[str], no_effect: dict[str, str]
) -> tuple[dict[str, float] | None, str | None]:
    """fANOVA importances of the parameters that made a difference, or why there are none.

    In a small random sweep fANOVA hands a share to a parameter that changed nothing, because
    its values happen to go with those of one that did: such parameters (`no_effect`) are left out.
    """
    import optuna  # noqa: PLC0415  (optional extra: sweep)

    values = [r.value for r in rows if r.scored]
    if len(values) < 2:
        return None, f"importance needs at least 2 completed trials ({len(values)} so far)"
    if len(set(values)) == 1:
        return None, "importance not computed: every completed trial scored the same, so no parameter made a difference"
    searched = [p for p in params if p not in no_effect]
    left_out = f" ({', '.join(no_effect)} left out: no measurable effect)" if no_effect else ""
    if not searched:
        return None, f"importance not computed: no parameter had a measurable effect{left_out}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=searched
            )
    except (ValueError, RuntimeError) as e:
        return None, f"importance could not be computed: {e}"
    if not found:
        return None, "importance could not be computed: no parameter took more than one value"
    if not all(math.isfinite(v) for v in found.values()):
        return None, "importance could not be computed: Optuna's fANOVA gave no finite value"
    return {name: float(v) for name, v in found.items()}, (
        f"importance over {', '.join(found)}{left_out}" if no_effect else None
    )


def _no_effect(rows: list[TrialRow], params: list[str]) -> dict[str, str]:
    """Parameters whose changes gave bit-identical metrics: every pair of completed trials that
    differ in that parameter alone (at least one pair) scored exactly the same.

    A parameter the model ignores (a dropout an architecture does not apply) is then named as
    such instead of receiving a share of importance it never earned.
    """
    done = [r for r in rows if r.scored]
    out = {}
    for name in params:
        pairs = [
            (a, b)
            for a, b in itertools.combinations(done, 2)
            if name in a.params
            and name in b.params
            and a.params[name] != b.params[name]
            and all(a.params.get(p) == b.params.get(p) for p in params if p != name)
        ]
        if pairs and all(a.value == b.value for a, b in pairs):
            a, b = pairs[0]
            out[name] = (
                f"{len(pairs)} pair(s) of trials differ only in {name} and score identically "
                f"(e.g. trials {a.number} and {b.number}: {a.value:.6g})"
            )
    return out


def _curve(folder: Path | None, metric: str, select: str) -> list[dict[str, Any]]:
    """A trial's per-epoch records (the keys the curves need), from its ``metrics.jsonl``."""
    if folder is None:
        return []
    keys = dict.fromkeys((*CURVE_KEYS, metric, select))
    return [
        {"epoch": int(record["epoch"]), **{k: v for k in keys if (v := metric_value(record, k)) is not None}}
        for record in epoch_records(folder / "metrics.jsonl")
    ]


def _correlation(rows: list[TrialRow], name: str) -> float | None:
    """Pearson correlation of a parameter's raw value with the metric over completed trials."""
    import numpy as np  # noqa: PLC0415  (not at import: `goemo --help` imports this module)

    pairs = [
        (float(r.params[name]), r.value) for r in rows if r.scored and isinstance(r.params.get(name), (int, float))
    ]
    if len(pairs) < 3:
        return None
    x, y = np.array(pairs, dtype=np.float64).T
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _trial_folder(sweep_dir: Path, row: TrialRow) -> Path | None:
    """The trial's run folder on this machine (the recorded path, or the same name in this sweep)."""
    if row.run_dir and Path(row.run_dir).is_dir():
        return Path(row.run_dir)
    local = sweep_dir / "trials" / (Path(row.run_dir).name if row.run_dir else str(row.number))
    return local if local.is_dir() else None


def _interval(folder: Path | None) -> dict[str, Any] | None:
    """The trial's tuned macro-F1 with its 95% bootstrap interval and split, from ``best/goemo.json``
    (training computes them at its end: `goemo.training.card_facts`); None where there are none."""
    if folder is None:
        return None
    try:  # OSError: no such file
        card = json.loads((folder / "best" / "goemo.json").read_text(encoding="utf-8")).get("card") or {}
    except (OSError, ValueError):
        return None
    bands = card.get("intervals") or {}
    f1 = bands.get("f1_macro") or {}
    if f1.get("low") is None or f1.get("high") is None:
        return None
    return {"split": card.get("per_label_split"), **f1, "n_resamples": bands.get("n_resamples")}


def _label_auc(
    sweep_dir: Path, rows: list[TrialRow], top: int
) -> tuple[dict[int, dict[str, float | None]], str | None]:
    out: dict[int, dict[str, float | None]] = {}
    missing = []
    for row in [r for r in rows if r.state == "COMPLETE"][:top]:
        folder = _trial_folder(sweep_dir, row)
        path = folder / "dev_metrics.json" if folder else None
        if path is None or not path.is_file():
            missing.append(row.number)
            continue
        per_label = json.loads(path.read_text(encoding="utf-8")).get("per_label", [])
        out[row.number] = {m["name"]: m.get("auc") for m in per_label}
    note = f"no dev_metrics.json on this machine for trial(s) {', '.join(map(str, missing))}" if missing else None
    return out, note


def analyse_sweep(
    sweep_dir: str | Path, storage: str | None = None, study_name: str | None = None, top: int = 3
) -> SweepAnalysis:
    """Read a sweep's study and trial folders into a `SweepAnalysis`.

    a = analyse_sweep("runs/sweeps/wandb_report_sweep")
    a.best.number, a.best.params, a.importance
    # -> (4, {'lr': 5e-05, 'batch_size': 32, 'dropout': 0.3}, {'lr': 0.71, 'dropout': 0.2, 'batch_size': 0.09})
    """
    from goemo.sweeps.runner import load_sweep  # noqa: PLC0415  (optional extra: sweep)

    meta, study = load_sweep(Path(sweep_dir), storage, study_name)
    return _analyse(Path(sweep_dir), meta, study, storage, top)


def _analyse(
    sweep_dir: Path, meta: dict[str, Any], study: optuna.Study, storage: str | None, top: int
) -> SweepAnalysis:
    trials = study.get_trials(deepcopy=False)
    maximize = study.direction.name == "MAXIMIZE"
    rows = sorted((_row(t) for t in trials), key=lambda r: _sort_key(r, maximize))
    counts = dict(Counter(r.state for r in rows))
    param_names = list(meta.get("parameters", {})) or sorted({p for r in rows for p in r.params})
    log_params = sorted({name for t in trials for name, d in t.distributions.items() if getattr(d, "log", False)})
    choices: dict[str, list[Any]] = {}
    for name, d in (item for t in trials for item in t.distributions.items()):
        if hasattr(d, "choices"):  # CategoricalDistribution's, without importing Optuna here
            choices.setdefault(name, list(d.choices))
    metric = meta.get("metric", "value")
    select = meta.get("select_metric") or meta.get("base_config", {}).get("select_metric") or metric
    for r in rows:
        folder = _trial_folder(sweep_dir, r)
        r.curve, r.interval = _curve(folder, metric, select), _interval(folder)
    no_effect = _no_effect(rows, param_names)
    importance, importance_note = _importance(study, rows, param_names, no_effect)
    label_auc, label_note = _label_auc(sweep_dir, rows, top)
    return SweepAnalysis(
        sweep_dir=sweep_dir,
        study_name=study.study_name,
        storage=meta.get("storage", storage or ""),
        method=meta.get("method", "?"),
        metric=metric,
        metric_name=meta.get("metric_name", meta.get("metric", "value")),
        direction="maximize" if maximize else "minimize",
        param_names=param_names,
        log_params=log_params,
        rows=rows,
        counts=counts,
        importance=importance,
        importance_note=importance_note,
        correlation={p: _correlation(rows, p) for p in param_names},
        label_auc=label_auc,
        label_auc_note=label_note,
        notes=list(meta.get("notes", [])),
        select_metric=select,
        param_choices=choices,
        no_effect=no_effect,
    )


# ---------------------------------------------------------------- plots


# The history and slice plots are Optuna's (`optuna.visualization.matplotlib`). The parallel
# coordinates, importance bars and per-trial curves are drawn here, because Optuna's lack what
# W&B's panels show: its parallel coordinates drop pruned trials and put the metric first; its
# importance plot has no correlation bars and cannot flag a parameter with no measurable effect;
# its intermediate-values plot has neither the losses nor the epoch each trial kept.


def _tidy(ax: Any, title: str = "", grid: str | None = "both", hide: tuple[str, ...] = ("top", "right")) -> None:
    """The look of every panel drawn here: its title, no frame on the ``hide`` sides, a light grid on ``grid``."""
    if title:
        ax.set_title(title, fontsize=10.5)
    if grid:
        ax.grid(axis=grid, alpha=0.3)
    for side in hide:
        ax.spines[side].set_visible(False)


def _legend_above(ax: Any, ncol: int = 1) -> None:
    """A frameless legend centred above the axes, where it covers no line or bar."""
    ax.legend(frameon=False, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol)


def _optuna_figure(plot: Any, study: optuna.Study, **kwargs: Any) -> Any:
    """The figure an `optuna.visualization.matplotlib` function draws, on an Agg canvas of its own.

    Optuna draws through pyplot and sets pyplot's global style to ggplot: the style stays inside
    this call (drawn here, so the ticks get it too), and the figure leaves pyplot's registry.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional extra: report)
    import numpy as np  # noqa: PLC0415  (not at import: `goemo --help` imports this module)
    import optuna  # noqa: PLC0415  (optional extra: sweep)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (optional extra: report)

    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. a parameter with one value: "identical xlims"
        fig = np.ravel(plot(study, **kwargs))[0].figure  # plot_slice gives an array of axes
        fig.canvas.draw()
    plt.close(fig)
    FigureCanvasAgg(fig)
    return fig


def history_figure(study: optuna.Study, metric: str) -> Any:
    """Optuna's optimization history: each completed trial's metric and the best so far (whole-number trial ticks)."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  (optional extra: report)
    from optuna.visualization.matplotlib import plot_optimization_history  # noqa: PLC0415  (optional extra: sweep)

    fig = _optuna_figure(plot_optimization_history, study, target_name=metric)
    fig.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: never 0.5
    return fig


def slice_figure(study: optuna.Study, metric: str) -> Any:
    """Optuna's slice plot: each completed trial's metric against each searched parameter."""
    from optuna.visualization.matplotlib import plot_slice  # noqa: PLC0415  (optional extra: sweep)

    return _optuna_figure(plot_slice, study, target_name=metric)


def _auc_key(analysis: SweepAnalysis) -> str:
    """The AUC the curves show: the sweep metric when it is one, else ``auc_score`` (macro ROC-AUC)."""
    return analysis.metric if analysis.metric in AUC_METRICS else "auc_score"


def curves_figure(analysis: SweepAnalysis) -> Any:
    """Train loss, validation loss and validation AUC by epoch, every trial overlaid (W&B's run charts).

    One colour per trial, the best thicker; a dot marks the epoch the trial kept, where its ranked
    value was read. A sweep metric that is neither a loss nor an AUC gets a fourth panel.
    """
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  (optional extra: report)

    from goemo.report.plots import COLORS, new_figure  # noqa: PLC0415  (optional extra: report)

    keys = ["train_loss", "val_loss", _auc_key(analysis)]
    if analysis.metric not in keys:
        keys.append(analysis.metric)
    trials = sorted((r for r in analysis.rows if r.curve), key=lambda r: r.number)
    best = analysis.best.number if analysis.best else None
    fig = new_figure(3.6 * len(keys) + 1.4, 3.4)
    axes = fig.subplots(1, len(keys), squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        for i, row in enumerate(trials):
            pts = [(p["epoch"], p[key]) for p in row.curve if key in p]
            if not pts:
                continue
            color, thick = COLORS[i % len(COLORS)], row.number == best
            style = {"lw": 2.4, "alpha": 1.0, "zorder": 3} if thick else {"lw": 1.2, "alpha": 0.8, "zorder": 2}
            label = f"trial {row.number}{' (best)' if thick else ''}"
            label += "" if row.state == "COMPLETE" else f", {row.state.lower()}"
            ax.plot(*zip(*pts), color=color, marker="." if len(pts) <= 20 else None, label=label, **style)
            if kept := [v for e, v in pts if e == row.best_epoch]:
                ax.scatter([row.best_epoch], kept, s=46, color=color, edgecolors="black", linewidths=0.8, zorder=4)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(ax, {"train_loss": "train loss", "val_loss": "validation loss"}.get(key, f"validation {key}"))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles and len(handles) <= 16:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    select = analysis.select_metric or analysis.metric
    fig.suptitle(f"Per-trial curves (dot: the epoch each trial kept, by {select})", fontsize=11)
    return fig


def _axis(values: list[Any], choices: list[Any] | None, log: bool) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions in [0, 1] for one parallel-coordinates axis, and its ticks (position, label): a tick
    per categorical value (numbers in increasing order), else three over the (log-)scaled range."""
    if choices is not None:
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        order = sorted(choices) if numeric else list(choices)
        labels = [_fmt_param(c) for c in order]
        at = {label: (i / (len(order) - 1) if len(order) > 1 else 0.5) for i, label in enumerate(labels)}
        return [at.get(_fmt_param(v), 0.5) for v in values], [(pos, label) for label, pos in at.items()]
    xs = [math.log10(float(v)) if log and float(v) > 0 else float(v) for v in values]
    low, high = min(xs), max(xs)
    if high == low:
        return [0.5] * len(xs), [(0.5, _fmt_param(values[0]))]
    ticks = [low, (low + high) / 2, high]
    fmt = [(10**t if log else t) for t in ticks]
    return [(x - low) / (high - low) for x in xs], [((t - low) / (high - low), f"{v:.3g}") for t, v in zip(ticks, fmt)]


# Tick labels of the parallel-coordinates axes: on a white patch above the lines, so a line never hides one.
_TICK_TEXT: dict[str, Any] = {"fontsize": 7.5, "color": "#333", "zorder": 6}
_TICK_TEXT["bbox"] = {"facecolor": "white", "edgecolor": "none", "pad": 1.0}


def parallel_figure(analysis: SweepAnalysis) -> Any:
    """Parallel coordinates: one vertical axis per parameter and one for the metric, a line per trial.

    Coloured by the metric (brighter = better), the best trial on top in black, pruned trials grey
    and dashed. W&B's sweep page opens with this chart: which values the good trials share.
    """
    import matplotlib  # noqa: PLC0415  (optional extra: report)
    from matplotlib.cm import ScalarMappable  # noqa: PLC0415  (optional extra: report)
    from matplotlib.colors import Normalize  # noqa: PLC0415  (optional extra: report)

    from goemo.report.plots import GREY, new_figure  # noqa: PLC0415  (optional extra: report)

    names = analysis.param_names
    rows = [r for r in analysis.rows if r.state in ("COMPLETE", "PRUNED") and r.value is not None]
    rows = [r for r in rows if math.isfinite(r.value or 0.0) and all(n in r.params for n in names)]
    values = [float(v) for r in rows if (v := r.value) is not None]  # all of them: rows have values
    columns = [*names, analysis.metric]
    fig = new_figure(max(5.0, 1.9 * len(columns) + 1.5), 3.8)
    ax = fig.add_subplot()
    positions: list[list[float]] = []
    for x, name in enumerate(columns):  # the parameters' axes, ticks on their left; the metric's, on its right
        metric = x == len(names)
        raw = values if metric else [r.params[name] for r in rows]
        pos, ticks = _axis(raw, None if metric else analysis.param_choices.get(name), name in analysis.log_params)
        positions.append(pos)
        for y, label in ticks:
            ax.text(
                x + (0.04 if metric else -0.04), y, label, ha="left" if metric else "right", va="center", **_TICK_TEXT
            )
    maximize = analysis.direction == "maximize"
    norm = Normalize(min(values), max(values)) if values and min(values) < max(values) else Normalize(0, 1)
    cmap = matplotlib.colormaps["viridis" if maximize else "viridis_r"]
    best = analysis.best.number if analysis.best else None
    order = sorted(range(len(rows)), key=lambda i: (rows[i].number == best, rows[i].state == "COMPLETE"))
    xs = list(range(len(columns)))
    for i in order:
        row = rows[i]
        ys = [col[i] for col in positions]
        if row.state == "PRUNED":
            ax.plot(xs, ys, color=GREY, lw=1.0, ls="--", alpha=0.8)
        elif row.number == best:
            ax.plot(xs, ys, color="black", lw=2.6, zorder=4, label=f"best (trial {row.number})")
        else:
            ax.plot(xs, ys, color=cmap(norm(values[i])), lw=1.6, alpha=0.9)
    for x in xs:
        ax.axvline(x, color="#555", lw=0.9, zorder=1)
    ax.set_xticks(xs, columns)
    ax.set_xlim(-0.45, len(columns) - 0.55)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    _tidy(ax, grid=None, hide=("top", "right", "left"))
    if best is not None:
        _legend_above(ax)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=analysis.metric, shrink=0.9)
    return fig


def importance_figure(analysis: SweepAnalysis) -> Any:
    """fANOVA importance and correlation with the metric as bars, side by side (W&B's importance
    panel); a parameter with no measurable effect says so, missing numbers say n/a."""
    from goemo.report.plots import BAR, COLORS, GREY, new_figure  # noqa: PLC0415  (optional extra: report)

    imp = analysis.importance or {}
    names = sorted(analysis.param_names, key=lambda p: (-(imp.get(p, -1.0)), p))
    fig = new_figure(9.0, 1.4 + 0.42 * max(1, len(names)))
    left, right = fig.subplots(1, 2, sharey=True)
    y = list(range(len(names)))
    for i, name in enumerate(names):
        if name in analysis.no_effect:
            left.text(0.01, i, "no measurable effect", va="center", fontsize=8, color=GREY, style="italic")
        elif name in imp:
            left.barh(i, imp[name], color=BAR, height=0.6)
            left.text(imp[name] + 0.01, i, f"{imp[name]:.2f}", va="center", fontsize=8)
        else:
            left.text(0.01, i, "n/a", va="center", fontsize=8, color=GREY)
        corr = analysis.correlation.get(name)
        if corr is None:
            right.text(0.02, i, "n/a", va="center", fontsize=8, color=GREY)
        else:
            up = corr >= 0
            right.barh(i, corr, color=COLORS[2] if up else COLORS[4], height=0.6)
            right.text(
                corr + (0.03 if up else -0.03), i, f"{corr:+.2f}", va="center", ha="left" if up else "right", fontsize=8
            )
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlim(0, 1.1)
    if analysis.importance is None and analysis.importance_note:
        left.set_xlabel(analysis.importance_note[:70], fontsize=7.5, color=GREY)
    right.set_xlim(-1.15, 1.15)
    right.axvline(0, color="#777", lw=0.8)
    _tidy(left, "importance (fANOVA)", grid="x")
    _tidy(right, f"correlation with {analysis.metric}", grid="x")
    return fig


def label_auc_figure(analysis: SweepAnalysis) -> Any:
    """Per-class dev ROC-AUC of the best trials side by side, worst class (of the best trial) on top."""
    import numpy as np  # noqa: PLC0415  (not at import: `goemo --help` imports this module)

    from goemo.report.plots import COLORS, new_figure  # noqa: PLC0415  (optional extra: report)

    trials = list(analysis.label_auc)
    labels = _labels_worst_first(analysis)
    fig = new_figure(7.0, 1.5 + 0.24 * len(labels) * max(1, len(trials)) ** 0.5)
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(trials))
    y = np.arange(len(labels))
    middle = height * (len(trials) - 1) / 2  # of each label's group of bars
    for i, number in enumerate(trials):
        aucs = [analysis.label_auc[number].get(name) for name in labels]
        vals = [a if a is not None else 0.0 for a in aucs]
        ax.barh(y + i * height, vals, height=height, color=COLORS[i % len(COLORS)], label=f"trial {number}")
        for j in (j for j, auc in enumerate(aucs) if auc is None and i == 0):
            ax.text(0.01, j + middle, "n/a (no positive example)", va="center", fontsize=7, color="#666")
    ax.set_yticks(y + middle, labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.5, color="#999", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("dev ROC-AUC")
    _legend_above(ax, ncol=max(1, len(trials)))
    _tidy(ax, grid=None)
    return fig


def _labels_worst_first(analysis: SweepAnalysis) -> list[str]:
    if not analysis.label_auc:
        return []
    first = analysis.label_auc[next(iter(analysis.label_auc))]
    return sorted(first, key=lambda n: (first[n] is None, first[n] if first[n] is not None else 0.0))


# ---------------------------------------------------------------- the document


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _rel(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return path


def _images(images: dict[str, tuple[str, bytes]], *figures: tuple[str, str, str]) -> list[Any]:
    """The ``(key, alt, caption)`` figures that were drawn, as report images, in that order."""
    return [Image(*images[key], alt=alt, caption=caption) for key, alt, caption in figures if key in images]


def build_document(analysis: SweepAnalysis, images: dict[str, tuple[str, bytes]], sweep_yaml: str | None):
    """The report as a `goemo.report.render.Document` (rendered to Markdown and HTML)."""
    a = analysis
    counts = ", ".join(
        f"{n} {s.lower()}" for s, n in sorted(a.counts.items(), key=lambda kv: _STATE_ORDER.get(kv[0], 9))
    )
    metric_text = a.metric if a.metric_name == a.metric else f"{a.metric_name} (goemo's {a.metric})"
    select = a.select_metric or a.metric
    if select == a.metric:
        how = "the best value over each trial's epochs (the epoch each trial kept)"
    else:
        how = f"read at the epoch each trial kept, its best by {select} (selection and optimisation are separate)"
    intro = [
        Paragraph(
            [
                f"Study {a.study_name} ({a.method} search, storage {a.storage}): {a.direction} dev {metric_text}, "
                f"{how}. {sum(a.counts.values())} trials: {counts}."
            ]
        ),
    ]
    if a.notes:
        intro.append(Paragraph(["Config notes: " + "; ".join(a.notes) + "."], note=True))

    best = a.best
    best_blocks: list[Any] = [Paragraph(["No trial has completed yet."])]
    if best is not None:
        rel = _rel(best.run_dir, a.sweep_dir) or f"trials/{best.number}"
        kept_by = f", kept by {select}" if select != a.metric else ""
        items: list[Any] = [
            f"trial {best.number}: {a.metric} = {best.value:.4f}"
            + (f" (epoch {best.best_epoch}{kept_by})" if best.best_epoch else ""),
            "parameters: " + ", ".join(f"{k} = {_fmt_param(v)}" for k, v in best.params.items()),
            ["run folder: ", Link(rel, rel), "; model: ", Link(f"{rel}/best", f"{rel}/best")],
        ]
        for split, scores in (("dev", best.dev), ("test", best.test)):
            if scores:
                items.append(
                    f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
                )
        if i := best.interval:
            level = [r.number for r in a.rows if r is not best and r.interval and r.interval["high"] >= i["low"]]
            reach = f"trial(s) {', '.join(map(str, level))} reach into it: on par with the best on these texts"
            items.append(
                f"{i['split']} macro-F1 at the dev-tuned thresholds {i['estimate']:.4f}, 95% interval "
                f"{i['low']:.4f}–{i['high']:.4f} ({i['n_resamples']:,} bootstrap resamples of the texts); "
                + (reach if level else "no other trial's interval reaches it")
            )
        best_blocks = [Bullets(items)]
    sections = [Section("Best trial", best_blocks)]

    headers = ["trial", "state", a.metric, *a.param_names, "kept epoch", "dev f1_macro", "dev auc_score"]
    headers += ["macro-F1 tuned, 95% interval", "time (s)", "run folder", "note"]
    rows = []
    for r in a.rows:
        peaked = r.state == "COMPLETE" and r.metric_best_epoch is not None and r.metric_best_epoch != r.best_epoch
        notes = [
            f"retry of {r.retry_of}" if r.retry_of is not None else None,
            r.error.splitlines()[0][:80] if r.error else None,
            f"pruned after {r.epochs_reported} epoch(s)" if r.state == "PRUNED" else None,
            "worker ended: the same sweep command resumes it" if r.worker_gone else None,
            f"{a.metric} peaked at epoch {r.metric_best_epoch}" if peaked else None,
        ]
        rows.append(
            [
                r.number,
                r.state.lower(),
                r.value,
                *[_fmt_param(r.params[p]) if p in r.params else None for p in a.param_names],
                r.best_epoch,
                r.dev.get("f1_macro"),
                metric_value(r.dev, "auc_score"),  # auc_macro in summaries written before auc_score
                f"{r.interval['low']:.4f}–{r.interval['high']:.4f} ({r.interval['split']})" if r.interval else None,
                f"{r.duration_s:.1f}" if r.duration_s is not None else None,
                _rel(r.run_dir, a.sweep_dir),
                "; ".join(n for n in notes if n is not None),
            ]
        )
    caption = (
        f"Sorted by {a.metric}, best first; pruned trials show their last reported value. "
        f"Kept epoch: the one each trial kept as best/, by {select}."
    )
    align = "rlr" + "r" * len(a.param_names) + "rrrrrll"
    bold = frozenset({0}) if best is not None else frozenset()
    sections.append(Section("Trials", [Table(headers, rows, align=align, digits=4, bold_rows=bold, caption=caption)]))

    caption = (
        f"Train loss, validation loss and validation {_auc_key(a)} by epoch, one colour per trial (best: thick), "
        f"from each trial's metrics.jsonl; the dot is the epoch the trial kept (by {select})."
    )
    if curves := _images(images, ("curves", "sweep curves", caption)):
        sections.append(Section("Training curves", curves))

    imp_rows = [
        [p, "no measurable effect" if p in a.no_effect else (a.importance or {}).get(p), a.correlation.get(p)]
        for p in sorted(a.param_names, key=lambda p: -(a.importance or {}).get(p, -1.0))
    ]
    about = (
        "Importance: Optuna's fANOVA evaluator (share of the metric's variance explained by each parameter, "
        "summing to 1). Correlation: Pearson correlation of the parameter's raw value with the metric over "
        "completed trials (n/a for text values or fewer than 3 trials), as in W&B's parameter-importance panel."
        + (f" {a.importance_note[:1].upper()}{a.importance_note[1:]}." if a.importance_note else "")
    )
    imp_blocks: list[Any] = [
        Table(["parameter", "importance (fANOVA)", f"correlation with {a.metric}"], imp_rows, digits=3),
        Paragraph([about], note=True),
    ]
    if a.no_effect:
        imp_blocks.append(
            Bullets([f"{p}: no measurable effect: {why}; it gets no importance." for p, why in a.no_effect.items()])
        )
    imp_blocks += _images(
        images, ("importance", "sweep importance", "Importance (fANOVA) and correlation with the metric.")
    )
    sections.append(Section("Parameter importance", imp_blocks))

    captions = {
        "parallel": f"Parallel coordinates: each completed trial is a line through its parameter values to its "
        f"{a.metric} (colour: the metric, brighter is better; black: the best trial; grey dashed: pruned).",
        "params": "Optuna's slice plot: each completed trial against each searched parameter (colour: trial number).",
        "history": "Optuna's optimization history: the metric of each completed trial and the best so far.",
    }
    plot_blocks = _images(images, *[(key, f"sweep {key}", caption) for key, caption in captions.items()])
    sections.append(Section("Parameters and the metric", plot_blocks or [Paragraph(["No completed trial to plot."])]))

    auc_blocks: list[Any] = []
    if a.label_auc:
        trials = list(a.label_auc)
        auc_rows = [[name, *[a.label_auc[t].get(name) for t in trials]] for name in _labels_worst_first(a)]
        caption = (
            f"Dev ROC-AUC per class, worst first for trial {trials[0]} (n/a: no positive example in the dev data)."
        )
        auc_blocks.append(Table(["label", *[f"trial {t}" for t in trials]], auc_rows, digits=3, caption=caption))
        auc_blocks += _images(images, ("label_auc", "per-class AUC", "Per-class dev ROC-AUC of the best trials."))
    if a.label_auc_note or not a.label_auc:
        auc_blocks.append(Paragraph([a.label_auc_note or "No completed trial yet."], note=True))
    sections.append(Section("Per-class AUC of the best trials", auc_blocks))

    if failed := [r for r in a.rows if r.state == "FAIL"]:
        fail_rows = [
            [r.number, ", ".join(f"{k}={_fmt_param(v)}" for k, v in r.params.items()), (r.error or "")[:300]]
            for r in failed
        ]
        how = (
            "Tracebacks are in trials/N/error.txt. Interrupted trials were queued again (see the retry "
            "trials above); running the sweep command again retries the trials that only failed."
        )
        table = Table(["trial", "parameters", "error"], fail_rows, align="lll")
        sections.append(Section("Failed trials", [table, Paragraph([how], note=True)]))
    if sweep_yaml:
        sections.append(Section("Sweep config", [Code(sweep_yaml, summary="sweep.yaml")]))
    return Document(f"Sweep report: {a.study_name}", intro, sections)


@dataclass
class SweepReport:
    """Where `write_sweep_report` put things, and what it found."""

    markdown: Path
    html: Path
    plots: list[Path]
    analysis: SweepAnalysis


def write_sweep_report(
    sweep_dir: str | Path, storage: str | None = None, study_name: str | None = None, top: int = 3
) -> SweepReport:
    """Analyse a sweep and write ``sweep_report.md``, ``sweep_report.html`` (self-contained: plots
    inlined) and ``plots/sweep_*.png`` (for slides and the Markdown version).

        report = write_sweep_report("runs/sweeps/wandb_report_sweep")
        report.html
        # -> PosixPath('runs/sweeps/wandb_report_sweep/sweep_report.html')
    """
    from goemo.report.plots import png_bytes  # noqa: PLC0415  (optional extra: report)
    from goemo.sweeps.runner import load_sweep  # noqa: PLC0415  (optional extra: sweep)

    sweep_dir = Path(sweep_dir)
    meta, study = load_sweep(sweep_dir, storage, study_name)
    analysis = _analyse(sweep_dir, meta, study, storage, top)
    figures = {}
    if analysis.counts.get("COMPLETE", 0):
        figures["params"] = slice_figure(study, analysis.metric)
        figures["history"] = history_figure(study, analysis.metric)
    if analysis.counts.get("COMPLETE", 0) + analysis.counts.get("PRUNED", 0) and analysis.param_names:
        figures["parallel"] = parallel_figure(analysis)
    if analysis.counts.get("COMPLETE", 0) >= 2 and analysis.param_names:
        figures["importance"] = importance_figure(analysis)
    if any(r.curve for r in analysis.rows):
        figures["curves"] = curves_figure(analysis)
    if analysis.label_auc:
        figures["label_auc"] = label_auc_figure(analysis)
    images = {key: (f"plots/sweep_{key}.png", png_bytes(fig)) for key, fig in figures.items()}
    plots = [atomic_write_bytes(sweep_dir / src, png) for src, png in images.values()]
    yaml_path = sweep_dir / "sweep.yaml"
    doc = build_document(analysis, images, yaml_path.read_text(encoding="utf-8") if yaml_path.is_file() else None)
    md = atomic_write_text(sweep_dir / "sweep_report.md", to_markdown(doc))
    page = atomic_write_text(sweep_dir / "sweep_report.html", to_html(doc))
    return SweepReport(md, page, plots, analysis)
