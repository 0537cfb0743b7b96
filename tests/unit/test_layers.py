"""The layer rule of docs/architecture.md, checked on the source: commands on top of the library, no import circle,
no argparse below the commands, and an input side that reads one way (data does not import the augmentation)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cgh"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(("cgh", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        out[name] = p
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """cgh modules imported at module level (function-level imports are lazy by design and may not form a circle
    at import time); ``from cgh.x import y`` counts as importing cgh.x, and cgh.x.y when y is a module."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            # importing a submodule runs its packages' __init__ first
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in modules)
    return found


def test_the_library_has_no_import_circle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if name.startswith(nxt + "."):  # a submodule importing its parent package: runs no new code
                continue
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt] if nxt in path else [name, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, f"import circles: {circles}"


def _uses_argparse(path: Path) -> bool:
    """Imports argparse, or annotates a parameter with its Namespace (a string naming it, e.g. in an unpickling
    allowlist, is not a use)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
        if isinstance(node, ast.arg) and node.annotation is not None and "Namespace" in ast.unparse(node.annotation):
            return True
    return False


def test_only_the_commands_know_the_command_line():
    offenders = [name for name, path in _modules().items()
                 if not (name.startswith("cgh.commands") or name == "cgh.cli") and _uses_argparse(path)]
    assert not offenders, f"library modules that import argparse or take its namespace: {offenders}"


def test_the_library_does_not_import_the_commands():
    modules = _modules()
    offenders = {name: sorted(i for i in _imports(path, modules) if i.startswith("cgh.commands"))
                 for name, path in modules.items() if not (name.startswith("cgh.commands") or name == "cgh.cli")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_input_side_reads_one_way():
    modules = _modules()
    data = {name: _imports(path, modules) for name, path in modules.items() if name.startswith("cgh.data")}
    assert not {name for name, deps in data.items() if "cgh.augment" in deps}, "cgh.data must not import cgh.augment"
    assert "cgh.augment" not in _imports(modules["cgh.views"], modules)
