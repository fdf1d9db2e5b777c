"""The core's import graph: it imports no example, has no cycle, and its shared types sit below
the stages that pass them.

Every ``import`` of every module under ``workers/`` is read with ``ast``, function-level imports
included (a lazy import is still a dependency); only ``if TYPE_CHECKING:`` blocks are left out,
since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "workers"
# Shared data types and settings: every stage may use them, they use no stage.
FOUNDATION = {"workers.events", "workers.schema", "workers.settings", "workers.hooks", "workers.errors",
              "workers.observe"}
# What an operator sees (metrics, traces, logs, health): every stage may report, none is reported to.
FOUNDATION |= {f"workers.observe.{p.stem}" for p in (PKG / "observe").glob("*.py") if p.stem != "__init__"}
STAGES = ("workers.pipeline", "workers.features", "workers.engines", "workers.model", "workers.streaming",
          "workers.dev", "workers.bench")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for p in PKG.rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def test_the_core_imports_no_example_and_no_test() -> None:
    bad = {m: sorted(i for i in deps if i.split(".")[0] in ("examples", "tests"))
           for m, deps in _graph().items()}
    assert {m: v for m, v in bad.items() if v} == {}


def test_the_core_has_no_import_cycle() -> None:
    graph = {m: {d for d in deps if d in _graph_modules()} for m, deps in _graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert cycles == [], f"import cycles: {cycles}"


def _graph_modules() -> set[str]:
    return {_module_name(p) for p in PKG.rglob("*.py")}


def test_shared_types_sit_below_the_stages() -> None:
    graph = _graph()
    wrong = {m: sorted(d for d in graph[m] if d.startswith(STAGES)) for m in FOUNDATION - {"workers.errors"}
             if m in graph}
    assert {m: v for m, v in wrong.items() if v} == {}


def test_features_and_pipeline_do_not_reach_up_into_wiring_or_tools() -> None:
    """Readers and stages never import the worker that wires them, the CLI, the dev tools or benches."""
    graph = _graph()
    above = ("workers.pipeline.worker", "workers.cli", "workers.dev", "workers.bench")
    wrong = {m: sorted(d for d in deps if d.startswith(above))
             for m, deps in graph.items()
             if m.startswith(("workers.features", "workers.engines", "workers.model", "workers.pipeline"))
             and m != "workers.pipeline.worker"}
    assert {m: v for m, v in wrong.items() if v} == {}
