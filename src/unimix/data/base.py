"""What every dataset builder returns (:class:`DataSpec`) and the in-memory image dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from unimix.data.transforms import resize

__all__ = ["DataSpec", "DatasetFormatError", "TensorImageDataset", "as_size", "check_dataset"]

BatchAugment = Callable[[Tensor, "torch.Generator | None"], Tensor]


class DatasetFormatError(ValueError):
    """A dataset on disk is missing pieces or is not in the expected format."""


class TensorImageDataset(Dataset):
    """A labelled image set held in one tensor, augmented and normalised a whole batch at a time.

    Items are ``(image, label)`` with ``image`` a normalised float32 ``[C, H, W]`` tensor and
    ``label`` an int, as for any map-style dataset; :meth:`get_batch` returns a whole batch with
    one gather and a few element-wise operations (no per-item Python), which is what
    :func:`unimix.data.make_loader` uses for datasets of this type.

    Args:
        images: ``[N, C, H, W]`` pixels, uint8 in ``[0, 255]`` or floating point in ``[0, 1]``.
        labels: ``[N]`` class indices.
        mean, std: per-channel statistics of pixels in ``[0, 1]`` used to normalise.
        augment: optional batch augmentation ``augment(pixels, generator) -> pixels`` applied to
            raw pixels (before normalisation, so a zero fill is black), e.g.
            :class:`unimix.data.transforms.RandomShiftFlip`.
        size: optional output ``(H, W)``; batches are resized bilinearly after augmentation.
        classes: class names, index-aligned with the labels.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: BatchAugment | None = None,
        size: tuple[int, int] | None = None,
        classes: Sequence[str] = (),
    ) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError(
                f"images must be a [N, C, H, W] tensor, got {getattr(images, 'shape', images)}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape [{images.shape[0]}] to match images, got "
                f"{tuple(labels.shape)}"
            )
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(
                f"mean and std need one value per channel ({images.shape[1]}), "
                f"got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.images = images
        self.labels = labels.to(images.device)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self.size = tuple(int(v) for v in size) if size is not None else None
        self.classes = tuple(classes)
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    # -- shape ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images this dataset yields."""
        return self.size if self.size is not None else tuple(self.images.shape[-2:])

    @property
    def device(self) -> torch.device:
        return self.images.device

    # -- access --------------------------------------------------------------------------------
    def _affine(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per-channel ``(shift, scale)`` with ``normalised = raw * scale + shift``."""
        if device not in self._stats:
            unit = 1.0 / 255.0 if self.images.dtype == torch.uint8 else 1.0
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self._stats[device] = (-mean / std, unit / std)
        return self._stats[device]

    def get_batch(
        self,
        index: Tensor,
        generator: torch.Generator | None = None,
        augment: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Images ``[B, C, H, W]`` (float32, normalised) and labels ``[B]`` at ``index``.

        Runs on the dataset's device (see :meth:`to`); the augmentation draws from ``generator``
        (the global RNG when ``None``) and is skipped when ``augment`` is False.
        """
        index = torch.as_tensor(index, dtype=torch.long).to(self.images.device)
        x = self.images[index]
        if augment and self.augment is not None:
            x = self.augment(x, generator)
        shift, scale = self._affine(x.device)
        x = torch.addcmul(shift, x.to(torch.float32), scale)
        if self.size is not None:
            x = resize(x, self.size)
        return x, self.labels[index]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self)
        if not -n <= int(index) < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        x, y = self.get_batch(torch.tensor([int(index)]))
        return x[0], int(y[0])

    def tensors(self, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
        """All images (normalised, not augmented) and labels, on the dataset's device."""
        parts = [
            self.get_batch(torch.arange(i, min(i + batch_size, len(self))), augment=False)[0]
            for i in range(0, len(self), batch_size)
        ]
        if not parts:
            return torch.empty(0, self.in_chans, *self.image_size), self.labels.clone()
        return torch.cat(parts), self.labels.clone()

    def to(self, device: torch.device | str) -> TensorImageDataset:
        """This dataset with its tensors on ``device`` (``self`` when already there)."""
        device = torch.device(device)
        if device.type == self.images.device.type and (
            device.index is None or device == self.images.device
        ):
            return self
        return TensorImageDataset(
            self.images.to(device),
            self.labels.to(device),
            self.mean,
            self.std,
            self.augment,
            self.size,
            self.classes,
        )

    def __repr__(self) -> str:
        return (
            f"TensorImageDataset(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
            f"dtype={self.images.dtype}, size={self.image_size}, augment={self.augment!r})"
        )


@dataclass
class DataSpec:
    """A train/test pair and what a model and trainer need to know about it.

    Items of ``train`` and ``test`` are ``(image, label)``: a normalised float32 ``[C, H, W]``
    tensor and an int. ``mean``/``std`` are the per-channel statistics used to normalise pixels in
    ``[0, 1]`` (``normalised = (pixel − mean) / std``); ``image_size`` is ``(H, W)``.
    ``classes`` names the labels, ``root`` is where the data came from (``None`` for digits) and
    ``info`` holds dataset-specific facts (digits: ``split_seed``, ``test_size``, ``max_shift``,
    ``train_indices``/``test_indices`` into :func:`sklearn.datasets.load_digits`).
    """

    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    classes: tuple[str, ...] = ()
    root: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: Optional validation split carved from the training images (digits ``val_fraction``).
    val: Dataset | None = None

    @property
    def in_memory(self) -> bool:
        """True when both splits are :class:`TensorImageDataset` (whole-tensor access works)."""
        return isinstance(self.train, TensorImageDataset) and isinstance(
            self.test, TensorImageDataset
        )

    def train_tensors(self) -> tuple[Tensor, Tensor] | None:
        """The whole training split as ``(images [N, C, H, W], labels [N])``, normalised and not
        augmented, or ``None`` when it is not held in memory (ImageFolder). Meant for small sets:
        CIFAR's training split is 600 MB as float32."""
        return self.train.tensors() if isinstance(self.train, TensorImageDataset) else None

    def test_tensors(self) -> tuple[Tensor, Tensor] | None:
        """The whole test split as ``(images, labels)``, or ``None`` when not in memory."""
        return self.test.tensors() if isinstance(self.test, TensorImageDataset) else None

    def val_tensors(self) -> tuple[Tensor, Tensor] | None:
        """The whole validation split as ``(images, labels)``, or ``None`` when there is none."""
        return self.val.tensors() if isinstance(self.val, TensorImageDataset) else None

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, pixels: Tensor) -> Tensor:
        """Pixels in ``[0, 1]`` (``[..., C, H, W]``) to model inputs."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, images: Tensor) -> Tensor:
        """Model inputs back to pixels in ``[0, 1]`` (e.g. to plot them)."""
        mean, std = self._stats(images)
        return images * std + mean

    def pixel_bounds(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """``(low, high)``, each ``[1, C, 1, 1]``: the normalised values of pixels 0 and 1, the
        box an adversarial attack must stay in."""
        mean = torch.tensor(self.mean, dtype=dtype, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=device).view(1, -1, 1, 1)
        return -mean / std, (1 - mean) / std


def as_size(image_size: int | Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """``(H, W)`` from an int side or a pair, validated."""
    if isinstance(image_size, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got a bool")
    if isinstance(image_size, int):
        size: tuple[int, ...] = (image_size, image_size)
    else:
        try:
            size = tuple(int(v) for v in image_size)
        except TypeError as err:
            raise TypeError(f"{name} must be an int or a pair of ints, got {image_size!r}") from err
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be a positive int or (H, W), got {image_size!r}")
    return size[0], size[1]


def _file_samples(dataset: Any) -> tuple[list[str], Callable[[str], Any]] | None:
    """``(paths, loader)`` of a file-backed dataset (torchvision's ImageFolder and the like,
    also inside a ``Subset``), or ``None`` for an in-memory one."""
    while not hasattr(dataset, "samples") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    loader = getattr(dataset, "loader", None)
    if samples is None or loader is None:
        return None
    return [str(s[0]) for s in samples], loader


def check_dataset(spec: DataSpec, workers: int | None = None, max_listed: int = 10) -> int:
    """Read every file behind ``spec``'s splits once; return how many images were checked.

    File-backed splits (ImageFolder) have each image opened and fully decoded with the split's
    own loader (threads: ``workers``, default the CPU count), so a truncated or corrupt file is
    found before training rather than mid-epoch. In-memory splits (digits, CIFAR) were checked
    when they were read and are only counted. Raises :class:`DatasetFormatError` naming the bad
    files (the first ``max_listed``) and their count.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    count = 0
    bad: list[str] = []
    for split in (spec.train, spec.val, spec.test):
        if split is None:
            continue
        files = _file_samples(split)
        if files is None:
            count += len(split)
            continue
        paths, loader = files

        def read(path: str, loader: Callable[[str], Any] = loader) -> str | None:
            try:
                loader(path)
            except Exception as err:  # any failure to decode is a bad file
                return f"'{path}' ({err.__cause__ or err})"
            return None

        with ThreadPoolExecutor(max_workers=workers or min(32, os.cpu_count() or 1)) as pool:
            for problem in pool.map(read, paths, chunksize=64):
                if problem is not None:
                    bad.append(problem)
        count += len(paths)
    if bad:
        listed = "; ".join(bad[:max_listed])
        more = f" (and {len(bad) - max_listed} more)" if len(bad) > max_listed else ""
        raise DatasetFormatError(
            f"{len(bad)} of {count} images cannot be read: {listed}{more}; "
            "replace or remove these files"
        )
    return count
