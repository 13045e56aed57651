"""Batched image transforms for in-memory datasets: translation, flips, resizing, normalisation.

torchvision's transforms draw one set of random parameters per call, so applied to a batch they
move every image the same way. The in-memory datasets of :mod:`unimix.data` (digits, CIFAR)
augment whole batches at once instead, each image with its own parameters, in a single gather
over the flattened padded image plane:

    out[n, c, i, j] = pad(x)[n, c, i + dy_n, j' + dx_n] ,   j' = W − 1 − j if flip_n else j ,

with ``dy_n, dx_n`` uniform on ``{0, …, 2s}`` over an image zero-padded by ``s`` on every side.
That is exactly torchvision's ``RandomCrop(size, padding=s)`` followed by
``RandomHorizontalFlip()``, per image and vectorised over the batch.

Random parameters are drawn on the generator's device (CPU when there is none) and applied on the
images' device, so a seed gives the same augmentation on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RandomShiftFlip", "random_shift_flip", "normalize", "resize"]


def _check_batch(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {tuple(images.shape)}")


def random_shift_flip(
    images: Tensor,
    max_shift: int,
    flip: bool = False,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> Tensor:
    """Translate each image by its own random offset and optionally mirror it, in one gather.

    Args:
        images: ``[N, C, H, W]`` floating-point batch (any device).
        max_shift: largest translation ``s`` in pixels, per axis; offsets are uniform on
            ``{−s, …, s}`` (``RandomCrop(H, padding=s)``). 0 disables translation.
        flip: mirror each image left-right with probability ½.
        generator: source of randomness; its device is where the offsets are drawn.
        fill: value of the pixels shifted in from outside the image.

    Returns:
        A new contiguous ``[N, C, H, W]`` tensor; ``images`` is not modified.
    """
    _check_batch(images)
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative int, got {max_shift!r}")
    n, c, h, w = images.shape
    if n == 0 or (max_shift == 0 and not flip):
        return images.clone()
    rng_device = generator.device if generator is not None else torch.device("cpu")
    s = max_shift
    offsets = torch.randint(0, 2 * s + 1, (2, n), generator=generator, device=rng_device)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=rng_device) < 0.5
    dev = images.device
    offsets = offsets.to(dev)
    rows = offsets[0, :, None] + torch.arange(h, device=dev)  # [N, H] in padded coordinates
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip:
        cols = torch.where(mirrored.to(dev)[:, None], cols.flip(1), cols)
    cols = offsets[1, :, None] + cols  # [N, W]
    padded = F.pad(images, (s, s, s, s), value=fill) if s > 0 else images
    # one gather along the flattened padded plane, the same positions for every channel
    flat = (rows[:, :, None] * (w + 2 * s) + cols[:, None, :]).view(n, 1, h * w)
    out = padded.reshape(n, c, -1).gather(2, flat.expand(n, c, h * w))
    return out.view(n, c, h, w)


class RandomShiftFlip:
    """Per-image random translation (zero-filled) and horizontal flip of a batch.

    ``RandomShiftFlip(4, flip=True)`` is the standard CIFAR training augmentation (random crop
    32 with padding 4, then horizontal flip); ``RandomShiftFlip(2)`` is the one used for digits.
    See :func:`random_shift_flip`.
    """

    def __init__(self, max_shift: int, flip: bool = False, fill: float = 0.0) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative int, got {max_shift!r}")
        self.max_shift = max_shift
        self.flip = bool(flip)
        self.fill = float(fill)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return random_shift_flip(images, self.max_shift, self.flip, generator, self.fill)

    def __repr__(self) -> str:
        return f"RandomShiftFlip(max_shift={self.max_shift}, flip={self.flip}, fill={self.fill})"


def resize(images: Tensor, size: tuple[int, int], antialias: bool | None = None) -> Tensor:
    """Bilinear resize of a ``[N, C, H, W]`` batch to ``size`` (no copy when already that size).

    ``antialias`` defaults to on when shrinking and off when enlarging (where it has no effect
    anyway, but costs time).
    """
    _check_batch(images)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if antialias is None:
        antialias = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(
        images, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias
    )


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(images − mean) / std`` per channel, on the images' device and dtype (a new tensor)."""
    _check_batch(images)
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(
            f"mean and std need one value per channel ({images.shape[1]}), "
            f"got {len(mean)} and {len(std)}"
        )
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s
