"""`goemo sweep-report` on a made-up sweep folder (an Optuna study and trial run folders, no training).

The trials mirror the W&B report's setup: auc_score maximised across trials, each trial's
epoch kept by val_loss, and a dropout that changes nothing (two trials differ only in it and
score identically).
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from goemo.report.plots import png_bytes
from goemo.sweeps.report import (
    analyse_sweep,
    curves_figure,
    history_figure,
    parallel_figure,
    slice_figure,
    write_sweep_report,
)
from goemo.sweeps.runner import load_sweep

# (lr, batch_size, dropout, auc_score at the kept epoch); trials 0 and 1 differ only in dropout
TRIALS = [
    (5e-5, 32, 0.3, 0.62),
    (5e-5, 32, 0.5, 0.62),
    (3e-5, 32, 0.3, 0.60),
    (3e-5, 64, 0.4, 0.57),
    (5e-5, 64, 0.4, 0.59),
]
DISTRIBUTIONS = {
    "lr": CategoricalDistribution([5e-5, 3e-5]),
    "batch_size": CategoricalDistribution([32, 64]),
    "dropout": CategoricalDistribution([0.3, 0.4, 0.5]),
}


def _epochs(value: float) -> list[dict]:
    """Three epochs: val_loss lowest at epoch 2 (kept, holding ``value``), auc_score highest at epoch 3."""
    return [
        {"event": "epoch", "epoch": 1, "train_loss": 0.40, "val_loss": 0.30, "auc_score": value - 0.05},
        {"event": "epoch", "epoch": 2, "train_loss": 0.30, "val_loss": 0.25, "auc_score": value},
        {"event": "epoch", "epoch": 3, "train_loss": 0.20, "val_loss": 0.28, "auc_score": value + 0.03},
    ]


def _fake_sweep(tmp_path: Path, trials=TRIALS, fail: bool = True) -> Path:
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "trials").mkdir(parents=True)
    url = f"sqlite:///{sweep_dir / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="fake", direction="maximize")
    for number, (lr, batch_size, dropout, value) in enumerate(trials):
        run_dir = sweep_dir / "trials" / str(number)
        run_dir.mkdir()
        epochs = _epochs(value)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "batch_size": batch_size, "dropout": dropout},
                distributions=DISTRIBUTIONS,
                value=value,
                intermediate_values={r["epoch"]: r["auc_score"] for r in epochs},
                user_attrs={
                    "run_dir": str(run_dir),
                    "slot": number,
                    "best_epoch": 2,
                    "select_metric": "val_loss",
                    "metric_best_epoch": 3,
                },
            )
        )
    if fail:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                params={"lr": 3e-5, "batch_size": 64, "dropout": 0.5},
                distributions=DISTRIBUTIONS,
                user_attrs={"slot": len(trials), "error": "OutOfMemoryError: CUDA out of memory"},
            )
        )
    meta = {
        "study": "fake",
        "storage": url,
        "method": "random",
        "metric": "auc_score",
        "metric_name": "auc_score",
        "direction": "maximize",
        "select_metric": "val_loss",
        "parameters": {name: {"source": name, "search": "one of ..."} for name in DISTRIBUTIONS},
        "notes": [],
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(meta))
    return sweep_dir


def test_the_report_has_curves_parallel_coordinates_and_importance_bars_inlined_and_as_pngs(tmp_path):
    report = write_sweep_report(_fake_sweep(tmp_path))
    names = {p.name for p in report.plots}
    assert names == {
        "sweep_params.png",
        "sweep_history.png",
        "sweep_parallel.png",
        "sweep_importance.png",
        "sweep_curves.png",
    }  # no dev_metrics.json here, so no per-class AUC plot
    for p in report.plots:
        assert p.parent == report.html.parent / "plots" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.html.read_text()
    for section in ("training-curves", "parameter-importance", "parameters-and-the-metric"):
        assert f'<section id="{section}">' in html
    for alt in ("sweep curves", "sweep parallel", "sweep importance", "sweep history", "sweep params"):
        assert f'alt="{alt}" src="data:image/png;base64,' in html  # every panel inlined
    assert 'src="plots/' not in html  # self-contained
    md = report.markdown.read_text()
    assert "![sweep curves](plots/sweep_curves.png)" in md
    # selection vs optimisation is spelled out
    assert "read at the epoch each trial kept, its best by val_loss" in md
    assert "auc_score = 0.6200 (epoch 2, kept by val_loss)" in md
    assert "auc_score peaked at epoch 3" in md


def test_curves_overlay_each_trials_epochs_from_its_metrics_jsonl(tmp_path):
    analysis = analyse_sweep(_fake_sweep(tmp_path))
    fig = curves_figure(analysis)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["train loss", "validation loss", "validation auc_score"]
    auc = axes[2]
    lines = {line.get_label(): list(line.get_ydata()) for line in auc.get_lines()}
    assert len(lines) == len(TRIALS)  # one line per trial with records; the failed one has none
    assert lines["trial 0 (best)"] == pytest.approx([0.57, 0.62, 0.65])
    assert lines["trial 3"] == pytest.approx([0.52, 0.57, 0.60])
    fig.canvas.draw()
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)  # epochs


def test_trial_ticks_are_whole_numbers(tmp_path):
    study = load_sweep(_fake_sweep(tmp_path, trials=TRIALS[:3], fail=False))[1]
    fig = history_figure(study, "auc_score")
    (ax,) = fig.axes
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks  # 0, 1, 2: no 0.25, 0.5


def test_history_and_slice_are_optunas_plots_and_leave_pyplot_as_it_was(tmp_path):
    """Optuna draws them through pyplot in its ggplot style: neither the style nor the figures stay behind."""
    import matplotlib
    import matplotlib.pyplot as plt

    study = load_sweep(_fake_sweep(tmp_path))[1]
    before = dict(matplotlib.rcParams)
    history = history_figure(study, "auc_score")
    assert history.axes[0].get_title() == "Optimization History Plot" and history.axes[0].get_ylabel() == "auc_score"
    params = slice_figure(study, "auc_score")
    assert params.get_suptitle() == "Slice Plot"
    assert sorted(ax.get_xlabel() for ax in params.axes if ax.get_xlabel()) == ["batch_size", "dropout", "lr"]
    assert dict(matplotlib.rcParams) == before and plt.get_fignums() == []
    assert png_bytes(history)[:8] == png_bytes(params)[:8] == b"\x89PNG\r\n\x1a\n"  # on their own Agg canvas


def test_the_trials_table_names_dev_auc_as_the_metric_users_select(tmp_path):
    """The column is auc_score, as in the sweep config; a trial recorded before auc_score existed
    (its dev summary holds auc_macro only) shows the same number."""
    sweep_dir = _fake_sweep(tmp_path, trials=TRIALS[:2], fail=False)
    study = load_sweep(sweep_dir)[1]
    old, new = study.get_trials()
    study.add_trial(
        optuna.trial.create_trial(
            params=old.params,
            distributions=old.distributions,
            value=0.5,
            user_attrs={"dev": {"f1_macro": 0.25, "auc_macro": 0.6123}},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params=new.params,
            distributions=new.distributions,
            value=0.4,
            user_attrs={"dev": {"f1_macro": 0.25, "auc_macro": 0.6456, "auc_score": 0.6456}},
        )
    )
    md = write_sweep_report(sweep_dir).markdown.read_text()
    assert "| dev auc_score |" in md and "auc_macro" not in md
    assert "| 0.2500 | 0.6123 |" in md and "| 0.2500 | 0.6456 |" in md


def test_parallel_coordinates_put_categorical_values_on_ticks(tmp_path):
    analysis = analyse_sweep(_fake_sweep(tmp_path))
    fig = parallel_figure(analysis)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr", "batch_size", "dropout", "auc_score"]
    texts = {t.get_text() for t in ax.texts}
    assert {"3e-05", "5e-05", "32", "64", "0.3", "0.4", "0.5"} <= texts
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 4]
    assert len(lines) == len(TRIALS)  # one line per completed trial
    best = next(line for line in lines if line.get_label().startswith("best"))
    # trial 0: lr 5e-5 (the higher of two: top), batch 32 (bottom), dropout 0.3 (bottom), the best metric (top)
    assert list(best.get_ydata()) == pytest.approx([1.0, 0.0, 0.0, 1.0])


def test_a_parameter_with_no_measurable_effect_is_flagged_not_ranked(tmp_path):
    from typer.testing import CliRunner

    from goemo.cli import app

    sweep_dir = _fake_sweep(tmp_path)
    analysis = analyse_sweep(sweep_dir)
    assert set(analysis.no_effect) == {"dropout"}  # trials 0 and 1 differ only in dropout and tie exactly
    assert "trials 0 and 1" in analysis.no_effect["dropout"]
    assert analysis.importance is not None and set(analysis.importance) == {"lr", "batch_size"}
    assert sum(analysis.importance.values()) == pytest.approx(1.0)
    assert "dropout left out: no measurable effect" in (analysis.importance_note or "")
    md = write_sweep_report(sweep_dir).markdown.read_text()
    assert "| dropout | no measurable effect |" in md
    out = CliRunner().invoke(app, ["sweep-report", str(sweep_dir)])
    assert out.exit_code == 0, out.output
    assert "no measurable effect: dropout" in out.output and "dropout 0." not in out.output


def test_a_small_difference_is_an_effect(tmp_path):
    trials = [*TRIALS[:1], (5e-5, 32, 0.5, 0.62 + 1e-9), *TRIALS[2:]]
    assert analyse_sweep(_fake_sweep(tmp_path, trials=trials)).no_effect == {}


def test_no_importance_when_every_trial_scored_the_same(tmp_path):
    trials = [(lr, bs, d, 0.6) for lr, bs, d, _ in TRIALS]
    analysis = analyse_sweep(_fake_sweep(tmp_path, trials=trials))
    assert analysis.importance is None
    assert "every completed trial scored the same" in (analysis.importance_note or "")


def test_a_continuous_parameter_is_scaled_on_its_own_axis(tmp_path):
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "trials").mkdir(parents=True)
    url = f"sqlite:///{sweep_dir / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="cont", direction="minimize")
    dist = {"lr": FloatDistribution(1e-5, 1e-3, log=True)}
    for lr, loss in ((1e-5, 0.3), (1e-4, 0.2), (1e-3, 0.25)):
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=loss))
    meta = {"study": "cont", "storage": url, "metric": "val_loss", "direction": "minimize", "parameters": {"lr": {}}}
    (sweep_dir / "sweep.json").write_text(json.dumps(meta))
    analysis = analyse_sweep(sweep_dir)
    assert analysis.select_metric == "val_loss"  # an older sweep.json: the metric selected
    ax = parallel_figure(analysis).axes[0]
    (lr_line,) = [line for line in ax.get_lines() if line.get_label().startswith("best")]
    assert list(lr_line.get_ydata()) == pytest.approx([0.5, 0.0])  # 1e-4 halfway on a log axis; lowest loss at 0


def _card_interval(run_dir: Path, estimate: float, low: float, high: float) -> None:
    """What training writes into best/goemo.json: the card facts' bootstrap intervals."""
    (run_dir / "best").mkdir()
    bands = {"f1_macro": {"estimate": estimate, "low": low, "high": high}, "n_resamples": 1000}
    card = {"per_label_split": "test", "intervals": bands}
    (run_dir / "best" / "goemo.json").write_text(json.dumps({"card": card}))


def test_trials_show_their_interval_and_which_are_on_par_with_the_best(tmp_path):
    """Each trial's tuned macro-F1 interval (from its best/ card facts); the best trial's bullet names
    the trials whose interval reaches into its own: a sweep's winner is often not alone."""
    sweep_dir = _fake_sweep(tmp_path, fail=False)
    _card_interval(sweep_dir / "trials" / "0", 0.52, 0.50, 0.54)  # the best (auc 0.62)
    _card_interval(sweep_dir / "trials" / "2", 0.49, 0.47, 0.505)  # reaches 0.50: on par
    _card_interval(sweep_dir / "trials" / "3", 0.45, 0.43, 0.47)  # below: not
    md = write_sweep_report(sweep_dir).markdown.read_text()
    assert "test macro-F1 at the dev-tuned thresholds 0.5200, 95% interval 0.5000–0.5400" in md
    assert "trial(s) 2 reach into it: on par with the best" in md
    assert "| macro-F1 tuned, 95% interval |" in md and "0.4300–0.4700 (test)" in md
    _card_interval(sweep_dir / "trials" / "1", 0.40, 0.38, 0.42)  # no longer any trial reaching it
    (sweep_dir / "trials" / "2" / "best" / "goemo.json").unlink()
    assert "no other trial's interval reaches it" in write_sweep_report(sweep_dir).markdown.read_text()
