"""The layer contract over every module of `controller/`: imports run only downward.

    api -> logs | analyze | learn (pure) -> store -> index -> reconcilers -> runtime
        -> top level (pipeline, operator, settings) -> cli (the command line, `__main__`)

Each room's `__init__.py` says what it may import (an `Imports:` line); the test
holds the rooms to their word and the words to the ranks.

A module imports its own package (sideways) or a lower layer; `analyze/` and
`learn/` do no I/O; the generic runtime knows no reconciler; no module takes
part in an import cycle, lazy (function-level) imports included. A plain AST
walk: no dependency, and it sees the imports Python would run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "controller"

# Lower number = lower layer. Packages of one rank may not import each other.
RANK = {
    "api": 0,
    "logs": 1,
    "analyze": 1,
    "learn": 1,
    "store": 2,
    "index": 3,  # I/O around learning: the retrieval index, embedders, training files
    "reconcilers": 4,
    "runtime": 5,
    "cli": 7,  # the command line: above the top-level modules it wires together
}
TOP = 6  # controller/*.py: pipeline, operator, settings, foyleconfig
ENTRY_POINT = "controller.__main__"  # `python -m controller`: part of the command line
FORBIDDEN = {("runtime", "reconcilers")}  # the runtime runs any controller, knows none
PURE = {"analyze", "learn"}
PURE_MODULES = {"controller.logs.transition"}  # the file identity decision
IMPURE_MODULES = {
    "os",
    "io",
    "time",
    "datetime",
    "random",
    "uuid",
    "sqlite3",
    "socket",
    "http",
    "urllib",
    "pathlib",
    "shutil",
    "tempfile",
    "fcntl",
    "threading",
    "subprocess",
    "logging",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every name imported anywhere in the module, relative imports resolved, `from
    pkg import mod` taken as the module `pkg.mod` when there is one."""
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in MODULES else module)
    return found


def internal_imports(path: Path) -> set[str]:
    """The `controller` modules imported (a package import counts as its __init__)."""
    return {n for n in imports(path) if n in MODULES and n != "controller"}


def layer(module: str) -> str:
    if module == ENTRY_POINT:
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else "top"


def rank(module: str) -> int:
    return RANK.get(layer(module), TOP)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(RANK)


def upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports of `graph` (module -> modules it imports) that break the layers."""
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            same = layer(target) == layer(module)
            if (layer(module), layer(target)) in FORBIDDEN or not (
                same or rank(target) < rank(module)
            ):
                wrong.append(f"{module} imports {target}")
    return sorted(wrong)


def test_every_module_imports_only_downward_or_sideways() -> None:
    graph = {module: internal_imports(path) for module, path in MODULES.items()}
    assert upward(graph) == []


def test_the_layer_check_sees_upward_sideways_and_forbidden_imports() -> None:
    graph = {
        "controller.api.kinds": {"controller.store.base"},  # up
        "controller.analyze.traces": {"controller.logs.framing", "controller.api.entry"},
        "controller.runtime.controller": {"controller.reconcilers.trace"},  # forbidden
        "controller.store.sqlite": {"controller.store.base", "controller.analyze.traces"},
        "controller.cli.app": {"controller.pipeline", "controller.runtime.manager"},
        "controller.pipeline": {"controller.cli.output"},  # up: nothing below imports the CLI
    }
    assert upward(graph) == [
        "controller.analyze.traces imports controller.logs.framing",  # same rank, other package
        "controller.api.kinds imports controller.store.base",
        "controller.pipeline imports controller.cli.output",
        "controller.runtime.controller imports controller.reconcilers.trace",
    ]


def test_pure_modules_do_no_io() -> None:
    wrong = []
    for module, path in MODULES.items():
        if layer(module) in PURE or module in PURE_MODULES:
            impure = {n for n in imports(path) if n.split(".")[0] in IMPURE_MODULES}
            wrong += [f"{module} imports {name}" for name in sorted(impure)]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                yield from visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                yield sorted(component)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


def test_no_import_cycles() -> None:
    graph = {module: internal_imports(path) for module, path in MODULES.items()}
    assert list(_cycles(graph)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["e"]]


def test_the_layer_check_orders_layers() -> None:
    assert rank("controller.store.base") > rank("controller.analyze.traces")
    assert rank("controller.runtime.controller") > rank("controller.reconcilers.trace")
    assert (
        layer("controller.cli.app") == "cli" and layer("controller.runtime.controller") == "runtime"
    )
    assert layer("controller.pipeline") == "top" and layer(ENTRY_POINT) == "cli"
    assert rank("controller.cli.app") > rank("controller.pipeline")
    assert layer("controller.index") == "index"


def test_only_the_kube_backend_and_operator_import_kubernetes_clients() -> None:
    allowed = {PACKAGE / "store" / "kube.py", PACKAGE / "operator.py"}
    for path in sorted(PACKAGE.rglob("*.py")):
        heavy = {n for n in imports(path) if n.split(".")[0] in ("kubernetes", "kopf")}
        assert not heavy or path in allowed, f"{path.relative_to(PACKAGE)} imports {heavy}"


def declared_imports(room: str) -> set[str]:
    """The rooms a package's docstring says it may import (`Imports: a, b, top level`)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text())) or ""
    [line] = [ln for ln in doc.splitlines() if ln.startswith("Imports:")]
    words = line.removeprefix("Imports:").strip().rstrip(".")
    if words == "nothing of controller":
        return set()
    return {"top" if w.strip() == "top level" else w.strip() for w in words.split(",")}


def test_each_room_says_what_it_may_import_and_imports_no_more() -> None:
    actual: dict[str, set[str]] = {room: set() for room in RANK}
    for module, path in MODULES.items():
        for target in internal_imports(path):
            if layer(module) in RANK and layer(target) != layer(module):
                actual[layer(module)].add(layer(target))
    for room in RANK:
        declared = declared_imports(room)
        assert actual[room] <= declared, f"{room} imports {actual[room] - declared}, undeclared"
        above = {r for r in declared if RANK.get(r, TOP) >= RANK[room]}
        assert not above, f"{room}/__init__.py allows importing {above}, not below it"
