"""The house plan: which area (room) of src/fpvm may import which, no import circles, stdlib-only rooms.

Every import of every module is read with ``ast``: module level, inside functions, and under
``TYPE_CHECKING`` (a type-only arrow is still an arrow). ``importlib.import_module`` is refused, so
no import can hide from this test in a string. docs/DEVELOPING.md draws the same table; the last test
keeps the two in step.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
DEVELOPING = REPO / "docs" / "DEVELOPING.md"

# room -> the other rooms it may import (a room may always import itself). "version" is the package's
# __init__ (``fpvm.__version__``); "cli" is the fpvm command and the ``python -m`` entry points.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "cli": frozenset({"ignition", "guest", "fwcfg", "image", "machine", "version"}),
    "image": frozenset(
        {"machine", "guest", "contract", "ignition", "fwcfg", "fsutil", "hostroot", "safetext", "arch"}
        | {"progress", "version"}
    ),
    "machine": frozenset(
        {"contract", "ignition", "fwcfg", "fsutil", "hostroot", "safetext", "arch", "progress", "version"}
    ),
    "guest": frozenset(
        {"contract", "ignition", "fwcfg", "fsutil", "hostroot", "safetext", "arch", "version"}
    ),
    "ignition": frozenset({"version"}),
    "fwcfg": frozenset(),
    "contract": frozenset(),
    "fsutil": frozenset(),
    "hostroot": frozenset(),
    "safetext": frozenset(),
    "arch": frozenset(),
    "progress": frozenset(),
    "version": frozenset(),
}

# These run inside the FreeBSD guest on the base system's python3: nothing outside the standard library.
STDLIB_ONLY = ("ignition", "fwcfg", "guest", "contract", "fsutil", "hostroot", "safetext", "arch")
# Standard-library modules newer than the interpreter running the tests (tried after a fallback).
LATER_STDLIB = frozenset({"_sha2"})  # CPython 3.12+ name of _sha256

# Circles that another change is removing (issue 11: the account database split out of passwd.py);
# a circle found must lie inside one of these.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((SRC / "fpvm").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def room(module: str) -> str:
    parts = module.split(".")
    if module == "fpvm":
        return "version"
    if module == "fpvm.cli" or parts[-1] == "__main__":
        return "cli"
    return parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str) -> list[tuple[str, int]]:
    """(imported name, line) for every import in ``module``; fpvm names resolved to modules."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in MODULES else base, node.lineno))
    return out


def internal_graph() -> dict[str, set[str]]:
    return {
        module: {name for name, _ in imports(module) if name in MODULES and name != module}
        for module in MODULES
    }


def test_every_module_has_a_room() -> None:
    unknown = sorted(m for m in MODULES if room(m) not in MAY_IMPORT)
    assert not unknown, f"add these rooms to MAY_IMPORT (and docs/DEVELOPING.md): {unknown}"


def test_no_upward_arrows() -> None:
    wrong: set[str] = set()
    for module in MODULES:
        here = room(module)
        for name, line in imports(module):
            if not name.startswith("fpvm"):
                continue
            assert name in MODULES, f"{module}:{line} imports {name}, which does not exist"
            there = room(name)
            if there != here and there not in MAY_IMPORT[here]:
                wrong.add(f"{MODULES[module].relative_to(REPO)}:{line}: {here} -> {there} ({name})")
    assert not wrong, "imports against the house plan:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    new = [
        sorted(c)
        for c in _cycles(internal_graph())
        if not any(c <= known for known in KNOWN_CYCLES)
    ]
    assert not new, f"import circles between modules: {new}"


@pytest.mark.parametrize("stdlib_room", STDLIB_ONLY)
def test_guest_side_rooms_import_only_the_standard_library(stdlib_room: str) -> None:
    stdlib = sys.stdlib_module_names | LATER_STDLIB
    wrong = [
        f"{module}:{line}: {name}"
        for module in MODULES
        if room(module) == stdlib_room
        for name, line in imports(module)
        if not name.startswith("fpvm") and name.partition(".")[0] not in stdlib
    ]
    assert not wrong, f"{stdlib_room} must use the standard library only: {wrong}"


def test_no_imports_hidden_in_strings() -> None:
    hidden = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("import_module", "__import__"):
                    hidden.append(f"{module}:{node.lineno}")
    assert not hidden, f"use a (lazy) import statement instead: {hidden}"


def _doc_table() -> dict[str, tuple[set[str], set[str]]]:
    """docs/DEVELOPING.md's rooms table: room -> (may import, imported by)."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in DEVELOPING.read_text().splitlines():
        m = re.match(r"^\| `(\w+)` \|[^|]*\|([^|]*)\|([^|]*)\|$", line)
        if m:
            names = [set(re.findall(r"\w+", cell)) - {"nothing", "anyone"} for cell in m.group(2, 3)]
            rows[m.group(1)] = (names[0], names[1])
    return rows


def test_developing_md_draws_the_same_plan() -> None:
    rows = _doc_table()
    assert set(rows) == set(MAY_IMPORT)
    for name, allowed in MAY_IMPORT.items():
        importers = {other for other, theirs in MAY_IMPORT.items() if name in theirs}
        assert rows[name] == (set(allowed), importers), name
