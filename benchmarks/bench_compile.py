"""torch.compile over a training step that mixes with :class:`unimix.Mixer`, in every mode.

    python benchmarks/bench_compile.py [--steps 50] [--backend inductor] [--size 32x32x64]
                                       [--modes batch,pair,elem] [--no-timing]

For Mixup, CutMix, HMix, GMix and the README's mixture of the four, in ``batch``, ``pair`` and
``elem`` mode, it prints per row: the graph breaks of one compiled call of
mix → forward → loss (backward and the optimiser step run eagerly, the usual pattern)
(``torch._dynamo.explain``), the frames compiled after the first call over ``--steps`` calls with a
fresh λ each (``torch._dynamo`` counters: 0 means no recompilation), and the median step time
of the whole training step (mix → forward → soft-target cross-entropy → backward → SGD step of a
small CNN), eager and compiled, measured side by side in one run (so a loaded machine slows both).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from unimix import Mixer, soft_target_cross_entropy

METHODS = ("mixup", "cutmix", "hmix", "gmix")
#: each method alone, then the README's ``Mixer(["mixup", "cutmix", "hmix", "gmix"], ...)``
ROWS: tuple[str | list[str], ...] = (*METHODS, list(METHODS))


def make_step(mixer: Mixer, channels: int, classes: int, compile_backend: str | None = None):
    """One training step; its mix → forward → loss part compiled with ``compile_backend``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(16 * 16, classes),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mixed, targets = mixer(x, y)
        return soft_target_cross_entropy(model(mixed), targets)

    if compile_backend is not None:
        forward = torch.compile(forward, backend=compile_backend)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = forward(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    step.forward = forward  # type: ignore[attr-defined]
    return step


def median_ms(fn, x, y, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn(x, y)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--size", default="32x32x64", help="HxWxB")
    parser.add_argument("--modes", default="batch,pair,elem")
    parser.add_argument("--no-timing", action="store_true", help="breaks and recompiles only")
    args = parser.parse_args()
    h, w, b = (int(v) for v in args.size.split("x"))
    x, y = torch.rand(b, 3, h, w), torch.randint(0, 10, (b,))
    print(f"torch {torch.__version__}, backend {args.backend}, {h}x{w}x{b}, {args.steps} steps")
    print(
        "| mode | methods | graph breaks per call | frames compiled after call 1 | eager ms "
        "| compiled ms | compiled / eager |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        if mode == "pair" and b % 2:
            print(f"| pair | (skipped: odd batch {b}) |||||")
            continue
        for methods in ROWS:

            def new_mixer(methods=methods, mode=mode) -> Mixer:
                return Mixer(methods, mode=mode, num_classes=10,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip

            torch._dynamo.reset()
            explained = torch._dynamo.explain(make_step(new_mixer(), 3, 10).forward)(x, y)
            torch._dynamo.reset()
            counters.clear()
            compiled = make_step(new_mixer(), 3, 10, args.backend)
            compiled(x, y)
            first = counters["frames"]["ok"]
            if args.no_timing:
                for _ in range(args.steps - 1):
                    compiled(x, y)
            else:
                eager = make_step(new_mixer(), 3, 10)
                eager_ms, compiled_ms = [], []
                for _ in range(3):  # interleaved rounds: load bursts hit both columns
                    eager_ms.append(median_ms(eager, x, y, max(args.steps // 3, 1)))
                    compiled_ms.append(median_ms(compiled, x, y, max(args.steps // 3, 1)))
                e, c = min(eager_ms), min(compiled_ms)
            recompiled = counters["frames"]["ok"] - first
            name = "+".join(methods) if isinstance(methods, list) else methods
            times = "| - | - | - |" if args.no_timing else f"| {e:.2f} | {c:.2f} | {c / e:.2f} |"
            print(f"| {mode} | {name} | {explained.graph_break_count} | {recompiled} {times}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
