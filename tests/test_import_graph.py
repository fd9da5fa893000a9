"""The package's shape, read from its source (AST): imports point down the layers, never in a cycle.

Function-level and ``TYPE_CHECKING`` imports count like any other: a cycle
hidden inside a function is still a cycle. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "broker_guard"

# lowest first; a module may import its own layer and the ones below it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "leaves",
        ("errors", "clock", "events", "redact", "classify", "symbols", "config", "_singleton"),
    ),
    ("core", ("core",)),
    ("state", ("state",)),
    ("guard", ("guard",)),
    ("liquidation", ("liquidation",)),
    ("assembly", ("guarded",)),
    (
        "seed",
        (
            "enhanced_balance_fetcher",
            "symbol_freeze_manager",
            "broker_dust_cleanup",
            "user_account_normalization",
        ),
    ),
    ("tools", ("paper", "testing", "metrics", "cli", "__main__", "__init__")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    for rank, (_name, members) in enumerate(LAYERS):
        if first in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/ARCHITECTURE.md")


def imports_of(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported package module, line) for every import in the file, at any depth."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                )
                base = base.rstrip(".")
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    yield target, node.lineno
                elif base in known:
                    yield base, node.lineno


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {m: {t for t, _ in imports_of(p, known) if t != m} for m, p in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m) and t != "broker_guard"
    ]
    assert upward == []


def test_no_module_imports_another_modules_private_names() -> None:
    found = modules()
    leaks = []
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("broker_guard"):
                leaks += [f"{name}: {node.module}.{a.name}" for a in node.names if _private(a.name)]
    assert leaks == []


def test_no_module_reads_private_attributes_of_other_objects() -> None:
    """``x._name`` only on ``self``/``cls``/``type(self)``: another object's private state is its
    own."""
    reads = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if not _own(owner):
                    reads.append(f"{name}:{node.lineno} .{node.attr}")
    assert reads == []


def test_core_is_pure() -> None:
    """core/ decides; it never logs, awaits, sleeps, reads a clock or touches a store."""
    banned = {
        "logging",
        "asyncio",
        "time",
        "threading",
        "broker_guard.state",
        "broker_guard.redact",
    }
    problems = []
    for name, path in modules().items():
        if not name.startswith("broker_guard.core"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Await, ast.AsyncFunctionDef)):
                problems.append(f"{name}:{node.lineno} async code")
            elif isinstance(node, ast.Import):
                problems += [
                    f"{name}: import {a.name}" for a in node.names if _banned(a.name, banned)
                ]
            elif isinstance(node, ast.ImportFrom) and _banned(node.module or "", banned):
                problems.append(f"{name}: from {node.module}")
    assert problems == []


def _own(owner: ast.expr) -> bool:
    if isinstance(owner, ast.Name):
        return owner.id in ("self", "cls")
    return ast.unparse(owner) == "type(self)"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _banned(module: str, banned: set[str]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(
    edges: dict[str, set[str]], expected: list[str] | None
) -> None:
    assert find_cycle(edges) == expected


def test_function_level_imports_are_counted() -> None:
    """``store_from_config`` imports the Redis store inside the function (redis is optional)."""
    assert "broker_guard.state.redis_store" in graph()["broker_guard.state.select"]
