"""benchmarks/mutation.py: which mutants are left out (annotations) and how a sample is drawn."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def mutation(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports benchmarks/common.py
    spec = importlib.util.spec_from_file_location("mutation_benchmark", BENCHMARKS / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


SOURCE = """from __future__ import annotations

LIMIT: int | None = 3 + 4


def f(x: int | None, y: list[int] = [1 | 2]) -> dict[str, int] | None:
    return {"a": x | 1}
"""


def test_annotations_are_left_out_and_code_is_not(mutation, tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(SOURCE, encoding="utf-8")
    spans = mutation.annotation_spans(path)
    lines = SOURCE.splitlines()

    def at(line: int, text: str, nth: int = 0) -> tuple[int, int]:
        col = -1
        for _ in range(nth + 1):
            col = lines[line - 1].index(text, col + 1)
        return line, col

    # the "|" of each annotation is left out ...
    assert mutation.in_annotation(spans, at(3, "|"))
    assert mutation.in_annotation(spans, at(6, "|"))
    assert mutation.in_annotation(spans, at(6, "|", 2))  # the return annotation's
    # ... the code's operators and numbers are not: a default value, a body, an assigned value
    assert not mutation.in_annotation(spans, at(3, "+"))
    assert not mutation.in_annotation(spans, at(3, "3"))
    assert not mutation.in_annotation(spans, at(6, "|", 1))  # 1 | 2, the default
    assert not mutation.in_annotation(spans, at(7, "|"))


def test_the_sample_does_not_depend_on_job_ids(mutation) -> None:
    """Cosmic Ray's job ids are random; mutants are ordered by where and what they change."""
    items = [SimpleNamespace(start_pos=(line, col), operator_name=op, occurrence=n) for line, col, op, n in
             [(9, 4, "core/B", 0), (3, 1, "core/A", 1), (3, 1, "core/A", 0), (3, 0, "core/Z", 5)]]  # fmt: skip
    assert [mutation._where(m) for m in sorted(items, key=mutation._where)] == [
        (3, 0, "core/Z", 5),
        (3, 1, "core/A", 0),
        (3, 1, "core/A", 1),
        (9, 4, "core/B", 0),
    ]


def test_every_module_has_test_files_that_exist(mutation) -> None:
    root = BENCHMARKS.parent
    assert set(mutation.DEFAULT) <= set(mutation.MODULES)
    for module, tests in mutation.MODULES.items():
        assert (root / "src" / "goemo" / module).is_file(), module
        assert tests and all((root / t).is_file() for t in tests), module
