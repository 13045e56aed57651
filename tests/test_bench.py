"""Smoke test of benchmarks/bench_mix.py: it runs and reports every method; timings are not checked."""

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest

from unimix.registry import available

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mix.py"
TINY = ["--quick", "--sizes", "8x8x4:5", "--min-time", "0.001"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mix", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_mix"] = module  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_mix"]


def test_reports_every_registered_method_and_mode(bench, tmp_path, capsys):
    out = tmp_path / "results.md"
    assert bench.main([*TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text(encoding="utf-8").strip() == printed.strip()
    rows = [line.split(" | ") for line in printed.splitlines() if line.startswith("| ")][1:]
    seen = {(r[0].lstrip("| ").split(" [")[0], r[1], r[3]) for r in rows}
    for method in available():  # includes methods registered by importing the script
        for mode in bench.MODES:
            assert (method, mode, "float32") in seen
    for method in bench.UINT8_METHODS:
        assert (method, "batch", "uint8") in seen
    assert "### Targets" in printed
    assert "unimix in-place / timm in-place" in printed  # timm is a test dependency
    assert "unimix out-of-place / torchvision" in printed


def test_a_method_that_cannot_run_is_skipped_with_its_reason(bench, monkeypatch, capsys):
    from unimix import masks, registry

    class Broken(masks.MaskSampler):
        def sample(self, lam, height, width, device, generator):
            raise RuntimeError("needs something the benchmark lacks")

    registry.register("broken")(Broken)
    try:
        assert bench.main([*TINY, "--methods", "broken", "mixup"]) == 0
    finally:
        registry.unregister("broken")
    printed = capsys.readouterr().out
    assert "broken [1]" in printed and "needs something the benchmark lacks" in printed
    assert "| mixup | elem |" in printed


def test_runs_as_a_script(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *TINY, "--methods", "cutmix"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    assert "| cutmix | elem | 8×8×4 | float32 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--sizes", "8x8x3"], ["--sizes", "8x8"], ["--rounds", "0"]])
def test_bad_arguments_exit_with_usage(bench, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and "usage" in capsys.readouterr().err


def test_theory_benchmark_reports_time_and_memory_per_method():
    import subprocess

    script = SCRIPT.with_name("bench_theory.py")
    cmd = [
        sys.executable,
        str(script),
        "--size",
        "12",
        "--samples",
        "8",
        "--methods",
        "cutmix",
        "gmix",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == ["cutmix", "gmix"]
    # the size of the dense [HW, HW] float64 matrix, to 4 significant digits (0.1582 MiB)
    exact = (12**2) ** 2 * 8 / 2**20
    for row in rows:
        cells = [c.strip() for c in row.strip("| ").split(" | ")]
        seconds, peak, dense, ratio = (float(c) for c in cells[1:])
        assert dense == pytest.approx(exact, rel=5e-4)
        assert seconds >= 0 and peak >= 0
        assert ratio == pytest.approx(peak / dense, rel=1e-3, abs=1e-3)


def test_mutation_script_table_and_arguments(capsys):
    """benchmarks/mutation.py (run by hand, not in CI): its module table names files that exist,
    and bad arguments exit with usage before any mutant is made (mutmut is not needed for that)."""
    script = SCRIPT.with_name("mutation.py")
    spec = importlib.util.spec_from_file_location("bench_mutation", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_mutation"] = module  # its dataclasses resolve annotations through it
    try:
        spec.loader.exec_module(module)
        root = script.parents[1]
        assert set(module.MODULES) == {
            "masks",
            "mix",
            "plan",
            "blend",
            "targets",
            "collate",
            "compat",
            "attacks",
            "checkpoint",
        }
        for entry in module.MODULES.values():
            assert (root / entry.path).is_file(), entry.path
            assert all((root / t).is_file() for t in entry.tests), entry.tests
        for argv in (["--sample", "0"], ["--modules", "nope"], ["--jobs", "0"]):
            with pytest.raises(SystemExit) as exit_info:
                module.main(argv)
            assert exit_info.value.code == 2 and "usage" in capsys.readouterr().err
    finally:
        del sys.modules["bench_mutation"]
