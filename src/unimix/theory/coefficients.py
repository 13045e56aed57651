"""Monte Carlo estimates of the pixel-level coefficients ``A(p, q) = E[(1 − M_p)(1 − M_q)]``.

Park, Yun & Chun (NeurIPS 2022, section 3) show that mixed sample data augmentation regularises
the loss through the second-order term of its expansion, in which the mask ``M`` enters only
through the pairwise coefficients

    A(p, q) = E_{λ, M}[ (1 − M_p)(1 − M_q) ]            (``weighting="mask"``)

(``p, q`` pixel positions; the mask is shared by the channels). The exact coefficient of the
expansion is the same expectation under the symmetrised, label-reweighted mask ``M̃`` of
DESIGN.md section 2 (``M̃ = M`` or ``1 − M`` with probability ½ each, weight ``2·mean(M̃)``):

    A_label(p, q) = E[ λ̄ (1 − M_p)(1 − M_q) + (1 − λ̄) M_p M_q ] ,   λ̄ = mean(M)
                                                                      (``weighting="label"``).

For Mixup with ``α = 1`` these are ``E[(1−λ)²] = 1/3`` and ``E[λ(1−λ)] = 1/6`` for every pair.

Two estimators, for any mask sampler:

* :func:`pairwise_coefficients` — the ``[HW, HW]`` matrix (or chosen rows of it) by outer
  products of the masks, accumulated in chunks, with the standard error of every entry;
* :func:`distance_profile` — the mean of ``A(p, p + Δ)`` over the pixels ``p`` for which
  ``p + Δ`` is in the image, for every offset ``Δ``, and its radial average against ``|Δ|``.
  Computed from the autocorrelation of each mask by FFT (``O(HW log HW)`` per mask, no
  ``HW × HW`` matrix), so a 224×224 profile needs a few hundred MB.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from unimix.theory._sampling import (
    MaskDraws,
    MethodLike,
    Weighting,
    _check_alpha,
    _check_lam,
    _check_positive_int,
    _check_weighting,
    draw_masks,
    method_name,
    progress_bar,
    resolve_sampler,
)

__all__ = [
    "PairwiseCoefficients",
    "DistanceProfile",
    "pairwise_coefficients",
    "distance_profile",
    "offset_grid",
]

#: Memory the estimators aim to stay within per chunk of masks (bytes).
_CHUNK_BYTES = 1 << 27


def _default_device(
    device: torch.device | str | None, generator: torch.Generator | None
) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _stderr(total: Tensor, total_sq: Tensor, n: int) -> Tensor:
    """Standard error of a mean from the sum and the sum of squares of ``n`` i.i.d. values."""
    if n < 2:
        return torch.full_like(total, math.nan)
    mean = total / n
    var = (total_sq / n - mean.square()).clamp_min(0.0) * (n / (n - 1))
    return (var / n).sqrt()


def offset_grid(
    height: int, width: int, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The offsets ``Δ = (dy, dx)`` of an ``H×W`` image, with their pair counts and radial bins.

    Returns ``pairs`` ``[2H−1, 2W−1]`` (the number of pixels ``p`` with ``p + Δ`` inside the
    image, ``(H − |dy|)(W − |dx|)``; entry ``[dy + H − 1, dx + W − 1]``), the Euclidean length
    ``|Δ|`` on the same grid, and its bin ``round(|Δ|)`` (whole pixels).
    """
    dy = torch.arange(-(height - 1), height, device=device, dtype=torch.float64)
    dx = torch.arange(-(width - 1), width, device=device, dtype=torch.float64)
    pairs = (height - dy.abs())[:, None] * (width - dx.abs())[None, :]
    length = (dy.square()[:, None] + dx.square()[None, :]).sqrt()
    return pairs, length, length.round().long()


@dataclass(frozen=True)
class PairwiseCoefficients:
    """Rows of the matrix ``A`` (pixels flattened row-major, ``p = i·W + j``).

    Attributes:
        values: ``[P, HW]`` float64 ``A(p, q)`` for the ``P`` requested pixels ``p`` and all ``q``
            (``P = HW``: the whole symmetric matrix).
        stderr: ``[P, HW]`` Monte Carlo standard errors of ``values``.
        pixels: ``[P]`` flat indices of the rows.
        height, width: image size.
        samples: number of masks drawn.
        weighting: ``"mask"`` or ``"label"`` (see :func:`pairwise_coefficients`).
        method: label of the method.
    """

    values: Tensor
    stderr: Tensor
    pixels: Tensor
    height: int
    width: int
    samples: int
    weighting: str
    method: str

    def _row(self, pixel: int | tuple[int, int]) -> int:
        flat = _flat_pixels(pixel, self.height, self.width)
        if flat.numel() != 1:
            raise ValueError(f"give one pixel, (i, j) or a flat index, got {pixel!r}")
        hits = (self.pixels == flat.to(self.pixels.device)).nonzero()
        if hits.numel() == 0:
            raise ValueError(
                f"pixel {pixel!r} is not among the rows computed; pass it in pixels= when estimating"
            )
        return int(hits[0, 0])

    def map(self, pixel: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``A(p, ·)`` and its standard error as ``[H, W]`` images, for one computed pixel ``p``."""
        row = self._row(pixel)
        shape = (self.height, self.width)
        return self.values[row].reshape(shape), self.stderr[row].reshape(shape)


@dataclass(frozen=True)
class DistanceProfile:
    """How ``A(p, q)`` depends on the offset ``q − p``: per offset and per distance.

    Attributes:
        offsets: ``[2H−1, 2W−1]`` float64 ``a(Δ)``, the mean of ``A(p, p + Δ)`` over the ``p`` with
            ``p + Δ`` inside the image; entry ``[dy + H − 1, dx + W − 1]`` (use :meth:`at`).
        offsets_stderr: standard errors of ``offsets`` (zero for closed forms).
        pairs: ``[2H−1, 2W−1]`` number of pixel pairs at each offset, ``(H−|dy|)(W−|dx|)``.
        radius: ``[R]`` distances ``0, 1, …`` in pixels (bins of ``round(|Δ|)``).
        radial: ``[R]`` mean of ``A(p, q)`` over all ordered pixel pairs with
            ``round(|p − q|) = radius``.
        radial_stderr: standard errors of ``radial``.
        height, width, samples, weighting, method: the image size, the masks drawn (0 for a
            closed form), the weighting and the method.
    """

    offsets: Tensor
    offsets_stderr: Tensor
    pairs: Tensor
    radius: Tensor
    radial: Tensor
    radial_stderr: Tensor
    height: int
    width: int
    samples: int
    weighting: str
    method: str

    def at(self, dy: int, dx: int) -> float:
        """``a(Δ)`` at the offset ``Δ = (dy, dx)``."""
        if not (abs(dy) < self.height and abs(dx) < self.width):
            raise ValueError(f"offset ({dy}, {dx}) is outside a {self.height}×{self.width} image")
        return float(self.offsets[dy + self.height - 1, dx + self.width - 1])

    def to_matrix(self) -> Tensor:
        """The ``[HW, HW]`` matrix ``A(p, q) = a(q − p)``.

        Exact when ``A`` depends on ``q − p`` only: every closed form (a torus, or the plane), and
        every method whose masks are translation invariant (``boundary="wrap"``, Mixup). For
        clipped masks it is the stationary approximation, averaged over positions.
        """
        h, w = self.height, self.width
        iy, ix = torch.meshgrid(
            torch.arange(h, device=self.offsets.device),
            torch.arange(w, device=self.offsets.device),
            indexing="ij",
        )
        iy, ix = iy.reshape(-1), ix.reshape(-1)
        return self.offsets[iy[None, :] - iy[:, None] + h - 1, ix[None, :] - ix[:, None] + w - 1]

    @classmethod
    def from_offsets(
        cls,
        offsets: Tensor,
        height: int,
        width: int,
        *,
        weighting: str,
        method: str,
        samples: int = 0,
    ) -> DistanceProfile:
        """A profile from an exact ``a(Δ)`` grid (zero standard errors): for closed forms."""
        pairs, _, bins = offset_grid(height, width, offsets.device)
        offsets = offsets.to(torch.float64)
        radial = _bin_sum(offsets * pairs, bins) / _bin_sum(pairs, bins)
        zero = torch.zeros_like
        return cls(
            offsets,
            zero(offsets),
            pairs,
            torch.arange(radial.numel(), dtype=torch.float64),
            radial,
            zero(radial),
            height,
            width,
            samples,
            weighting,
            method,
        )


def _bin_sum(values: Tensor, bins: Tensor) -> Tensor:
    """Sum ``values [..., 2H−1, 2W−1]`` over each radial bin: ``[..., R]``."""
    lead = values.shape[:-2]
    flat = values.reshape(*lead, -1)
    out = flat.new_zeros(*lead, int(bins.max()) + 1)
    return out.index_add_(flat.dim() - 1, bins.reshape(-1), flat)


def _flat_pixels(pixels: Any, height: int, width: int) -> Tensor:
    """Flat row-major indices from an index, an ``(i, j)`` pair, a list of either, or a tensor."""
    if isinstance(pixels, Tensor):
        flat = (
            pixels.reshape(-1).long()
            if pixels.dim() <= 1
            else pixels[:, 0].long() * width + pixels[:, 1].long()
        )
    elif isinstance(pixels, tuple) and len(pixels) == 2 and all(isinstance(v, int) for v in pixels):
        i, j = pixels
        if not (0 <= i < height and 0 <= j < width):
            raise ValueError(f"pixel {pixels} is outside a {height}×{width} image")
        flat = torch.tensor([i * width + j])
    elif isinstance(pixels, int) and not isinstance(pixels, bool):
        flat = torch.tensor([pixels])
    elif isinstance(pixels, Iterable):
        parts = [_flat_pixels(p, height, width) for p in pixels]
        if not parts:
            raise ValueError("pixels is empty; give at least one pixel or None for all")
        flat = torch.cat(parts)
    else:
        raise TypeError(
            f"pixels must be None, a flat index, an (i, j) pair, a list of them or a tensor; "
            f"got {type(pixels).__name__}"
        )
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= height * width):
        raise ValueError(
            f"pixels must index a {height}×{width} image (0 ≤ index < {height * width})"
        )
    return flat


def _common_args(
    method: MethodLike,
    height: int,
    width: int,
    alpha: float,
    samples: int,
    lam: float | None,
    weighting: str,
    params: dict[str, Any],
) -> tuple[Callable[..., Any], float, float | None, Weighting]:
    _check_positive_int("height", height)
    _check_positive_int("width", width)
    _check_positive_int("samples", samples, minimum=2)
    return (
        resolve_sampler(method, **params),
        _check_alpha(alpha),
        _check_lam(lam),
        _check_weighting(weighting),
    )


def _chunk_size(chunk_size: int | None, samples: int, bytes_per_mask: int) -> int:
    """``chunk_size``, or by default as many masks as fit in ``_CHUNK_BYTES`` (at most all)."""
    if chunk_size is None:
        chunk_size = max(1, min(samples, _CHUNK_BYTES // bytes_per_mask))
    return _check_positive_int("chunk_size", chunk_size)


def _coefficient_rows(
    pixels: Any, height: int, width: int, device: torch.device, max_bytes: int
) -> Tensor:
    """Flat indices of the rows of ``A`` to estimate; refused when they need over ``max_bytes``."""
    hw = height * width
    rows = torch.arange(hw) if pixels is None else _flat_pixels(pixels, height, width)
    rows = rows.to(device)
    n_rows = rows.numel()
    need = 2 * n_rows * hw * 8
    if need > max_bytes:
        raise ValueError(
            f"A for {n_rows} rows of a {height}×{width} image takes {need / 2**30:.1f} GiB "
            f"(> max_bytes={max_bytes / 2**30:.1f} GiB); pass pixels=[...] for chosen rows, use "
            "distance_profile() for the offset/radial profile, or raise max_bytes"
        )
    return rows


def _outer_product_sums(
    chunks: Iterable[MaskDraws], rows: Tensor, hw: int, weighting: Weighting, bar: Any
) -> tuple[Tensor, Tensor]:
    """``Σ_i X_i[rows]`` and ``Σ_i X_i[rows]²`` over the masks, ``X_i = Σ_t w_t v_t v_tᵀ``."""
    total = torch.zeros(rows.numel(), hw, dtype=torch.float64, device=rows.device)
    total_sq = torch.zeros_like(total)
    for chunk in chunks:
        feats = chunk.features(weighting)
        for w, v in feats:
            total.addmm_((v[:, rows] * w[:, None]).T, v)
        # Σ_i X_i² with X_i = Σ_t w_t v_t v_tᵀ expands into products of pairs of terms.
        for w1, v1 in feats:
            for w2, v2 in feats:
                prod = v1 * v2
                total_sq.addmm_((prod[:, rows] * (w1 * w2)[:, None]).T, prod)
        bar.update(chunk.masks.shape[0])
    return total, total_sq


def pairwise_coefficients(
    method: MethodLike,
    height: int,
    width: int,
    alpha: float = 1.0,
    samples: int = 4096,
    generator: torch.Generator | None = None,
    *,
    lam: float | None = None,
    weighting: Weighting = "mask",
    pixels: Any = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    max_bytes: int = 2 << 30,
    progress: bool = False,
    **params: Any,
) -> PairwiseCoefficients:
    """Monte Carlo estimate of ``A(p, q) = E[(1 − M_p)(1 − M_q)]`` over ``λ ~ Beta(α, α)`` and masks.

    Park, Yun & Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
    Perspective", NeurIPS 2022: the coefficient of ``∂_p ℓ ∂_q ℓ``-type terms in the second-order
    regulariser every MSDA method adds to the loss.

    Args:
        method: a mask name of :mod:`unimix.masks` (``params`` go to it, e.g. ``r=0.5``,
            ``boundary="wrap"``), a sampler instance, or a callable with the sampler signature.
        height, width: image size.
        alpha: ``α`` of ``λ ~ Beta(α, α)``.
        samples: number of masks (one λ each) averaged.
        generator: :class:`torch.Generator` for reproducible draws.
        lam: a fixed ``λ`` instead of drawing it (the coefficients of one mixing ratio).
        weighting: ``"mask"`` — under the mask distribution; ``"label"`` —
            ``E[λ̄ (1−M_p)(1−M_q) + (1−λ̄) M_p M_q]``, the exact coefficient of the loss expansion.
        pixels: rows ``p`` to compute (flat indices or ``(i, j)`` pairs); ``None`` for all.
        chunk_size: masks per chunk (default: by memory).
        device: where masks are built and accumulated (default: the generator's device).
        max_bytes: refuse (ValueError) when the requested rows would take more memory than this;
            use ``pixels=`` or :func:`distance_profile` for large images.
        progress: show a progress bar (tqdm).

    Returns:
        :class:`PairwiseCoefficients`; each entry is a mean of ``samples`` i.i.d. values, its
        standard error their standard deviation over ``√samples``.
    """
    sampler, alpha, lam, weighting = _common_args(
        method, height, width, alpha, samples, lam, weighting, params
    )
    device = _default_device(device, generator)
    rows = _coefficient_rows(pixels, height, width, device, max_bytes)
    chunk_size = _chunk_size(chunk_size, samples, 8 * 8 * (height * width + rows.numel()))
    bar = progress_bar(samples, progress, f"A {method_name(method)}")
    chunks = draw_masks(
        sampler, samples, height, width, alpha=alpha, lam=lam, chunk_size=chunk_size,
        generator=generator, device=device,
    )  # fmt: skip
    total, total_sq = _outer_product_sums(chunks, rows, height * width, weighting, bar)
    bar.close()
    return PairwiseCoefficients(
        total / samples,
        _stderr(total, total_sq, samples),
        rows,
        height,
        width,
        samples,
        weighting,
        method_name(method),
    )


@dataclass(frozen=True)
class _FFTGrid:
    """The offset grid of an ``H×W`` image and where its offsets sit in an FFT correlation."""

    height: int
    width: int
    fy: int  # FFT size ≥ 2H − 1: no circular wrap-around in the correlation
    fx: int
    pairs: Tensor  # [2H−1, 2W−1] pixel pairs per offset
    bins: Tensor  # [2H−1, 2W−1] radial bin of each offset
    pairs_bin: Tensor  # [R] pixel pairs per radial bin
    iy: Tensor  # [2H−1] FFT rows of dy = −(H−1) … H−1
    ix: Tensor  # [2W−1] FFT columns of dx

    @classmethod
    def build(cls, height: int, width: int, device: torch.device) -> _FFTGrid:
        fy, fx = 2 * height, 2 * width
        pairs, _, bins = offset_grid(height, width, device)
        return cls(
            height,
            width,
            fy,
            fx,
            pairs,
            bins,
            _bin_sum(pairs, bins),
            torch.arange(-(height - 1), height, device=device).remainder(fy),
            torch.arange(-(width - 1), width, device=device).remainder(fx),
        )


def _chunk_correlations(
    chunk: MaskDraws, weighting: Weighting, grid: _FFTGrid
) -> tuple[Tensor, Tensor]:
    """Each mask's ``a(Δ)`` ``[n, 2H−1, 2W−1]`` and its radial profile ``[n, R]``."""
    n = chunk.masks.shape[0]
    feats = chunk.features(weighting)
    if chunk.constant:
        # a constant v gives Σ_p v_p v_{p+Δ} = v² · pairs(Δ): a(Δ) is v² at every offset
        level = sum(w * v[:, 0].square() for w, v in feats)
        per_offset = level[:, None, None].expand(n, *grid.pairs.shape)
        per_bin = level[:, None].expand(n, grid.pairs_bin.numel())
        return per_offset, per_bin
    size = (grid.fy, grid.fx)
    power = sum(
        w[:, None, None]
        * torch.fft.rfft2(v.reshape(n, grid.height, grid.width), s=size).abs().square()
        for w, v in feats
    )
    corr = torch.fft.irfft2(power, s=size)[:, grid.iy][:, :, grid.ix]
    return corr / grid.pairs, _bin_sum(corr, grid.bins) / grid.pairs_bin


def _profile_sums(
    chunks: Iterable[MaskDraws], grid: _FFTGrid, weighting: Weighting, bar: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sums and sums of squares over the masks of ``a(Δ)`` and of the radial profile."""
    total = torch.zeros_like(grid.pairs)
    total_sq = torch.zeros_like(grid.pairs)
    rad_total = torch.zeros_like(grid.pairs_bin)
    rad_total_sq = torch.zeros_like(grid.pairs_bin)
    for chunk in chunks:
        per_offset, per_bin = _chunk_correlations(chunk, weighting, grid)
        total += per_offset.sum(0)
        total_sq += per_offset.square().sum(0)
        rad_total += per_bin.sum(0)
        rad_total_sq += per_bin.square().sum(0)
        bar.update(chunk.masks.shape[0])
    return total, total_sq, rad_total, rad_total_sq


def distance_profile(
    method: MethodLike,
    height: int,
    width: int,
    alpha: float = 1.0,
    samples: int = 4096,
    generator: torch.Generator | None = None,
    *,
    lam: float | None = None,
    weighting: Weighting = "mask",
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    **params: Any,
) -> DistanceProfile:
    """Monte Carlo estimate of ``a(Δ)``, the mean of ``A(p, p + Δ)`` over valid ``p``, and its radial profile.

    For every mask, ``Σ_p (1 − M_p)(1 − M_{p+Δ})`` over the pixels with ``p + Δ`` inside the image
    is the (zero-padded) autocorrelation of ``1 − M``, computed by FFT; divided by the number of
    such pixels ``(H − |dy|)(W − |dx|)`` it is the mask's contribution to ``a(Δ)``. The radial
    profile averages ``A(p, q)`` over all pixel pairs with ``round(|p − q|) = r``. Memory is
    ``O(chunk · HW)``: a 224×224 profile works in a few hundred MB.

    Park, Yun & Chun (NeurIPS 2022) read the method's regularisation off this profile: flat for
    Mixup (input gradients regularised regardless of distance), falling to zero beyond the box
    for CutMix, in between for HMix and GMix.

    Arguments are those of :func:`pairwise_coefficients` (``weighting="label"`` uses
    ``λ̄·corr(1 − M) + (1 − λ̄)·corr(M)``). Standard errors come from the per-mask values.
    """
    sampler, alpha, lam, weighting = _common_args(
        method, height, width, alpha, samples, lam, weighting, params
    )
    device = _default_device(device, generator)
    grid = _FFTGrid.build(height, width, device)
    chunk_size = _chunk_size(chunk_size, samples, 16 * 6 * grid.fy * (grid.fx // 2 + 1))
    bar = progress_bar(samples, progress, f"profile {method_name(method)}")
    chunks = draw_masks(
        sampler, samples, height, width, alpha=alpha, lam=lam, chunk_size=chunk_size,
        generator=generator, device=device,
    )  # fmt: skip
    total, total_sq, rad_total, rad_total_sq = _profile_sums(chunks, grid, weighting, bar)
    bar.close()
    return DistanceProfile(
        offsets=total / samples,
        offsets_stderr=_stderr(total, total_sq, samples),
        pairs=grid.pairs,
        radius=torch.arange(grid.pairs_bin.numel(), dtype=torch.float64, device=device),
        radial=rad_total / samples,
        radial_stderr=_stderr(rad_total, rad_total_sq, samples),
        height=height,
        width=width,
        samples=samples,
        weighting=weighting,
        method=method_name(method),
    )
