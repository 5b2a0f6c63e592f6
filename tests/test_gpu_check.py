"""benchmarks/gpu_check.sh rehearsed on the CPU (--cpu-dry-run): every section runs its real code path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_run_passes_every_section(tmp_path: Path, shared_data: Path) -> None:
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--cpu-dry-run",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(shared_data),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = result["sections"]
    assert list(sections) == ["cuda_tests", "bert_base", "minilm_fast", "launch", "predict"]
    assert all(s["status"] == "ok" for s in sections.values()), sections
    assert sections["cuda_tests"].get("skipped", 0) >= 1 and not sections["cuda_tests"].get("passed")
    assert {(r["max_length"], r["batch"]) for r in sections["bert_base"]["steps"]} == {(64, 32), (128, 32)}
    assert sections["bert_base"]["epoch"]["texts"] == 200 and sections["predict"]["texts"] == 5427
    assert "| section | status | figures |" in (tmp_path / "gpu_check.md").read_text()
