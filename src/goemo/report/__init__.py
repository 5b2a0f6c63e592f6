"""Reports of trained runs: Markdown + self-contained HTML + PNG plots, beside the paper's numbers.

>>> from goemo.report import build_report
>>> build_report("runs/minilm").html  # doctest: +SKIP
PosixPath('runs/minilm/report.html')
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "ReportResult", "paper_table"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `goemo.report.reference` can be used without importing matplotlib.
    if name in ("build_report", "ReportResult"):
        from goemo.report import builder

        return getattr(builder, name)
    if name == "paper_table":
        from goemo.report.reference import paper_table

        return paper_table
    raise AttributeError(f"module 'goemo.report' has no attribute {name!r}")
