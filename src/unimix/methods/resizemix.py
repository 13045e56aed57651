"""ResizeMix: the whole partner, shrunk, pasted into the image.

Qin, Fang, Zhang, Wei, Liu & Wang, "ResizeMix: Mixing Data with Preserved Object Information and
True Labels" (arXiv:2012.11101, 2020).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from unimix.checks import check_choice, check_interval
from unimix.methods._common import as_float, check_pair, random_device
from unimix.mixmethod import MixMethod
from unimix.registry import register

__all__ = ["ResizeMix", "ResizeMixResult", "resize_mix", "paste_resized"]

Interpolation = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class ResizeMixResult:
    """Output of :func:`resize_mix`.

    Attributes:
        images: ``[N, C, H, W]`` mixed rows (float).
        lam: ``[N]`` weight of each row's own label, ``1 − hw / HW``.
        boxes: ``[N, 4]`` int64 ``(y0, y1, x0, x1)`` of the pasted partner.
    """

    images: Tensor
    lam: Tensor
    boxes: Tensor


def paste_resized(
    images: Tensor, partners: Tensor, boxes: Tensor, interpolation: Interpolation = "bilinear"
) -> Tensor:
    """Paste each partner, resized to its box, into its image: one ``grid_sample`` for the batch.

    Output pixel ``(i, j)`` of box ``(y0, y1, x0, x1)`` samples the partner at
    ``((i − y0 + ½)·H/h − ½, (j − x0 + ½)·W/w − ½)``, the source coordinates of
    ``F.interpolate(partner, size=(h, w), align_corners=False)`` (no antialiasing), so the pasted
    content equals that resize (``"nearest"``: ``mode="nearest-exact"``); boxes may differ
    between rows.
    """
    x, p = as_float(images), as_float(partners).to(as_float(images).dtype)
    n, _, height, width = x.shape
    boxes = boxes.to(x.device)
    y0, y1, x0, x1 = boxes.unbind(1)
    h = (y1 - y0).clamp_min(1).to(x.dtype)
    w = (x1 - x0).clamp_min(1).to(x.dtype)
    rows = torch.arange(height, device=x.device, dtype=x.dtype)
    cols = torch.arange(width, device=x.device, dtype=x.dtype)
    # source coordinate of each output pixel, in units of partner pixels (centres at k + ½)
    sy = (rows - y0[:, None] + 0.5) * (height / h[:, None])
    sx = (cols - x0[:, None] + 0.5) * (width / w[:, None])
    if interpolation == "nearest":
        iy = sy.floor().long().clamp_(0, height - 1)
        ix = sx.floor().long().clamp_(0, width - 1)
        index = (iy[:, :, None] * width + ix[:, None, :]).view(n, 1, -1).expand(-1, p.shape[1], -1)
        pasted = p.flatten(2).gather(2, index).view_as(p)
    else:
        grid = torch.stack(
            (
                (2.0 * sx / width - 1.0)[:, None, :].expand(n, height, width),
                (2.0 * sy / height - 1.0)[:, :, None].expand(n, height, width),
            ),
            dim=-1,
        )
        pasted = F.grid_sample(
            p, grid, mode=interpolation, padding_mode="border", align_corners=False
        )
    inside_y = (torch.arange(height, device=x.device) >= y0[:, None]) & (
        torch.arange(height, device=x.device) < y1[:, None]
    )
    inside_x = (torch.arange(width, device=x.device) >= x0[:, None]) & (
        torch.arange(width, device=x.device) < x1[:, None]
    )
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1)
    return torch.where(inside, pasted, x)


def resize_mix(
    images: Tensor,
    partners: Tensor,
    lam: Tensor,
    *,
    scale: tuple[float, float] = (0.1, 0.8),
    interpolation: Interpolation = "bilinear",
    generator: torch.Generator | None = None,
) -> ResizeMixResult:
    """ResizeMix each row with its partner (Qin et al. 2020).

    The partner is resized by ``τ = τ_min + (τ_max − τ_min)(1 − λ)`` in each dimension (box
    ``h = round(τH)``, ``w = round(τW)``), pasted at a position drawn uniformly among those that
    keep it inside the image, and the row's own label weighs ``1 − hw/HW`` (the paper's
    ``1 − τ²`` measured in whole pixels). With ``λ ~ Beta(1, 1)`` this is the paper's
    ``τ ~ U(τ_min, τ_max)``.
    """
    check_pair(images, partners, lam)
    n, _, height, width = images.shape
    lo, hi = scale
    rdev = random_device(generator)
    tau = lo + (hi - lo) * (1.0 - lam.to(rdev, torch.float64))
    box_h = torch.round(tau * height).long().clamp_(0, height)
    box_w = torch.round(tau * width).long().clamp_(0, width)
    u = torch.rand(n, 2, generator=generator, device=rdev, dtype=torch.float64)
    y0 = torch.floor(u[:, 0] * (height - box_h + 1)).long().clamp_(max=height - box_h)
    x0 = torch.floor(u[:, 1] * (width - box_w + 1)).long().clamp_(max=width - box_w)
    boxes = torch.stack((y0, y0 + box_h, x0, x0 + box_w), dim=1).to(images.device)
    mixed = paste_resized(images, partners, boxes, interpolation)
    lam_eff = 1.0 - (box_h * box_w).to(images.device, torch.float32) / (height * width)
    return ResizeMixResult(mixed, lam_eff, boxes)


@register("resizemix")
class ResizeMix(MixMethod):
    """ResizeMix (Qin et al. 2020): the partner resized into a box, labels by area.

    ``scale = (τ_min, τ_max)`` is the range of the partner's size relative to the image; the
    paper's default is ``(0.1, 0.8)``. The paper draws ``τ ~ U(τ_min, τ_max)``; here
    ``τ = τ_min + (τ_max − τ_min)(1 − λ)`` with the ``λ ~ Beta(α, α)`` drawn by
    :class:`~unimix.Mixer`, the same distribution for ``α = 1`` (the default), so that ``batch``
    and ``pair`` modes share one size per unit. The position is drawn per row (the box always
    lies inside the image, so ``λ̄`` depends on ``λ`` only). Resizing is bilinear without
    antialiasing (``interpolation`` may be ``"bicubic"`` or ``"nearest"``). See :func:`resize_mix`.
    """

    def __init__(
        self, scale: tuple[float, float] = (0.1, 0.8), interpolation: Interpolation = "bilinear"
    ) -> None:
        self.scale = check_interval("scale", scale, 0.0, 1.0)
        check_choice("interpolation", interpolation, ("bilinear", "bicubic", "nearest"))
        self.interpolation = interpolation

    def mix(
        self,
        images: Tensor,
        partners: Tensor,
        lam: Tensor,
        *,
        generator: torch.Generator | None,
        context: Mapping[str, Any],
    ) -> tuple[Tensor, Tensor]:
        out = resize_mix(
            images,
            partners,
            lam,
            scale=self.scale,
            interpolation=self.interpolation,
            generator=generator,
        )
        return out.images, out.lam
