"""goemo reproduce: the whole protocol on a tiny model, nothing tuned on test."""

import json

import pytest
import yaml

from goemo.core.errors import DownloadError
from goemo.reproduce import PAPER_MACRO_F1, ensure_data, reproduce


@pytest.mark.slow
def test_reproduce_end_to_end_with_a_tiny_model(tmp_path, shared_data) -> None:
    overrides = {
        "model": "tiny-random-bert",
        "pooling": "cls",
        "epochs": 1,
        "lr": 1e-3,
        "max_train_samples": 400,
        "max_eval_samples": 200,
        "cache_dir": str(tmp_path / "cache"),
    }
    result = reproduce("fast", tmp_path / "run", tmp_path / "data", source=shared_data, overrides=overrides)
    assert sorted({(r["taxonomy"], r["paper_macro_f1"]) for r in result.rows}) == sorted(PAPER_MACRO_F1.items())
    assert len(result.rows) == 6
    tuned = [r for r in result.rows if "dev" in r["thresholds"]]
    assert len(tuned) == 3  # the tuned rows say they come from dev
    # 95% intervals for the model's own labels; a projected grouping has none (decided before projection)
    for row in result.rows:
        band = row["macro_f1_interval"]
        if row["taxonomy"] == "goemotions":
            assert band[0] <= row["macro_f1"] <= band[1]
        else:
            assert band is None
    meta = json.loads((result.run_dir / "best" / "goemo.json").read_text())
    assert meta["thresholds"]["tuned_on"] == "dev"
    assert result.report_html.is_file() and "Table 4" in result.report_html.read_text()
    # the data were fetched and verified into the data folder
    assert sorted(p.name for p in (tmp_path / "data").iterdir())[:3] == [
        "dev.tsv",
        "ekman_mapping.json",
        "emotions.txt",
    ]
    # running it again continues the finished run instead of refusing the folder
    again = reproduce("fast", tmp_path / "run", tmp_path / "data", source=shared_data, overrides=overrides)
    assert again.rows == result.rows


def test_missing_data_says_how_to_point_at_a_copy(tmp_path) -> None:
    with pytest.raises(DownloadError, match="--from"):
        ensure_data(tmp_path / "d", source=tmp_path / "nowhere")


def test_reproduce_passes_teachers_to_training(tmp_path, shared_data) -> None:
    from typer.testing import CliRunner

    from goemo.cli import app

    args = [
        "reproduce",
        "--out",
        str(tmp_path / "run"),
        "--data-dir",
        str(tmp_path / "data"),
        "--from",
        str(shared_data),
        "--teacher",
        str(tmp_path / "absent"),
        "--distill-alpha",
        "0.6",
        "--num-threads",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "absent: no such model folder" in result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["teachers"] == [str(tmp_path / "absent")] and saved["distill_alpha"] == 0.6
    assert saved["num_threads"] == 1
