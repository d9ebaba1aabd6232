"""No import circles in the trace_assets package (what the issue calls farm-studio look).

The graph has one node per module and an edge for every ``import`` / ``from ... import`` of another
trace_assets module anywhere in its source: at the top, inside a function, or under TYPE_CHECKING,
since a circle through a deferred import is still two modules that each need the other. A package
counts as its ``__init__`` module; importing ``a.b`` is an edge to ``a.b`` (not to ``a``)."""

from __future__ import annotations

import ast
from pathlib import Path

import trace_assets

PACKAGE = Path(trace_assets.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The trace_assets modules ``path`` imports (``from m import x`` is ``m.x`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in modules else node.module for name in names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the trace_assets modules it imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {module: imported_modules(path, set(paths)) - {module} for module, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or None: depth-first search for an import of a module
    still on the current path."""
    done: set[str] = set()

    def visit(path: list[str]) -> list[str] | None:
        for child in sorted(graph[path[-1]]):
            if child in path:
                return [*path[path.index(child) :], child]
            if child not in done and (found := visit([*path, child])):
                return found
        done.add(path[-1])
        return None

    for root in sorted(graph):
        if root not in done and (found := visit([root])):
            return found
    return None


def test_the_graph_sees_imports_at_every_level():
    graph = import_graph()
    assert "trace_assets.estimates" in graph["trace_assets.cli"]  # at the top of the module
    assert "trace_assets.tasks" in graph["trace_assets.problems.sources"]  # a package, by its __init__
    assert "trace_assets.tasks" in graph["trace_assets.inputs"]  # inside a function
    assert len(graph) > 50


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_a_circle_would_be_found():
    graph = import_graph()
    assert "trace_assets.rates" in graph["trace_assets.cli"]
    graph["trace_assets.rates"] = graph["trace_assets.rates"] | {"trace_assets.cli"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "trace_assets.cli" in cycle
