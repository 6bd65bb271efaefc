"""Layers import only downward; the pure core and heavy clients stay where they belong."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "controller"

# What each layer may import from the package (besides itself).
ALLOWED = {
    "api": set(),
    "analyze": {"api"},
    "logs": {"api"},
    "store": {"api", "analyze"},  # the journal keeps analyze's trace accumulators
    "learn": {"api", "store"},
    "reconcilers": {"api", "analyze", "logs", "learn", "store"},
    "runtime": {"api", "reconcilers", "logs", "store", "settings"},
}
PURE = {"analyze"}  # no files, clocks, stores or networks
IMPURE_MODULES = {"os", "time", "sqlite3", "socket", "urllib", "pathlib", "threading", "subprocess"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_downward(layer: str) -> None:
    for path in modules(layer):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "controller" or len(parts) < 2:
                continue
            target = parts[1]
            assert target == layer or target in ALLOWED[layer], f"{path.name} imports {name}"


@pytest.mark.parametrize("layer", sorted(PURE))
def test_pure_core_does_no_io(layer: str) -> None:
    for path in modules(layer):
        for name in imports(path):
            assert name.split(".")[0] not in IMPURE_MODULES, f"{path.name} imports {name}"


def test_only_the_kube_backend_and_operator_import_kubernetes_clients() -> None:
    allowed = {PACKAGE / "store" / "kube.py", PACKAGE / "operator.py"}
    for path in sorted(PACKAGE.rglob("*.py")):
        heavy = {n for n in imports(path) if n.split(".")[0] in ("kubernetes", "kopf")}
        assert not heavy or path in allowed, f"{path.relative_to(PACKAGE)} imports {heavy}"
