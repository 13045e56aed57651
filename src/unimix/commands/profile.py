"""``unimix profile``: the pixel-level regularisation of each method, as plots and a table.

Writes to ``--out``:

* ``profile.png`` — the radial profiles of all methods on one plot (mean ``A(p, q)`` against
  ``|p − q|``, ±2 standard errors), with the closed forms dashed when ``--closed-form`` is given;
* ``heatmap.png`` — ``A(p, ·)`` for the centre pixel ``p``, one panel per method;
* ``profile.csv`` — ``method, radius, A, stderr`` and ``closed_form_torus``, the closed form
  (exact for ``--boundary wrap``; clipped masks differ from it near the border);
* ``heatmap.csv`` — ``method, i, j, A, stderr`` for the centre pixel's row of ``A``.

Example: ``unimix profile --methods mixup,cutmix,hmix,gmix --size 32 --out profiles``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unimix.commands import _args

HELP = "plot each method's pixel-level regularisation A(p,q) against distance, with heat maps and a CSV"


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad size {text!r}: give N or HxW, e.g. 32 or 32x48"
        ) from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 2:
        raise argparse.ArgumentTypeError(
            f"bad size {text!r}: give N or HxW with sides of at least 2 pixels (a profile "
            "needs a distance between two pixels); whether it fits in memory is checked next"
        )
    return values[0], values[1]


def _methods(text: str) -> list[str]:
    from unimix import registry

    if text == "all":  # every image-independent method: the mask samplers but "none"
        from unimix.viz.gallery import gallery_methods

        return [m for m in gallery_methods() if m in registry.available("mask")]
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--methods names no mask method: {text!r}")
    for name in names:
        try:
            registry.lookup(name, "mask")
        except ValueError as err:  # the registry's one wording of an unknown name
            raise argparse.ArgumentTypeError(str(err)) from None
    return names


def _mask_methods_help() -> str:
    from unimix import registry

    return "mask methods: " + ", ".join(registry.available("mask"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--methods",
        type=_methods,
        default="all",
        help="comma-separated mask methods, or 'all' for every image-independent one (default); "
        + _mask_methods_help(),
    )
    parser.add_argument(
        "--size", type=_size, default="32", help="image size N or HxW (default: 32)"
    )
    parser.add_argument(
        "--out",
        type=_args.path,
        default=Path("profile"),
        help="output directory (default: profile)",
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="α of λ ~ Beta(α, α) (default: 1)")
    parser.add_argument(
        "--samples", type=int, default=4096, help="masks per method (default: 4096)"
    )
    parser.add_argument(
        "--weighting",
        choices=("mask", "label"),
        default="mask",
        help="A under the mask distribution, or label-reweighted as in the loss expansion (default: mask)",
    )
    parser.add_argument("--r", type=float, default=0.5, help="HMix box-area ratio r (default: 0.5)")
    parser.add_argument(
        "--boundary",
        choices=("clip", "wrap"),
        default="clip",
        help="boxes/Gaussians clipped at the border (as trained) or wrapped on a torus (default: clip)",
    )
    parser.add_argument(
        "--closed-form",
        action="store_true",
        help="overlay the closed forms (exact for --boundary wrap) on the profile plot",
    )
    parser.add_argument("--seed", type=_args.seed, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="device for the masks (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _params(name: str, args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if name == "hmix":
        params["r"] = args.r
    if name in ("cutmix", "hmix", "gmix"):
        params["boundary"] = args.boundary
    return params


def run(args: argparse.Namespace) -> int:
    import unimix.theory  # noqa: F401  (a missing extra stops us before anything is written)
    import unimix.viz.profiles  # noqa: F401
    from unimix.errors import UsageError, check_device, check_output_dir, removed_on_failure

    if args.samples < 2:
        raise UsageError(f"--samples must be at least 2, got {args.samples}")
    if not args.alpha > 0:
        raise UsageError(f"--alpha must be > 0, got {args.alpha}")
    if not 0 <= args.r <= 1:
        raise UsageError(f"--r must lie in [0, 1], got {args.r}")
    device = check_device(args.device)
    out: Path = check_output_dir(args.out)
    if args.closed_form and args.boundary == "clip":
        print(
            "note: the closed forms are exact for --boundary wrap (a torus); clipped masks "
            "differ from them, most at large distances",
            file=sys.stderr,
        )
    device = "cpu" if device == "auto" else device
    _check_memory(args.size, device)
    with removed_on_failure(out, keep=()):
        out.mkdir(parents=True, exist_ok=True)
        return _profile(args, out, device)


def _check_memory(size: tuple[int, int], device: str) -> None:
    """Refuse a size whose masks cannot fit in the device's memory, before any allocation."""
    from unimix.errors import UsageError
    from unimix.train.memory import check_fits, profile_bytes

    height, width = size
    try:
        check_fits(
            profile_bytes(height, width),
            device,
            f"--size {height}x{width} (one mask's correlations and the offset grid)",
            "--size",
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def _estimate(
    name: str, args: argparse.Namespace, device: str, centre: tuple[int, int], progress: bool
) -> tuple[Any, Any, Any]:
    """One method's distance profile, centre-pixel row of ``A`` and closed form (or None)."""
    import torch

    from unimix.theory import CLOSED_FORMS, closed_form, distance_profile, pairwise_coefficients

    height, width = args.size
    params = _params(name, args)
    g = torch.Generator().manual_seed(args.seed)
    profile = distance_profile(
        name,
        height,
        width,
        args.alpha,
        args.samples,
        g,
        weighting=args.weighting,
        device=device,
        progress=progress,
        **params,
    )
    g = torch.Generator().manual_seed(args.seed)
    heatmap = pairwise_coefficients(
        name,
        height,
        width,
        args.alpha,
        args.samples,
        g,
        weighting=args.weighting,
        pixels=[centre],
        device=device,
        progress=progress,
        **params,
    )
    exact = None
    if name in CLOSED_FORMS:
        exact = closed_form(
            name,
            height,
            width,
            args.alpha,
            weighting=args.weighting,
            r=args.r if name == "hmix" else None,
        )
    return profile, heatmap, exact


@contextlib.contextmanager
def _csv_file(path: Path) -> Iterator[io.StringIO]:
    """A text buffer for a CSV file, written to ``path`` atomically when the block ends."""
    from unimix.train.fileio import atomic_write_text

    buf = io.StringIO(newline="")
    yield buf
    atomic_write_text(path, buf.getvalue())


def _write_profile_csv(path: Path, profiles: dict[str, Any], exact: dict[str, Any]) -> None:
    """``method, radius, A, stderr, closed_form_torus`` per method and radius."""
    with _csv_file(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "radius", "A", "stderr", "closed_form_torus"])
        for label, prof in profiles.items():
            cf = exact.get(label)
            for k in range(prof.radius.numel()):
                writer.writerow(
                    [
                        label,
                        int(prof.radius[k]),
                        f"{float(prof.radial[k]):.8g}",
                        f"{float(prof.radial_stderr[k]):.3g}",
                        f"{float(cf.radial[k]):.8g}" if cf is not None else "",
                    ]
                )


def _write_heatmap_csv(
    path: Path, heatmaps: dict[str, Any], centre: tuple[int, int], height: int, width: int
) -> None:
    """``method, i, j, A, stderr``: the centre pixel's row of ``A`` per method."""
    with _csv_file(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "i", "j", "A", "stderr"])
        for label, coef in heatmaps.items():
            values, errors = coef.map(centre)
            for i in range(height):
                for j in range(width):
                    writer.writerow(
                        [label, i, j, f"{float(values[i, j]):.8g}", f"{float(errors[i, j]):.3g}"]
                    )


def _profile(args: argparse.Namespace, out: Path, device: str) -> int:
    from unimix.viz.profiles import plot_heatmaps, plot_radial_profiles

    height, width = args.size
    centre = (height // 2, width // 2)
    progress = not args.no_progress and sys.stderr.isatty()
    profiles, heatmaps, exact = {}, {}, {}
    for name in args.methods:
        label = f"hmix(r={args.r:g})" if name == "hmix" else name
        profiles[label], heatmaps[label], cf = _estimate(name, args, device, centre, progress)
        if cf is not None:
            exact[label] = cf
        print(
            f"{label}: A at distance 0, 1, {height // 2}: "
            + ", ".join(f"{float(profiles[label].radial[k]):.4f}" for k in (0, 1, height // 2))
        )

    suffix = f"α = {args.alpha:g}, {args.weighting} weighting, {args.boundary}"
    plot_radial_profiles(
        profiles,
        out / "profile.png",
        closed_forms=exact if args.closed_form else None,
        title=f"Pixel-level regularisation by distance ({suffix})",
    )
    plot_heatmaps(
        heatmaps, centre, out / "heatmap.png", title=f"A(p, ·) for the centre pixel ({suffix})"
    )
    _write_profile_csv(out / "profile.csv", profiles, exact)
    _write_heatmap_csv(out / "heatmap.csv", heatmaps, centre, height, width)
    print(
        f"wrote {out / 'profile.png'}, {out / 'heatmap.png'}, {out / 'profile.csv'}, {out / 'heatmap.csv'}"
    )
    return 0
