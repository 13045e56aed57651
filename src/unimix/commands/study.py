"""``unimix study``: the paper's comparison, end to end, with one command."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from unimix.commands import _args

HELP = (
    "train and compare MSDA methods in data regimes where they differ (default: digits, "
    "none/mixup/cutmix/hmix/gmix, the recipe's regimes and seeds)"
)

EPILOG = """\
scaling out (results.csv is the same whichever way the runs execute):
  unimix study --out study                       every CPU core (or GPU) of this machine
  unimix study --out study --workers 1           one run at a time, in this process
  unimix study --out /shared/study --executor ray --ray-address HOST:6379
                                                 each run a Ray task on an existing cluster
  unimix study --out /shared/study --executor slurm --slurm-partition gpu \\
      --gpus-per-run 1 --slurm-time 600          one SLURM job array (submitit); rerun the
                                                 same command later to pick the study up
"""


def _eps(text: str) -> float:
    """An attack radius as a number or a fraction of 255 levels, e.g. ``0.03`` or ``8/255``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number or a fraction such as 8/255, got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:  # refused here, before any run is trained
        raise argparse.ArgumentTypeError(f"must be a finite radius >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``unimix study``, in the order ``--help`` lists them."""
    _add_data_arguments(parser)
    _add_protocol_arguments(parser)
    _add_execution_arguments(parser)
    _add_evaluation_arguments(parser)
    _add_control_arguments(parser)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Which dataset, and where it lies."""
    parser.add_argument(
        "--dataset",
        default=None,
        help="digits (default, embedded), cifar10, cifar100 or imagefolder",
    )
    parser.add_argument(
        "--data-dir", default=None, help="directory of the CIFAR archives or the ImageFolder tree"
    )


def _add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """What is compared: methods, seeds, regimes, the grid, epochs and the recipe."""
    from unimix.commands._methods import methods_help
    from unimix.study import PAPER_METHODS

    parser.add_argument(
        "--methods",
        default=",".join(PAPER_METHODS),
        help="comma-separated methods (default: %(default)s); " + methods_help(),
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="replicates per method (default: the recipe's, else 3); each replicate redraws the "
        "training/validation split and the initialisation, shared by every method",
    )
    parser.add_argument(
        "--base-seed",
        type=int,
        default=0,
        help="moves every replicate's draws (splits and initialisations) to an independent set "
        "(default 0)",
    )
    parser.add_argument(
        "--regimes",
        default=None,
        metavar="NAME[,NAME…]",
        help="data regimes of the recipe to run (default: the recipe's default list)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,…",
        help="sweep a training key or method parameter over values for every method that takes "
        "it (repeatable; every combination), e.g. --grid alpha=0.2,1 --grid method_params.r=0.25,0.75",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs per run (default: the recipe's)"
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="recipe name or YAML file (default: digits, or one picked for the dataset)",
    )


def _add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the study is written and runs, and overrides of the training keys."""
    parser.add_argument(
        "--out",
        type=_args.path,
        default=None,
        help="output directory (default: ./study, and ./study-quick with --quick)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads of each run (default: the recipe's, else 1 for CPU runs)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs trained at once, each in its own process (default: one per CPU core for CPU "
        "runs, one per visible GPU for CUDA runs); results do not depend on it",
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray", "slurm"),
        default="local",
        help="where the runs execute: local worker processes (default), a Ray cluster "
        "(pip install 'unimix[ray]') or a SLURM job array through submitit ('unimix[slurm]')",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="times a run whose worker, Ray worker or SLURM task died is started again, from its "
        "last checkpoint (default 2)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (default: start a local one); --out must be on storage every "
        "node sees",
    )
    parser.add_argument("--slurm-partition", default=None, help="SLURM partition of the job array")
    parser.add_argument(
        "--slurm-time",
        type=int,
        default=240,
        help="SLURM time limit per run, minutes (default 240)",
    )
    parser.add_argument(
        "--gpus-per-run", type=int, default=None, help="GPUs per SLURM task (default: none)"
    )
    parser.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option for the job array (repeatable), e.g. --slurm-option "
        "account=myproject --slurm-option qos=high",
    )
    parser.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="submitit's executor: slurm (default); local runs the job array as local processes "
        "through submitit (no cluster: to try the setup)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any training key for every run (repeatable), e.g. --set lr=0.05",
    )


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The attacks of the evaluation."""
    parser.add_argument(
        "--eps",
        type=_eps,
        default=8 / 255,
        help="ε of the FGSM/PGD columns of results.csv, pixel units (default 8/255)",
    )
    parser.add_argument(
        "--pgd-steps",
        type=int,
        default=None,
        help="PGD iterations (default: the recipe's, else 10)",
    )


def _add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Starting afresh, the smoke version, progress output and the data check."""
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start afresh: delete the runs of an earlier study in --out (needed when its "
        "settings differ from this call's)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke version in about a minute: first regime, 2 seeds, 3 epochs, 8×8 images, "
        "light attacks (numbers mean nothing)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (one line per run)"
    )
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="read every image of the dataset once before training and name each bad file",
    )


_DATASET_RECIPES = {
    "digits": "digits",
    "cifar10": "cifar100_preactresnet18",
    "cifar100": "cifar100_preactresnet18",
}

#: ImageFolder trees with at least this many training images and a GPU get the ImageNet recipe.
LARGE_IMAGEFOLDER = 100_000


def _count_images(root: Path, limit: int) -> int:
    """Image files under ``root/train`` (or ``root``), counting stops at ``limit``."""
    base = root / "train" if (root / "train").is_dir() else root
    n = 0
    for _, _, files in os.walk(base):
        n += sum(f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp")) for f in files)
        if n >= limit:
            break
    return n


def pick_recipe(dataset: str | None, data_dir: str | None, device: str) -> tuple[str, str]:
    """The recipe for a dataset without ``--recipe`` and the reason, for the log.

    ImageFolder: the ImageNet recipe (ResNet-50 at 224 px) only on a GPU with a large tree;
    otherwise ``imagefolder_small`` (the small CNN at 64 px), which a CPU trains in minutes.
    """
    import torch

    from unimix.data import default_data_dir

    name = (dataset or "digits").lower()
    if name != "imagefolder":
        return _DATASET_RECIPES.get(name, "digits"), ""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    root = Path(data_dir or default_data_dir())
    count = _count_images(root, LARGE_IMAGEFOLDER)
    if cuda and count >= LARGE_IMAGEFOLDER:
        return "imagenet_resnet50_100ep", (
            f"a GPU and ≥ {LARGE_IMAGEFOLDER} training images: ResNet-50 at 224 px"
        )
    why = "no GPU" if not cuda else f"only {count} training images (< {LARGE_IMAGEFOLDER})"
    return "imagefolder_small", f"{why}: the small CNN at 64×64 px (choose another with --recipe)"


QUICK_OVERRIDES = ["epochs=3", "image_size=8", "model_kwargs.widths=[8, 16]", "tensorboard=false"]


def _slurm_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-option needs KEY=VALUE, got {item!r}")
        options[key.strip().removeprefix("--")] = value.strip()
    return options


def _check_executor_installed(executor: str) -> None:
    """Ray and submitit are optional extras: a missing one is named before any work."""
    import importlib.util

    module, extra = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}.get(
        executor, (None, "")
    )
    if module and importlib.util.find_spec(module) is None:
        raise ValueError(f"--executor {executor} needs {module}: pip install 'unimix[{extra}]'")


def run(args: argparse.Namespace) -> int:
    from unimix.errors import check_device, check_output_dir
    from unimix.study import StudyConfig, parse_grid, run_study

    recipe, why = (
        (args.recipe, "") if args.recipe else pick_recipe(args.dataset, args.data_dir, args.device)
    )
    if why:
        print(f"unimix study: recipe {recipe} ({why})")
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        overrides.append(f"epochs={args.epochs}")
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()] if args.regimes else None
    seeds, pgd_steps, eps_list = args.seeds, args.pgd_steps, None
    if args.quick:
        from unimix.study.runner import load_study_section

        quick = load_study_section(recipe).get("quick_overrides")
        overrides = (list(quick) if quick else QUICK_OVERRIDES) + overrides
        seeds = seeds or 2
        pgd_steps = min(pgd_steps or 2, 2)
        eps_list = [args.eps]
        if regimes is None:
            from unimix.study.runner import first_regime

            regimes = first_regime(recipe)
    if args.base_seed < 0:
        raise ValueError(f"--base-seed must be >= 0, got {args.base_seed}")
    cfg = StudyConfig(
        out=args.out or ("study-quick" if args.quick else "study"),
        base_seed=args.base_seed,
        quick=bool(args.quick),
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        seeds=seeds,
        recipe=recipe,
        overrides=overrides,
        regimes=regimes,
        grid=parse_grid(args.grid),
        device=args.device,
        eps_list=eps_list,
        attack_eps=args.eps,
        pgd_steps=pgd_steps,
        progress=not args.no_progress,
        fresh=args.fresh,
        threads=args.threads,
        executor=args.executor,
        workers=args.workers,
        max_retries=args.max_retries,
        ray_address=args.ray_address,
        slurm_partition=args.slurm_partition,
        slurm_time=args.slurm_time,
        gpus_per_run=args.gpus_per_run,
        slurm_options=_slurm_options(args.slurm_option),
        slurm_cluster=args.slurm_cluster,
    )
    _check_executor_installed(cfg.executor)
    check_device(args.device)  # before anything is created (unimix.errors)
    check_output_dir(cfg.out)
    if getattr(args, "check_data", False):
        from unimix.commands.train import check_data
        from unimix.train import resolve_config

        check_data(resolve_config(recipe, overrides))
    run_study(cfg)  # checks every setting first; a failure before any run leaves nothing behind
    return 0
