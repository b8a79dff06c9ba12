"""The import graph of the product: imports only point down the layers of DESIGN.md (sidecar -> middleware ->
{bundles, geo} -> errors; bundles and geo know nothing of each other), and no module imports, even lazily,
a module that imports it back (bundles/cli <-> cli_registry, sidecar/app <-> proxy and middleware/gate <->
compose were such cycles).

Static: every `import` in a module counts (function-level ones too), except those under
`if TYPE_CHECKING:`, which never run."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
    "package-dir"
]
LAYER = {  # a package may import only from packages of a lower layer
    "ig_gate.errors": 0, "ig_gate.bundles": 1, "ig_gate.geo": 1, "ig_gate.middleware": 2,
    "ig_gate.sidecar": 3,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            found[".".join((package, *parts)).removesuffix(".__init__")] = path
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (child for statement in node.orelse for child in _runtime_imports(statement))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif node.level == 0 and node.module:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _inside(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The graph of the modules of one package, with only the imports between them."""
    return {name: {t for t in targets if _package(t) == package} for name, targets in graph.items()
            if _package(name) == package}


def test_imports_only_point_down_the_layers() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if _package(source) != _package(target) and LAYER[_package(target)] >= LAYER[_package(source)]
    )
    assert upward == []


@pytest.mark.parametrize("package", ["ig_gate.errors", "ig_gate.bundles", "ig_gate.geo", "ig_gate.sidecar"])
def test_no_module_imports_a_module_that_imports_it_back(package: str) -> None:
    assert _cycles(_inside(_graph(), package)) == []


def test_the_gate_is_in_no_import_cycle_with_the_composition_root_that_builds_it() -> None:
    graph = _graph()
    assert "ig_gate.middleware.gate" in graph["ig_gate.middleware.compose"]
    cycles = _cycles(_inside(graph, "ig_gate.middleware"))
    assert [cycle for cycle in cycles if "ig_gate.middleware.gate" in cycle] == []
