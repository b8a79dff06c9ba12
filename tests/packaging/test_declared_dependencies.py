"""pyproject.toml declares what the code imports: every third-party module the product imports comes from a
runtime dependency or an optional extra (`demo`: the demo's OpenID provider), every runtime dependency is
imported by the product (test-only ones belong in [dev]), and tests, benchmarks and fuzz harnesses import
only declared packages.

Static (an AST scan of the sources against the installed distributions' top-level modules); the real
install in a fresh venv is tests/packaging/test_runtime_install.py."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PRODUCT = [REPO / folder for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values()]
# only the modules they import in code, never a distribution the product must declare
TOOLING = {"pytest", "_pytest"}


def _declared(requirements: Iterable[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


RUNTIME = _declared(PYPROJECT["project"]["dependencies"])
_OPTIONAL = PYPROJECT["project"]["optional-dependencies"]
DEV = _declared(_OPTIONAL["dev"])
EXTRAS = _declared(line for name, lines in _OPTIONAL.items() if name != "dev" for line in lines)


def _imports(folders: Iterable[Path]) -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it (absolute imports, any depth)."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in {"ig_gate", "tests", "bench"}:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


_PROVIDERS = importlib.metadata.packages_distributions()  # top-level module -> distributions installing it


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(name) for name in _PROVIDERS.get(module, ())}


def test_every_module_the_product_imports_is_a_declared_runtime_or_extra_dependency() -> None:
    undeclared = {
        module: sorted(files)
        for module, files in _imports(PRODUCT).items()
        if not _distributions(module) & (RUNTIME | EXTRAS)
    }
    assert undeclared == {}, f"imported but in neither [project] dependencies nor an extra: {undeclared}"


def test_every_runtime_dependency_is_imported_by_the_product() -> None:
    provided = set().union(*(_distributions(module) for module in _imports(PRODUCT)))
    unused = sorted(RUNTIME - provided)
    assert unused == [], f"declared at run time but imported only by tests (move to [dev]): {unused}"


def test_tests_benchmarks_and_fuzzers_import_only_declared_packages() -> None:
    folders = [REPO / "tests", REPO / "bench", REPO / "fuzz"]
    undeclared = {
        module: sorted(files)[:3]
        for module, files in _imports(folders).items()
        if module not in TOOLING | _LOCAL and not _distributions(module) & (RUNTIME | DEV | EXTRAS)
    }
    assert undeclared == {}, f"imported by tests/bench/fuzz, declared nowhere: {undeclared}"


# bench/ and fuzz/ scripts import their sibling modules by file name (run as scripts)
_LOCAL = {path.stem for folder in ("bench", "fuzz") for path in (REPO / folder).glob("*.py")}
