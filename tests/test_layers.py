"""The house's structure, checked: no import cycle among memprof's modules (imports inside functions
included, ``TYPE_CHECKING`` ones not), no module over 400 lines, and a CLI whose commands do not depend on
what was imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import memprof

PACKAGE = Path(memprof.__file__).parent
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def import_graph() -> dict[str, set[str]]:
    """memprof module -> the memprof modules it imports anywhere (TYPE_CHECKING blocks left out)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "memprof")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.split(".")[0] != "memprof":
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in paths else target)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_memprof_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_runtime_layers_never_import_what_sits_above_them() -> None:
    graph = import_graph()
    below_the_root = ["memprof.runtime", "memprof.profile", "memprof.writer", "memprof.memory"]
    above = ("memprof.middleware", "memprof.watchdog", "memprof.integrations", "memprof.forksafe")
    for name in below_the_root:
        assert not any(dep.startswith(above) for dep in graph[name]), (name, sorted(graph[name]))
    for name, deps in graph.items():
        if name.startswith(("memprof.safety", "memprof.records")):
            assert not any(dep.startswith((*above, "memprof.runtime")) for dep in deps), (name, sorted(deps))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize(
    "first", ["memprof.commands.compare", "memprof.commands._analysis_options", "memprof.commands.analyze"]
)
def test_every_command_is_there_whatever_was_imported_first(first: str) -> None:
    code = (
        f"import {first}\n"
        "from memprof.cli import COMMANDS, app\n"
        "print(' '.join(sorted(c.name for c in app.registered_commands)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = "analyze check compare demo disable dump enable export postmortem report reproduce sign status tail version"
    assert out.split() == names.split()
