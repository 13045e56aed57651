"""Any ImageFolder tree (the ImageNet layout) with the standard ImageNet transforms.

Layout::

    data_dir/train/<class name>/<image>.jpg|png|…
    data_dir/val/<class name>/<image>.jpg|png|…

read with :class:`torchvision.datasets.ImageFolder` (classes are the sorted folder names, images
are converted to RGB). Transforms are those of the standard ImageNet recipe (He et al., 2016;
the torchvision reference scripts), with ``S`` the image size (224 by default):

- train: ``RandomResizedCrop(S)`` (scale 0.08–1, aspect 3/4–4/3), horizontal flip;
- test: ``Resize(S · 256/224)`` of the shorter side (aspect kept), ``CenterCrop(S)``;

then scaling to ``[0, 1]`` and normalisation with the ImageNet mean and standard deviation.
Items are decoded and transformed one at a time, so these sets want worker processes
(``make_loader(..., num_workers=8)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from unimix.data.base import DatasetFormatError, DataSpec, as_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_imagefolder",
    "imagenet_transforms",
    "load_image",
]

#: ImageNet's per-channel mean (RGB, images in [0, 1]), used to normalise image folders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet's per-channel standard deviation (RGB, images in [0, 1]).
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224


def _layout(root: Path, train_dir: str, val_dir: str) -> str:
    return (
        f"'{root}/{train_dir}/<class>/<image>' and '{root}/{val_dir}/<class>/<image>' "
        "(ImageNet layout: one folder per class in each split, the same classes in both)"
    )


def _torchvision():
    try:
        import torchvision
        from torchvision.transforms import v2
    except ImportError as err:
        raise ImportError(
            "ImageFolder datasets need torchvision: pip install 'unimix[vision]'"
        ) from err
    return torchvision, v2


def load_image(path: str | os.PathLike) -> Any:
    """The image file at ``path`` as an RGB PIL image, decoded in full.

    Decoding happens here (not lazily in a transform), so a truncated or corrupt file raises
    :class:`DatasetFormatError` naming ``path``, in the worker that read it, instead of a bare
    PIL error in the middle of an epoch. ``unimix train --check-data`` reads every file up front.
    """
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            image = Image.open(fh)
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetFormatError(
            f"cannot read image '{path}': {err}; replace or remove the file "
            "(unimix train --check-data lists every bad file)"
        ) from err


def imagenet_transforms(
    image_size: int | tuple[int, int] = 224,
    train_augment: bool = True,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
):
    """``(train_transform, test_transform)``: PIL image → normalised float32 ``[3, H, W]``.

    The test transform resizes the shorter side to ``max(H, W) · 256/224`` (256 for 224), keeping
    the aspect ratio, and crops the centre.
    """
    _, v2 = _torchvision()
    size = as_size(image_size)
    resize = round(max(size) * RESIZE_RATIO)
    finish = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    test = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), *finish])
    if not train_augment:
        return test, test
    flip = v2.RandomHorizontalFlip()
    train = v2.Compose([v2.RandomResizedCrop(size, antialias=True), flip, *finish])
    return train, test


def build_imagefolder(
    data_dir: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    train_augment: bool = True,
    train_dir: str = "train",
    val_dir: str = "val",
) -> DataSpec:
    """The :class:`DataSpec` of the ImageFolder tree at ``data_dir`` (see the module docstring).

    Raises FileNotFoundError when ``data_dir`` or a split folder is missing and
    :class:`DatasetFormatError` (a ValueError) when a split has no class folders or images, or the
    two splits disagree on the classes; each message names the path and the expected layout.
    """
    torchvision, _ = _torchvision()
    root = Path(data_dir).expanduser()
    size = as_size(224 if image_size is None else image_size)
    layout = _layout(root, train_dir, val_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root '{root}' is not a directory: expected {layout}")
    for split in (train_dir, val_dir):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"missing split folder '{root / split}': expected {layout}")
    train_tf, test_tf = imagenet_transforms(size, train_augment)
    splits = []
    for split, tf in ((train_dir, train_tf), (val_dir, test_tf)):
        try:
            splits.append(
                torchvision.datasets.ImageFolder(str(root / split), transform=tf, loader=load_image)
            )
        except (FileNotFoundError, RuntimeError) as err:
            raise DatasetFormatError(
                f"'{root / split}' is not a usable split ({err}): expected {layout}"
            ) from err
    train, test = splits
    if train.class_to_idx != test.class_to_idx:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_val = sorted(set(test.classes) - set(train.classes))
        raise DatasetFormatError(
            f"the splits of '{root}' disagree on the classes (only in {train_dir}: {only_train}, "
            f"only in {val_dir}: {only_val}): expected {layout}"
        )
    return DataSpec(
        train=train,
        test=test,
        num_classes=len(train.classes),
        in_chans=3,
        image_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name="imagefolder",
        classes=tuple(train.classes),
        root=str(root),
        info={"train_dir": train_dir, "val_dir": val_dir},
    )
