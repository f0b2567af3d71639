"""MkDocs hooks: the parts of the site that are generated from the code at build time.

* ``on_config``: every page of ``docs/results/`` is in the navigation (new ones appended).
* ``on_files``: one API page per group of modules (``api/<group>.md``), with a
  ``::: module`` block for every module of ``bilevel_envs`` and ``bilevel_agents`` that has an
  ``__all__`` (so a new module or a new public name appears without editing the docs).
* ``on_page_markdown``: markers in the pages are replaced by generated text:
  ``<!-- cli-help -->`` (``bilevel <command> --help`` of every sub-command) and
  ``<!-- leader-defaults: NAME -->`` (the effective defaults of a method on every problem
  family, read from the instantiated leader's ``hparams()``).
* ``on_post_build``: every public name (in a module's ``__all__``) must have an anchor in the
  built site's inventory, else the (strict) build fails.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import logging
import os
import pkgutil
import re
import sys
import zlib
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.bilevel")
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bilevel_envs", "bilevel_agents")

#: API page of each group: (title, one-line description)
GROUPS = {
    "bilevel_envs": ("bilevel_envs", "Base classes of every configurable MDP, the tabular "
                     "model, conformance checks."),
    "bilevel_envs.envs": ("Problems", "The configurable MDPs, one module per problem."),
    "bilevel_envs.followers": ("Followers", "Exact, k-step and learning followers, and their "
                               "protocol."),
    "bilevel_envs.wrappers": ("Wrappers", "The follower's best response, for configurable MDPs "
                              "and games."),
    "bilevel_envs.games": ("Games", "Leader-follower Markov games (PettingZoo)."),
    "bilevel_agents": ("bilevel_agents", "The leader base class, the training loop, run "
                       "folders, checkpoints and the command line."),
    "bilevel_agents.leaders": ("Leaders", "The methods, one class each."),
    "bilevel_agents.families": ("Families", "What a method needs that depends on the kind of "
                                "problem."),
    "bilevel_agents.estimators": ("Estimators", "The paper's equations as pure functions."),
    "bilevel_agents.critics": ("Critics", "What a leader learns about its own values."),
    "bilevel_agents.exact": ("Exact", "The exact leader objective and hypergradient."),
    "bilevel_agents.experiments": ("Experiments", "Sweeps, score tables, plots, reproduction."),
    "bilevel_agents.benchmarks": ("Benchmarks", "Speed and accuracy benchmarks and their "
                                  "harness."),
}


# ---------------------------------------------------------------------- public names
def _import(name: str) -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


@functools.cache
def public_modules() -> tuple[str, ...]:
    """Every module of the two packages that defines ``__all__``, sorted."""
    names = []
    for pkg in PACKAGES:
        module = _import(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{pkg}.")]
    return tuple(n for n in sorted(names) if hasattr(_import(n), "__all__"))


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and ".".join(parts[:2]) in GROUPS:
        return ".".join(parts[:2])
    return parts[0]


def _defined_here(module_name: str, name: str) -> bool:
    """Whether ``module.name`` is documented on this module's block (not a re-export of a
    public name of another public module, which is documented there)."""
    module = _import(module_name)
    obj = getattr(module, name)
    if inspect.ismodule(obj):
        return False  # a submodule: it has its own block
    home = getattr(obj, "__module__", None) if (inspect.isclass(obj) or callable(obj)) else None
    if home is None or not isinstance(home, str):
        source = Path(module.__file__).read_text()
        return any(line.split("=")[0].split(":")[0].strip() == name
                   for line in source.splitlines() if not line.startswith((" ", "#")))
    if home == module_name:
        return True
    other = sys.modules.get(home)
    return not (other is not None and name in getattr(other, "__all__", ()))


def _canonical(module_name: str, name: str) -> str | None:
    """The path under which ``module.name`` is documented (``None``: nowhere found)."""
    obj = getattr(_import(module_name), name)
    if inspect.ismodule(obj):
        return obj.__name__
    if _defined_here(module_name, name):
        return f"{module_name}.{name}"
    for other in public_modules():
        mod = _import(other)
        if (other != module_name and name in mod.__all__ and getattr(mod, name) is obj
                and _defined_here(other, name)):
            return f"{other}.{name}"
    return None


def _shadowed(module_name: str, name: str) -> bool:
    """A function of a package that has the name of one of its submodules (griffe, reading the
    sources, sees only the submodule: the function is rendered by :func:`_function_block`)."""
    module = _import(module_name)
    obj = getattr(module, name)
    return (inspect.isfunction(obj) and obj.__module__ == module_name
            and hasattr(module, "__path__")
            and importlib.util.find_spec(f"{module_name}.{name}") is not None)


def _function_block(module_name: str, name: str) -> str:
    """Markdown for a shadowed function: its signature and its Google-style docstring."""
    obj = getattr(_import(module_name), name)
    lines = [f"### `{module_name}.{name}()` {{ #{module_name}.{name}-function }}", "",
             f"```python\n{name}{str(inspect.signature(obj)).replace(chr(39), '')}\n```", ""]
    section, code = None, False
    for raw in inspect.getdoc(obj).splitlines():
        text = raw.strip()
        if raw and not raw.startswith(" ") and text.endswith(":") and " " not in text[:-1]:
            section = text[:-1]
            lines += ["", f"**{section}:**", ""]
            continue
        if section in ("Example", "Examples"):
            if not code:
                lines.append("```python")
                code = True
            lines.append(raw[4:])
        elif section and raw.startswith("    ") and not raw.startswith("        "):
            head, sep, rest = text.partition(":")
            lines.append(f"* `{head}`{sep}{rest}" if sep and " " not in head else f"* {text}")
        else:
            lines.append(f"  {text}" if section else raw)
    if code:
        lines.append("```")
    text = "\n".join(lines) + "\n"
    return re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)


def _module_block(module_name: str) -> str:
    module = _import(module_name)
    members = [n for n in module.__all__ if _defined_here(module_name, n)
               and not _shadowed(module_name, n)]
    extra = "".join("\n" + _function_block(module_name, n) for n in module.__all__
                    if _defined_here(module_name, n) and _shadowed(module_name, n))
    if extra:
        return _module_block_plain(module_name, members) + extra
    return _module_block_plain(module_name, members)


def _module_block_plain(module_name: str, members: list[str]) -> str:
    if members:
        listed = "\n".join(f"        - {n}" for n in members)
        return f"::: {module_name}\n    options:\n      members:\n{listed}\n"
    return f"::: {module_name}\n    options:\n      members: false\n"


def api_pages() -> dict[str, str]:
    """``{"api/<group>.md": markdown}`` for every group of public modules."""
    by_group: dict[str, list[str]] = {}
    for module in public_modules():
        by_group.setdefault(_group(module), []).append(module)
    pages = {}
    for group, modules in by_group.items():
        title, blurb = GROUPS.get(group, (group, ""))
        body = "\n".join(_module_block(m) for m in modules)
        pages[f"api/{group}.md"] = (f"# {title}\n\n{blurb} Generated from the docstrings "
                                    f"(`docs/hooks.py`).\n\n{body}")
    return pages


# ---------------------------------------------------------------------- hooks
def on_config(config: Any) -> Any:
    """Add every page of ``docs/results/`` that the nav's Results section does not list
    (the experiment scripts write new ones), titled by its first heading."""
    docs = Path(config["docs_dir"])
    for entry in config["nav"] or []:
        if not (isinstance(entry, dict) and "Results" in entry):
            continue
        section = entry["Results"]
        listed = {v for item in section
                  for v in (item.values() if isinstance(item, dict) else [item])}
        for path in sorted((docs / "results").glob("*.md")):
            rel = f"results/{path.name}"
            if rel not in listed:
                heading = next((line[2:].strip() for line in path.read_text().splitlines()
                                if line.startswith("# ")), path.stem)
                section.append({heading: rel})
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated API pages."""
    for src_uri, content in api_pages().items():
        files.append(File.generated(config, src_uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the generation markers of a page."""
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", cli_help())
    while "<!-- leader-defaults:" in markdown:
        start = markdown.index("<!-- leader-defaults:")
        end = markdown.index("-->", start) + 3
        name = markdown[start:end].split(":", 1)[1].removesuffix("-->").strip()
        markdown = markdown[:start] + leader_defaults(name) + markdown[end:]
    return markdown


def on_post_build(config: Any) -> None:
    """Fail the strict build if a public name has no anchor in the site's inventory."""
    inventory = Path(config["site_dir"]) / "objects.inv"
    if not inventory.exists():
        log.warning("no objects.inv was written: cannot check the API reference")
        return
    raw = inventory.read_bytes()
    lines = raw.split(b"\n", 4)
    known = {line.split(" ", 1)[0]
             for line in zlib.decompress(lines[4]).decode().splitlines() if line}
    missing = []
    for module_name in public_modules():
        for name in _import(module_name).__all__:
            if _shadowed(module_name, name):
                continue  # rendered by _function_block, not by mkdocstrings
            path = _canonical(module_name, name)
            if path is not None and path not in known:
                missing.append(path)
    if missing:
        log.warning("public names without an API entry: %s", ", ".join(sorted(set(missing))))


# ---------------------------------------------------------------------- generated text
def _run_cli(argv: list[str]) -> str:
    from bilevel_agents.cli import main

    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(argv)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip()


@functools.cache
def cli_help() -> str:
    """``bilevel --help`` and ``bilevel <command> --help`` of every sub-command (and of each
    task of a command that forwards its options, like ``reproduce``)."""
    import argparse

    from bilevel_agents.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sections = [("bilevel --help", ["--help"])]
    for command, subparser in sub.choices.items():
        sections.append((f"bilevel {command} --help", [command, "--help"]))
        forwards = any(a.nargs == argparse.REMAINDER for a in subparser._actions)
        for action in subparser._actions:
            if forwards and action.choices and not action.option_strings:
                sections += [(f"bilevel {command} {task} --help", [command, task, "--help"])
                             for task in action.choices]
    out = []
    for title, argv in sections:
        out.append(f"### `{title}`\n\n```text\n{_run_cli(argv)}\n```\n")
    return "\n".join(out)


#: one problem per family (with the β of its documented experiments, ``default_beta``)
FAMILY_PROBLEMS = (
    ("tabular configurable MDP (Four-Rooms)", "BiLevel/FourRooms-v0"),
    ("continuous configurable MDP (building)", "BiLevel/BuildingThermal-v0"),
    ("tabular Markov game (toy game)", "toy_game_v0"),
    ("linear-Gaussian Markov game (LQR game)", "lqr_game_v0"),
)
_HIDDEN = ("leader", "seed", "beta")


@functools.cache
def _best_response(env: str) -> Any:
    from bilevel_agents.experiments.sweep import default_beta, make_best_response

    return make_best_response(env, default_beta(env))


@functools.cache
def leader_defaults(name: str) -> str:
    """A table of the effective default settings of leader ``name`` on every family."""
    from threadpoolctl import threadpool_limits

    from bilevel_agents.leaders import get_leader

    cls = get_leader(name)
    columns: list[tuple[str, dict[str, Any]]] = []
    with threadpool_limits(limits=1):
        for label, env in FAMILY_PROBLEMS:
            try:
                leader = cls(_best_response(env), seed=0)
            except ValueError:
                continue  # the method is not defined on this family
            columns.append((label, leader.hparams()))
    if not columns:
        return f"*`{name}` is defined on none of the reference problems.*"
    keys: list[str] = []
    for _, hp in columns:
        keys += [k for k in hp if k not in keys and k not in _HIDDEN]

    def cell(hp: dict[str, Any], key: str) -> str:
        if key not in hp:
            return "—"
        value = hp[key]
        return "—" if value is None or value == {} else f"`{value}`"

    head = "| option | " + " | ".join(label for label, _ in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    keys = [k for k in keys if any(cell(hp, k) != "—" for _, hp in columns)]
    rows = [f"| `{k}` | " + " | ".join(cell(hp, k) for _, hp in columns) + " |" for k in keys]
    return "\n".join([head, rule, *rows])
