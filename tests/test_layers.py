"""The import contract: goemo's modules import only downwards, never in a cycle, and serving stays light.

The layers (CONTRIBUTING.md) from the bottom:

    core  <-  data, scoring  <-  models  <-  predict  <-  training, evaluation
          <-  serve, report, sweeps, cluster, audit, export, reproduce  <-  cli

Read from the source with `ast` (imports anywhere in a file count, inside functions too),
so a lazy import cannot hide a wrong-way dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS: list[set[str]] = [
    {"core"},
    {"data", "scoring"},
    {"models"},
    {"predict"},
    {"training", "evaluation"},
    {"serve", "report", "sweeps", "cluster", "audit", "export", "reproduce"},
    {"cli", "__main__"},
]
# Serving uses only these: no training code, no reports, no sweeps.
SERVE_MAY_IMPORT = {"core", "data", "models", "predict", "serve"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "goemo").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """goemo modules imported by ``name`` (resolved to the longest existing module name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            # `from pkg import module` depends on the module; `from pkg import name` on pkg itself
            targets = [t for t in subs if t in MODULES] + ([base] if any(t not in MODULES for t in subs) else [])
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target != "goemo":
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _area(module: str) -> str | None:
    """The top-level area of a goemo module (``goemo.predict.cache`` -> ``predict``); None for ``goemo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer(module: str) -> int:
    area = _area(module)
    for level, areas in enumerate(LAYERS):
        if area in areas:
            return level
    raise AssertionError(f"{module} is in no layer: add its area to LAYERS and to CONTRIBUTING.md")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module != "goemo":
            _layer(module)


def test_imports_only_flow_downwards() -> None:
    wrong = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items()
        if m != "goemo"
        for t in sorted(targets)
        if _layer(t) > _layer(m)
    ]
    assert not wrong, "imports flowing up the layers:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the module graph: none larger than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_serving_imports_only_core_data_models_predict() -> None:
    seen: set[str] = set()
    todo = [m for m in MODULES if _area(m) == "serve"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(GRAPH[m])
    wrong = sorted(m for m in seen if _area(m) not in SERVE_MAY_IMPORT and m != "goemo")
    assert not wrong, f"goemo.serve reaches {wrong}"


def test_the_contract_catches_a_wrong_way_import(tmp_path: Path) -> None:
    """The check itself can fail: a core module importing the training loop is reported."""
    fake = tmp_path / "goemo" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from goemo.training.loop import train\n")
    found = _imports("goemo.core.bad", fake / "bad.py")
    assert found == {"goemo.training.loop"} and _layer("goemo.training.loop") > _layer("goemo.core.bad")


def _fresh_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return done.stdout


HEAVY = (
    "sklearn",
    "scipy",
    "optuna",
    "matplotlib",
    "accelerate",
    "goemo.training",
    "goemo.evaluation",
    "goemo.report",
    "goemo.sweeps",
    "goemo.scoring",
)


def test_the_serving_app_pulls_in_no_training_stack() -> None:
    out = _fresh_python(f"""
        import sys
        import goemo.serve.app, goemo.serve, goemo.predict.classifier, goemo.predict.onnx_backend
        heavy = {HEAVY!r}
        print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))
    """)
    assert out.strip() == "[]", out


@pytest.mark.slow
def test_serving_a_torch_model_pulls_in_no_training_stack(tiny_model_dir: Path) -> None:
    """With torch, transformers' own model loading imports accelerate and scipy; goemo adds nothing heavy."""
    heavy = tuple(h for h in HEAVY if h not in ("accelerate", "scipy"))
    out = _fresh_python(f"""
        import sys
        from goemo.predict.classifier import EmotionClassifier
        from goemo.serve.app import create_app
        clf = EmotionClassifier.load({str(tiny_model_dir)!r}, device="cpu", backend="torch")
        create_app(clf)
        clf.predict(["thanks!"])
        heavy = {heavy!r}
        print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))
    """)
    assert out.strip() == "[]", out
