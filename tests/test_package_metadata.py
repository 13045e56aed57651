"""Packaging hygiene (issue 10, item 7): licence, classifiers, ``py.typed``, one version source."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unimix

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_the_declared_license() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    # PEP 639: a licence expression and a "License ::" classifier must not both be given.
    assert not any(c.startswith("License ::") for c in project["classifiers"])


def test_build_backend_accepts_the_spdx_license() -> None:
    requires = PYPROJECT["build-system"]["requires"]
    setuptools = [r for r in requires if r.startswith("setuptools")]
    assert setuptools and setuptools[0].replace(" ", "") in {
        f"setuptools>={v}" for v in range(77, 200)
    }


def test_classifiers_and_typed_marker() -> None:
    classifiers = PYPROJECT["project"]["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    assert (ROOT / "src" / "unimix" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["unimix"]


def test_version_has_one_source() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "unimix.__version__"}
    try:
        installed = importlib.metadata.version("unimix")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("unimix is not installed (running from the source tree)")
    assert installed == unimix.__version__


def test_compat_is_an_attribute_and_import_stays_light() -> None:
    code = (
        "import sys, unimix\n"
        "assert 'timm' not in sys.modules and 'unimix.compat' not in sys.modules\n"
        "assert unimix.compat.MixCollate is not None\n"
        "assert 'timm' not in sys.modules, 'unimix.compat must not import timm at module level'\n"
        "try:\n"
        "    unimix.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('unknown attribute did not raise AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_wheel_carries_license_typing_marker_and_metadata(tmp_path: Path) -> None:
    import zipfile
    from email.parser import Parser

    pytest.importorskip("setuptools")
    # a clean copy of what the wheel is built from: no stale build/ or egg-info of the checkout
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, project / name)
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", project / "src", ignore=ignore)
    dist = tmp_path / "dist"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 and "No module named pip" in done.stderr:
        pytest.skip("pip is not installed")
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = dist.glob("unimix-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(meta_name).decode("utf-8"))
    assert "unimix/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.startswith("unimix/recipes/") and n.endswith(".yaml") for n in names)
    assert meta["Version"] == unimix.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in meta.get_all("Classifier")
