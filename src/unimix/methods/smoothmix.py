"""SmoothMix: soft-edged masks.

Lee, Zaheer, Astrid & Lee, "SmoothMix: a Simple Yet Effective Data Augmentation to Train Robust
Classifiers" (CVPR Workshops 2020).
"""

from __future__ import annotations

from typing import Literal

import torch

from unimix.checks import check_choice, check_interval
from unimix.masks import MaskSample, MaskSampler
from unimix.registry import register

__all__ = ["SmoothMix"]


@register("smoothmix")
class SmoothMix(MaskSampler):
    """SmoothMix (Lee et al., CVPRW 2020): the partner pasted through a mask with soft edges.

    The partner's weight is a Gaussian bump ``G`` centred at a pixel ``c`` drawn uniformly, with
    spread ``σ_y = s·H``, ``σ_x = s·W`` and ``s ∈ [0.25, 0.5]`` (the paper's range):

    * ``shape="circle"`` (the reference implementation): ``G(p) = exp(−(Δy²/σ_y² + Δx²/σ_x²) / 2)``;
    * ``shape="square"``: the same fall-off in the max-norm, ``G(p) = exp(−max(Δy²/σ_y², Δx²/σ_x²) / 2)``,
      whose level sets are squares (axis-aligned rectangles for ``H ≠ W``).

    The mask is ``M = 1 − G`` and the label weight ``λ̄ = mean(M)`` (the paper's
    ``λ = 1 − ΣG / HW``), so ``λ̄`` is set by the mask, not by ``λ``: it stays between about 0.25
    and 0.75 whatever ``λ`` is.

    Deviations: the paper draws ``s ~ U(0.25, 0.5)`` independently; here ``s = s_min + (s_max −
    s_min)(1 − λ)`` with the ``λ ~ Beta(α, α)`` that :class:`~unimix.Mixer` draws, which is the
    same distribution for ``α = 1`` (the default) and makes a larger ``λ`` keep more of the first
    image. The paper's square mask is described only by its figure; the max-norm form above is
    this library's. ``boundary="wrap"`` (distance on the torus) is an option for
    :mod:`unimix.theory`; the paper truncates at the border (``"clip"``, the default).
    """

    def __init__(
        self,
        shape: Literal["circle", "square"] = "circle",
        sigma: tuple[float, float] = (0.25, 0.5),
        boundary: Literal["clip", "wrap"] = "clip",
    ) -> None:
        check_choice("shape", shape, ("circle", "square"))
        check_choice("boundary", boundary, ("clip", "wrap"))
        lo, hi = check_interval("sigma", sigma, 0.0, open_low=True)  # fractions of the image size
        self.shape = shape
        self.sigma = (lo, hi)
        self.boundary = boundary

    def sample(self, lam, height, width, device, generator):
        n = lam.shape[0]
        cy = torch.randint(0, height, (n,), generator=generator, device=lam.device).to(device)
        cx = torch.randint(0, width, (n,), generator=generator, device=lam.device).to(device)
        lo, hi = self.sigma
        s = lo + (hi - lo) * (1.0 - lam.to(device))
        dy = (torch.arange(height, device=device) - cy[:, None]).abs().float()
        dx = (torch.arange(width, device=device) - cx[:, None]).abs().float()
        if self.boundary == "wrap":
            dy = torch.minimum(dy, height - dy)
            dx = torch.minimum(dx, width - dx)
        qy = (dy / (s[:, None] * height)).square()
        qx = (dx / (s[:, None] * width)).square()
        if self.shape == "circle":
            g = torch.exp(-0.5 * qy)[:, :, None] * torch.exp(-0.5 * qx)[:, None, :]
        else:
            g = torch.exp(-0.5 * torch.maximum(qy[:, :, None], qx[:, None, :]))
        masks = (1.0 - g).unsqueeze(1)
        return MaskSample(masks, masks.mean(dim=(1, 2, 3)))
