"""Datasets and loaders of the study.

- ``digits``: the scikit-learn digits (embedded, the default; :mod:`unimix.data.digits`);
- ``digits_local`` / ``digits_pair``: locality-controlled tasks composed from them — a local cue
  (one digit among distractor strokes) and a long-range cue (two far digits, label
  ``(a + b) mod 10``) (:mod:`unimix.data.digit_tasks`);
- ``cifar10`` / ``cifar100``: the python-pickle archives in a local folder
  (:mod:`unimix.data.cifar`);
- ``imagefolder``: any ``train/`` + ``val/`` ImageFolder tree, e.g. ImageNet
  (:mod:`unimix.data.imagefolder`).

:func:`build_dataset` returns a :class:`DataSpec`; :func:`make_loader` turns one of its splits into
batches whose order and augmentation are pure functions of (seed, epoch)
(:mod:`unimix.data.loader`). Nothing here ever downloads data.

    >>> from unimix.data import build_dataset, make_loader
    >>> spec = build_dataset("digits")
    >>> loader = make_loader(spec.train, 64, shuffle=True, seed=0)
    >>> images, labels = next(iter(loader))
    >>> images.shape, spec.num_classes
    (torch.Size([64, 1, 32, 32]), 10)
"""

from __future__ import annotations

import os
from typing import Any

from unimix.data.base import DatasetFormatError, DataSpec, TensorImageDataset
from unimix.data.loader import InMemoryLoader, WorkerLoader, derive_seed, make_loader, seed_worker

__all__ = [
    "DATA_DIR_ENV",
    "DataSpec",
    "DatasetFormatError",
    "InMemoryLoader",
    "TensorImageDataset",
    "WorkerLoader",
    "available_datasets",
    "build_dataset",
    "default_data_dir",
    "derive_seed",
    "make_loader",
    "seed_worker",
]

#: The environment variable naming the data directory when ``data_dir`` is not given.
DATA_DIR_ENV = "UNIMIX_DATA_DIR"
_DATASETS = ("digits", "digits_local", "digits_pair", "cifar10", "cifar100", "imagefolder")
_OPTIONS = {
    "digits": {"test_size", "max_shift", "train_per_class", "train_fraction", "val_fraction"},
    "digits_local": {"n_train", "n_test", "val_fraction", "test_size"},
    "digits_pair": {"n_train", "n_test", "val_fraction", "test_size", "pair_rule"},
    "cifar10": {"padding", "flip"},
    "cifar100": {"padding", "flip"},
    "imagefolder": {"train_dir", "val_dir"},
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return list(_DATASETS)


def default_data_dir() -> str:
    """``$UNIMIX_DATA_DIR``, else ``./data``: where file-based datasets are looked for."""
    return os.environ.get(DATA_DIR_ENV) or "data"


def build_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] | None = None,
    split_seed: int = 0,
    train_augment: bool = True,
    **options: Any,
) -> DataSpec:
    """Build the train/test :class:`DataSpec` of dataset ``name``.

    Args:
        name: ``"digits"``, ``"cifar10"``, ``"cifar100"`` or ``"imagefolder"``.
        data_dir: where file-based datasets live (see each module for the accepted layouts);
            default :func:`default_data_dir`. Unused by digits.
        image_size: output size (int or ``(H, W)``); defaults 32 (digits, CIFAR) and 224
            (ImageFolder).
        split_seed: seed of the train/test split (digits; the others come split).
        train_augment: apply the dataset's standard training augmentation to ``train``.
        options: per dataset: digits ``test_size`` (0.2), ``max_shift``, ``train_per_class`` /
            ``train_fraction`` (a low-data regime, the rest as test set), ``val_fraction``; CIFAR ``padding`` (4),
            ``flip`` (True); ImageFolder ``train_dir`` ("train"), ``val_dir`` ("val").
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    key = key if key in _DATASETS else key.replace("_", "")
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(_DATASETS)}")
    # split keys of a training configuration: None (or a zero val_fraction) means "not used"
    for opt in ("train_per_class", "train_fraction", "val_fraction"):
        if opt in options and not options[opt] and not key.startswith("digits"):
            del options[opt]
        elif key in ("digits_local", "digits_pair") and opt != "val_fraction" and opt in options:
            if options[opt] is not None:
                raise TypeError(f"{opt} is a digits option; {key} is sized by n_train/n_test")
            del options[opt]
    unknown = sorted(set(options) - _OPTIONS[key])
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for dataset {key!r}; it accepts "
            f"{sorted(_OPTIONS[key]) or 'none'}"
        )
    if key in ("digits_local", "digits_pair"):
        from unimix.data.digit_tasks import build_digit_task

        return build_digit_task(key, image_size, split_seed, train_augment, **options)
    if key == "digits":
        from unimix.data.digits import build_digits

        return build_digits(image_size, split_seed, train_augment, **options)
    root = default_data_dir() if data_dir is None else data_dir
    if key in ("cifar10", "cifar100"):
        from unimix.data.cifar import build_cifar

        return build_cifar(key, root, image_size, train_augment, **options)
    from unimix.data.imagefolder import build_imagefolder

    return build_imagefolder(root, image_size, train_augment, **options)
