"""The package map holds: no import cycles between exsnn modules, and no package imports a layer above it.

Every `import`/`from ... import` statement is read from the source (top level and inside functions alike), so a
lazy import inside a function counts as a dependency too; imports under `if TYPE_CHECKING:` (annotations only) do not.
The potential registry names upper-layer loaders as strings
("exsnn.model.potential:load"), which is not an import of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "exsnn"

#: package -> exsnn packages it may import (besides itself); the README's package map
ALLOWED = {
    "errors": set(),
    "units": {"errors"},
    "data": {"errors", "units"},
    "potentials": {"errors", "units", "data"},
    "validation": {"errors", "units"},
    "parallel": {"errors"},
    "dynamics": {"errors", "units", "data", "potentials"},
    "qm": {"errors", "units", "data", "potentials", "parallel"},
    "model": {"errors", "units", "data", "potentials"},
    "photo": {"errors", "units", "data", "potentials", "qm", "parallel"},
    "analysis": {"errors", "units", "data", "potentials", "dynamics"},
    "active": {"errors", "units", "data", "potentials", "validation", "parallel", "dynamics", "qm", "model", "photo",
               "analysis"},
}
ALLOWED["workflows"] = ALLOWED["active"]  # jobs made of the toolkit's steps
ALLOWED["cli"] = ALLOWED["active"] | {"active", "workflows"}  # the command line may use everything


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The exsnn modules `path` imports (resolving `from package import module`)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)  # `if TYPE_CHECKING:` imports never run
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = import_graph()
    # Tarjan-free check: a module is on a cycle if it can reach itself
    cycles = []
    for start in graph:
        stack, seen = list(graph[start]), set()
        while stack:
            node = stack.pop()
            if node == start:
                cycles.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(graph.get(node, ()))
    assert not cycles, f"modules on import cycles: {sorted(cycles)}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_lower_layers(package: str) -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if package_of(module) == package
        for target in targets
        if package_of(target) not in ALLOWED[package] | {package, ""}
    )
    assert not wrong, "\n".join(wrong)
