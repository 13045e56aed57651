"""The study report in a real browser (issue 10, item 9).

A tiny study (``unimix study --quick`` on two methods) writes ``report.html``; headless Chromium
opens a copy of it with a probe script appended, offline (every host name resolves to nothing and
the proxy is a closed port), and the probe records, after the load event, each ``<img>``'s
natural size and every resource the page fetched (Resource Timing). Every figure must have
decoded (``naturalWidth > 0``) and nothing may have been fetched but local files. Skipped where
no Chromium is installed (``apt-get install chromium``; ``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map((img) => ({
    src: img.currentSrc.slice(0, 64),
    complete: img.complete,
    width: img.naturalWidth,
    height: img.naturalHeight,
  }));
  const fetched = performance.getEntriesByType("resource").map((entry) => entry.name);
  const out = document.createElement("pre");
  out.id = "unimix-browser-check";
  out.textContent = JSON.stringify({ images, fetched });
  document.body.appendChild(out);
});
</script>
"""

# An attribute that makes the browser fetch something (not <a href>, which only links).
_RESOURCE = re.compile(
    r"<(?P<tag>img|script|link|iframe|source|video|audio|embed|object|input)\b[^>]*?"
    r"\b(?P<attr>src|href|data|srcset|poster)\s*=\s*[\"']?(?P<url>[^\"'\s>]+)",
    re.IGNORECASE,
)
_CSS_URL = re.compile(r"url\(\s*[\"']?(?P<url>[^\"')]+)|@import\s+[\"']?(?P<imp>[^\"';\s]+)")


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``report.html`` of the smallest study the CLI runs (about 20 s on one core)."""
    for module in ("sklearn", "matplotlib", "yaml"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("study") / "study"
    base = [sys.executable, "-m", "unimix.cli", "study", "--methods", "none,mixup"]
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    tries = (["--quick"], ["--seeds", "1", "--epochs", "1"])  # --quick where the CLI has it
    for extra in tries:
        done = subprocess.run(
            [*base, *extra, "--out", str(out), "--no-progress"],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        if done.returncode == 0:
            break
        if "unrecognized arguments" not in done.stderr:
            pytest.fail(f"unimix study failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    path = out / "report.html"
    assert path.is_file(), f"unimix study wrote no report.html:\n{done.stdout[-2000:]}"
    return path


def _local(url: str, base: Path) -> Path | None:
    """The file a relative or file: URL points to, else None."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme or url.startswith("//"):
        return None
    return base / unquote(parsed.path)


def test_report_references_no_network_resource(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    urls = [m["url"] for m in _RESOURCE.finditer(text)]
    urls += [m["url"] or m["imp"] for m in _CSS_URL.finditer(text)]
    assert any(u.startswith("data:image/") for u in urls), "the report has no embedded figure"
    for url in urls:
        if url.startswith("data:"):
            continue
        local = _local(html.unescape(url), report.parent)
        assert local is not None, f"report.html fetches {url!r} from the network"
        assert local.is_file(), f"report.html refers to a missing file {url!r}"


def offline_chromium(browser: str, profile: Path, loopback: bool = False) -> list[str]:
    """Headless Chromium that cannot reach the network: no host name resolves (``loopback``:
    but 127.0.0.1, where a test serves pages) and the proxy is a closed port."""
    rules = "MAP * ~NOTFOUND" + (", EXCLUDE 127.0.0.1" if loopback else "")
    return [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        f"--host-resolver-rules={rules}",
        "--proxy-server=127.0.0.1:9",
    ]


def _render(page: Path, profile: Path) -> dict[str, list]:
    """Open ``page`` with the probe appended in headless Chromium, offline; the probe's record."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    text = page.read_text(encoding="utf-8")
    at = text.lower().rfind("</body>")
    probe = page.with_name(page.stem + ".browser-probe.html")  # beside it: relative paths work
    probe.write_text(text[:at] + PROBE + text[at:] if at >= 0 else text + PROBE, encoding="utf-8")
    command = [
        *offline_chromium(browser, profile),
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="unimix-browser-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found is not None, (
        f"Chromium rendered no probe result (exit {done.returncode}):\n{done.stderr[-3000:]}"
    )
    return json.loads(html.unescape(found[1]))


def _broken(images: list[dict]) -> list[dict]:
    return [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]


def _remote(fetched: list[str]) -> list[str]:
    return [u for u in fetched if urlparse(u).scheme not in ("file", "data")]


def test_the_probe_sees_broken_figures_and_network_fetches(tmp_path: Path) -> None:
    # the check itself, on a page that is wrong in every way it looks for
    png = (  # a 1×1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    page = tmp_path / "page.html"
    page.write_text(
        f'<html><head><link rel="stylesheet" href="https://example.com/a.css"></head><body>'
        f'<img src="data:image/png;base64,{png}"><img src="missing.png">'
        f'<img src="http://example.org/x.png"></body></html>',
        encoding="utf-8",
    )
    result = _render(page, tmp_path / "profile")
    assert len(result["images"]) == 3
    assert [i["src"][:5] for i in _broken(result["images"])] == ["file:", "http:"]
    assert sorted(_remote(result["fetched"])) == [
        "http://example.org/x.png",
        "https://example.com/a.css",
    ]


def test_report_renders_offline_in_chromium(report: Path, tmp_path: Path) -> None:
    text = report.read_text(encoding="utf-8")
    expected_images = len(re.findall(r"<img\b", text, flags=re.IGNORECASE))
    result = _render(report, tmp_path / "profile")
    images = result["images"]
    assert len(images) == expected_images >= 1
    assert not _broken(images), f"figures that did not load: {_broken(images)}"
    remote = _remote(result["fetched"])
    assert not remote, f"the report fetched from the network: {remote}"
