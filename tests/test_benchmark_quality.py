"""benchmarks/quality.py wiring: the one-command distillation recipe trains teachers, then students from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import goemo.reproduce
from goemo.reproduce import ReproduceResult

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def calls(monkeypatch):
    """Record every reproduce() call instead of training; answer with plausible rows."""
    seen: list[tuple[str, dict]] = []

    def fake(preset, out, data_dir, source, overrides):
        seen.append((str(out), dict(overrides)))
        rows = [
            {
                "taxonomy": t,
                "thresholds": th,
                "macro_f1": 0.5,
                "macro_precision": 0.5,
                "macro_recall": 0.5,
                "paper_macro_f1": 0.46,
            }
            for t in ("goemotions", "ekman", "sentiment")
            for th in ("fixed 0.3", "per-label, tuned on dev")
        ]
        return ReproduceResult(Path(out), rows, Path(out) / "report.html", {"resources": {"wall_time_s": 1.0}})

    monkeypatch.setattr(goemo.reproduce, "reproduce", fake)
    return seen


def test_teacher_seeds_train_teachers_first_then_distil_from_all(quality, calls, tmp_path, capsys):
    out = str(tmp_path / "d")
    assert (
        quality.main(
            ["--teacher-seeds", "1,2", "--teacher-epochs", "3", "--seed", "7", "--out", out, "--distill-alpha", "0.4"]
        )
        == 0
    )
    assert [c[0] for c in calls] == [f"{out}-teacher-seed1", f"{out}-teacher-seed2", out]
    for _, overrides in calls[:2]:
        assert overrides["epochs"] == 3 and not overrides.get("teachers")
    student = calls[2][1]
    assert student["seed"] == 7 and student["distill_alpha"] == 0.4
    assert student["teachers"] == [f"{out}-teacher-seed1/best", f"{out}-teacher-seed2/best"]
    assert f'"run_dir": "{out}-teacher-seed2"' in capsys.readouterr().out


def test_teacher_folds_cross_fit_the_teachers(quality, calls, tmp_path):
    out = str(tmp_path / "x")
    assert quality.main(["--teacher-seeds", "1,2,3", "--teacher-folds", "3", "--seed", "7", "--out", out]) == 0
    assert [c[0] for c in calls] == [f"{out}-teacher-seed{s}-fold{k}" for s, k in ((1, 0), (2, 1), (3, 2))] + [out]
    assert [(c[1]["holdout_fold"], c[1]["num_folds"]) for c in calls[:3]] == [(0, 3), (1, 3), (2, 3)]
    assert "holdout_fold" not in calls[3][1]  # the student learns from every fold
    assert calls[3][1]["teachers"] == [f"{c[0]}/best" for c in calls[:3]]
    with pytest.raises(SystemExit, match="one per fold"):
        quality.main(["--teacher-seeds", "1,2", "--teacher-folds", "3", "--out", out])


def test_without_teacher_seeds_no_teacher_is_trained(quality, calls, tmp_path):
    quality.main(["--seed", "7", "--out", str(tmp_path / "plain")])
    assert len(calls) == 1 and calls[0][1]["teachers"] is None
