"""The architecture's rules, checked on the source: directions of dependency, no import cycle,
no private names crossing modules (docs/developer.md draws the map)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bilevel_envs", "bilevel_agents")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` for every import anywhere in the file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, None) if sub in MODULES else (base, alias.name))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in _imports(module):
            resolved = _resolve(target)
            if resolved and resolved != module:
                graph[module].add(resolved)
    return graph


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_private_names_cross_modules():
    bad = []
    for module in MODULES:
        for target, name in _imports(module):
            if _resolve(target) is None:
                continue  # third-party
            owner = _resolve(target)
            if name and name.startswith("_") and not name.startswith("__") and owner != module:
                bad.append(f"{module} imports {owner}.{name}")
            private = [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
            if private and owner.rpartition(".")[0] != module.rpartition(".")[0]:
                bad.append(f"{module} imports the private module {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source,forbidden", [
    ("bilevel_envs", "bilevel_agents"),               # problems know nothing about leaders
    ("bilevel_agents.estimators", "bilevel_agents.leaders"),
    ("bilevel_agents.estimators", "bilevel_agents.families"),
    ("bilevel_agents.estimators", "bilevel_agents.critics"),
    ("bilevel_agents.exact", "bilevel_agents.leaders"),
    ("bilevel_agents.exact", "bilevel_agents.families"),
    ("bilevel_agents.critics", "bilevel_agents.leaders"),
    ("bilevel_agents.families", "bilevel_agents.leaders"),   # a family never knows the method
])
def test_direction_of_dependency(source, forbidden):
    graph = _graph()
    bad = [f"{m} -> {t}" for m, targets in graph.items() if m.startswith(source)
           for t in targets if t.startswith(forbidden)]
    assert not bad, "\n".join(bad)


def test_no_new_returning_another_type_and_no_vars_reaching():
    bad = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "__new__":
                bad.append(f"{module} defines __new__")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "vars":
                bad.append(f"{module} calls vars()")
    assert not bad, "\n".join(bad)
