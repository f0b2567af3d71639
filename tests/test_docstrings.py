"""Every public name has a docstring: the API reference (``docs/api/``) is generated from them.

Public means: every name in the ``__all__`` of any module of ``bilevel_envs`` or
``bilevel_agents``, and the public methods, properties, class methods and static methods that
those classes (and their bases inside the two packages) define. A constant in ``__all__`` needs
an attribute docstring (a string literal right after the assignment) or a ``#:`` comment above
it. Run ``python tests/test_docstrings.py`` to list what is missing.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bilevel_envs", "bilevel_agents")


def _module_names() -> list[str]:
    names = []
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{pkg}.")]
    return sorted(names)


def _own_doc(obj: object) -> str | None:
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if isinstance(obj, type) and doc:
        # dataclasses and NamedTuples write their signature when the class has no docstring
        if doc.startswith(f"{obj.__name__}(") and doc.rstrip().endswith(")"):
            return None
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def _ours(obj: object) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] in PACKAGES


def _member_doc(member: object) -> tuple[bool, str | None]:
    """(whether the class member is a documented kind, its docstring)."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    if isinstance(member, property):
        return True, _own_doc(member.fget) if member.fget is not None else None
    if isinstance(member, functools.cached_property):
        return True, _own_doc(member.func)
    if inspect.isfunction(member):
        return True, _own_doc(member)
    return False, None


@functools.cache
def _documented_assignments(module_name: str) -> dict[str, bool]:
    """Top-level names assigned in a module's source → whether the assignment is documented."""
    module = sys.modules[module_name]
    path = Path(module.__file__)
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    out: dict[str, bool] = {}
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        string_after = (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str))
        comment_above = node.lineno >= 2 and lines[node.lineno - 2].lstrip().startswith("#:")
        for name in targets:
            out[name] = string_after or comment_above
    return out


def missing_docstrings() -> tuple[list[str], int]:
    """``(names that lack a docstring, number of public names checked)``."""
    missing: list[str] = []
    seen: set[str] = set()
    checked = 0

    def check(label: str, doc: str | None) -> None:
        nonlocal checked
        if label in seen:
            return
        seen.add(label)
        checked += 1
        if not doc:
            missing.append(label)

    for module_name in _module_names():
        module = importlib.import_module(module_name)
        if not hasattr(module, "__all__"):
            continue
        check(module_name, _own_doc(module))
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                check(obj.__name__, _own_doc(obj))
            elif inspect.isclass(obj) or inspect.isfunction(obj):
                if not _ours(obj):
                    continue
                check(f"{obj.__module__}.{obj.__qualname__}", _own_doc(obj))
                if inspect.isclass(obj):
                    for klass in obj.__mro__:
                        if not _ours(klass):
                            continue
                        for attr, member in vars(klass).items():
                            if attr.startswith("_"):
                                continue
                            kind, doc = _member_doc(member)
                            if kind:
                                check(f"{klass.__module__}.{klass.__qualname__}.{attr}", doc)
            else:
                assigned = _documented_assignments(module_name)
                if name in assigned:      # defined here (a re-export is checked where defined)
                    check(f"{module_name}.{name}", "yes" if assigned[name] else None)
    return sorted(missing), checked


def test_every_public_name_has_a_docstring():
    missing, checked = missing_docstrings()
    assert checked > 300
    assert not missing, f"{len(missing)} public names lack a docstring:\n" + "\n".join(missing)


if __name__ == "__main__":
    names, total = missing_docstrings()
    print("\n".join(names))
    print(f"{len(names)} of {total} public names lack a docstring")
    sys.exit(1 if names else 0)
