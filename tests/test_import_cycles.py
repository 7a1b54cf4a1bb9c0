"""No import cycle between the modules of ``harmonize``.

Every import counts, at module level and inside functions alike (a function-level import only delays a cycle to
the first call), absolute and relative. A package is a node too: ``from harmonize.losses import DomainLoss``
imports ``harmonize/losses/__init__.py``, which imports every loss module, so a cycle through an ``__init__`` is
found. Two kinds of edge are left out: imports under ``if TYPE_CHECKING`` (annotations only, never run), and a
module's import of a package that contains it (Python imports the parents first whatever the module says).
"""

from __future__ import annotations

import ast
from pathlib import Path

import harmonize

ROOT = Path(harmonize.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """The dotted names a module's source imports (with ``from m import x`` both ``m`` and ``m.x``)."""
    typing_only = {id(n) for guard in ast.walk(tree) if isinstance(guard, ast.If)
                   and getattr(guard.test, "id", None) == "TYPE_CHECKING" for b in guard.body for n in ast.walk(b)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package (a package's own __init__ counts as level 0)
                package = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(package + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    """Each module of ``harmonize`` (a package is its ``__init__``) and the modules of ``harmonize`` it imports."""
    paths = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = {t for t in targets if t in paths and t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as the path that closes it (``[a, b, a]``), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_are_read_at_every_level_and_relative_ones_resolved():
    source = ("from typing import TYPE_CHECKING\nfrom . import keys\nfrom .sub import thing\nimport harmonize.io\n"
              "if TYPE_CHECKING:\n    from harmonize.errors import ConfigError\n"
              "def f():\n    from harmonize.locks import lock\n")
    found = _imports(ast.parse(source), "harmonize.data.module", is_package=False)
    assert {"harmonize.data.keys", "harmonize.data.sub.thing", "harmonize.io", "harmonize.locks.lock"} <= found
    assert not any(name.startswith("harmonize.errors") for name in found)
    assert "harmonize.data.sub" in _imports(ast.parse("from .sub import x\n"), "harmonize.data", is_package=True)


def test_the_graph_reads_the_package():
    graph = _graph()
    assert "harmonize.losses" in graph["harmonize.handlers.confound"]  # through the package's __init__
    assert "harmonize.data.transforms.site_acquisition" in graph["harmonize.data.transforms.random_site_acquisition"]


def test_no_import_cycle_between_modules():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
