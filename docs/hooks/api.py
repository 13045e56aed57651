"""The API reference of the site, laid out from the package's ``__all__`` lists (issue 21).

A module is *public* when no part of its dotted path starts with ``_`` (the command line, which
has its own page, is left out); its public names are its ``__all__``. Each public name is
documented once, on the page of the module that defines it; a module that re-exports a name
(``unimix.Mixer`` is ``unimix.mix.Mixer``) links to that page. A re-exported name whose home is
private (or not in its home's ``__all__``) is documented where it is exported.

:func:`check_docstrings` lists every public module and name without a docstring; the build hook
(``docs/hooks/site.py``) fails the build on any. An attribute's docstring is the string literal
after it or, as Sphinx reads them, the ``#:`` comment lines right above it
(:class:`CommentDocstrings`, a griffe extension the site's renderer loads too).

Sphinx roles in docstrings (``:class:`~unimix.plan.MixPlan```, ``:meth:`Mixer.sample```) become
links into the reference (:class:`SphinxRoles`) when their target is documented on the site, and
plain code otherwise, so a role can never break the strict build.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import griffe

PACKAGE = "unimix"
#: Modules with no API page: the command line is documented from its ``--help`` (docs/cli.md).
EXCLUDED = ("unimix.cli", "unimix.commands", "unimix.__main__")


def is_public(path: str) -> bool:
    """Whether the module ``path`` gets an API page."""
    if any(part.startswith("_") for part in path.split(".")):
        return False
    return not any(path == e or path.startswith(e + ".") for e in EXCLUDED)


@functools.lru_cache(maxsize=64)
def _lines(filepath: str) -> tuple[str, ...]:
    return tuple(Path(filepath).read_text(encoding="utf-8").splitlines())


def comment_docstring(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above ``obj``'s first line, as one text (else None)."""
    if obj.lineno is None or obj.filepath is None or isinstance(obj.filepath, list):
        return None
    lines = _lines(str(obj.filepath))
    found: list[str] = []
    i = obj.lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.append(lines[i].lstrip()[2:].removeprefix(" "))
        i -= 1
    return "\n".join(reversed(found)) or None


class CommentDocstrings(griffe.Extension):
    """Attributes documented by ``#:`` comments (Sphinx's convention) get them as docstrings."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is None:
            text = comment_docstring(attr)
            if text:
                attr.docstring = griffe.Docstring(text, lineno=attr.lineno, parent=attr)


def load(search_path: str | Path, package: str = PACKAGE) -> griffe.Module:
    """``package`` as griffe reads it from ``search_path`` (its source, never imported)."""
    return griffe.load(
        package,
        search_paths=[str(search_path)],
        extensions=griffe.load_extensions(CommentDocstrings),
        allow_inspection=False,
    )


def walk_modules(module: griffe.Module) -> list[griffe.Module]:
    """``module`` and its submodules, depth first (imported modules are not submodules)."""
    found = [module]
    for sub in module.modules.values():
        if not sub.is_alias:
            found += walk_modules(sub)
    return found


def _target(obj: griffe.Object | griffe.Alias) -> griffe.Object | None:
    try:
        return obj.final_target if obj.is_alias else obj  # type: ignore[union-attr]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


@dataclass
class Page:
    """The API page of one public module."""

    module: str
    #: Names documented on this page.
    render: list[str] = field(default_factory=list)
    #: Re-exported names: name -> the identifier of the page section that documents it.
    links: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return f"api/{self.module}.md"


@dataclass
class Layout:
    """Every API page, where each public object is documented, and what is wrong."""

    pages: list[Page]
    #: canonical path of a documented object -> the identifier it is documented under
    home: dict[str, str]
    #: public names that are in ``__all__`` but not in the module
    missing: list[str]


def layout(package: griffe.Module) -> Layout:
    """The API pages of ``package`` (see the module docstring for the rule)."""
    modules = [m for m in walk_modules(package) if is_public(m.path)]
    exports = {m.path: [str(getattr(n, "name", n)) for n in (m.exports or [])] for m in modules}
    home: dict[str, str] = {m.path: m.path for m in modules}
    missing: list[str] = []
    for m in modules:  # names defined where they are exported
        for name in exports[m.path]:
            member = m.members.get(name)
            if member is None:
                missing.append(f"{m.path}.{name}")
            elif not member.is_alias and not member.is_module:
                home[member.path] = member.path
    pages = []
    for m in modules:
        page = Page(m.path)
        for name in exports[m.path]:
            member = m.members.get(name)
            if member is None:
                continue
            target = _target(member)
            canonical = target.path if target is not None else None
            if canonical in home and canonical != f"{m.path}.{name}":
                page.links[name] = home[canonical]
            elif member.is_module and canonical == f"{m.path}.{name}":
                page.links[name] = canonical
            else:
                page.render.append(name)
                if canonical is not None and canonical not in home:
                    home[canonical] = f"{m.path}.{name}"
        pages.append(page)
    return Layout(pages, home, missing)


def check_docstrings(package: griffe.Module) -> list[str]:
    """Every public module and public name of ``package`` without a docstring (or missing)."""
    plan = layout(package)
    problems = [f"{path} (in __all__ but not defined)" for path in plan.missing]
    for page in plan.pages:
        module = package.modules_collection[page.module]
        if not (module.docstring and module.docstring.value.strip()):
            problems.append(f"{page.module} (module)")
        for name in page.render:
            target = _target(module.members[name])
            doc = target.docstring if target is not None else None
            if not (doc and doc.value.strip()):
                kind = target.kind.value if target is not None else "unresolved"
                problems.append(f"{page.module}.{name} ({kind})")
    return problems


# --- Sphinx roles -> links --------------------------------------------------------------------

# reStructuredText's "paragraph::" before a literal block; in Markdown the indent alone does it
_LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|attr|data|mod|exc|obj):`(?P<text>[^`]+)`")


def documented_as(obj: griffe.Object, home: dict[str, str]) -> str | None:
    """The identifier under which the site documents ``obj`` (or a public member of it)."""
    if obj.path in home:
        return home[obj.path]
    parent = obj.parent
    if parent is None or obj.name.startswith("_") or parent.is_module:
        return None
    owner = documented_as(parent, home)
    rendered = obj.name in parent.members and obj.docstring is not None  # as mkdocstrings does
    return f"{owner}.{obj.name}" if owner is not None and rendered else None


def _lookup(scope: griffe.Object, dotted: str) -> griffe.Object | None:
    try:
        found = scope[dotted]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return _target(found)


def resolve(owner: griffe.Object, text: str, package: griffe.Module) -> griffe.Object | None:
    """The object a role's ``text`` names, read relative to ``owner`` as Sphinx does."""
    dotted = text.lstrip("~!.").removesuffix("()")
    if dotted == package.name:
        return package
    if dotted.startswith(package.name + "."):
        return _lookup(package, dotted[len(package.name) + 1 :])
    scope: griffe.Object | None = owner
    while scope is not None:
        found = _lookup(scope, dotted)
        if found is not None:
            return found
        scope = scope.parent
    return None


def link_roles(text: str, owner: griffe.Object, package: griffe.Module, home: dict[str, str]) -> str:
    """``text`` with each Sphinx role as a cross-reference (documented target) or as code."""

    def replace(match: re.Match[str]) -> str:
        raw = match["text"]
        shown = raw.lstrip("~!").split(".")[-1] if raw.startswith("~") else raw.lstrip("!")
        target = resolve(owner, raw, package)
        identifier = documented_as(target, home) if target is not None else None
        return f"[`{shown}`][{identifier}]" if identifier else f"`{shown}`"

    return _LITERAL.sub(":", _ROLE.sub(replace, text))


class SphinxRoles(griffe.Extension):
    """Docstrings' Sphinx roles become autorefs links once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        home = layout(pkg).home
        todo: list[griffe.Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None and ":" in obj.docstring.value:  # roles, "::"
                obj.docstring.value = link_roles(obj.docstring.value, obj, pkg, home)
            todo += [m for m in obj.members.values() if not m.is_alias]
