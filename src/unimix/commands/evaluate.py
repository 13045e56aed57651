"""``unimix evaluate RUN_DIR``: evaluate a trained run on its test set.

Loads the model and data of a run directory written by ``unimix train`` (``config.yaml`` and
``checkpoint.pt``) with :func:`unimix.train.load_run`, runs :func:`unimix.evaluate.evaluate_model`
and prints the table; the result goes to ``RUN_DIR/evaluation.json`` (or ``--out``), and with
``--plots`` the reliability diagram and robustness curve next to it.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

HELP = "evaluate a trained run: error, NLL, calibration, FGSM/PGD and occlusion robustness, speed"


def parse_eps_list(text: str) -> list[float]:
    """Parse ``"1/255,2/255,0.03"`` into floats (fractions or decimals, pixel units)."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(Fraction(part))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(
                f"bad ε {part!r}: give comma-separated numbers or fractions such as 1/255,8/255"
            ) from None
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError(f"ε must lie in [0, 1] (pixel units), got {part}")
        values.append(value)
    return values


def _step_size(text: str) -> float:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"bad step size {text!r}: give a number such as 2/255"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"step size must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="run directory of unimix train"
    )
    parser.add_argument(
        "--eps",
        type=parse_eps_list,
        default="1/255,2/255,4/255,8/255",
        help="comma-separated L∞ radii in pixel units (default: %(default)s)",
    )
    parser.add_argument("--pgd-steps", type=int, default=10, help="PGD iterations (default: 10)")
    parser.add_argument(
        "--pgd-step-size",
        type=_step_size,
        default=None,
        metavar="S",
        help="PGD step in pixel units, e.g. 2/255 (default: 2.5·ε/steps)",
    )
    parser.add_argument(
        "--no-random-start", action="store_true", help="start PGD at the clean image"
    )
    parser.add_argument(
        "--attack-loss",
        choices=("ce", "margin"),
        default="ce",
        help="loss FGSM/PGD ascend: cross-entropy or the Carlini-Wagner margin (default: ce)",
    )
    parser.add_argument(
        "--occlusion-size",
        type=int,
        default=8,
        help="side of the occluding patch in pixels; 0 to skip",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    parser.add_argument(
        "--max-batches", type=int, default=None, help="evaluate only this many batches"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of PGD starts and occlusion positions"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="where to write the JSON result (default: RUN_DIR/evaluation.json)",
    )
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write the reliability diagram and robustness curve (PNG) next to the JSON file",
    )


def run(args: argparse.Namespace) -> int:
    from unimix.commands._progress import StageProgress
    from unimix.evaluate import evaluate_run, format_table

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        print(
            f"error: {run_dir} is not a directory (expected a run directory of unimix train)",
            file=sys.stderr,
        )
        return 2
    for name, value, low in (
        ("--pgd-steps", args.pgd_steps, 0),
        ("--occlusion-size", args.occlusion_size, 0),
        ("--batch-size", args.batch_size, 1),
    ):
        if value < low:
            print(f"error: {name} must be >= {low}, got {value}", file=sys.stderr)
            return 2
    attacks = f"clean, FGSM and PGD-{args.pgd_steps} at {len(args.eps)} ε"
    occlusion = ", occlusion" if args.occlusion_size else ""
    bar = StageProgress("evaluate", f"{attacks}{occlusion} on", unit="images")
    result = evaluate_run(
        run_dir,
        device=args.device,
        batch_size=args.batch_size,
        seed=args.seed,
        eps_list=args.eps,
        pgd_steps=args.pgd_steps,
        pgd_step_size=args.pgd_step_size,
        pgd_random_start=not args.no_random_start,
        attack_loss=args.attack_loss,
        occlusion_size=args.occlusion_size or None,
        max_batches=args.max_batches,
        progress=bar.update,
    )
    bar.close()
    out = args.out or run_dir / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_json(str(out))
    print(format_table(result))
    print(f"wrote {out}")
    if args.plots:
        from unimix.viz.reliability import plot_reliability
        from unimix.viz.robustness import plot_robustness

        methods = result.meta.get("method", result.meta.get("methods", run_dir.name))
        label = "+".join(map(str, methods)) if isinstance(methods, list) else str(methods)
        for name, plot in (("reliability", plot_reliability), ("robustness", plot_robustness)):
            written = plot({label: result}, out.with_name(f"{out.stem}_{name}.png"))
            print(f"wrote {written}")
    return 0
