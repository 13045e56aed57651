"""Random occlusion: one square patch per image, CutOut-style, for robustness to missing content.

CutOut (DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout",
2017) erases a square patch of side ``s`` at a random position. Used at *test* time it measures
how well a classifier copes with a missing region — the kind of input CutMix-like training
produces. The patch is filled with ``fill`` (default 0, i.e. the dataset mean for normalised
images), the same in every channel.

Positions (per image, from an optional :class:`torch.Generator`):

- ``boundary="inside"`` (default): the top-left corner is uniform over the ``(H−s+1)(W−s+1)``
  positions that keep the patch inside the image, so every image loses exactly ``s²`` pixels and
  the score does not depend on how often the patch falls off the border;
- ``boundary="clip"``: the centre is uniform over the ``H·W`` pixels and the patch is clipped to
  the image (the original CutOut).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["occlusion_boxes", "occlusion_masks", "random_occlusion"]

Boundary = Literal["inside", "clip"]


def _check(size: int, height: int, width: int, boundary: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be an int >= 0 (patch side in pixels), got {size!r}")
    if boundary not in ("inside", "clip"):
        raise ValueError(f"boundary must be 'inside' or 'clip', got {boundary!r}")
    if boundary == "inside" and size > min(height, width):
        raise ValueError(
            f"size={size} does not fit in a {height}x{width} image; use size <= {min(height, width)}"
        )


def occlusion_boxes(
    n: int,
    height: int,
    width: int,
    size: int,
    *,
    boundary: Boundary = "inside",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random patch boxes ``[n, 4]`` int64 ``(y0, y1, x0, x1)`` (half-open, within the image).

    Drawn on the generator's device (CPU without a generator), so a seed gives the same boxes on
    every device.
    """
    _check(size, height, width, boundary)
    device = generator.device if generator is not None else torch.device("cpu")
    if boundary == "inside":
        y0 = torch.randint(0, height - size + 1, (n,), generator=generator, device=device)
        x0 = torch.randint(0, width - size + 1, (n,), generator=generator, device=device)
        return torch.stack([y0, y0 + size, x0, x0 + size], dim=1)
    cy = torch.randint(0, height, (n,), generator=generator, device=device)
    cx = torch.randint(0, width, (n,), generator=generator, device=device)
    y0, x0 = cy - size // 2, cx - size // 2
    return torch.stack(
        [
            y0.clamp(0, height),
            (y0 + size).clamp(0, height),
            x0.clamp(0, width),
            (x0 + size).clamp(0, width),
        ],
        dim=1,
    )


def occlusion_masks(
    boxes: Tensor, height: int, width: int, device: torch.device | None = None
) -> Tensor:
    """Bool masks ``[n, 1, H, W]``, True inside each box ``(y0, y1, x0, x1)``."""
    boxes = boxes.to(device) if device is not None else boxes
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_y = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])  # [n, H]
    in_x = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])  # [n, W]
    return (in_y[:, :, None] & in_x[:, None, :])[:, None]


def random_occlusion(
    images: Tensor,
    size: int,
    *,
    fill: float = 0.0,
    boundary: Boundary = "inside",
    generator: torch.Generator | None = None,
    return_boxes: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fill one random ``size × size`` square per image with ``fill`` (all channels).

    Args:
        images: ``[B, C, H, W]`` images (normalised: ``fill=0`` is then the dataset mean).
        size: patch side in pixels; 0 leaves the images unchanged.
        fill: value written into the patch.
        boundary: ``"inside"`` (patch always whole) or ``"clip"`` (CutOut: centre anywhere).
        generator: random source of the positions.
        return_boxes: also return the ``[B, 4]`` boxes ``(y0, y1, x0, x1)``.

    Returns:
        A new tensor (``images`` is not modified), and the boxes if asked.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(
            f"images must be a [B, C, H, W] tensor, got {getattr(images, 'shape', type(images))}"
        )
    b, _, h, w = images.shape
    boxes = occlusion_boxes(b, h, w, size, boundary=boundary, generator=generator)
    masks = occlusion_masks(boxes, h, w, device=images.device)
    out = images.masked_fill(masks, fill)
    return (out, boxes.to(images.device)) if return_boxes else out
