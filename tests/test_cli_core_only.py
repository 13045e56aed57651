"""A core-only install (torch and numpy, no extras) as the normal suite can simulate it.

A fresh interpreter marks every optional module as absent (``sys.modules[name] = None``: an
import then raises ModuleNotFoundError and ``importlib.util.find_spec`` answers None, exactly as
when the package is not installed). ``import unimix``, ``unimix --help``/``--version`` and
``python -m unimix`` must work; a command that needs an extra stops with one line naming it.
The real thing, a wheel installed in a fresh venv, runs in CI (.ci/run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from unimix.cli import COMMANDS
from unimix.errors import EXTRA_OF_MODULE

OPTIONAL = sorted(EXTRA_OF_MODULE)

SCRIPT = """
import contextlib, io, json, sys
for name in {optional!r}:
    sys.modules[name] = None
import unimix
from unimix.cli import main
results = []
for argv in {calls!r}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    results.append([argv, code, out.getvalue(), err.getvalue()])
print(json.dumps({{"version": unimix.__version__, "results": results}}))
"""


def run_core_only(calls: list[list[str]], cwd) -> dict:
    code = SCRIPT.format(optional=OPTIONAL, calls=calls)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def core_only(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("core")
    (tmp / "run").mkdir()
    (tmp / "run" / "checkpoint.pt").write_bytes(b"x")
    calls = [
        ["--help"],
        ["--version"],
        ["study", "--out", "s"],
        ["train", "--out", "r"],
        ["train", "--help"],
        ["study", "--help"],
        ["evaluate", "--help"],
        ["profile", "--help"],
        ["gallery", "--help"],
        ["predict", "--help"],
        ["evaluate", "run"],
        ["profile", "--out", "p"],
        ["gallery", "--out", "g.png"],
    ]
    report = run_core_only(calls, tmp)
    report["tmp"] = tmp
    return report


def test_import_and_help_need_only_the_core(core_only):
    by_argv = {" ".join(argv): (code, out, err) for argv, code, out, err in core_only["results"]}
    code, out, err = by_argv["--help"]
    assert code == 0 and err == ""
    for command in COMMANDS:
        assert command in out
    code, out, _ = by_argv["--version"]
    assert code == 0 and out.strip() == f"unimix {core_only['version']}"


@pytest.mark.parametrize(
    "argv, extra",
    [
        ("study --out s", "study"),
        ("train --out r", "study"),
        ("evaluate run", "study"),
        ("profile --out p", "theory"),
        ("gallery --out g.png", "study"),
    ],
)
def test_a_command_needing_an_extra_stops_with_one_line(core_only, argv, extra):
    by_argv = {" ".join(a): (code, out, err) for a, code, out, err in core_only["results"]}
    code, _, err = by_argv[argv]
    command = argv.split()[0]
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"unimix {command}: error: this command needs the '{extra}' extra")
    assert f"pip install 'unimix[{extra}]'" in err
    tmp = core_only["tmp"]
    assert sorted(p.name for p in tmp.iterdir()) == ["run"]  # nothing written


def test_python_dash_m_unimix(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "unimix", "--help"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "COMMAND" in proc.stdout and proc.stderr == ""


def test_every_commands_help_works_with_the_core_only(core_only):
    """Issue 20 item 19: ``--help`` of every command, study and train included, needs no extra."""
    by_argv = {" ".join(argv): (code, out, err) for argv, code, out, err in core_only["results"]}
    for command in COMMANDS:
        code, out, err = by_argv[f"{command} --help"]
        assert code == 0 and err == "", (command, err)
        assert f"usage: unimix {command}" in out
