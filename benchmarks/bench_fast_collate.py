"""Cost of collate-time mixing: unimix's FastCollateMixup next to timm's, on uint8 samples.

    python benchmarks/bench_fast_collate.py [--batch 128] [--size 224] [--rounds 5] [--threads 1]
                                            [--clock wall|cpu] [--layout chw|hwc]

timm's prefetching loader collates ``uint8`` ``C×H×W`` samples (NumPy arrays) into one ``uint8``
batch and mixes it there. For each mode and method this times one call of
``timm.data.FastCollateMixup`` and of ``unimix.compat.FastCollateMixup`` on the same list of
samples (collation included, as the loader sees it) and prints milliseconds and the ratio
timm / unimix (> 1: unimix is faster). Beside every row it prints the *copy floor* — timm's plain
``fast_collate`` of the same samples, no mixing — and unimix's time as a multiple of it. The three
are timed in turn, ``--rounds`` times over, each keeping its fastest round, so a burst of load from
other processes inflates no column. ``--clock cpu`` times the CPU time of this process instead of
the wall clock: on a machine shared with other busy processes it does not count the time this
one waits for a core (it still counts what they cost it in cache); use it with ``--threads 1``. ``--layout hwc`` hands over the samples as timm's ``ToNumpy`` makes
them from decoded images: ``C×H×W`` views of ``H×W×C`` arrays (``np.rollaxis``), not contiguous.
The first line says whether unimix mixed with its compiled kernel (``unimix[fast]``, numba) or
with PyTorch operations.

Every call allocates its output batch (``64×3×224×224`` bytes: 9.6 MB). glibc serves a block that
large with fresh pages from the kernel, unless a block freed earlier can be reused; which call
gets fresh pages depends on what the three callers freed before, and the first write to each
fresh page costs a fault and a zero fill — about 4 ms for 9.6 MB here, more than the floor
itself. So by default (``--allocator reuse``) the benchmark sets glibc's ``M_MMAP_THRESHOLD``
to 32 MiB and ``M_TRIM_THRESHOLD`` high, and every output of up to 32 MiB reuses freed memory;
the columns then compare the work of collating and mixing, not the allocator's luck.
``--allocator default`` leaves glibc alone, and the last column counts the page faults of
unimix's fastest round.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
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


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 32 MiB for reuse (see the module docstring)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, 1 << 30)
    )


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--layout", choices=("chw", "hwc"), default="chw")
    parser.add_argument("--allocator", choices=("reuse", "default"), default="reuse")
    args = parser.parse_args(argv)
    allocator = "glibc default"
    if args.allocator == "reuse":
        allocator = "freed memory reused" if reuse_freed_memory() else "glibc default (no mallopt)"
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)

    import timm.data
    from timm.data.loader import fast_collate

    from unimix import collate_fused
    from unimix.compat import FastCollateMixup

    rng = np.random.default_rng(0)
    shape = (3, args.size, args.size)
    if args.layout == "chw":
        images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(args.batch)]
    else:
        channel_last = (args.size, args.size, 3)
        images = [
            np.rollaxis(rng.integers(0, 256, channel_last, dtype=np.uint8), 2)
            for _ in range(args.batch)
        ]
    samples = [(image, i % args.classes) for i, image in enumerate(images)]
    kernel = "compiled (numba)" if collate_fused.available() else "PyTorch operations"
    print(
        f"batch {args.batch} x {shape} {args.layout}, uint8, {args.threads} thread(s), "
        f"best of {args.rounds}, {args.clock} clock; unimix mixes with {kernel}; "
        f"allocator: {allocator}"
    )
    print(
        f"{'mode':6s} {'method':7s} {'timm ms':>9s} {'unimix ms':>10s} {'timm/unimix':>12s} "
        f"{'floor ms':>9s} {'unimix/floor':>13s} {'faults':>7s}"
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
            our_faults = 0
            for _ in range(args.rounds):
                t_floor = min(t_floor, elapsed(floor, clock))
                before = faults()
                t = elapsed(lambda ours=ours: ours(samples), clock)
                if t < t_ours:
                    t_ours, our_faults = t, faults() - before
                if theirs is not None:
                    t_theirs = min(t_theirs, elapsed(lambda theirs=theirs: theirs(samples), clock))
            timm_ms = f"{t_theirs * 1e3:9.1f}" if theirs is not None else f"{'-':>9s}"
            ratio = f"{t_theirs / t_ours:12.2f}" if theirs is not None else f"{'-':>12s}"
            print(
                f"{mode:6s} {name:7s} {timm_ms} {t_ours * 1e3:10.1f} {ratio} "
                f"{t_floor * 1e3:9.1f} {t_ours / t_floor:13.2f} {our_faults:7d}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
