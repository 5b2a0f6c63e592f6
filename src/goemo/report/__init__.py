"""Reports of trained runs: Markdown + self-contained HTML + PNG plots, beside the paper's numbers.

from goemo.report import build_report
build_report("runs/minilm").html
# -> PosixPath('runs/minilm/report.html')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from goemo.report.reference import paper_table

if TYPE_CHECKING:
    from goemo.report.builder import ReportResult, ScoringOptions, build_report

__all__ = ["build_report", "ReportResult", "ScoringOptions", "paper_table"]


def __getattr__(name: str) -> Any:
    # The builder is imported on first use: it needs the report extra (matplotlib, scikit-learn)
    # and the evaluation stack, while `goemo.report.render` and `.reference` are plain Python that
    # light paths use (`goemo sweep-report` is imported by `goemo --help`).
    if name in ("build_report", "ReportResult", "ScoringOptions"):
        from goemo.report import builder  # noqa: PLC0415  (optional extra: report)

        return getattr(builder, name)
    raise AttributeError(f"module 'goemo.report' has no attribute {name!r}")
