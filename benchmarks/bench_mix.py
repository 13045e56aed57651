"""Cost of mixing a batch: every unimix method × mode, next to timm's and torchvision's.

    python benchmarks/bench_mix.py [--quick] [--device cpu|cuda] [--out results.md] [--threads 1]

For each method registered with :func:`unimix.registry.available` (so methods added later are
picked up), each mode (batch, pair, elem) and each batch ``H×W×B`` it times ``Mixer.__call__``
mixing in place (``inplace=True``) and out of place, in milliseconds and as a ratio to
``images.clone()`` of the same batch — reading and writing it once, the floor of any out-of-place
mix. timm's ``Mixup`` (in place, as timm mixes) and torchvision's ``v2.MixUp``/``v2.CutMix`` (out
of place, whole batch only) are timed beside them on the same tensors when installed. On CPU a
fresh output costs page faults on top of the arithmetic, which is why both unimix columns are
shown.

Every figure is the median of repeated calls after a warm-up (``torch.utils.benchmark``). The
candidates of a row are timed in turn, ``--rounds`` times over, each keeping its fastest round:
a burst of load from other processes then inflates no single column.

Methods that need more than the images (e.g. a model for saliency-guided mixing) get it from
:data:`CONTEXT_HOOKS`; a method that still cannot run is listed as skipped with its error.
"""

from __future__ import annotations

import argparse
import functools
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

from unimix.mix import Mixer
from unimix.registry import available

# Modules whose import registers more methods; absent ones are ignored.
METHOD_MODULES = ("unimix.masks", "unimix.mix", "unimix.methods")
MODES = ("batch", "pair", "elem")
DEFAULT_SIZES = "32x32x256:100,224x224x64:1000"  # H x W x B : classes (CIFAR-100, ImageNet)
QUICK_SIZES = "32x32x64:100,64x64x16:100"
UINT8_METHODS = ("mixup", "cutmix")
THEIR_METHODS = ("mixup", "cutmix")  # what timm and torchvision implement
CHANNELS = 3
Fn = Callable[[], Any]


def tiny_model(images: torch.Tensor, num_classes: int) -> nn.Module:
    """A small CNN on the images' device, for methods that look at a model (e.g. its saliency)."""
    model = nn.Sequential(
        nn.Conv2d(images.shape[1], 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )
    return model.to(images.device).eval()


# ---- HOOK: context for methods that need more than the batch ------------------------------------
# method name -> function(images, labels, num_classes) -> keyword arguments for Mixer.__call__.
# A method not listed is tried without context, then with ``model=tiny_model(images, K)``, then
# with ``model=...`` and ``batch_labels=labels`` (the batch's labels, for saliency methods).
CONTEXT_HOOKS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], dict[str, Any]]] = {}


def _contexts(method: str, images: torch.Tensor, labels: torch.Tensor, k: int) -> list[dict]:
    hook = CONTEXT_HOOKS.get(method)
    if hook is not None:
        return [hook(images, labels, k)]
    model = tiny_model(images, k)
    return [{}, {"model": model}, {"model": model, "batch_labels": labels}]


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
            raise argparse.ArgumentTypeError(f"sizes are HxWxB[:K], got {text!r}") from None
        if min(h, w, b, size.num_classes) < 1 or b % 2:
            raise argparse.ArgumentTypeError(f"sizes need positive dims, even B: got {text!r}")
        return size

    def __str__(self) -> str:
        return f"{self.height}×{self.width}×{self.batch}"


def parse_sizes(text: str) -> list[Size]:
    return [Size.parse(t) for t in text.split(",")]


@dataclass
class Row:
    method: str
    mode: str
    size: Size
    dtype: str
    clone_ms: float
    copy_ms: float
    times: dict[str, float] = field(default_factory=dict)
    note: str = ""


class Bench:
    def __init__(self, device: torch.device, threads: int, min_time: float, rounds: int) -> None:
        self.device = device
        self.threads = threads
        self.min_time = min_time
        self.rounds = rounds

    def _call_s(self, fn: Fn) -> float:
        start = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def time_ms(self, fns: dict[str, Fn]) -> tuple[dict[str, float], dict[str, str]]:
        """Milliseconds per call of each function, and the error of each one that failed.

        Each function keeps the fastest of ``rounds`` interleaved medians; one whose warm-up call
        alone outlasts a round is timed by a single call after it.
        """
        errors: dict[str, str] = {}
        best: dict[str, float] = {}
        slow: set[str] = set()
        budget = self.min_time / self.rounds
        for _ in range(self.rounds):
            for name, fn in fns.items():
                if name in errors or (name in slow and name in best):
                    continue
                try:
                    if name not in best and self._call_s(fn) >= budget:  # warm-up
                        slow.add(name)
                    if name in slow:
                        ms = self._call_s(fn) * 1e3
                    else:
                        timer = benchmark.Timer(
                            stmt="fn()", globals={"fn": fn}, num_threads=self.threads
                        )
                        ms = timer.blocked_autorange(min_run_time=budget).median * 1e3
                except Exception as err:  # noqa: BLE001 - report it in the table, time the rest
                    errors[name] = f"{type(err).__name__}: {err}"
                    best.pop(name, None)
                    continue
                best[name] = min(best.get(name, float("inf")), ms)
        return best, errors

    def batch(self, size: Size, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
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


def unimix_fns(method: str, mode: str, x: torch.Tensor, y: torch.Tensor, k: int):
    """``({column: fn}, note)``: unimix in place and out of place, or no columns and why not."""
    try:
        mixer = Mixer(method, mode=mode, num_classes=k, generator=torch.Generator().manual_seed(0))
    except Exception as err:  # noqa: BLE001 - any method's constructor may refuse; report it
        return {}, f"cannot build: {type(err).__name__}: {err}"
    error = ""
    for context in _contexts(method, x, y, k):
        try:
            mixer(x.clone(), y, **context)
        except Exception as err:  # noqa: BLE001 - e.g. a method needing context we lack
            error = f"{type(err).__name__}: {err}"
            continue
        return {
            "unimix in-place": lambda c=context: mixer(x, y, inplace=True, **c),
            "unimix out-of-place": lambda c=context: mixer(x, y, **c),
        }, ""
    return {}, f"skipped ({error}); add a CONTEXT_HOOKS entry"


def their_fns(method: str, mode: str, x: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, Fn]:
    """timm's Mixup (in place) and torchvision's MixUp/CutMix (batch mode) where they run."""
    if method not in THEIR_METHODS:
        return {}
    fns: dict[str, Fn] = {}
    if importlib.util.find_spec("timm") is not None:
        from timm.data import Mixup

        alphas = (1.0, 0.0) if method == "mixup" else (0.0, 1.0)
        timm_fn = Mixup(*alphas, mode=mode, label_smoothing=0.0, num_classes=k)
        fns["timm in-place"] = lambda: timm_fn(x, y)
    if mode == "batch" and importlib.util.find_spec("torchvision") is not None:
        from torchvision.transforms import v2

        tv = v2.MixUp if method == "mixup" else v2.CutMix
        tv_fn = tv(alpha=1.0, num_classes=k)
        fns["torchvision"] = lambda: tv_fn(x, y)
    runnable = {}
    for name, fn in fns.items():
        try:
            fn()
        except Exception:  # noqa: BLE001, S112 - e.g. timm cannot scale uint8 in place
            continue
        runnable[name] = fn
    return runnable


def run(args: argparse.Namespace) -> list[Row]:
    _load_method_modules()
    bench = Bench(torch.device(args.device), args.threads, args.min_time, args.rounds)
    methods = args.methods or available()
    rows: list[Row] = []
    for size in args.sizes:
        k = size.num_classes
        for dtype in (torch.float32, torch.uint8):
            dname = str(dtype).removeprefix("torch.")
            names = (
                methods if dtype == torch.float32 else [m for m in UINT8_METHODS if m in methods]
            )
            for method in names:
                # a fresh batch per method: in-place runs of the last one leave it mixed over and over
                x, y = bench.batch(size, dtype)
                floors = {"clone": x.clone, "copy": functools.partial(torch.empty_like(x).copy_, x)}
                for mode in MODES:
                    start = time.perf_counter()
                    ours, note = unimix_fns(method, mode, x, y, k)
                    times, errors = bench.time_ms(floors | ours | their_fns(method, mode, x, y, k))
                    notes = [note] if note else []
                    notes += [f"{name} failed: {err}" for name, err in errors.items()]
                    clone_ms, copy_ms = times.pop("clone"), times.pop("copy")
                    rows.append(
                        Row(method, mode, size, dname, clone_ms, copy_ms, times, "; ".join(notes))
                    )
                    if args.verbose:
                        took = time.perf_counter() - start
                        print(
                            f"{method} {mode} {size} {dname} ({took:.1f} s): {times} {notes}",
                            file=sys.stderr,
                        )
    return rows


COLUMNS = ("unimix in-place", "unimix out-of-place", "timm in-place", "torchvision")


def _cell(ms: float | None, clone_ms: float) -> str:
    return "—" if ms is None else f"{ms:.3f} ({ms / clone_ms:.2f}×)"


def table(rows: list[Row]) -> str:
    """The markdown table; a row with a note (skipped or failed columns) gets a numbered footnote."""
    head = " | ".join(f"{c} ms (×clone)" for c in COLUMNS)
    lines = [
        f"| method | mode | H×W×B | dtype | clone ms | copy_ ms | {head} | ×mixup |",
        "|" + "---|" * (7 + len(COLUMNS)),
    ]
    # the cost the paper says HMix/GMix avoid: each method against Mixup, same mode, size, dtype
    mixup = {
        (r.mode, str(r.size), r.dtype): r.times.get("unimix in-place")
        for r in rows
        if r.method == "mixup"
    }
    notes: list[str] = []
    for r in rows:
        name = r.method
        if r.note:
            notes.append(f"{len(notes) + 1}. {r.method} {r.mode} {r.size} {r.dtype}: {r.note}")
            name += f" [{len(notes)}]"
        cells = " | ".join(_cell(r.times.get(c), r.clone_ms) for c in COLUMNS)
        lead = f"| {name} | {r.mode} | {r.size} | {r.dtype} | {r.clone_ms:.3f} | {r.copy_ms:.3f} |"
        base, ours = mixup.get((r.mode, str(r.size), r.dtype)), r.times.get("unimix in-place")
        versus = "—" if not base or ours is None else f"{ours / base:.1f}×"
        lines.append(f"{lead} {cells} | {versus} |")
    return "\n".join(lines + ([""] + notes if notes else []))


# (mode, ours, theirs, bound, binding at 32×32 only): the speed targets
TARGETS = (
    ("elem", "unimix in-place", "timm in-place", 0.1, True),
    ("batch", "unimix in-place", "timm in-place", 1.0, False),
    ("batch", "unimix out-of-place", "torchvision", 1.0, False),
)


def target_lines(rows: list[Row]) -> list[str]:
    """The speed targets as explicit ratio lines, each marked met, MISSED or (not binding) info."""
    lines = []
    for mode, ours, theirs, bound, small_only in TARGETS:
        for r in rows:
            a, b = r.times.get(ours), r.times.get(theirs)
            if r.mode != mode or a is None or b is None or r.dtype != "float32":
                continue
            binding = not small_only or (r.size.height, r.size.width) == (32, 32)
            verdict = ("met" if a / b <= bound else "MISSED") if binding else "info"
            where = "" if binding else " at 32×32"
            lines.append(
                f"- {r.method} {mode} {r.size}: {ours} / {theirs} = {a / b:.3f} "
                f"(target ≤ {bound}{where}): {verdict}"
            )
    return lines


def report(rows: list[Row], args: argparse.Namespace, seconds: float) -> str:
    versions = [f"torch {torch.__version__}"]
    for name in ("timm", "torchvision"):
        if importlib.util.find_spec(name) is not None:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
    if args.device == "cuda":
        where = torch.cuda.get_device_name()
    else:
        where = f"CPU, {args.threads} thread(s)"
    ratios = [r.times["unimix in-place"] / r.clone_ms for r in rows if "unimix in-place" in r.times]
    return "\n".join(
        [
            f"## Mixing cost ({where}; {', '.join(versions)})",
            "",
            f"Median ms per batch (fastest of {args.rounds} interleaved round(s)) and, in "
            "parentheses, the ratio to `clone()` of the same batch timed alongside (a fresh "
            "output: on CPU it pays page faults). `copy_` into a preallocated buffer is the "
            "memory-traffic floor without them.",
            "",
            table(rows),
            "",
            "### Targets",
            "",
            *target_lines(rows),
            "",
            *(
                [f"Median over rows of unimix in-place / clone: {statistics.median(ratios):.2f}×."]
                if ratios
                else []
            ),
            f"Measured in {seconds:.0f} s.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timings (< 1 minute in all)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", help="also write the markdown report to this file")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=None,
        help=f"comma-separated HxWxB[:classes] (default: {DEFAULT_SIZES}; {QUICK_SIZES} with --quick)",
    )  # fmt: skip
    parser.add_argument("--methods", nargs="*", help="only these methods (default: all registered)")
    parser.add_argument(
        "--min-time", type=float, default=None,
        help="seconds of timing per measurement (default: 0.3; 0.01 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="interleaved timing rounds, fastest kept (default: 3; 1 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", action="store_true", help="print each row to stderr as it runs"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.sizes is None:
        args.sizes = parse_sizes(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.min_time is None:
        args.min_time = 0.01 if args.quick else 0.3
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.threads < 1 or args.rounds < 1 or args.min_time <= 0:
        parser.error("--threads and --rounds must be >= 1, --min-time > 0")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = run(args)
    text = report(rows, args, time.perf_counter() - start)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
