"""Closed forms of the pairwise coefficients ``A(p, q)`` for Mixup, CutMix, HMix and GMix.

Exact under stated assumptions, which the samplers of :mod:`unimix.masks` can be told to satisfy
with ``boundary="wrap"`` (the image is a torus: boxes wrap around instead of being clipped,
Gaussians are measured in torus distance instead of being truncated). Then ``A(p, q)`` depends on
``Δ = q − p`` only and, writing ``v = 1 − u`` for the value ``u`` the mask takes outside the box
and ``a = hw/HW`` for the box's area fraction, for one ``λ`` (Park, Yun & Chun, NeurIPS 2022):

* **box family** (CutMix ``u = 1``; HMix ``u = min(1, λ/(1 − a))``, box side ``√(r(1−λ))``; Mixup
  is HMix with no box): with ``P₂(Δ) = c_H(dy; h) c_W(dx; w) / HW`` the probability that both
  pixels fall in the box — ``c_L(d; h) = (h − d)⁺ + (h − L + d)⁺`` counts the box positions on a
  circle of length ``L`` covering two points ``d`` apart — and ``Q = 1 − 2a + P₂``,

      A_mask  = P₂ + 2 (a − P₂) v + Q v² ,
      A_label = λ̄ A_mask + (1 − λ̄) u² Q ,      λ̄ = u (1 − a).

  The box side ``h = round(√(r(1−λ)) H)`` is piecewise constant in ``λ``, and on each piece the
  coefficients are polynomials in ``λ``; the expectation over ``λ ~ Beta(α, α)`` is a finite sum
  of incomplete Beta functions (no quadrature). Mixup: ``E[(1−λ)²] = (α+1)/(2(2α+1))`` (mask)
  and ``E[λ(1−λ)] = α/(2(2α+1))`` (label) at every offset.

* **GMix** with ``s = min(λ, 1−λ)`` and ``G(p) = exp(−π‖p − c‖²/(sHW))``: ``1 − M = G`` when
  ``λ ≥ ½`` and ``1 − G`` otherwise, so with ``m = E_c[G_p]`` and ``C(Δ) = E_c[G_p G_{p+Δ}]``

      A_mask  = E_s[C] + ½ E_s[1 − 2m] ,        A_label = E_s[C + m − 2m²]

  (``λ`` symmetric). ``geometry="plane"`` — the centre uniform over the plane, no truncation:
  ``m = s`` and ``C(Δ) = (s/2) exp(−π‖Δ‖²/(2sHW))``; it is the paper's formula and matches the
  ``wrap`` sampler only where the Gaussian is small against the image (``s ≲ 0.1``: the
  Gaussian's width grows with the image, so the torus truncates it at large ``s`` whatever the
  size). ``geometry="torus"`` — exact for the ``wrap`` sampler: the centre uniform over pixels
  and torus distance make ``C`` a product of two circular autocorrelations. The expectation
  over ``s`` is taken by adaptive quadrature in the quantile of ``λ``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from numpy.polynomial import Polynomial

from unimix import masks as _masks
from unimix.theory._sampling import (
    Weighting,
    _check_alpha,
    _check_lam,
    _check_positive_int,
    _check_weighting,
)
from unimix.theory.coefficients import DistanceProfile

__all__ = ["closed_form", "CLOSED_FORMS"]

Geometry = Literal["torus", "plane"]

#: Methods with a closed form.
CLOSED_FORMS = ("none", "mixup", "cutmix", "hmix", "gmix")


def _scipy_special() -> Any:
    try:
        import scipy.special
    except ImportError as err:  # pragma: no cover - scipy ships with the study extra
        raise ImportError("closed_form needs scipy: pip install 'unimix[study]'") from err
    return scipy.special


class _BetaMoments:
    """Partial moments ``∫_{l0}^{l1} λ^j f(λ) dλ`` of ``Beta(α, α)``, or a point mass at ``lam``."""

    def __init__(self, alpha: float, lam: float | None) -> None:
        self.alpha, self.lam = alpha, lam
        self.special = _scipy_special()

    def expect(self, poly: Polynomial, lo: float, hi: float) -> float:
        """``E[poly(λ) · 1{lo ≤ λ < hi}]`` (for a point mass: ``poly(lam)`` if ``lam`` is inside)."""
        if self.lam is not None:
            inside = lo <= self.lam < hi or (self.lam == hi == 1.0 and lo < hi)
            return float(poly(self.lam)) if inside else 0.0
        a, sp = self.alpha, self.special
        total = 0.0
        for j, coef in enumerate(poly.coef):
            if coef == 0.0:
                continue
            # ∫ λ^j f(λ) = B(α + j, α)/B(α, α) · [I_{α+j, α}(hi) − I_{α+j, α}(lo)]
            scale = math.exp(sp.betaln(a + j, a) - sp.betaln(a, a))
            total += coef * scale * float(sp.betainc(a + j, a, hi) - sp.betainc(a + j, a, lo))
        return total


def _circle_counts(side: int, length: int) -> np.ndarray:
    """``c_L(d; h)`` for ``d = 0..L−1``: positions of an arc of ``h`` cells covering cells 0 and ``d``."""
    d = np.arange(length)
    return np.maximum(side - d, 0) + np.maximum(side - (length - d), 0)


def _box_sides(lam: float, r: float, height: int, width: int) -> tuple[int, int]:
    """Box size exactly as :func:`unimix.masks.sample_boxes` rounds it (half to even)."""
    side = math.sqrt(min(max(r * (1.0 - lam), 0.0), 1.0))
    return (
        min(max(int(np.round(side * height)), 0), height),
        min(max(int(np.round(side * width)), 0), width),
    )


def _breakpoints(r: float, height: int, width: int) -> list[float]:
    """The λ at which a rounded box side changes: ``√(r(1−λ)) L = k + ½``."""
    points = {0.0, 1.0}
    if r > 0:
        for length in (height, width):
            for k in range(length):
                lam = 1.0 - ((k + 0.5) / length) ** 2 / r
                if 0.0 < lam < 1.0:
                    points.add(lam)
    return sorted(points)


def _box_family(
    height: int, width: int, moments: _BetaMoments, r: float, cutmix: bool, weighting: Weighting
) -> np.ndarray:
    """``A`` on the torus, ``[H, W]`` over ``Δ mod (H, W)``, for CutMix (``cutmix``) or HMix(r)."""
    hw = height * width
    one = Polynomial([1.0])
    lam_poly = Polynomial([0.0, 1.0])
    result = np.zeros((height, width))
    edges = _breakpoints(r, height, width) if moments.lam is None else [0.0, 1.0]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mid = moments.lam if moments.lam is not None else 0.5 * (lo + hi)
        h, w = _box_sides(mid, r, height, width)
        area = h * w / hw
        both = np.outer(_circle_counts(h, height), _circle_counts(w, width)) / hw
        neither = 1.0 - 2.0 * area + both
        lam_c = 1.0 - area
        # HMix: u = λ/λ_c below λ_c, 1 above (and when the box is the whole image)
        pieces = [(lo, hi, one)]
        if not cutmix and lam_c > 0:
            cut = min(max(lam_c, lo), hi)
            pieces = [(lo, cut, lam_poly / lam_c), (cut, hi, one)]
        for p_lo, p_hi, u in pieces:
            if p_hi <= p_lo and moments.lam is None:
                continue
            v = one - u
            lam_bar = u * lam_c
            if weighting == "mask":
                e1, ev, ev2 = (moments.expect(q, p_lo, p_hi) for q in (one, v, v * v))
                result += both * e1 + 2.0 * (area - both) * ev + neither * ev2
            else:
                e1, ev, ev2 = (moments.expect(lam_bar * q, p_lo, p_hi) for q in (one, v, v * v))
                eu2 = moments.expect((one - lam_bar) * u * u, p_lo, p_hi)
                result += both * e1 + 2.0 * (area - both) * ev + neither * (ev2 + eu2)
    return result


def _circular_autocorr(g: np.ndarray) -> np.ndarray:
    """``(1/L) Σ_c g(c) g(c + d)`` for ``d = 0..L−1`` (indices mod ``L``)."""
    spectrum = np.fft.rfft(g)
    return np.fft.irfft(spectrum * spectrum.conj(), n=g.size) / g.size


def _gmix_terms(s: float, height: int, width: int, geometry: Geometry) -> tuple[np.ndarray, float]:
    """``C(Δ) = E_c[G_p G_{p+Δ}]`` and ``m = E_c[G_p]`` for one ``s``.

    ``torus``: ``C`` on ``Δ mod (H, W)``, ``[H, W]``. ``plane``: ``C`` on the offsets
    ``[2H−1, 2W−1]`` of the image.
    """
    if s <= 0.0:
        shape = (height, width) if geometry == "torus" else (2 * height - 1, 2 * width - 1)
        return np.zeros(shape), 0.0
    sigma = s * height * width
    if geometry == "plane":
        dy = np.arange(-(height - 1), height) ** 2
        dx = np.arange(-(width - 1), width) ** 2
        return 0.5 * s * np.exp(-math.pi * (dy[:, None] + dx[None, :]) / (2.0 * sigma)), s
    dy = np.arange(height)
    dx = np.arange(width)
    gy = np.exp(-math.pi * np.minimum(dy, height - dy) ** 2 / sigma)
    gx = np.exp(-math.pi * np.minimum(dx, width - dx) ** 2 / sigma)
    return np.outer(_circular_autocorr(gy), _circular_autocorr(gx)), float(gy.mean() * gx.mean())


def _gmix(
    height: int,
    width: int,
    alpha: float,
    lam: float | None,
    weighting: Weighting,
    geometry: Geometry,
) -> np.ndarray:
    def integrand(s: float, upper: bool) -> np.ndarray:
        corr, m = _gmix_terms(s, height, width, geometry)
        if weighting == "label":
            return corr + (m - 2.0 * m * m)
        return corr if upper else corr + (1.0 - 2.0 * m)

    if lam is not None:
        return integrand(min(lam, 1.0 - lam), lam >= 0.5)
    from scipy.integrate import quad_vec

    special = _scipy_special()

    def symmetric(u: float) -> np.ndarray:
        # u uniform on [0, 1] ↦ s = the λ-quantile at u/2: s is distributed as min(λ, 1 − λ)
        s = float(special.betaincinv(alpha, alpha, 0.5 * u))
        if weighting == "label":
            return integrand(s, True)
        corr, m = _gmix_terms(s, height, width, geometry)
        return corr + 0.5 * (1.0 - 2.0 * m)

    value, _ = quad_vec(symmetric, 0.0, 1.0, epsabs=1e-10, epsrel=1e-9, limit=400)
    return value


def _torus_to_offsets(table: np.ndarray, height: int, width: int) -> np.ndarray:
    iy = np.arange(-(height - 1), height) % height
    ix = np.arange(-(width - 1), width) % width
    return table[np.ix_(iy, ix)]


def _closed_form_method(
    method: str | _masks.MaskSampler, r: float | None
) -> tuple[str, float | None]:
    """The method's name, checked to have a closed form, and ``r`` (a sampler's own by default)."""
    if isinstance(method, _masks.MaskSampler):
        name = type(method).name
        if r is None:
            r = getattr(method, "r", None)
    elif isinstance(method, str):
        name = method
    else:
        raise TypeError(
            f"method must be a name or a unimix.masks sampler, got {type(method).__name__}"
        )
    if name not in CLOSED_FORMS:
        raise ValueError(
            f"no closed form for method {name!r} (known: {', '.join(CLOSED_FORMS)}); "
            "estimate it with distance_profile() or pairwise_coefficients()"
        )
    return name, r


def _check_geometry_and_r(name: str, geometry: str, r: float | None) -> float:
    """Check ``geometry`` and ``r`` against the method; ``r`` as a float (HMix's default 0.5)."""
    if geometry not in ("torus", "plane"):
        raise ValueError(f"geometry must be 'torus' or 'plane', got {geometry!r}")
    if geometry == "plane" and name != "gmix":
        raise ValueError(
            f"geometry='plane' is GMix's untruncated form; {name} has geometry='torus' only"
        )
    if r is not None and name != "hmix":
        raise ValueError(f"r is HMix's parameter; {name} takes none")
    r = 0.5 if r is None else float(r)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"r must lie in [0, 1], got {r}")
    return r


def closed_form(
    method: str | _masks.MaskSampler,
    height: int,
    width: int,
    alpha: float = 1.0,
    *,
    lam: float | None = None,
    weighting: Weighting = "mask",
    r: float | None = None,
    geometry: Geometry = "torus",
) -> DistanceProfile:
    """The exact ``a(Δ)`` profile of ``A(p, q) = E[(1 − M_p)(1 − M_q)]`` for a method, where it has one.

    Park, Yun & Chun, NeurIPS 2022: see the module docstring for the formulas. The assumptions:

    * ``geometry="torus"`` (all methods): the ``boundary="wrap"`` samplers of
      :mod:`unimix.masks` — box centre (Gaussian centre) uniform over the pixels, boxes wrapped
      instead of clipped, Gaussians in torus distance instead of truncated, box sides rounded as
      :func:`~unimix.masks.sample_boxes` rounds them. Then ``A(p, q) = a(q − p)`` and the result is
      exact (to floating point, and to the quadrature tolerance for GMix).
    * ``geometry="plane"`` (GMix only): the Gaussian's centre uniform over the plane, nothing
      truncated — ``E[G_p G_q] = (s/2) exp(−π‖p−q‖²/(2sHW))``, the paper's form. It agrees with
      the ``wrap`` sampler where the Gaussian is small against the image (``s = min(λ, 1−λ)`` up
      to about 0.1, e.g. a fixed ``lam`` near 0 or 1).

    Args:
        method: ``"none"``, ``"mixup"``, ``"cutmix"``, ``"hmix"``, ``"gmix"``, or a sampler
            instance of one of these (its ``r`` is used; its ``boundary`` is not: the formula is
            the torus one).
        height, width: image size.
        alpha: ``α`` of ``λ ~ Beta(α, α)``.
        lam: a fixed ``λ`` instead.
        weighting: ``"mask"`` or ``"label"`` (see :func:`~unimix.theory.pairwise_coefficients`).
        r: HMix's box-area fraction (default 0.5 or the instance's).
        geometry: ``"torus"`` or, for GMix, ``"plane"``.

    Returns:
        A :class:`DistanceProfile` with zero standard errors; ``to_matrix()`` gives ``A``.
    """
    name, r = _closed_form_method(method, r)
    _check_positive_int("height", height)
    _check_positive_int("width", width)
    alpha, lam, weighting = _check_alpha(alpha), _check_lam(lam), _check_weighting(weighting)
    r = _check_geometry_and_r(name, geometry, r)
    if name == "none":
        table = np.zeros((height, width))
    elif name == "gmix":
        table = _gmix(height, width, alpha, lam, weighting, geometry)
    else:
        moments = _BetaMoments(alpha, lam)
        box_r = {"mixup": 0.0, "cutmix": 1.0}.get(name, r)
        table = _box_family(height, width, moments, box_r, name == "cutmix", weighting)
    offsets = table if geometry == "plane" else _torus_to_offsets(table, height, width)
    label = name if name != "hmix" else f"hmix(r={r:g})"
    return DistanceProfile.from_offsets(
        torch.from_numpy(np.ascontiguousarray(offsets)),
        height,
        width,
        weighting=weighting,
        method=label,
    )
