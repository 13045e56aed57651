"""Mutation testing of unimix's core modules: do the tests notice when the code is wrong?

    python benchmarks/mutation.py                      # every core module, every mutant
    python benchmarks/mutation.py --modules masks attacks --sample 80 --timeout 1200

A mutation tool (mutmut, ``pip install -e ".[mutation]"``) makes many small wrong versions of a
module — ``<`` for ``<=``, ``1`` for ``2``, a dropped call, a changed string — and runs the
module's fast tests against each. A mutant the tests fail on is *killed*; one they pass on
*survived*: either a missing test or an *equivalent* mutant (one that changes no behaviour; see
docs/mutation.md for the known ones and why); a mutant in a function no selected test runs
counts as a survivor ("no test"). The mutation score is ``killed / checked`` (timeouts count
as killed).

Each module runs in its own scratch directory (``--workdir``) holding a copy of the source tree
(``--root``, the repository by default) and of the module's test files only (from ``--tests``,
``<root>/tests`` by default; files missing there are skipped), so a run never touches the
working tree and the "before" and "after" of a change can be measured on the same source with
two test directories. Only the smallest fast test selection covering each module runs (see
``MODULES``), with hypothesis derandomised so a verdict is reproducible. ``--sample N`` checks a
seeded random sample of N mutants per module instead of all of them (the score is then an
estimate; its binomial standard error is printed).

It prints, per module, the mutants generated, checked, killed, survived and the score, and
every surviving mutant with its diff (``--no-diffs`` for names only). It is slow (minutes per
module on one core) and so not part of CI's default run. Exit status 0 when every module ran.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Module:
    """A core module and the fast tests that cover it (``select``: a pytest ``-k`` expression)."""

    path: str
    tests: tuple[str, ...]
    select: str | None = None


# The fast tests of each core module: the module's own test files (and those of its callers).
MODULES: dict[str, Module] = {
    "masks": Module("src/unimix/masks.py", ("tests/test_masks.py",)),
    "mix": Module(
        "src/unimix/mix.py",
        (
            "tests/test_mix.py",
            "tests/test_methods_extra.py",  # image-dependent methods: the engine's other branch
            "tests/test_custom_method.py",
            "tests/test_collate.py",
            "tests/test_masks.py",
            "tests/test_label_weight.py",  # issue 12
            "tests/test_engine_reliability.py",  # issue 11
        ),
    ),
    "plan": Module(
        "src/unimix/plan.py",  # MixPlan's validation, Measured, unit_masks
        ("tests/test_plan.py", "tests/test_golden_plans.py", "tests/test_mix.py"),
    ),
    "blend": Module(
        "src/unimix/blend.py",  # the mixing kernels: paste, select, lerp, exact blend
        ("tests/test_mix.py", "tests/test_plan.py", "tests/test_engine_reliability.py"),
    ),
    "targets": Module(
        "src/unimix/targets.py",  # one-hot, smoothing, label mixing, soft-target loss
        (
            "tests/test_mix.py",
            "tests/test_label_weight.py",
            "tests/test_compat.py",
            "tests/test_integrations_torchvision.py",
        ),
    ),
    "collate": Module(
        "src/unimix/collate.py",  # MixCollate: collate-time mixing, per-worker streams
        ("tests/test_collate.py", "tests/test_compat.py", "tests/test_integrations_hf.py"),
    ),
    "compat": Module(
        "src/unimix/timm_mixup.py",  # TimmMixup and mixup_target; unimix.compat re-exports them
        ("tests/test_compat.py", "tests/test_collate.py"),
    ),
    "attacks": Module(
        "src/unimix/evaluate/attacks.py",
        ("tests/test_evaluate.py", "tests/test_attacks.py"),
        select="attack or pgd or fgsm or eps or perturbation or margin or frozen",
    ),
    "checkpoint": Module(
        "src/unimix/train/checkpoint.py",
        (
            "tests/test_train.py",
            "tests/test_train_reliability.py",  # checksummed checkpoints (issue 11)
            "tests/test_checkpoint.py",
        ),
        select="resume or checkpoint or rng or finished",
    ),
}


@dataclass
class Score:
    """Verdicts of one module's run."""

    module: str
    generated: int = 0
    statuses: dict[str, str] = field(default_factory=dict)  # mutant name -> verdict
    seconds: float = 0.0
    error: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    @property
    def checked(self) -> int:
        """Mutants with a verdict: killed, timed out, survived, or run by no test (a survivor
        too: nothing covers the mutated function); not those skipped or left unrun."""
        return sum(self.count(s) for s in ("killed", "survived", "timeout", "no tests"))

    @property
    def killed(self) -> int:
        # a mutant that makes the tests run past their time limit is detected too
        return self.count("killed") + self.count("timeout")

    @property
    def score(self) -> float:
        return self.killed / self.checked if self.checked else math.nan

    @property
    def survivors(self) -> list[str]:
        return sorted(k for k, s in self.statuses.items() if s in ("survived", "no tests"))


def _mutmut() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        raise SystemExit('mutmut is not installed: pip install -e ".[mutation]"')
    return [str(exe)]


def _prepare(name: str, module: Module, root: Path, tests: Path, work: Path) -> list[str]:
    """Lay out ``work`` for one module; return the test files used (relative paths)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(root / "src", work / "src", ignore=ignore)
    for doc in ("README.md", "docs"):  # tests that read the documents they keep true
        if (root / doc).is_dir():
            shutil.copytree(root / doc, work / doc, ignore=ignore)
        elif (root / doc).exists():
            shutil.copy2(root / doc, work / doc)
    (work / "tests").mkdir()
    if (tests / "golden").is_dir():  # the golden files of tests/test_golden_plans.py
        shutil.copytree(tests / "golden", work / "tests" / "golden")
    conftest = tests / "conftest.py"
    if conftest.exists():
        shutil.copy2(conftest, work / "tests" / "conftest.py")
    used = []
    for rel in module.tests:
        src = tests / Path(rel).name
        if src.exists():
            shutil.copy2(src, work / rel)
            used.append(rel)
    if not used:
        raise FileNotFoundError(f"none of {module.tests} exists in {tests}")
    args = ["-p", "no:cacheprovider", "-p", "no:randomly", "--hypothesis-seed=0", "-q"]
    args += ["-o", "addopts=", "-W", "ignore::DeprecationWarning"]
    if module.select:
        args += ["-k", module.select]
    config = {
        "source_paths": ["src"],
        "only_mutate": [module.path],
        "pytest_add_cli_args": args,
        "pytest_add_cli_args_test_selection": used,
        "also_copy": ["README.md", "docs"],  # into mutmut's own copy, for the tests that read them
        "use_git_change_detection": False,
        "track_dependencies": False,
        "timeout_multiplier": 5.0,
    }
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    lines += ["", "[tool.pytest.ini_options]", 'markers = ["slow: longer tests"]', ""]
    (work / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    return used


def _statuses(work: Path, module: Module) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    meta = work / "mutants" / (module.path + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {k: status_by_exit_code[v] for k, v in codes.items()}


def run_module(
    name: str,
    root: Path,
    tests: Path,
    workdir: Path,
    sample: int | None,
    seed: int,
    timeout: float,
    jobs: int,
) -> Score:
    """Generate and check ``name``'s mutants; the verdicts stay in ``workdir/name/mutants``."""
    module = MODULES[name]
    work = workdir / name
    score = Score(name)
    _prepare(name, module, root, tests, work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("CI", None)
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    deadline = start + timeout
    log = open(work / "mutmut.log", "w", encoding="utf-8")  # noqa: SIM115
    try:
        # 1. generate every mutant and map tests to functions, checking none (no name matches)
        subprocess.run(
            [*_mutmut(), "run", "--max-children", str(jobs), "__generate_only__"],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        names = sorted(_statuses(work, module))
        score.generated = len(names)
        if not names:
            score.error = f"mutmut generated no mutant; see {work / 'mutmut.log'}"
            return score
        chosen = (
            names
            if sample is None or sample >= len(names)
            else sorted(random.Random(seed).sample(names, sample))
        )
        # 2. check the chosen mutants
        left = max(deadline - time.perf_counter(), 1.0)
        try:
            subprocess.run(
                [*_mutmut(), "run", "--max-children", str(jobs), *chosen],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=left,
                check=False,
            )
        except subprocess.TimeoutExpired:
            score.error = f"timed out after {timeout:.0f} s; verdicts so far are counted"
        statuses = _statuses(work, module)
        score.statuses = {k: statuses.get(k, "not checked") for k in chosen}
    finally:
        log.close()
        score.seconds = time.perf_counter() - start
    return score


def _diff(work: Path, mutant: str) -> str:
    out = subprocess.run(
        [*_mutmut(), "show", mutant], cwd=work, capture_output=True, text=True, check=False
    ).stdout
    return "\n".join(
        line
        for line in out.splitlines()
        if line.startswith(("+ ", "- ", "+\t", "-\t"))
        or (line[:1] in "+-" and not line.startswith(("+++", "---")))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", choices=sorted(MODULES), default=list(MODULES))
    parser.add_argument("--root", type=Path, default=REPO, help="source tree (holds src/)")
    parser.add_argument("--tests", type=Path, default=None, help="test directory (<root>/tests)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/unimix-mutation"))
    parser.add_argument("--sample", type=int, default=None, help="mutants per module (all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per module")
    parser.add_argument("--jobs", type=int, default=1, help="mutants checked in parallel")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors by name only")
    parser.add_argument("--json", type=Path, default=None, help="also write the verdicts here")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error("--sample must be a positive number of mutants")
    if args.timeout <= 0 or args.jobs < 1:
        parser.error("--timeout must be > 0 and --jobs >= 1")
    root = args.root.resolve()
    tests = (args.tests or root / "tests").resolve()
    scores = []
    for name in args.modules:
        score = run_module(
            name,
            root,
            tests,
            args.workdir.resolve(),
            args.sample,
            args.seed,
            args.timeout,
            args.jobs,
        )
        scores.append(score)
        print(_summary_line(score), flush=True)

    print()
    print(f"Mutation score ({root}, tests from {tests})")
    print("| module | mutants | checked | killed | survived | no test | score | ± s.e. | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in scores:
        se = math.sqrt(s.score * (1 - s.score) / s.checked) if s.checked else math.nan
        se_txt = f"{100 * se:.1f}" if args.sample is not None else "exact"
        print(
            f"| {s.module} | {s.generated} | {s.checked} | {s.killed} | {s.count('survived')} | "
            f"{s.count('no tests')} | "
            f"{100 * s.score:.1f}% | {se_txt} | {s.seconds:.0f} |"
        )
    for s in scores:
        if s.error:
            print(f"\n{s.module}: {s.error}")
        if s.survivors:
            print(f"\n### Surviving mutants of {MODULES[s.module].path} ({len(s.survivors)})")
            for mutant in s.survivors:
                tag = " (no test runs it)" if s.statuses[mutant] == "no tests" else ""
                print(f"- {mutant}{tag}")
                if not args.no_diffs:
                    diff = _diff(args.workdir.resolve() / s.module, mutant)
                    print("\n".join(f"      {line}" for line in diff.splitlines()))
    if args.json:
        args.json.write_text(
            json.dumps(
                {s.module: {"generated": s.generated, "statuses": s.statuses} for s in scores},
                indent=1,
                sort_keys=True,
            ),
            encoding="utf-8",
        )
    return 0 if all(s.error is None for s in scores) else 1


def _summary_line(s: Score) -> str:
    return (
        f"{s.module}: {s.killed}/{s.checked} killed ({100 * s.score:.1f}%), "
        f"{len(s.survivors)} survived, {s.generated} mutants, {s.seconds:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
