"""The scikit-learn digits set: the embedded default of the study (no download, ever).

1797 real handwritten digits, 8×8 grey levels 0–16, 10 classes, shipped inside scikit-learn
(:func:`sklearn.datasets.load_digits`). unimix turns them into a small image-classification task:

- a fixed, seeded, stratified split (``train_test_split(stratify=y, test_size=0.2,
  random_state=split_seed)``): 1437 training and 360 test images with the same class proportions;
- pixels scaled to ``[0, 1]`` and upsampled once, bilinearly without antialiasing, from 8×8 to
  ``image_size`` (32×32 by default: box masks such as CutMix's need room to be more than a few
  pixels; 8 keeps the native grid);
- normalisation by the mean and standard deviation of the *training* split's pixels;
- training augmentation: a random translation of each image by up to ``max_shift`` pixels per
  axis, zero (background) filled, drawn per image and applied batch-wise in one gather
  (:class:`unimix.data.transforms.RandomShiftFlip`). The digits are centred in their box, so a
  small shift is label-preserving and makes the classifier tolerant of the centring error; a
  horizontal flip is not used, since a mirrored digit is not the same digit (2, 3, 4, 5, 6, 7, 9).
  The default ``max_shift`` is ``max(1, round(image_size / 16))``: 2 pixels at 32×32, i.e. half an
  original pixel, and 1 pixel at the native 8×8.

Everything lives in one tensor (a :class:`~unimix.data.base.TensorImageDataset`), so a batch is a
gather rather than a Python loop over items: the study trains many small models on two cores.
"""

from __future__ import annotations

import torch

from unimix.data.base import DataSpec, TensorImageDataset, as_size
from unimix.data.transforms import RandomShiftFlip, resize

__all__ = ["build_digits", "load_digits_images"]

NATIVE_SIZE = 8
MAX_VALUE = 16.0


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``(images float32 [N, 1, 8, 8] in [0, 1], labels int64 [N])``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a study dependency
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install 'unimix[study]'"
        ) from err
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(MAX_VALUE).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return images, labels


def _split(labels: torch.Tensor, test_size: float, split_seed: int) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split

    indices = list(range(labels.shape[0]))
    train_idx, test_idx = train_test_split(
        indices, test_size=test_size, random_state=split_seed, stratify=labels.numpy()
    )
    return sorted(int(i) for i in train_idx), sorted(int(i) for i in test_idx)


def build_digits(
    image_size: int | tuple[int, int] | None = None,
    split_seed: int = 0,
    train_augment: bool = True,
    test_size: float = 0.2,
    max_shift: int | None = None,
) -> DataSpec:
    """The digits :class:`DataSpec` (see the module docstring).

    Args:
        image_size: output side (or ``(H, W)``); default 32, 8 keeps the native resolution.
        split_seed: ``random_state`` of the stratified split.
        train_augment: random translation of training images (test images are never augmented).
        test_size: fraction of images held out, in ``(0, 1)``.
        max_shift: largest translation in pixels; default ``max(1, round(min(H, W) / 16))``.
    """
    size = as_size(32 if image_size is None else image_size)
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    if max_shift is None:
        max_shift = max(1, round(min(size) / 16))
    images, labels = load_digits_images()
    train_idx, test_idx = _split(labels, float(test_size), int(split_seed))
    images = resize(images, size, antialias=False)
    train_x, test_x = images[train_idx].contiguous(), images[test_idx].contiguous()
    mean, std = train_x.mean().item(), train_x.std().item()
    augment = RandomShiftFlip(int(max_shift), flip=False) if train_augment and max_shift else None
    classes = tuple(str(d) for d in range(10))
    train = TensorImageDataset(train_x, labels[train_idx], (mean,), (std,), augment, None, classes)
    test = TensorImageDataset(test_x, labels[test_idx], (mean,), (std,), None, None, classes)
    return DataSpec(
        train=train,
        test=test,
        num_classes=10,
        in_chans=1,
        image_size=size,
        mean=(mean,),
        std=(std,),
        name="digits",
        classes=classes,
        root=None,
        info={
            "split_seed": int(split_seed),
            "test_size": float(test_size),
            "max_shift": max_shift,
            "train_indices": tuple(train_idx),
            "test_indices": tuple(test_idx),
        },
    )
