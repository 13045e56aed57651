"""``unimix train``: train one classifier from a recipe, resume it, or run it under ``torchrun``.

    unimix train --recipe digits --methods hmix --seed 1 --out runs/hmix-1
    unimix train --recipe cifar100_preactresnet18 --data-dir ~/data/cifar --methods gmix --out runs/g
    unimix train --resume runs/g                     # after a kill or Ctrl-C
    torchrun --nproc_per_node 4 -m unimix.cli train --recipe imagenet_resnet50_300ep --out runs/r50

Every configuration key is a flag (``--warmup-epochs 5``, ``--no-nesterov``) and can also be set
with ``--set key=value`` (repeatable; dotted keys for mappings: ``--set method_params.r=0.3``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from unimix.commands import _args
from unimix.errors import (
    UsageError,
    check_device,
    check_output_dir,
    one_line,
    removed_on_failure,
)

HELP = "Train a classifier with a mixing method (recipes, resume, several GPUs through torchrun)."

_KEY_HELP = {
    "dataset": "digits, cifar10, cifar100 or imagefolder",
    "data_dir": "where file-based datasets live",
    "image_size": "image side or H W (default: the dataset's)",
    "split_seed": "seed of the train/test split (digits)",
    "train_augment": "standard training augmentation of the dataset",
    "num_workers": "loader worker processes (file-based datasets)",
    "drop_last": "drop the last incomplete training batch",
    "model": "small_cnn, preact_resnet18, wrn28_10, tv:NAME, timm:NAME",
    "model_kwargs": "extra model arguments as a YAML mapping",
    "batch_size": "global batch size (split over processes)",
    "eval_batch_size": "evaluation batch size (default: batch size)",
    "epochs": "training epochs",
    "steps": "optimiser steps instead of epochs",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "L2 weight decay",
    "decay_norm_bias": "weight decay on biases and norm parameters too",
    "schedule": "cosine, step or constant (after warm-up)",
    "milestones": "epochs at which the step schedule multiplies lr by gamma",
    "gamma": "step schedule factor",
    "warmup_epochs": "linear warm-up length in epochs",
    "min_lr": "final learning rate of the cosine schedule",
    "grad_clip": "clip the gradient norm to this value",
    "methods": "mixing methods (several: chosen per batch)",
    "alpha": "Beta(alpha, alpha) of the mixing ratio",
    "mode": "batch, pair or elem: one mask per batch, pair or image",
    "mix_prob": "probability of mixing a batch/pair/image",
    "switch_prob": "with two methods, the probability of the second",
    "label_smoothing": "label smoothing epsilon",
    "partner": "flip or random: how rows are paired",
    "method_params": "method parameters as a YAML mapping, e.g. '{r: 0.5}'",
    "mix_where": "device (after loading) or collate (in the loader)",
    "amp": "none, bf16 or fp16 autocast",
    "channels_last": "channels-last memory format",
    "compile": "torch.compile the model",
    "device": "auto, cpu, cuda or cuda:N",
    "deterministic": "deterministic algorithms only",
    "seed": "seed of every random stream",
    "eval_every": "evaluate every N epochs (0: only at the end)",
    "tensorboard": "log to TensorBoard (default: when it is installed, silently; --tensorboard warns if it is not)",
}

_LIST_KEYS = {"methods", "milestones", "image_size"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from unimix.train.config import BOOL_KEYS, TrainConfig

    run = parser.add_argument_group("run")
    run.add_argument(
        "--recipe", metavar="NAME|FILE", help="packaged recipe name or YAML file (default: digits)"
    )
    run.add_argument("--out", metavar="DIR", type=_args.path, help="run directory to create")
    run.add_argument(
        "--resume", metavar="DIR", type=_args.path, help="continue the run in DIR from its checkpoint"
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any configuration key (repeatable)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    run.add_argument(
        "--list-recipes", action="store_true", help="list the packaged recipes and exit"
    )
    run.add_argument(
        "--check-data",
        action="store_true",
        help="read every image of the dataset once before training and name each bad file",
    )

    keys = parser.add_argument_group("configuration (each overrides the recipe)")
    for key in TrainConfig.keys():
        flag = "--" + key.replace("_", "-")
        dest = f"cfg_{key}"
        helptext = _KEY_HELP.get(key, key)
        if key == "methods":  # every registered method, from the registry
            from unimix.commands._methods import methods_help

            helptext = f"{helptext}; {methods_help()}"
        if key in BOOL_KEYS:
            keys.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=helptext
            )
        elif key in _LIST_KEYS:
            keys.add_argument(flag, dest=dest, nargs="+", default=None, metavar="V", help=helptext)
        else:
            keys.add_argument(flag, dest=dest, default=None, metavar="V", help=helptext)


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys given as flags, values read as YAML scalars."""
    import yaml

    from unimix.train.config import BOOL_KEYS

    out: dict[str, Any] = {}
    for name, value in vars(args).items():
        if not name.startswith("cfg_") or value is None:
            continue
        key = name[len("cfg_") :]
        if key in BOOL_KEYS:
            out[key] = bool(value)
        elif key in _LIST_KEYS:
            items = [v for part in value for v in str(part).replace(",", " ").split()]
            out[key] = items if key == "methods" else [yaml.safe_load(v) for v in items]
        elif key in ("dataset", "data_dir", "model", "device"):
            out[key] = value
        else:
            out[key] = yaml.safe_load(value)
    return out


def _list_recipes() -> int:
    from importlib import resources

    from unimix.train.config import available_recipes

    for name in available_recipes():
        text = (resources.files("unimix") / "recipes" / f"{name}.yaml").read_text()
        first = next(
            (ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), ""
        )
        print(f"{name:32s} {first}")
    return 0


@contextlib.contextmanager
def _untouched(path: Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    yield path


def _error(message: str) -> NoReturn:
    """Stop with ``unimix train: error: MESSAGE`` (printed by :func:`unimix.cli.main`)."""
    raise UsageError(message)


def _check_methods(cfg: Any) -> None:
    """Refuse an unknown method name before anything is created, listing the known ones."""
    from unimix.commands._methods import method_names

    known = method_names()
    names = list(cfg.methods) if not isinstance(cfg.methods, str) else [cfg.methods]
    unknown = [str(n) for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown method{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"in --methods; known methods: {', '.join(known)}"
        )


def check_data(cfg: Any) -> None:
    """Build ``cfg``'s dataset and read every file of it once (``--check-data``)."""
    from unimix.data import build_dataset
    from unimix.data.base import check_dataset

    spec = build_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.split_seed, False)
    count = check_dataset(spec)
    print(f"check-data: {spec.name}: {count} files read, all good", file=sys.stderr)


def _read_saved_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or one_line(err)
        raise UsageError(f"{path} is not valid YAML{where}: {problem}; fix or remove it") from None
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise UsageError(
            f"{path} must hold a mapping of configuration keys, found {type(saved).__name__}"
        )
    return saved


def run(args: argparse.Namespace) -> int:
    import yaml

    from unimix.train import TrainingInterrupted, train
    from unimix.train.checkpoint import load_checkpoint
    from unimix.train.config import (
        RESUME_MUTABLE,
        TrainConfig,
        apply_overrides,
        load_recipe,
    )
    from unimix.train.trainer import CHECKPOINT_FILE, CONFIG_FILE

    if args.list_recipes:
        return _list_recipes()
    overrides = apply_overrides(_flag_overrides(args), args.overrides)
    if args.resume is not None:
        run_dir = args.resume
        if args.recipe is not None:
            return _error("--resume takes the run's own configuration; drop --recipe")
        if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
            return _error("--resume DIR continues the run in DIR; drop --out or make it DIR")
        if (run_dir / CONFIG_FILE).is_file():
            saved = _read_saved_config(run_dir / CONFIG_FILE)
        elif (run_dir / CHECKPOINT_FILE).is_file():
            saved = load_checkpoint(run_dir / CHECKPOINT_FILE)["config"]
        else:
            return _error(
                f"{run_dir} holds no run to resume (no {CONFIG_FILE} or {CHECKPOINT_FILE})"
            )
        changed = sorted(set(overrides) - RESUME_MUTABLE)
        if changed:
            return _error(
                f"a resumed run keeps its configuration; {changed} cannot change (only "
                f"{', '.join(sorted(RESUME_MUTABLE))} can)"
            )
        cfg = TrainConfig.from_dict({**saved, **overrides})
        out, resume = run_dir, True
    else:
        data = load_recipe(args.recipe if args.recipe is not None else "digits")
        cfg = TrainConfig.from_dict(apply_overrides(data, overrides))
        out, resume = args.out, False
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if out is None:
        return _error("--out DIR is required (or --resume DIR)")
    _check_methods(cfg)
    check_device(cfg.device)
    from unimix.train.memory import check_run_memory

    check_run_memory(cfg)  # before the output folder: sizes that cannot fit are refused here
    out = check_output_dir(out, "--resume" if resume else "--out")
    if getattr(args, "check_data", False):
        check_data(cfg)
    try:
        # rank 0 alone tidies up: under torchrun the others never own the folder
        tidy = removed_on_failure if os.environ.get("RANK", "0") == "0" else _untouched
        with tidy(out, keep=(CHECKPOINT_FILE,)):
            result = train(cfg, out, resume=resume, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        return 128 + int(getattr(stop, "signum", signal.SIGINT))
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    s = result.summary()
    print(
        f"done: {out} | test error {100 * s['test_error']:.2f}% | test loss {s['test_loss']:.4f} | "
        f"{s['time_per_epoch_s']:.2f} s/epoch | {s['images_per_s']:.0f} img/s | "
        f"mixing {s['mix_overhead_pct']:.2f}% of the step"
    )
    return 0
