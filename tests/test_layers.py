"""The package's layers, read from its source with `ast` (nothing is imported): every import looks down, no modules
import each other in a cycle, and no private name (`_x`) is used across modules — by the package or its tests.

Layers, lowest first: errors, version, caller (warnings at the user's line) and files (written whole, damaged ones
set aside); capture/; ops/; flow/; presets/; propagate/; engine/; viz; api/; then tools/, metrics/, integrations/
and distributed/ side by side; the package's own `__init__` (the public facade) and `__main__` above them all. A
module may import from its own layer and the layers below it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lrpgraph"

LAYERS = {
    "errors": 0,
    "version": 0,
    "caller": 0,
    "files": 0,
    "capture": 1,
    "ops": 2,
    "flow": 3,
    "presets": 4,
    "propagate": 5,
    "engine": 6,
    "viz": 7,
    "api": 8,
    "tools": 9,
    "metrics": 9,
    "integrations": 9,
    "distributed": 9,
}
TOP = 10  # `lrpgraph/__init__.py` and `lrpgraph/__main__.py`


@dataclass(frozen=True)
class Use:
    """A module of the package used by a file, and the name used from it ('' for the module itself)."""

    line: int
    module: str
    name: str = ""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    return TOP if len(parts) == 1 or parts[1] == "__main__" else LAYERS[parts[1]]


def uses(path: Path) -> list[Use]:
    """Every use of the package in a file: each import (at any depth, lazy ones too) and each attribute read from a
    name bound to one of the package's modules."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path) if path.is_relative_to(PACKAGE) else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[Use] = []
    bound: dict[str, str] = {}  # local name → package module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lrpgraph":
                    found.append(Use(node.lineno, alias.name))
                    bound[alias.asname or "lrpgraph"] = alias.name if alias.asname else "lrpgraph"
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] != "lrpgraph":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:
                    found.append(Use(node.lineno, submodule))
                    bound[alias.asname or alias.name] = submodule
                else:
                    found.append(Use(node.lineno, base, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            found.append(Use(node.lineno, bound[node.value.id], node.attr))
        elif (
            isinstance(node, ast.Call)
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in bound
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):  # setattr(module, "name", …), monkeypatch.setattr(module, "name", …)
            found.append(Use(node.lineno, bound[node.args[0].id], node.args[1].value))
    return found


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports() -> dict[str, set[str]]:
    """The package's import graph: module → the package modules it imports."""
    return {module: {use.module for use in uses(path) if use.module in MODULES} for module, path in MODULES.items()}


def test_every_import_looks_down():
    upward = [
        f"{module}:{use.line} imports {use.module} (layer {layer(use.module)} above {layer(module)})"
        for module, path in MODULES.items()
        for use in uses(path)
        if use.module in MODULES and layer(use.module) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_cycle():
    graph = imports()
    cycles, state, stack = [], dict.fromkeys(graph, 0), []  # 0 unvisited, 1 on the stack, 2 done

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for imported in sorted(graph[module]):
            if state[imported] == 1:
                cycles.append(" → ".join([*stack[stack.index(imported) :], imported]))
            elif state[imported] == 0:
                visit(imported)
        stack.pop()
        state[module] = 2

    for module in graph:
        if state[module] == 0:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_used_across_modules():
    found = set()
    for module, path in MODULES.items():
        for use in uses(path):
            if use.module != module and (private(use.name) or any(map(private, use.module.split(".")))):
                found.add((module, use.module, use.name))
    assert not found, "\n".join(f"{m} uses {imported}.{name}" for m, imported, name in sorted(found))


def test_tests_and_benchmarks_use_no_private_name_of_the_package():
    files = [*sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}:{use.line} uses {use.module}.{use.name}"
        for path in files
        for use in uses(path)
        if private(use.name) or any(map(private, use.module.split(".")))
    ]
    assert not found, "\n".join(found)


def test_the_reader_sees_the_package():
    """The checks above read real imports: the package's modules, and edges between its layers."""
    graph = imports()
    assert {"lrpgraph.api.explain", "lrpgraph.engine.traced", "lrpgraph.propagate.walker"} <= set(graph)
    assert "lrpgraph.engine.traced" in graph["lrpgraph.api.explain"]
    assert "lrpgraph.propagate.walker" in graph["lrpgraph.engine.walks"]
