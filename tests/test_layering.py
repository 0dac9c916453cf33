"""The layers import one way: core knows neither Qt nor torch; engine knows no Qt."""

import subprocess
import sys

import pytest

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(getattr(package, "__path__", []), package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def loaded_after_importing(package: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    import json

    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sdstudio.core", {"PySide6", "torch", "diffusers", "transformers"}),
        # every engine module imports without torch: torch loads only when a model runs
        ("sdstudio.engine", {"PySide6", "torch", "diffusers", "transformers"}),
        ("sdstudio.cli", {"PySide6", "torch", "diffusers", "transformers"}),
    ],
)
def test_importing_a_layer_loads_no_forbidden_package(package, forbidden):
    assert loaded_after_importing(package) & forbidden == set()


def test_core_imports_nothing_of_ours_outside_core():
    import pathlib
    import re

    root = pathlib.Path(__file__).parents[1] / "sdstudio" / "core"
    pattern = re.compile(r"^\s*(from|import)\s+sdstudio\.(engine|qt|cli|app)\b", re.M)
    offenders = [p.name for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def import_graph() -> dict[str, set[str]]:
    """Which of our modules each of our modules imports, at any depth of its code (imports inside
    functions count: they run too), leaving out imports only a type checker sees. ``from p import
    m`` of a submodule ``m`` points at ``p.m``; the parent packages Python imports on the way are
    not edges of ours."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    files = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (root / "sdstudio").rglob("*.py")
    }

    def type_only(node: ast.If) -> bool:
        test = node.test
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.If) and type_only(node):
                stack.extend(node.orelse)
                continue
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                for alias in node.names:
                    if f"{base}.{alias.name}" in files:
                        edges.add(f"{base}.{alias.name}")
                    elif base in files:
                        edges.add(base)
            stack.extend(ast.iter_child_nodes(node))
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "sdstudio.engine.models.checkpoints" in graph  # the walk found our modules
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
