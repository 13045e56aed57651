"""The documentation site (issue 21): built in strict mode, complete, and working in a browser.

``mkdocs build --strict`` (``mkdocs.yml``; ``pip install -e ".[docs]"``) builds the site into a
temporary directory once per session; the tests then check that

- the API reference has an entry for every public name (``__all__`` of every public module) and
  the command-line page carries every option of every command's parser (generated, not copied);
- a public name without a docstring fails the build (the hook in ``docs/hooks/site.py``);
- headless Chromium, offline (no host name resolves, the proxy is a closed port), opens every
  page: each loads, each image decodes, nothing is fetched but local files, no console error, no
  uncaught exception, no failed load; and the site's search answers a query from ``file://``.

Skipped where the ``docs`` extra is not installed; the browser tests where no Chromium is.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_browser import _CSS_URL, _RESOURCE, _browser, offline_chromium

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"


def _need_docs_extra() -> None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install '.[docs]')")


def _mkdocs(config: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "NO_MKDOCS_2_WARNING": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as ``mkdocs build --strict`` writes it (about 15 s)."""
    _need_docs_extra()
    out = tmp_path_factory.mktemp("site") / "site"
    done = _mkdocs(ROOT / "mkdocs.yml", out, ROOT)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def api():
    _need_docs_extra()
    sys.path.insert(0, str(HOOKS))
    try:
        import api as module
    finally:
        sys.path.remove(str(HOOKS))
    return module


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


# --- the build ------------------------------------------------------------------------------


def test_every_public_name_has_an_entry(site: Path, api) -> None:
    layout = api.layout(api.load(ROOT / "src"))
    assert len(layout.pages) >= 40 and not layout.missing
    names = 0
    for page in layout.pages:
        text = (site / page.file).with_suffix(".html").read_text(encoding="utf-8")
        ids = set(re.findall(r'\bid="([^"]+)"', text))
        for name in page.render:
            assert f"{page.module}.{name}" in ids, f"no API entry for {page.module}.{name}"
            names += 1
        for name, target in page.links.items():  # a re-export links to where it is documented
            module = target if target in {p.module for p in layout.pages} else None
            anchor = "" if module else "#" + re.escape(target)
            assert re.search(rf'href="[^"]*{anchor}"', text), f"{page.module}.{name}: no link"
    assert names >= 300


def test_docstring_roles_become_links(site: Path) -> None:
    role = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`")
    links = 0
    for page in (site / "api").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not role.search(html.unescape(text)), f"{page.name}: a Sphinx role left as text"
        links += len(re.findall(r'class="autorefs autorefs-internal"', text))
    # e.g. unimix.mix's docstring: ":meth:`Mixer.sample`" -> a link to the method's entry
    mix = (site / "api" / "unimix.mix.html").read_text(encoding="utf-8")
    assert re.search(r'href="#unimix\.mix\.Mixer\.sample"[^>]*>\s*<code>Mixer\.sample</code>', mix)
    assert links >= 300


def test_the_command_line_page_is_every_parser_help(site: Path) -> None:
    from unimix.cli import COMMANDS, build_parser

    text = html.unescape(re.sub(r"<[^>]+>", "", (site / "cli.html").read_text(encoding="utf-8")))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in COMMANDS:
        assert f"usage: unimix {name}" in text
        for action in sub.choices[name]._actions:
            for option in action.option_strings:
                if action.help != "==SUPPRESS==":
                    assert option in text, f"unimix {name} {option} is not on the CLI page"


def test_the_gallery_is_drawn_at_build_time(site: Path) -> None:
    png = site / "img" / "gallery-generated.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "img/gallery-generated.png" in (site / "gallery.html").read_text(encoding="utf-8")


def test_the_site_references_nothing_on_the_network(site: Path) -> None:
    for path in [*_pages(site), *site.rglob("*.css")]:
        text = path.read_text(encoding="utf-8")
        urls = [m["url"] for m in _RESOURCE.finditer(text)]
        urls += [m["url"] or m["imp"] for m in _CSS_URL.finditer(text)]
        remote = [u for u in urls if urlparse(html.unescape(u)).scheme in ("http", "https")]
        remote += [u for u in urls if u.startswith("//")]
        assert not remote, f"{path.relative_to(site)} loads {remote} from the network"


# --- a public name without a docstring fails the build ---------------------------------------


def _toy_package(root: Path, documented: bool) -> Path:
    src = root / "src" / "toypkg"
    src.mkdir(parents=True)
    doc = '    """Add one."""\n' if documented else ""
    (src / "__init__.py").write_text(
        f'"""A toy package."""\n\n__all__ = ["add_one", "LIMIT"]\n\n'
        f"#: The largest value.\nLIMIT = 3\n\n\ndef add_one(x: int) -> int:\n{doc}    return x + 1\n",
        encoding="utf-8",
    )
    return root / "src"


def test_the_check_names_an_undocumented_public_name(tmp_path: Path, api) -> None:
    good = _toy_package(tmp_path / "good", documented=True)
    bad = _toy_package(tmp_path / "bad", documented=False)
    assert api.check_docstrings(api.load(good, "toypkg")) == []
    assert api.check_docstrings(api.load(bad, "toypkg")) == ["toypkg.add_one (function)"]


def test_the_real_package_without_one_docstring_is_refused(tmp_path: Path, api) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "unimix", src / "unimix")
    blend = src / "unimix" / "blend.py"
    text = blend.read_text(encoding="utf-8")
    head, tail = text.split("\ndef select(", 1)
    signature, rest = tail.split('"""', 1)
    _, after = rest.split('"""', 1)
    blend.write_text(head + "\ndef select(" + signature + "pass" + after, encoding="utf-8")
    assert api.check_docstrings(api.load(ROOT / "src")) == []
    assert api.check_docstrings(api.load(src)) == ["unimix.blend.select (function)"]


def test_a_build_with_an_undocumented_public_name_fails(tmp_path: Path) -> None:
    _need_docs_extra()
    for documented in (True, False):
        project = tmp_path / ("good" if documented else "bad")
        _toy_package(project, documented)
        (project / "docs").mkdir()
        (project / "docs" / "index.md").write_text("# Toy\n", encoding="utf-8")
        (project / "mkdocs.yml").write_text(
            textwrap.dedent(
                f"""\
                site_name: toy
                hooks: [{HOOKS / 'site.py'}]
                extra: {{api: {{package: toypkg, src: src, command_pages: false}}}}
                nav: [{{Home: index.md}}]
                """
            ),
            encoding="utf-8",
        )
        done = _mkdocs(project / "mkdocs.yml", project / "site", project)
        if documented:
            assert done.returncode == 0, done.stderr[-3000:]
        else:
            assert done.returncode != 0
            assert "without a docstring: toypkg.add_one (function)" in done.stderr


# --- the site in a browser -------------------------------------------------------------------

# Injected first into every page's <head>: records uncaught errors, failed loads and
# console.error calls; once loaded (and, for a search, once the search has answered), posts the
# page's images, fetched resources, errors and search results to the driver page.
PROBE = """<script>
(function () {
  const errors = [];
  window.addEventListener("error", (event) => {
    const target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      errors.push("failed to load " + (target.src || target.href));
    } else {
      errors.push("uncaught: " + (event.message || String(event.error)));
    }
  }, true);
  window.addEventListener("unhandledrejection", (event) => {
    errors.push("unhandled rejection: " + String(event.reason));
  });
  const consoleError = console.error;
  console.error = (...args) => {
    errors.push("console.error: " + args.map(String).join(" "));
    consoleError.apply(console, args);
  };
  function report() {
    const images = Array.from(document.images).map((img) => ({
      src: img.currentSrc.slice(-80),
      complete: img.complete,
      width: img.naturalWidth,
      height: img.naturalHeight,
    }));
    const fetched = performance.getEntriesByType("resource").map((entry) => entry.name);
    const results = document.querySelectorAll(".md-search-result__item").length;
    const meta = document.querySelector(".md-search-result__meta");
    const page = location.pathname.slice(1) + location.search;
    parent.postMessage({ page, title: document.title, images, fetched, errors, results,
                         meta: meta ? meta.textContent.trim() : null }, "*");
  }
  window.addEventListener("load", () => {
    if (!location.search.includes("q=")) return setTimeout(report, 200);
    let tries = 0;  // a search: wait until the worker has indexed the site and answered
    const poll = setInterval(() => {
      const meta = document.querySelector(".md-search-result__meta");
      tries += 1;
      if ((meta && !/Initializing/.test(meta.textContent)) || tries > 120) {
        clearInterval(poll);
        report();
      }
    }, 250);
  });
})();
</script>
"""

# Loads the pages a few at a time in iframes and sends each one's report to the test's server.
DRIVER = """<!doctype html><html><body><script>
const pages = PAGES;
let next = 0;
let open = 0;
function load() {
  while (open < PARALLEL && next < pages.length) {
    const frame = document.createElement("iframe");
    frame.width = 1280;
    frame.height = 900;
    frame.dataset.page = pages[next++];
    frame.src = frame.dataset.page;
    document.body.appendChild(frame);
    open += 1;
  }
  if (open === 0) fetch("/done", { method: "POST", body: "{}" });
}
window.addEventListener("message", async (event) => {
  const frame = document.querySelector(`iframe[data-page="${CSS.escape(event.data.page)}"]`);
  if (!frame) return;
  await fetch("/report", { method: "POST", body: JSON.stringify(event.data) });
  frame.remove();
  open -= 1;
  load();
});
load();
</script></body></html>
"""


class _Collector(http.server.SimpleHTTPRequestHandler):
    """Serves the site; ``POST /report`` stores a page's report, ``POST /done`` ends the run."""

    reports: dict[str, dict]
    done: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/report":
            data = json.loads(body)
            self.server.reports[data["page"]] = data  # type: ignore[attr-defined]
        elif self.path == "/done":
            self.server.done.set()  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()


def _render_site(site: Path, tmp_path: Path, pages: list[str]) -> dict[str, dict]:
    """Open each of ``pages`` (relative to the site) in headless Chromium, offline: the site is
    served on the loopback interface (as ``mkdocs serve`` would); no host name resolves and the
    proxy is a closed port, so nothing else can be reached. Each page's probe report."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    probe_site = tmp_path / "site-probe"
    shutil.copytree(site, probe_site)
    for path in probe_site.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        at = text.lower().find("<head>")
        assert at >= 0, f"{path.name} has no <head>"
        path.write_text(text[: at + 6] + PROBE + text[at + 6 :], encoding="utf-8")
    driver = DRIVER.replace("PAGES", json.dumps(pages)).replace("PARALLEL", "4")
    (probe_site / "driver.html").write_text(driver, encoding="utf-8")
    handler = functools.partial(_Collector, directory=str(probe_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.reports, server.done = {}, threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    command = [*offline_chromium(browser, tmp_path / "profile", loopback=True), base + "driver.html"]
    chromium = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        finished = server.done.wait(timeout=30 + 5 * len(pages))  # type: ignore[attr-defined]
    finally:
        chromium.kill()
        _, stderr = chromium.communicate()
        server.shutdown()
        server.server_close()
    reports: dict[str, dict] = server.reports  # type: ignore[attr-defined]
    assert finished, (
        f"Chromium did not finish: {len(reports)} of {len(pages)} pages reported\n"
        + stderr.decode(errors="replace")[-3000:]
    )
    for report in reports.values():
        report["fetched"] = [u for u in report["fetched"] if not u.startswith(base)]
    return reports


def test_every_page_renders_offline_in_chromium(site: Path, tmp_path: Path) -> None:
    paths = _pages(site)
    pages = [p.relative_to(site).as_posix() for p in paths]
    reports = _render_site(site, tmp_path, pages)
    assert sorted(reports) == sorted(pages)
    images = 0
    for path, page in zip(paths, pages, strict=True):
        report = reports[page]
        assert report["title"], f"{page}: no title"
        expected = len(re.findall(r"<img\b", path.read_text(encoding="utf-8"), re.IGNORECASE))
        assert len(report["images"]) == expected, f"{page}: {report['images']}"
        broken = [i for i in report["images"] if not (i["complete"] and i["width"] > 0)]
        assert not broken, f"{page}: images that did not decode: {broken}"
        remote = [u for u in report["fetched"] if urlparse(u).scheme not in ("data", "blob")]
        assert not remote, f"{page} fetched from the network: {remote}"
        assert not report["errors"], f"{page}: {report['errors']}"
        images += expected
    assert images >= 5  # the gallery (twice), the theory's figures


def test_search_answers_offline(site: Path, tmp_path: Path) -> None:
    pages = ["index.html?q=gmix", "index.html?q=zzqqxxnothing"]
    reports = _render_site(site, tmp_path, pages)
    found, nothing = reports[pages[0]], reports[pages[1]]
    assert not found["errors"] and not nothing["errors"], (found["errors"], nothing["errors"])
    assert found["results"] >= 3, f"search for 'gmix' found nothing: {found['meta']!r}"
    assert nothing["results"] == 0 and "No matching" in nothing["meta"], nothing["meta"]
    assert not found["fetched"] and not nothing["fetched"]
