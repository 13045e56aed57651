"""SaliencyMix: a CutMix box centred on the peak of the partner's saliency map.

Uddin, Monira, Shin, Chung & Bae, "SaliencyMix: A Saliency Guided Data Augmentation Strategy for
Better Regularization" (ICLR 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from unimix.checks import check_choice
from unimix.methods._common import as_float, check_pair
from unimix.mixmethod import MixMethod
from unimix.registry import register

__all__ = [
    "SaliencyMix",
    "SaliencyMixResult",
    "saliency_mix",
    "fine_grained_saliency",
    "spectral_residual_saliency",
    "saliency_peaks",
]

Detector = Literal["fine_grained", "spectral_residual"]

# Surround half-widths of the fine-grained detector (Montabone & Soto 2010, as in OpenCV).
_FINE_GRAINED_SCALES = (12, 24, 48, 28, 56, 112)


def _luminance(images: Tensor) -> Tensor:
    """``[N, H, W]`` luma ``0.299 R + 0.587 G + 0.114 B`` (RGB order), or the channel mean."""
    x = as_float(images)
    if x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return torch.einsum("nchw,c->nhw", x, weights)
    return x.mean(dim=1)


def _separable_blur(x: Tensor, kernel: Tensor) -> Tensor:
    """Filter ``[N, H, W]`` by ``kernel ⊗ kernel`` with mirror borders (OpenCV's BORDER_REFLECT_101).

    A weighted sum of shifted copies (the kernels here have 3 or 5 taps); a side shorter than the
    kernel uses the part of the kernel that fits, renormalised.
    """
    r = kernel.numel() // 2
    for dim in (1, 2):
        size = x.shape[dim]
        pad = min(r, size - 1)
        if pad == 0:
            continue
        taps = kernel[r - pad : r + pad + 1].tolist()
        total = sum(taps)
        lead = x.narrow(dim, 1, pad).flip(dim)
        tail = x.narrow(dim, size - 1 - pad, pad).flip(dim)
        padded = torch.cat((lead, x, tail), dim)
        x = sum(w / total * padded.narrow(dim, i, size) for i, w in enumerate(taps))
    return x


def _take_clamped(t: Tensor, dim: int, offset: int, length: int) -> Tensor:
    """``t`` at indices ``clamp(i + offset, 0, size − 1)``, ``i < length``, along ``dim``."""
    size = t.shape[dim]
    left = min(max(-offset, 0), length)
    right = min(max(offset + length - size, 0), length - left)
    middle = length - left - right
    parts = []
    if left:
        parts.append(
            t.narrow(dim, 0, 1).expand(*[left if d == dim else -1 for d in range(t.dim())])
        )
    if middle:
        parts.append(t.narrow(dim, min(max(offset, 0), size - 1), middle))
    if right:
        parts.append(
            t.narrow(dim, size - 1, 1).expand(*[right if d == dim else -1 for d in range(t.dim())])
        )
    return torch.cat(parts, dim)


def fine_grained_saliency(images: Tensor) -> Tensor:
    """Fine-grained centre–surround saliency (Montabone & Soto, Image Vision Comput. 2010).

    The detector SaliencyMix uses (OpenCV's ``StaticSaliencyFineGrained``): the luma, blurred
    twice by ``[¼, ½, ¼]``, is compared at each pixel with the mean of its surround (the
    ``2s×2s`` window ``[p − s + 1, p + s]`` clipped to the image, centre excluded) for
    ``s ∈ {12, 24, 48, 28, 56, 112}``; "on" and "off" differences ``max(±(centre − surround), 0)``
    are summed over scales, each normalised by its maximum, and added. Returns ``[N, H, W]`` in
    ``[0, 2]``. Vectorised over the batch with summed-area tables; the OpenCV code truncates every
    intermediate to 8 bits, this one stays in floating point.
    """
    gray = _luminance(images).float()
    _, height, width = gray.shape
    blur = torch.tensor([0.25, 0.5, 0.25])
    gray = _separable_blur(_separable_blur(gray, blur), blur).double()
    table = F.pad(gray.cumsum(1).cumsum(2), (1, 0, 1, 0))  # [N, H+1, W+1] summed-area table
    rows = torch.arange(height, device=gray.device)
    cols = torch.arange(width, device=gray.device)
    on = torch.zeros_like(gray)
    off = torch.zeros_like(gray)
    for s in _FINE_GRAINED_SCALES:
        # window [p − s + 1, p + s] clipped: table rows/columns clamp(p − s + 1) and clamp(p + s + 1)
        strip = _take_clamped(table, 1, s + 1, height) - _take_clamped(table, 1, 1 - s, height)
        total = _take_clamped(strip, 2, s + 1, width) - _take_clamped(strip, 2, 1 - s, width)
        r0, r1 = (rows - s + 1).clamp(0, height), (rows + s + 1).clamp(0, height)
        c0, c1 = (cols - s + 1).clamp(0, width), (cols + s + 1).clamp(0, width)
        count = ((r1 - r0)[:, None] * (c1 - c0)[None, :] - 1).clamp_min(1)
        surround = (total - gray) / count
        on += (gray - surround).clamp_min(0)
        off += (surround - gray).clamp_min(0)
    peak_on = on.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    peak_off = off.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (on / peak_on + off / peak_off).float()


def spectral_residual_saliency(images: Tensor, size: int = 64) -> Tensor:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007), as OpenCV's ``StaticSaliencySpectralResidual``.

    The luma is resized to ``size×size``; with ``A`` its log amplitude spectrum and ``P`` its
    phase, ``S = |F⁻¹[exp(A − A∗b₃ + iP)]|`` (``b₃`` the 3×3 mean), blurred by a 5×5 Gaussian of
    ``σ = 8``, squared, normalised to a maximum of 1 and resized back. Returns ``[N, H, W]``.
    """
    gray = _luminance(images).double()
    height, width = gray.shape[-2:]
    small = F.interpolate(gray[:, None], size=(size, size), mode="bilinear", align_corners=False)[
        :, 0
    ]
    spectrum = torch.fft.fft2(small)
    log_amp = torch.log(spectrum.abs().clamp_min(1e-12))
    residual = log_amp - _separable_blur(log_amp, torch.ones(3, dtype=torch.float64))
    recon = torch.fft.ifft2(torch.polar(torch.exp(residual), spectrum.angle())).abs()
    sigma = 8.0
    gauss = torch.exp(-(torch.arange(-2, 3, dtype=torch.float64) ** 2) / (2 * sigma**2))
    sal = _separable_blur(recon, gauss).square()
    sal = sal / sal.flatten(1).amax(1).clamp_min(1e-300)[:, None, None]
    return F.interpolate(sal[:, None], size=(height, width), mode="bilinear", align_corners=False)[
        :, 0
    ].float()


def saliency_peaks(saliency: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column of the maximum of each ``[N, H, W]`` map (first in raster order on ties)."""
    width = saliency.shape[-1]
    flat = saliency.flatten(1).argmax(dim=1)
    return flat // width, flat % width


@dataclass(frozen=True)
class SaliencyMixResult:
    """Output of :func:`saliency_mix`.

    Attributes:
        images: ``[N, C, H, W]`` mixed rows (float).
        lam: ``[N]`` weight of each row's own label, ``1 − box area / HW``.
        boxes: ``[N, 4]`` int64 ``(y0, y1, x0, x1)`` of the region taken from the partner.
        peaks: ``[N, 2]`` int64 ``(row, column)`` of the partner's saliency peak.
    """

    images: Tensor
    lam: Tensor
    boxes: Tensor
    peaks: Tensor


def saliency_mix(
    images: Tensor, partners: Tensor, lam: Tensor, *, detector: Detector = "fine_grained"
) -> SaliencyMixResult:
    """SaliencyMix each row with its partner (Uddin et al., ICLR 2021).

    The box has CutMix's side ratio ``√(1 − λ)`` (rounded to whole pixels as in
    :func:`unimix.masks.sample_boxes`), is centred on the peak of the partner's saliency map and
    clipped to the image; the partner's pixels in the box replace the row's at the same place,
    and the row's own label weighs ``1 − |box| / HW``.
    """
    check_pair(images, partners, lam)
    n, _, height, width = images.shape
    detect = fine_grained_saliency if detector == "fine_grained" else spectral_residual_saliency
    py, px = saliency_peaks(detect(partners))
    side = (1.0 - lam.to(images.device, torch.float64)).clamp(0, 1).sqrt()
    box_h = torch.round(side * height).long()
    box_w = torch.round(side * width).long()
    y0 = (py - box_h // 2).clamp(0, height)
    x0 = (px - box_w // 2).clamp(0, width)
    y1 = (py - box_h // 2 + box_h).clamp(0, height)
    x1 = (px - box_w // 2 + box_w).clamp(0, width)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    in_y = (rows >= y0[:, None]) & (rows < y1[:, None])
    in_x = (cols >= x0[:, None]) & (cols < x1[:, None])
    inside = (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)
    x = as_float(images)
    mixed = torch.where(inside, as_float(partners).to(x.dtype), x)
    lam_eff = 1.0 - ((y1 - y0) * (x1 - x0)).float() / (height * width)
    boxes = torch.stack((y0, y1, x0, x1), dim=1)
    return SaliencyMixResult(mixed, lam_eff, boxes, torch.stack((py, px), dim=1))


@register("saliencymix")
class SaliencyMix(MixMethod):
    """SaliencyMix (Uddin et al., ICLR 2021): CutMix with the box on the partner's most salient pixel.

    Saliency is the fine-grained detector of Montabone & Soto (2010) that the paper selects
    (:func:`fine_grained_saliency`); ``detector="spectral_residual"`` uses Hou & Zhang (2007)
    instead. The paper's defaults are ``α = 1`` and mixing probability 0.5 (``Mixer(prob=0.5)``).
    See :func:`saliency_mix`.

    Deviations: the reference code computes one box from the first partner of the batch and
    applies it to every row; here every row's box is centred on its own partner's peak (in
    ``batch`` mode too). The reference code hands normalised float images to OpenCV's 8-bit
    detector, which then reads their bytes; the detector here runs on the images' luma, in
    PyTorch (no OpenCV dependency), on any device.
    """

    def __init__(self, detector: Detector = "fine_grained") -> None:
        check_choice("detector", detector, ("fine_grained", "spectral_residual"))
        self.detector = detector

    def mix(
        self,
        images: Tensor,
        partners: Tensor,
        lam: Tensor,
        *,
        generator: torch.Generator | None,
        context: Mapping[str, Any],
    ) -> tuple[Tensor, Tensor]:
        out = saliency_mix(images, partners, lam, detector=self.detector)
        return out.images, out.lam
