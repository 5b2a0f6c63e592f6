"""The docstrings' examples are tests: the suite runs every `>>>` line in src/ (--doctest-modules)."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "goemo"


def test_no_example_is_skipped() -> None:
    """An example that cannot run here is a plain usage block, not a doctest marked to skip."""
    skipped = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "doctest:" in line and "+SKIP" in line
    ]
    assert skipped == [], f"examples marked +SKIP: {skipped}"


def test_the_suite_collects_the_docstrings() -> None:
    text = (SRC.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert "--doctest-modules" in text and '"src/goemo"' in text
