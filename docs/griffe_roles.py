"""Griffe extension: render the docstrings' Sphinx roles as cross-references in the API pages.

The docstrings of ``bilevel_envs`` and ``bilevel_agents`` use Sphinx's roles
(``:class:`BestResponse```, ``:func:`~bilevel_agents.exact.hypergradient```, ``:mod:``, ...),
which Markdown would print as they are. This extension rewrites each role, at load time and
without touching the sources, into an *optional* autorefs link to the object it names
(resolved in the docstring's scope, as Sphinx does): a link when the object has an API page,
plain code otherwise. It also turns ``Example:`` before a doctest into ``Examples:`` (rendered
as code), drops reST's ``::`` literal-block markers, and reads the ``#:`` comment above an
attribute as its docstring (as Sphinx's autodoc does).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+)`")
_EXAMPLE = re.compile(r"(?m)^(\s*)Example:[ \t]*$(?=\n\s*\n?\s*>>>)")
_LITERAL = re.compile(r"(?m)(\S)::[ \t]*$")
_BARE_LITERAL = re.compile(r"(?m)^[ \t]*::[ \t]*$")


def _resolve(obj: griffe.Object, target: str, collection: Any) -> str | None:
    """The canonical path of ``target`` seen from ``obj``, or ``None``."""
    head, _, rest = target.partition(".")
    candidates = []
    if target.split(".")[0] in ("bilevel_envs", "bilevel_agents"):
        candidates.append(target)
    scope: Any = obj
    while scope is not None:
        try:
            base = scope.resolve(head)
        except (griffe.NameResolutionError, KeyError, AttributeError):
            base = None
        if base:
            candidates.append(f"{base}.{rest}" if rest else base)
            break
        scope = scope.parent
    for path in candidates:
        try:
            found = collection[path]
        except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
            continue
        try:
            return found.final_target.path if found.is_alias else found.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
    return None


def _comment_above(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above an attribute's assignment, joined."""
    try:
        lines = obj.lines_collection[obj.filepath]
    except (KeyError, TypeError, AttributeError):
        return None
    if not obj.lineno:
        return None
    out: list[str] = []
    i = obj.lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        out.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(out) or None


def _rewrite(obj: griffe.Object, text: str, collection: Any) -> str:
    def role(match: re.Match) -> str:
        kind, short, target = match.groups()
        target = target.strip().lstrip(".")
        shown = target.rsplit(".", 1)[-1] if short else target
        if kind in ("func", "meth"):
            shown += "()"
        path = _resolve(obj, target, collection)
        code = f"<code>{html.escape(shown)}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    text = _ROLE.sub(role, text)
    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _BARE_LITERAL.sub("", text)
    return _LITERAL.sub(r"\1:", text)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader,
                   **kwargs: Any) -> None:
        """Walk the package once it is completely loaded."""
        collection = loader.modules_collection
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is None and obj.is_attribute:
                comment = _comment_above(obj)
                if comment:
                    obj.docstring = griffe.Docstring(
                        comment, lineno=obj.lineno, parent=obj, parser=loader.docstring_parser,
                        parser_options=loader.docstring_options)
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, obj.docstring.value, collection)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)

        walk(pkg)
