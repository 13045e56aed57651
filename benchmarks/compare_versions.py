"""Two versions of unimix's engine side by side in one process: ``Mixer`` of each, interleaved.

    python benchmarks/compare_versions.py OLD_SRC NEW_SRC [--sizes 32x32x256,224x224x64]
                                          [--methods mixup,cutmix,hmix,gmix] [--rounds 5]
                                          [--cpu-time]

``OLD_SRC`` and ``NEW_SRC`` are ``src`` folders of two checkouts (e.g. ``git worktree add
/tmp/old <commit>`` then ``/tmp/old/src``). Each version's ``unimix`` is imported in turn and
kept; every configuration (method × mode × in place or not × size) is then timed for both in
interleaved rounds, keeping each one's fastest (``torch.utils.benchmark``). Separate processes
on a shared machine differ by tens of percent; one process and interleaved rounds do not.
Prints a Markdown table of milliseconds and the ratio new / old, and their geometric mean.
``--cpu-time`` times the process's CPU time (``time.process_time``, fastest of repeats) instead of
wall time: on a machine shared with other jobs, time spent waiting for a core is not counted.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import timeit

import torch
from torch.utils import benchmark


def load_mixer(src: str) -> type:
    """``unimix.Mixer`` from the checkout whose ``src`` folder is ``src``."""
    for name in [k for k in sys.modules if k == "unimix" or k.startswith("unimix.")]:
        del sys.modules[name]
    sys.path.insert(0, src)
    try:
        return importlib.import_module("unimix").Mixer
    finally:
        sys.path.remove(src)


def time_ms(mixer, x, y, inplace: bool, cpu_time: bool = False) -> float:
    if cpu_time:
        timer = timeit.Timer(lambda: mixer(x, y, inplace=inplace), timer=time.process_time)
        return min(timer.repeat(number=20, repeat=3)) / 20 * 1e3
    timer = benchmark.Timer("m(x, y, inplace=ip)", globals=dict(m=mixer, x=x, y=y, ip=inplace))
    return timer.blocked_autorange(min_run_time=0.15).median * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_src")
    parser.add_argument("new_src")
    parser.add_argument("--sizes", default="32x32x256", help="HxWxB[,HxWxB…]")
    parser.add_argument("--methods", default="mixup,cutmix,hmix,gmix")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time, not wall time")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    versions = {"old": load_mixer(args.old_src), "new": load_mixer(args.new_src)}
    ratios = []
    print("| configuration | old ms | new ms | new / old |\n|---|---|---|---|")
    for size in args.sizes.split(","):
        h, w, b = (int(v) for v in size.split("x"))
        x0, y = torch.rand(b, 3, h, w), torch.randint(0, 100, (b,))
        for method in args.methods.split(","):
            for mode in ("batch", "pair", "elem"):
                for inplace in (True, False):
                    mixers = {
                        k: M(method, mode=mode, num_classes=100,
                             generator=torch.Generator().manual_seed(0))
                        for k, M in versions.items()
                    }  # fmt: skip
                    xs = {k: x0.clone() for k in versions}
                    best = {k: float("inf") for k in versions}
                    for _ in range(args.rounds):  # interleaved: a load burst hits both
                        for k in versions:
                            best[k] = min(
                                best[k], time_ms(mixers[k], xs[k], y, inplace, args.cpu_time)
                            )
                    ratios.append(best["new"] / best["old"])
                    where = "in place" if inplace else "out of place"
                    print(f"| {method} {mode} {where} {size} | {best['old']:.3f} | "
                          f"{best['new']:.3f} | {ratios[-1]:.2f} |", flush=True)  # fmt: skip
    print(f"\ngeometric mean new / old: {statistics.geometric_mean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
