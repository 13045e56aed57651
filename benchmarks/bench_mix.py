"""Cost of mixing a batch: every unimix method × mode, next to timm's and torchvision's.

    python benchmarks/bench_mix.py [--quick] [--device cpu|cuda] [--out results.md] [--threads 1]

For each method registered with :func:`unimix.mix.available_methods` (so methods added later are
picked up), each mode (batch, pair, elem) and each batch size ``H×W×B`` it times ``Mixer.__call__``
mixing in place (``inplace=True``) and out of place, as the median of repeated runs (after a
warm-up) in milliseconds and as a ratio to ``images.clone()`` of the same batch — the cost of
reading and writing it once, the floor for any out-of-place mix. timm's ``Mixup`` (in place, as
timm mixes) and torchvision's ``v2.MixUp``/``v2.CutMix`` (out of place, whole batch only) are timed
beside them on the same tensors when installed. On CPU a fresh output costs page faults on top of
the arithmetic, which is why both unimix columns are shown.

Methods that need more than the images (e.g. a model for saliency-guided mixing) get it from
:data:`CONTEXT_HOOKS`; a method that still cannot run is listed as skipped with its error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

from unimix.mix import Mixer, available_methods

# Modules whose import registers more methods; absent ones are ignored.
METHOD_MODULES = ("unimix.masks", "unimix.mix", "unimix.methods")
MODES = ("batch", "pair", "elem")
DEFAULT_SIZES = "32x32x256:100,224x224x64:1000"
QUICK_SIZES = "32x32x256:100,224x224x64:1000"
UINT8_METHODS = ("mixup", "cutmix")
TIMM_METHODS = ("mixup", "cutmix")  # what timm and torchvision implement
CHANNELS = 3


def tiny_model(images: torch.Tensor, num_classes: int) -> nn.Module:
    """A small CNN on the images' device, for methods that look at a model's gradients."""
    channels = images.shape[1]
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )
    return model.to(images.device).eval()


# ---- HOOK: context for methods that need more than the batch ------------------------------------
# name -> function(images, labels, num_classes) -> keyword arguments for Mixer.__call__.
# Methods not listed first run without context, then with ``model=tiny_model(...)``.
CONTEXT_HOOKS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], dict[str, Any]]] = {}


def _default_contexts(images: torch.Tensor, labels: torch.Tensor, k: int) -> list[dict[str, Any]]:
    return [{}, {"model": tiny_model(images, k)}]


@dataclass
class Size:
    height: int
    width: int
    batch: int
    num_classes: int

    @classmethod
    def parse(cls, text: str) -> Size:
        try:
            dims, _, k = text.partition(":")
            h, w, b = (int(v) for v in dims.lower().split("x"))
            size = cls(h, w, b, int(k) if k else 1000)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"size must look like HxWxB[:K], got {text!r}"
            ) from None
        if min(h, w, b, size.num_classes) < 1 or b % 2:
            raise argparse.ArgumentTypeError(
                f"size needs positive dims and an even batch, got {text!r}"
            )
        return size

    def __str__(self) -> str:
        return f"{self.height}×{self.width}×{self.batch}"


@dataclass
class Row:
    method: str
    mode: str
    size: Size
    dtype: str
    clone_ms: float
    times: dict[str, float | None] = field(default_factory=dict)
    note: str = ""


class Bench:
    def __init__(self, device: torch.device, threads: int, min_time: float) -> None:
        self.device = device
        self.threads = threads
        self.min_time = min_time

    def time_ms(self, fn: Callable[[], Any]) -> float:
        """Median milliseconds per call of ``fn`` after a warm-up call."""
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=self.threads)
        return timer.blocked_autorange(min_run_time=self.min_time).median * 1e3

    def batch(
        self, size: Size, dtype: torch.dtype, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shape = (size.batch, CHANNELS, size.height, size.width)
        if dtype == torch.uint8:
            x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        else:
            x = torch.rand(shape, generator=g).to(dtype)
        y = torch.randint(0, size.num_classes, (size.batch,), generator=g)
        return x.to(self.device), y.to(self.device)


def _load_method_modules() -> None:
    for name in METHOD_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def _unimix_runner(
    method: str, mode: str, x: torch.Tensor, y: torch.Tensor, k: int
) -> tuple[Callable[[bool], Any] | None, str]:
    """A callable ``run(inplace)`` mixing ``x`` with ``method``, or ``None`` and why not."""
    try:
        mixer = Mixer(method, mode=mode, num_classes=k, generator=torch.Generator().manual_seed(0))
    except Exception as err:  # noqa: BLE001 - any method's constructor may refuse; report it
        return None, f"cannot build: {type(err).__name__}: {err}"
    hook = CONTEXT_HOOKS.get(method)
    contexts = [hook(x, y, k)] if hook else _default_contexts(x, y, k)
    error = ""
    for context in contexts:
        try:
            mixer(x.clone(), y, **context)
        except Exception as err:  # noqa: BLE001
            error = f"{type(err).__name__}: {err}"
            continue
        return (lambda inplace, c=context: mixer(x, y, inplace=inplace, **c)), ""
    return None, f"skipped ({error}); add a CONTEXT_HOOKS entry"


def _timm_runner(method: str, mode: str, x: torch.Tensor, y: torch.Tensor, k: int):
    try:
        from timm.data import Mixup
    except ImportError:
        return None
    alphas = (
        {"mixup_alpha": 1.0, "cutmix_alpha": 0.0}
        if method == "mixup"
        else {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}
    )
    fn = Mixup(**alphas, mode=mode, label_smoothing=0.0, num_classes=k)
    try:
        fn(x.clone(), y)
    except Exception:  # noqa: BLE001 - e.g. timm's Mixup cannot scale uint8 in place
        return None
    return lambda: fn(x, y)


def _torchvision_runner(method: str, x: torch.Tensor, y: torch.Tensor, k: int):
    try:
        from torchvision.transforms import v2
    except ImportError:
        return None
    fn = (
        v2.MixUp(alpha=1.0, num_classes=k)
        if method == "mixup"
        else v2.CutMix(alpha=1.0, num_classes=k)
    )
    try:
        fn(x, y)
    except Exception:  # noqa: BLE001 - e.g. uint8 images
        return None
    return lambda: fn(x, y)


def run(args: argparse.Namespace) -> list[Row]:
    _load_method_modules()
    device = torch.device(args.device)
    bench = Bench(device, args.threads, args.min_time)
    methods = args.methods or available_methods()
    rows: list[Row] = []
    for size in args.sizes:
        for dtype in (torch.float32, torch.uint8):
            x, y = bench.batch(size, dtype)
            clone_ms = bench.time_ms(x.clone)
            names = (
                methods if dtype == torch.float32 else [m for m in UINT8_METHODS if m in methods]
            )
            for method in names:
                for mode in MODES:
                    row = Row(method, mode, size, str(dtype).removeprefix("torch."), clone_ms)
                    runner, row.note = _unimix_runner(method, mode, x, y, size.num_classes)
                    if runner is not None:
                        row.times["unimix in-place"] = bench.time_ms(lambda r=runner: r(True))
                        row.times["unimix out-of-place"] = bench.time_ms(lambda r=runner: r(False))
                    if method in TIMM_METHODS:
                        timm_fn = _timm_runner(method, mode, x, y, size.num_classes)
                        row.times["timm in-place"] = bench.time_ms(timm_fn) if timm_fn else None
                        tv_fn = (
                            _torchvision_runner(method, x, y, size.num_classes)
                            if mode == "batch"
                            else None
                        )
                        row.times["torchvision"] = bench.time_ms(tv_fn) if tv_fn else None
                    rows.append(row)
                    if args.verbose:
                        print(
                            f"  {method:>10} {mode:>5} {size} {row.dtype}: {row.times} {row.note}",
                            file=sys.stderr,
                        )
    return rows


COLUMNS = ("unimix in-place", "unimix out-of-place", "timm in-place", "torchvision")


def _cell(ms: float | None, clone_ms: float) -> str:
    return "—" if ms is None else f"{ms:.3f} ({ms / clone_ms:.2f}×)"


def table(rows: list[Row]) -> str:
    head = (
        "| method | mode | H×W×B | dtype | clone ms | "
        + " | ".join(f"{c} ms (×clone)" for c in COLUMNS)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(COLUMNS))]
    for r in rows:
        cells = [_cell(r.times.get(c), r.clone_ms) for c in COLUMNS]
        if r.note:
            cells = [r.note] + [""] * (len(COLUMNS) - 1)
        lines.append(
            f"| {r.method} | {r.mode} | {r.size} | {r.dtype} | {r.clone_ms:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's speed targets as explicit ratio lines, each marked met or MISSED."""
    checks = [  # (mode, ours, theirs, bound, only 32×32)
        ("elem", "unimix in-place", "timm in-place", 0.1, True),
        ("batch", "unimix in-place", "timm in-place", 1.0, False),
        ("batch", "unimix out-of-place", "torchvision", 1.0, False),
    ]
    lines = []
    for r in rows:
        for mode, ours, theirs, bound, small_only in checks:
            a, b = r.times.get(ours), r.times.get(theirs)
            if r.mode != mode or a is None or b is None or r.dtype != "float32":
                continue
            binding = not small_only or (r.size.height, r.size.width) == (32, 32)
            verdict = ("met" if a / b <= bound else "MISSED") if binding else "info"
            lines.append(
                f"- {r.method} {mode} {r.size}: {ours} / {theirs} = {a / b:.3f} "
                f"(target ≤ {bound}{'' if binding else ' at 32×32'}): {verdict}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timings (< 1 minute in all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", help="also write the markdown report to this file")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    parser.add_argument(
        "--sizes",
        type=lambda s: [Size.parse(t) for t in s.split(",")],
        default=None,
        help=f"comma-separated HxWxB[:classes] (default: {DEFAULT_SIZES})",
    )
    parser.add_argument("--methods", nargs="*", help="only these methods (default: all registered)")
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds of timing per measurement (default: 0.5; 0.02 with --quick)",
    )
    parser.add_argument("--verbose", action="store_true", help="print each measurement to stderr")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.sizes is None:
        args.sizes = [
            Size.parse(t) for t in (QUICK_SIZES if args.quick else DEFAULT_SIZES).split(",")
        ]
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.5
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = run(args)
    versions = [f"torch {torch.__version__}"]
    for name in ("timm", "torchvision"):
        if importlib.util.find_spec(name) is not None:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    )
    ratios = [
        r.times["unimix in-place"] / r.clone_ms for r in rows if r.times.get("unimix in-place")
    ]
    report = "\n".join(
        [
            f"## Mixing cost ({device_name}; {', '.join(versions)})",
            "",
            "Median ms per batch, and in parentheses the ratio to `clone()` of the batch.",
            "",
            table(rows),
            "",
            "### Targets",
            "",
            *targets(rows),
            "",
            f"Median unimix in-place / clone over all rows: {statistics.median(ratios):.2f}×."
            if ratios
            else "",
            f"Measured in {time.perf_counter() - start:.0f} s.",
        ]
    )
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
