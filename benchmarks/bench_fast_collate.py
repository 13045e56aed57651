"""Cost of collate-time mixing: unimix's FastCollateMixup next to timm's, on uint8 samples.

    python benchmarks/bench_fast_collate.py [--batch 128] [--size 224] [--rounds 5] [--threads 1]
                                            [--clock wall|cpu]

timm's prefetching loader collates ``uint8`` ``C×H×W`` samples (NumPy arrays) into one ``uint8``
batch and mixes it there. For each mode and method this times one call of
``timm.data.FastCollateMixup`` and of ``unimix.compat.FastCollateMixup`` on the same list of
samples (collation included, as the loader sees it) and prints milliseconds and the ratio
timm / unimix (> 1: unimix is faster). Beside every row it prints the *copy floor* — timm's plain
``fast_collate`` of the same samples, no mixing — and unimix's time as a multiple of it. The three
are timed in turn, ``--rounds`` times over, each keeping its fastest round, so a burst of load from
other processes inflates no column. ``--clock cpu`` times the CPU time of this process instead of
the wall clock: on a machine shared with other busy processes it does not count the time this
one waits for a core (it still counts what they cost it in cache); use it with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

METHODS = {  # name: (timm/unimix constructor arguments)
    "mixup": {"mixup_alpha": 1.0, "cutmix_alpha": 0.0},
    "cutmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
    "hmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "cutmix_mode": "hmix"},
    "gmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "cutmix_mode": "gmix"},
}
MODES = ("batch", "pair", "elem", "half")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def elapsed(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)

    import timm.data
    from timm.data.loader import fast_collate

    from unimix.compat import FastCollateMixup

    rng = np.random.default_rng(0)
    shape = (3, args.size, args.size)
    samples = [
        (rng.integers(0, 256, shape, dtype=np.uint8), i % args.classes) for i in range(args.batch)
    ]
    print(
        f"batch {args.batch} x {shape}, uint8, {args.threads} thread(s), best of {args.rounds}, "
        f"{args.clock} clock"
    )
    print(
        f"{'mode':6s} {'method':7s} {'timm ms':>9s} {'unimix ms':>10s} {'timm/unimix':>12s} "
        f"{'floor ms':>9s} {'unimix/floor':>13s}"
    )

    def floor() -> None:
        fast_collate(samples)

    for mode in MODES:
        for name, kwargs in METHODS.items():
            ours = FastCollateMixup(**kwargs, mode=mode, num_classes=args.classes)
            timm_kwargs = {k: v for k, v in kwargs.items() if k != "cutmix_mode"}
            theirs = (
                timm.data.FastCollateMixup(**timm_kwargs, mode=mode, num_classes=args.classes)
                if "cutmix_mode" not in kwargs
                else None
            )
            ours(samples)  # warm-up
            if theirs is not None:
                theirs(samples)
            t_ours = t_theirs = t_floor = float("inf")
            for _ in range(args.rounds):
                t_floor = min(t_floor, elapsed(floor, clock))
                t_ours = min(t_ours, elapsed(lambda ours=ours: ours(samples), clock))
                if theirs is not None:
                    t_theirs = min(t_theirs, elapsed(lambda theirs=theirs: theirs(samples), clock))
            timm_ms = f"{t_theirs * 1e3:9.1f}" if theirs is not None else f"{'-':>9s}"
            ratio = f"{t_theirs / t_ours:12.2f}" if theirs is not None else f"{'-':>12s}"
            print(
                f"{mode:6s} {name:7s} {timm_ms} {t_ours * 1e3:10.1f} {ratio} "
                f"{t_floor * 1e3:9.1f} {t_ours / t_floor:13.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
