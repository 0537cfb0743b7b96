"""The package rule of docs/architecture.md, checked on the source: which package may import which (``RULE``), no
import circle, no argparse below the commands, no module over 350 lines, at most a dozen modules at the top level.

Each check is a function of a graph, so that it is also run on a small graph that breaks it: a check that cannot fail
checks nothing."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cgh"

# A room is a package of cgh (cgh.model) or a module at the top level (cgh.losses); "cgh" is the package's own
# __init__. RULE[room]: the other rooms its modules may import at module level, read from the bottom up. A
# function-level import may reach further up (the CLI imports a command when it runs it), but no import at any level
# closes a circle between rooms (test_no_circle_between_packages_even_through_function_level_imports).
LEAVES = {"cgh.errors": set(), "cgh.wording": set(), "cgh.losses": set(), "cgh.configs": set()}
RULE: dict[str, set[str]] = {
    **LEAVES,
    "cgh.runtime": {"cgh.errors"},
    "cgh": {"cgh.runtime"},  # the public API: it records the launcher first, the rest on first use
    "cgh.config": {"cgh.errors"},
    "cgh.optim": set(),
    "cgh.model": {"cgh.runtime"},
    "cgh.data": {"cgh.errors", "cgh.runtime", "cgh.config"},
    "cgh.augment": {"cgh.errors", "cgh.config", "cgh.data"},
    "cgh.methods": {"cgh.errors", "cgh.runtime", "cgh.config", "cgh.model", "cgh.losses"},
    "cgh.checkpoints": {"cgh.errors", "cgh.config", "cgh.data", "cgh.model"},
    "cgh.evaluate": {"cgh.errors", "cgh.runtime", "cgh.config", "cgh.optim", "cgh.model", "cgh.data",
                     "cgh.augment", "cgh.checkpoints"},
    "cgh.train": {"cgh.errors", "cgh.wording", "cgh.losses", "cgh.runtime", "cgh.config", "cgh.optim", "cgh.model",
                  "cgh.data", "cgh.augment", "cgh.methods", "cgh.checkpoints", "cgh.evaluate"},
    "cgh.demo": {"cgh.errors", "cgh.wording", "cgh.runtime", "cgh.config", "cgh.data", "cgh.augment", "cgh.methods",
                 "cgh.checkpoints", "cgh.evaluate", "cgh.train"},
    "cgh.commands": {"cgh.errors", "cgh.wording", "cgh.runtime", "cgh.config", "cgh.optim", "cgh.model", "cgh.data",
                     "cgh.augment", "cgh.methods", "cgh.checkpoints", "cgh.evaluate", "cgh.train", "cgh.demo"},
    "cgh.cli": set(),  # imports a command only when it parses or runs it
}
MAX_LINES = 350
MAX_TOP_LEVEL_MODULES = 12


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(("cgh", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        out[name] = p
    return out


def _imports(path: Path, modules: dict[str, Path], lazy: bool = False) -> set[str]:
    """cgh modules imported at module level (with ``lazy``, at any level); ``from cgh.x import y`` counts as importing
    cgh.x, and cgh.x.y when y is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree) if lazy else tree.body:
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


def module_graph(lazy: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules, lazy) - {name} for name, path in modules.items()}


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for name, deps in graph.items():
        rooms.setdefault(room(name), set()).update(room(d) for d in deps if room(d) != room(name))
    return rooms


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (a submodule importing its own package runs no new code: not a circle)."""
    state: dict[str, int] = {}
    found = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph.get(name, ())):
            if name.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt] if nxt in path else [name, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def rule_breaks(graph: dict[str, set[str]], rule: dict[str, set[str]]) -> dict[str, list[str]]:
    """module -> the modules it imports that its room may not import; a room missing from the rule is a break too."""
    breaks = {}
    for name, deps in sorted(graph.items()):
        if room(name) not in rule:
            breaks[name] = [f"(its room {room(name)} is not in the rule)"]
            continue
        bad = sorted(d for d in deps if room(d) != room(name) and room(d) not in rule[room(name)])
        if bad:
            breaks[name] = bad
    return breaks


# ---- the checks on synthetic graphs: each one can fail -------------------------------------------------------------


def test_the_checks_catch_a_broken_graph():
    three = {"cgh.a": {"cgh.b"}, "cgh.b": {"cgh.c"}, "cgh.c": {"cgh.a"}}
    assert circles(three) == [["cgh.a", "cgh.b", "cgh.c", "cgh.a"]]
    assert circles({"cgh.a": {"cgh.a.x"}, "cgh.a.x": {"cgh.a"}}) == []  # a submodule and its own package
    broken = {"cgh.data.loaders": {"cgh.augment", "cgh.config.views"}, "cgh.config": {"cgh.methods"},
              "cgh.gadgets.x": set(), "cgh.methods": set()}
    assert rule_breaks(broken, RULE) == {"cgh.data.loaders": ["cgh.augment"], "cgh.config": ["cgh.methods"],
                                         "cgh.gadgets.x": ["(its room cgh.gadgets is not in the rule)"]}
    assert circles(room_graph({"cgh.config.checks": {"cgh.methods"}, "cgh.methods.cgh": {"cgh.config"}}))


# ---- the rule itself -----------------------------------------------------------------------------------------------


def test_the_rule_is_a_stack_of_layers():
    assert not circles(RULE), "the package rule allows a circle"
    assert all(allowed <= set(RULE) for allowed in RULE.values())
    assert all(not allowed for leaf, allowed in RULE.items() if leaf in LEAVES)


# ---- the source ----------------------------------------------------------------------------------------------------


def test_each_package_imports_only_what_the_rule_allows():
    assert not (breaks := rule_breaks(module_graph(), RULE)), f"imports the package rule forbids: {breaks}"


def test_the_library_has_no_import_circle():
    assert not (found := circles(module_graph())), f"import circles: {found}"


def test_no_circle_between_packages_even_through_function_level_imports():
    # e.g. the config validating method names by importing cgh.methods, which import the config (issue 21)
    assert not (found := circles(room_graph(module_graph(lazy=True)))), f"package circles: {found}"


def test_no_module_is_over_350_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along a seam): {long}"


def test_at_most_a_dozen_modules_at_the_top_level():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top of src/cgh: {top}"
    assert {room(m) for m in _modules()} <= set(RULE)


def test_the_view_recipe_touches_no_pixels():
    # the loaders and the augmentation both read it; it imports neither (nor anything else of cgh)
    modules = _modules()
    assert not _imports(modules["cgh.config.views"], modules, lazy=True)


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
                 if room(name) not in ("cgh.commands", "cgh.cli") and _uses_argparse(path)]
    assert not offenders, f"library modules that import argparse or take its namespace: {offenders}"


def test_the_library_does_not_import_the_commands():
    graph = module_graph(lazy=True)
    offenders = {name: sorted(d for d in deps if room(d) == "cgh.commands")
                 for name, deps in graph.items() if room(name) not in ("cgh.commands", "cgh.cli")}
    assert not {k: v for k, v in offenders.items() if v}
