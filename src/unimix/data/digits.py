"""The scikit-learn digits set: the embedded default of the study (no download, ever).

1797 real handwritten digits, 8×8 grey levels 0–16, 10 classes, shipped inside scikit-learn
(:func:`sklearn.datasets.load_digits`). unimix turns them into a small image-classification task:

- a fixed, seeded, stratified split (``train_test_split(stratify=y, test_size=0.2,
  random_state=split_seed)``): 1437 training and 360 test images with the same class proportions;
- or a *low-data regime*: ``train_per_class=k`` takes ``k`` training images of each class (or
  ``train_fraction=f`` a stratified fraction ``f`` of all 1797), and **all the other images form
  the test set** — 180 training images leave 1617 for testing, so a regime where the methods
  differ also has tight error bars. Smaller selections of one ``split_seed`` are nested (the
  first ``k`` of a fixed per-class order), so regimes differ only in how much is added;
- a validation split carved from the training images (``val_fraction``, stratified, at least one
  image per class when non-zero): the model never trains on it; the study fits temperature
  scaling and chooses its protocol on it, never on the test set;
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

__all__ = ["build_digits", "carve_validation", "load_digits_images", "select_training"]

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


def _class_orders(labels: torch.Tensor, split_seed: int) -> list[torch.Tensor]:
    """Per class, its image indices in one seeded random order (the selection order)."""
    gen = torch.Generator().manual_seed(int(split_seed))
    orders = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).flatten()
        orders.append(idx[torch.randperm(idx.numel(), generator=gen)])
    return orders


def _take(orders: list[torch.Tensor], counts: list[int]) -> tuple[list[int], list[int]]:
    chosen = [o[:n] for o, n in zip(orders, counts, strict=True)]
    rest = [o[n:] for o, n in zip(orders, counts, strict=True)]
    return sorted(torch.cat(chosen).tolist()), sorted(torch.cat(rest).tolist())


def select_training(
    labels: torch.Tensor,
    split_seed: int = 0,
    train_per_class: int | None = None,
    train_fraction: float | None = None,
) -> tuple[list[int], list[int]]:
    """Indices ``(train, test)`` of a training selection and *all the rest* as the test set.

    ``train_per_class=k``: the first ``k`` images of each class in a seeded order (nested: the
    selection for ``k`` contains the one for any smaller ``k``); ``train_fraction=f``:
    ``round(f · n_c)`` images of each class ``c`` (at least one). Give one of the two.
    """
    if (train_per_class is None) == (train_fraction is None):
        raise ValueError("give exactly one of train_per_class and train_fraction")
    orders = _class_orders(labels, split_seed)
    sizes = [o.numel() for o in orders]
    if train_per_class is not None:
        if isinstance(train_per_class, bool) or not isinstance(train_per_class, int):
            raise TypeError(f"train_per_class must be an int, got {train_per_class!r}")
        if not 1 <= train_per_class < min(sizes):
            raise ValueError(
                f"train_per_class must be in [1, {min(sizes) - 1}] (the smallest class has "
                f"{min(sizes)} images and the test set needs some), got {train_per_class}"
            )
        counts = [train_per_class] * len(orders)
    else:
        f = train_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValueError(f"train_fraction must be a fraction in (0, 1), got {f!r}")
        counts = [min(n - 1, max(1, round(float(f) * n))) for n in sizes]
    return _take(orders, counts)


def carve_validation(
    labels: torch.Tensor, train_idx: list[int], val_fraction: float, split_seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split training indices into ``(train, val)``: ``max(1, round(val_fraction · n_c))`` images
    of each class ``c`` go to validation (none when ``val_fraction`` is 0)."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise TypeError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return list(train_idx), []
    sub = labels[torch.as_tensor(train_idx, dtype=torch.long)]
    orders = _class_orders(sub, split_seed + 7919)  # an order of its own, independent of k
    counts = []
    for o in orders:
        n = o.numel()
        if n < 2:
            raise ValueError(
                f"val_fraction={val_fraction} needs at least 2 training images per class, "
                f"one class has {n}; raise train_per_class/train_fraction or set val_fraction=0"
            )
        counts.append(min(n - 1, max(1, round(val_fraction * n))))
    val_pos, train_pos = _take(orders, counts)
    base = list(train_idx)
    return sorted(base[i] for i in train_pos), sorted(base[i] for i in val_pos)


def build_digits(
    image_size: int | tuple[int, int] | None = None,
    split_seed: int = 0,
    train_augment: bool = True,
    test_size: float = 0.2,
    max_shift: int | None = None,
    train_per_class: int | None = None,
    train_fraction: float | None = None,
    val_fraction: float = 0.0,
) -> DataSpec:
    """The digits :class:`DataSpec` (see the module docstring).

    Args:
        image_size: output side (or ``(H, W)``); default 32, 8 keeps the native resolution.
        split_seed: ``random_state`` of the stratified split.
        train_augment: random translation of training images (test images are never augmented).
        test_size: fraction of images held out, in ``(0, 1)``.
        max_shift: largest translation in pixels; default ``max(1, round(min(H, W) / 16))``.
        train_per_class: training images per class (before the validation carve); the rest of
            the 1797 images are the test set (``test_size`` is then ignored).
        train_fraction: the same as a stratified fraction of all images.
        val_fraction: fraction of the training images (per class) held out as ``spec.val``.
    """
    size = as_size(32 if image_size is None else image_size)
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    if max_shift is None:
        max_shift = max(1, round(min(size) / 16))
    images, labels = load_digits_images()
    if train_per_class is None and train_fraction is None:
        train_idx, test_idx = _split(labels, float(test_size), int(split_seed))
    else:
        train_idx, test_idx = select_training(
            labels, int(split_seed), train_per_class, train_fraction
        )
    train_idx, val_idx = carve_validation(labels, train_idx, val_fraction, int(split_seed))
    images = resize(images, size, antialias=False)
    train_x, test_x = images[train_idx].contiguous(), images[test_idx].contiguous()
    mean, std = train_x.mean().item(), train_x.std().item()
    augment = RandomShiftFlip(int(max_shift), flip=False) if train_augment and max_shift else None
    classes = tuple(str(d) for d in range(10))
    train = TensorImageDataset(train_x, labels[train_idx], (mean,), (std,), augment, None, classes)
    test = TensorImageDataset(test_x, labels[test_idx], (mean,), (std,), None, None, classes)
    val = None
    if val_idx:
        val_x = images[val_idx].contiguous()
        val = TensorImageDataset(val_x, labels[val_idx], (mean,), (std,), None, None, classes)
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
            "val_indices": tuple(val_idx),
            "train_per_class": train_per_class,
            "train_fraction": train_fraction,
            "val_fraction": float(val_fraction),
        },
        val=val,
    )
