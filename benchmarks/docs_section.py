"""Shared by the benchmark scripts: put a ``## Heading`` section into docs/benchmarks.md.

A re-run replaces its own section and leaves the others (written by other scripts or by
hand) as they are.
"""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, section: str) -> None:
    """Replace the section whose first line matches ``section``'s, or append it."""
    from goemo.core.fileio import atomic_write_text

    heading = section.splitlines()[0]
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text.rstrip("\n") + "\n")
