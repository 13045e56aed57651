"""``unimix predict``: the theory's prediction, written before anything is trained.

Without ``--dataset`` (or with one of the locality tasks): ``predictions.csv`` for the locality
study — per task and dial setting, the locality index and the predicted effect with its sign and
rule (:mod:`unimix.study.locality`); no result is read. With ``--dataset``: the dial ranked for
that data by the theory (:mod:`unimix.study.advise`), written to ``ranking.csv``, with a plain
statement of how far the ranking can be trusted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write the theory's predictions (predictions.csv) or rank the mask dial for your data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="folder for predictions.csv / ranking.csv (default: .)")  # fmt: skip
    parser.add_argument("--dataset", default=None,
                        help="rank the dial for this dataset (digits, digits_local, digits_pair, "
                        "cifar10, cifar100, imagefolder); default: the locality study's tasks")  # fmt: skip
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where the data lives")
    parser.add_argument("--model-run", type=Path, default=None, metavar="RUN",
                        help="a run trained without mixing (unimix train) used as the baseline; "
                        "default: train one briefly here")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of the brief baseline (default 3)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=None, help="image side (dataset default)")


def _fail(message: str) -> int:
    import sys

    print(f"unimix predict: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from unimix.study.locality import write_predictions

    out: Path = args.out
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    if args.dataset is None:
        from unimix.study.locality import predict_rows

        digest = write_predictions(predict_rows(), out / "predictions.csv")
        print(f"wrote {out / 'predictions.csv'} (sha256 {digest})")
        return 0
    return _rank(args, out)


def _rank(args: argparse.Namespace, out: Path) -> int:
    import torch

    from unimix.study.advise import rank_dial, trust_statement, write_ranking
    from unimix.train.trainer import load_run

    if args.model_run is not None:
        if not (args.model_run / "checkpoint.pt").is_file() and not args.model_run.is_dir():
            return _fail(f"--model-run {args.model_run} is not a run folder")
        model, spec, _ = load_run(args.model_run, "cpu")
    else:
        if args.epochs < 1:
            return _fail(f"--epochs must be >= 1, got {args.epochs}")
        model, spec = _brief_baseline(args, out)
    data = spec.val_tensors() or spec.test_tensors()
    if data is None:
        return _fail(f"dataset {args.dataset!r} is not held in memory; no images to measure on")
    torch.manual_seed(0)
    rows = rank_dial(model, data[0], data[1], spec.image_size)
    write_ranking(rows, out / "ranking.csv")
    print("rank  setting        locality  clipping  second-order term")
    for r in rows:
        print(f"{r['rank']:>4}  {r['setting']:<13} {r['locality_index']:8.3f}  "
              f"{r['border_clipping']:+8.3f}  {r['second_order']:.4g} ± {r['second_order_se']:.2g}")  # fmt: skip
    print(f"wrote {out / 'ranking.csv'}")
    print(trust_statement())
    return 0


def _brief_baseline(args: argparse.Namespace, out: Path):  # type: ignore[no-untyped-def]
    from unimix.train import train
    from unimix.train.config import TrainConfig, load_recipe
    from unimix.train.trainer import load_run

    recipe = "imagefolder_small" if args.dataset == "imagefolder" else "digits"
    data = load_recipe(recipe)
    data.update(dataset=args.dataset, epochs=int(args.epochs), methods="none")
    data.pop("study", None)
    if args.data_dir is not None:
        data["data_dir"] = args.data_dir
    if args.image_size is not None:
        data["image_size"] = args.image_size
    if args.dataset != "digits":
        data.pop("train_per_class", None)
    run_dir = out / "baseline"
    train(TrainConfig.from_dict(data), run_dir, progress=False)
    model, spec, _ = load_run(run_dir, "cpu")
    return model, spec
