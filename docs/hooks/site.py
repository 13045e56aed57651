"""MkDocs hooks of the documentation site (issue 21): the pages made from the code at build time.

- **API reference** — one page per public module (``docs/hooks/api.py`` lays them out from the
  ``__all__`` lists), rendered by mkdocstrings; the build fails, naming them, when a public module
  or name has no docstring.
- **Command line** — ``cli.md``: ``unimix --help`` and every command's ``--help``, as the installed
  parser prints them (never copied by hand).
- **Gallery** — ``img/gallery-generated.png``, drawn by ``unimix gallery`` during the build.

The package is read from ``extra.api.src`` (default ``src``, relative to ``mkdocs.yml``) and
``extra.api.package`` (default ``unimix``); ``extra.api.command_pages: false`` leaves out the
command-line page and the gallery (which run ``unimix``), as the tests' toy builds do.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # noqa: E402  (the hooks folder is not a package)

_state: dict[str, Any] = {}


def _settings(config: MkDocsConfig) -> tuple[str, Path]:
    extra = dict(config.extra.get("api") or {})
    root = Path(config.config_file_path).resolve().parent
    return extra.get("package", api.PACKAGE), root / extra.get("src", "src")


def _nav(layout: api.Layout) -> list[Any]:
    """The API section of the navigation: the package, its modules, then one section per
    subpackage (its own page first), each in alphabetical order."""
    pages = sorted(layout.pages, key=lambda p: p.module)
    packages = {p.module for p in pages if any(q.module.startswith(p.module + ".") for q in pages)}
    root = pages[0].module
    entries: list[Any] = [{root: pages[0].file}]
    sections: dict[str, list[Any]] = {}
    for page in pages[1:]:
        top = ".".join(page.module.split(".")[:2])
        if top in packages:
            sections.setdefault(top, []).append({page.module: page.file})
        else:
            entries.append({page.module: page.file})
    return entries + [{name: items} for name, items in sections.items()]


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    package_name, src = _settings(config)
    package = api.load(src, package_name)
    problems = api.check_docstrings(package)
    if problems:
        raise PluginError(
            f"{len(problems)} public name(s) of {package_name} without a docstring: "
            + "; ".join(problems)
        )
    layout = api.layout(package)
    if str(src) not in sys.path[:1]:  # the command-line page and the gallery run this checkout
        sys.path.insert(0, str(src))
    _state.update(package=package, layout=layout, package_name=package_name, src=src)
    for entry in config.nav or []:
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = [{"Overview": "api/index.md"}, *_nav(layout)]
    return config


def _summary(obj: Any, page_module: str) -> str:
    target = obj.final_target if obj.is_alias else obj
    doc = target.docstring.value if target.docstring is not None else ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
    return api.link_roles(first, target, _state["package"], _state["layout"].home)


def api_page(page: api.Page) -> str:
    """The Markdown of one module's API page."""
    package = _state["package"]
    module = package.modules_collection[page.module]
    lines = [f"# `{page.module}`", "", f"::: {page.module}", "    options:"]
    lines += ["      show_root_heading: false", "      members:" if page.render else "      members: []"]
    lines += [f"        - {name}" for name in page.render]
    if page.links:
        lines += ["", "## Also exported here", "", "| name | documented at | summary |", "|---|---|---|"]
        for name, target in page.links.items():
            summary = _summary(module.members[name], page.module)
            lines.append(f"| `{name}` | [`{target}`][{target}] | {summary} |")
    return "\n".join(lines) + "\n"


def api_index() -> str:
    layout: api.Layout = _state["layout"]
    package = _state["package"]
    lines = [
        "# API reference",
        "",
        f"Generated from the docstrings of every public module of `{_state['package_name']}` (no",
        "part of its path starts with `_`) and every name in its `__all__`. Each name is documented",
        "once, where it is defined; the modules that re-export it link there. A public name without",
        "a docstring fails the build.",
        "",
        "| module | summary |",
        "|---|---|",
    ]
    for page in layout.pages:
        module = package.modules_collection[page.module]
        lines.append(f"| [`{page.module}`][{page.module}] | {_summary(module, page.module)} |")
    return "\n".join(lines) + "\n"


def _help(argv: list[str]) -> str:
    from unimix.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
    return out.getvalue().rstrip()


def cli_page() -> str:
    """Every command's ``--help``, generated from the parser at build time."""
    from unimix.cli import COMMANDS

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page wants one width
    try:
        helps = {"unimix": _help(["--help"])} | {f"unimix {c}": _help([c, "--help"]) for c in COMMANDS}
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    lines = [
        "# Command line",
        "",
        "`pip install 'unimix[study]'` installs the `unimix` command (`python -m unimix` is the",
        "same). Every section below is the command's own `--help`, printed by the installed parser",
        "when this site was built. An error is one line, `unimix CMD: error: …`, with exit status 2;",
        "`unimix --debug CMD …` shows the traceback instead.",
        "",
    ]
    for name, text in helps.items():
        anchor = name.replace(" ", "-") + "-help"
        lines += [f"## `{name}` {{ #{anchor} }}", "", "```text", text, "```", ""]
    return "\n".join(lines)


def _gallery() -> bytes:
    from unimix.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gallery.png"
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["gallery", "--out", str(out), "--seed", "0"])
        if status != 0 or not out.is_file():
            raise PluginError(f"unimix gallery failed (exit {status})")
        return out.read_bytes()


def _check_imported_from(src: Path) -> None:
    import unimix

    if not Path(unimix.__file__).resolve().is_relative_to(src.resolve()):
        raise PluginError(f"unimix was imported from {unimix.__file__}, not from {src}")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    generated = {"api/index.md": api_index()}
    generated |= {page.file: api_page(page) for page in _state["layout"].pages}
    command_pages = (config.extra.get("api") or {}).get("command_pages", True)
    if command_pages:
        _check_imported_from(_state["src"])
        generated["cli.md"] = cli_page()
    for path, text in generated.items():
        files.append(File.generated(config, path, content=text))
    if command_pages:
        files.append(File.generated(config, "img/gallery-generated.png", content=_gallery()))
    return files
