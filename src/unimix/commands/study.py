"""``unimix study``: the paper's comparison, end to end, with one command."""

from __future__ import annotations

import argparse

HELP = "train and compare MSDA methods (default: digits, none/mixup/cutmix/hmix/gmix, 3 seeds)"


def _eps(text: str) -> float:
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from unimix.commands._methods import methods_help
    from unimix.study import PAPER_METHODS

    parser.add_argument(
        "--dataset",
        default=None,
        help="digits (default, embedded), cifar10, cifar100 or imagefolder",
    )
    parser.add_argument(
        "--data-dir", default=None, help="directory of the CIFAR archives or the ImageFolder tree"
    )
    parser.add_argument(
        "--methods",
        default=",".join(PAPER_METHODS),
        help="comma-separated methods (default: %(default)s); " + methods_help(),
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs per run (default: the recipe's)"
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="recipe name or YAML file (default: digits, or the dataset's)",
    )
    parser.add_argument("--out", default="study", help="output directory (default: ./study)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any training key for every run (repeatable), e.g. --set lr=0.05",
    )
    parser.add_argument(
        "--eps",
        type=_eps,
        default=8 / 255,
        help="ε of the FGSM/PGD columns of results.csv, pixel units (default 8/255)",
    )
    parser.add_argument("--pgd-steps", type=int, default=10, help="PGD iterations (default 10)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (one line per run)"
    )


_DATASET_RECIPES = {
    "digits": "digits",
    "cifar10": "cifar100_preactresnet18",
    "cifar100": "cifar100_preactresnet18",
    "imagefolder": "imagenet_resnet50_100ep",
}


def run(args: argparse.Namespace) -> int:
    from unimix.study import StudyConfig, run_study

    recipe = args.recipe or _DATASET_RECIPES.get(args.dataset or "digits", "digits")
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.epochs is not None:
        overrides.append(f"epochs={args.epochs}")
    cfg = StudyConfig(
        out=args.out,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        seeds=args.seeds,
        recipe=recipe,
        overrides=overrides,
        device=args.device,
        attack_eps=args.eps,
        pgd_steps=args.pgd_steps,
        progress=not args.no_progress,
    )
    run_study(cfg)
    return 0
