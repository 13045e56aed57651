"""FMix: binary masks from thresholded low-frequency Fourier noise.

Harris, Marcu, Painter, Niranjan, Prügel-Bennett & Hare, "FMix: Enhancing Mixed Sample Data
Augmentation" (arXiv:2002.12047, 2020).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from unimix.checks import check_positive, check_unit
from unimix.masks import MaskSample, MaskSampler
from unimix.registry import register

__all__ = ["FMix", "low_frequency_noise"]


def low_frequency_noise(
    n: int,
    height: int,
    width: int,
    decay_power: float = 3.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` real fields ``[n, H, W]`` of Fourier noise whose amplitude decays as ``1/f^δ``.

    Each frequency ``f = √(f_y² + f_x²)`` (cycles per pixel) gets a complex coefficient with
    independent standard normal real and imaginary parts scaled by ``1 / max(f, 1/max(H, W))^δ``
    (Harris et al. 2020, eq. 5); the field is its inverse real FFT. The noise is drawn on the
    generator's device and transformed on ``device``, batched over ``n``.
    """
    rand_device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else rand_device
    fy = torch.fft.fftfreq(height, device=device)
    fx = torch.fft.rfftfreq(width, device=device)
    freq = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    scale = freq.clamp_min(1.0 / max(height, width)).pow(-float(decay_power))
    coeffs = torch.randn(n, height, width // 2 + 1, 2, generator=generator, device=rand_device)
    spectrum = torch.view_as_complex(coeffs.to(device)) * scale
    return torch.fft.irfft2(spectrum, s=(height, width))


def _descending_rank(values: Tensor) -> Tensor:
    """Rank of each entry of each row in decreasing order (0 = largest; ties by index)."""
    order = values.argsort(dim=1, descending=True, stable=True)
    ranks = torch.arange(values.shape[1], device=values.device).expand_as(order).contiguous()
    return torch.empty_like(order).scatter_(1, order, ranks)


def _top_k_mask(values: Tensor, k: Tensor) -> Tensor:
    """``[N, P]`` float mask of the ``k[i]`` largest entries of each row, exactly ``k[i]`` ones.

    Thresholds at the ``k``-th largest value (a value sort, NumPy's on the CPU, where it is
    several times faster than PyTorch's); rows with ties at the threshold fall back to ranks.
    """
    n, p = values.shape
    if values.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(values.detach().numpy(), axis=1))
    else:
        ordered = values.sort(dim=1).values
    at = ordered.gather(1, (p - k).clamp(0, p - 1)[:, None])
    at = torch.where(k[:, None] > 0, at, torch.full_like(at, float("inf")))
    masks = values >= at
    tied = masks.sum(1) != k
    if bool(tied.any()):
        masks[tied] = _descending_rank(values[tied]) < k[tied, None]
    return masks.float()


@register("fmix")
class FMix(MaskSampler):
    """FMix (Harris et al. 2020): the top ``λ`` fraction of a low-frequency noise field.

    A field ``Z`` is drawn by :func:`low_frequency_noise` (decay power ``δ``, the paper's default
    ``δ = 3``); the mask is 1 on the ``k`` pixels where ``Z`` is largest and 0 elsewhere, with
    ``k ≈ λ·HW``, so ``mean(M) = k / HW`` exactly. With ``max_soft = s > 0`` (the reference code's
    option, default 0) the ``2·⌊HW·min(s, λ, 1−λ)⌋`` pixels ranked around the threshold get
    weights falling linearly from 1 to 0, which keeps the mean at ``k / HW``. The paper draws
    ``λ ~ Beta(α, α)`` with ``α = 1`` (the :class:`~unimix.Mixer` default).

    Deviations: the reference code rounds ``λ·HW`` up or down with probability ½ each; here it is
    rounded up with probability ``frac(λ·HW)`` (stochastic rounding), so ``E[mean(M) | λ] = λ``
    exactly. The two differ by at most one pixel. Odd widths use ``W//2 + 1`` real-FFT bins (the
    reference code builds one more and drops it). Ties in ``Z`` (probability zero) break by index.
    """

    def __init__(self, decay_power: float = 3.0, max_soft: float = 0.0) -> None:
        self.decay_power = check_positive("decay_power", decay_power, allow_zero=True)  # paper: 3
        self.max_soft = check_unit("max_soft", max_soft, high=0.5)

    def sample(self, lam, height, width, device, generator):
        n, area = lam.shape[0], height * width
        field = low_frequency_noise(n, height, width, self.decay_power, device, generator)
        # k = number of pixels of the first image: stochastic rounding of λ·HW
        target = lam.double() * area
        below = torch.floor(target)
        up = (
            torch.rand(n, generator=generator, device=lam.device, dtype=torch.float64)
            < target - below
        )
        k = (below + up.double()).clamp(0, area).long().to(device)
        flat = field.reshape(n, area)
        if self.max_soft == 0.0:
            masks = _top_k_mask(flat, k)
        else:
            rank = _descending_rank(flat)
            lam_d = lam.to(device).double()
            soft_frac = torch.minimum(
                torch.minimum(lam_d, 1 - lam_d), torch.full_like(lam_d, self.max_soft)
            )
            soft = torch.floor(soft_frac * area).long()
            low, high = k - soft, (k + soft).clamp(max=area)
            span = (high - low).clamp_min(2)[:, None]
            ramp = 1.0 - (rank - low[:, None]).double() / (span - 1).double()
            masks = torch.where(
                rank < low[:, None], 1.0, torch.where(rank >= high[:, None], 0.0, ramp)
            ).float()
        masks = masks.view(n, 1, height, width)
        return MaskSample(masks, masks.mean(dim=(1, 2, 3)), binary=self.max_soft == 0.0)
