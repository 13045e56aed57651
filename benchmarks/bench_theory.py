"""Time and peak memory of the theory's estimates at the sizes users ask for.

    python benchmarks/bench_theory.py [--size 224] [--samples 128] [--methods cutmix gmix]

``distance_profile`` never materialises the ``[HW, HW]`` matrix A; this prints, per method, the
seconds and the process's peak resident memory growth, next to the size A itself would need
(float64), so the ratio shows what the FFT route saves. Each method runs in a fresh process so
the peaks do not mask each other.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _measure(method: str, size: int, samples: int) -> dict[str, float]:
    import torch

    from unimix.theory import distance_profile

    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    profile = distance_profile(
        method, size, size, samples=samples, generator=torch.Generator().manual_seed(0)
    )
    seconds = time.perf_counter() - start
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"seconds": seconds, "peak_mib": peak_mib, "a0": float(profile.radial[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["mixup", "cutmix", "hmix", "gmix"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child, args.size, args.samples)))
        return 0
    dense_mib = (args.size**2) ** 2 * 8 / 2**20
    print(f"distance_profile at {args.size}×{args.size}, {args.samples} masks, 1 thread")
    print("| method | seconds | peak memory MiB | dense A would need MiB | ratio |")
    print("|---|---|---|---|---|")
    for method in args.methods:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            method,
            "--size",
            str(args.size),
            "--samples",
            str(args.samples),
        ]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(
            f"| {method} | {out['seconds']:.3g} | {out['peak_mib']:.4g} | {dense_mib:.4g} | "
            f"{out['peak_mib'] / dense_mib:.4g} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
