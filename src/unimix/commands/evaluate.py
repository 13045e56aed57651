"""``unimix evaluate RUN_DIR``: evaluate a trained run on its test set.

Loads the model and data of a run directory written by ``unimix train`` (``config.yaml`` and
``checkpoint.pt``) with :func:`unimix.train.load_run`, runs :func:`unimix.evaluate.evaluate_model`
and prints the table; the result goes to ``RUN_DIR/evaluation.json`` (or ``--out``), and with
``--plots`` the reliability diagram and robustness curve next to it.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from unimix.commands import _args

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
        "--seed", type=_args.seed, default=0, help="seed of PGD starts and occlusion positions"
    )
    parser.add_argument(
        "--out",
        type=_args.path,
        default=None,
        metavar="FILE.json",
        help="where to write the JSON result (default: RUN_DIR/evaluation.json)",
    )
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write the reliability diagram and robustness curve (PNG) next to the JSON file",
    )


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a path that is not a run directory of ``unimix train``, naming what is missing."""
    from unimix.errors import UsageError

    if not run_dir.exists():
        raise UsageError(f"{run_dir} does not exist (expected a run directory of unimix train)")
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory (expected a run directory of unimix train)")
    if not (run_dir / "checkpoint.pt").is_file():
        found = (
            "an empty folder" if not any(run_dir.iterdir()) else "a folder without checkpoint.pt"
        )
        raise UsageError(
            f"{run_dir} is {found}, not a run directory of unimix train "
            "(expected config.yaml and checkpoint.pt)"
        )


def _try_create(out: Path) -> None:
    """Open ``out`` for writing (created and removed again if new) where its folder exists: a
    place no file can be made (``/proc``) is refused before the evaluation, not after."""
    import os

    from unimix.errors import UsageError

    if not out.parent.is_dir():
        return
    existed = out.exists()
    try:
        fd = os.open(out, os.O_WRONLY | (0 if existed else os.O_CREAT | os.O_EXCL), 0o644)
    except OSError as err:
        raise UsageError(f"cannot write --out {out}: {err.strerror}") from None
    os.close(fd)
    if not existed:
        out.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    import yaml  # noqa: F401  (the 'study' extra: a missing one stops us before anything else)

    from unimix.errors import UsageError, check_device, check_output_file, removed_on_failure

    run_dir: Path = args.run_dir
    _check_run_dir(run_dir)
    for name, value, low in (
        ("--pgd-steps", args.pgd_steps, 0),
        ("--occlusion-size", args.occlusion_size, 0),
        ("--batch-size", args.batch_size, 1),
        ("--max-batches", 1 if args.max_batches is None else args.max_batches, 1),
    ):
        if value < low:
            raise UsageError(f"{name} must be >= {low}, got {value}")
    device = check_device(args.device) if args.device is not None else None
    # every output is checked writable before a second of evaluation is spent
    out = check_output_file(args.out or run_dir / "evaluation.json")
    _try_create(out)
    if args.plots:
        for name in ("reliability", "robustness"):
            check_output_file(out.with_name(f"{out.stem}_{name}.png"), "--plots")
        import unimix.viz.reliability  # noqa: F401  (a missing extra stops us before computing)
        import unimix.viz.robustness  # noqa: F401
    with removed_on_failure(out.parent, keep=(out.name,)):
        return _evaluate(args, run_dir, out, None if device == "auto" else device)


def _evaluate(args: argparse.Namespace, run_dir: Path, out: Path, device: str | None) -> int:
    from unimix.commands._progress import StageProgress
    from unimix.evaluate import evaluate_run, format_table

    attacks = f"clean, FGSM and PGD-{args.pgd_steps} at {len(args.eps)} ε"
    occlusion = ", occlusion" if args.occlusion_size else ""
    bar = StageProgress("evaluate", f"{attacks}{occlusion} on", unit="images")
    result = evaluate_run(
        run_dir,
        device=device,
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
