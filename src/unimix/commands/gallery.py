"""``unimix gallery``: the mask gallery of every method on two real photographs."""

from __future__ import annotations

import argparse
from pathlib import Path

from unimix.commands import _args

HELP = "write a PNG gallery of every method's mask and mixed image (two sample photographs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from unimix.commands._methods import methods_help

    parser.add_argument(
        "--out",
        type=_args.path,
        default="gallery.png",
        metavar="FILE|DIR",
        help="image file to write, or a directory that receives gallery.png (default: gallery.png)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (default: all that need no model); "
        + methods_help(),
    )
    parser.add_argument(
        "--lam", type=float, default=0.65, help="mixing ratio λ (default 0.65, as in the paper)"
    )
    parser.add_argument("--r", type=float, default=0.5, help="HMix box-area ratio r (default 0.5)")
    parser.add_argument("--seed", type=_args.seed, default=0, help="seed of the masks' random positions")


def run(args: argparse.Namespace) -> int:
    from unimix.checks import check_unit
    from unimix.errors import check_output_file
    from unimix.viz.gallery import plot_mask_gallery

    check_unit("--lam", args.lam)
    check_unit("--r", args.r)
    out = Path(args.out)
    check_output_file(out / "gallery.png" if out.is_dir() or not out.suffix else out, "--out")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    path = plot_mask_gallery(args.out, methods=methods, lam=args.lam, r=args.r, seed=args.seed)
    print(f"wrote {path}")
    return 0
