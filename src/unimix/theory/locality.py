"""How local a mask's regulariser is: one number per mask setting, border clipping kept apart.

Park, Yun & Chun (NeurIPS 2022): the second-order term of the mixed loss weights the pair of
pixels ``(p, q)`` by the label-weighted coefficient ``A(p, q)`` (:func:`distance_profile` with
``weighting="label"``, the coefficient that multiplies the Hessian). Its offset profile ``a(Δ)``
is flat for Mixup and peaks at ``Δ = 0`` for box masks. The **locality index** is

    L = ā_far / a(0) ,   ā_far = mean of A(p, q) over the pixel pairs at least
                                 d = min(H, W)/4 apart (pair-weighted),

the weight of a distant pair in units of the weight of a pixel with itself: ``L = 1`` for Mixup
(every pair alike) and lower the more the regulariser concentrates on nearby pairs. (The mean
over *all* pairs would not do: for any binary mask it is ``E[λ̄(1 − λ̄)] = a(0)/2`` whatever the
mask's shape, since ``Σ_{p,q}(1 − M_p)(1 − M_q) = (Σ_p 1 − M_p)²``.) ``d`` is a quarter of the
side: at 32×32 the size of a native digit, the scale of the tasks' local cue.

**Border clipping is not locality.** A clipped box (``boundary="clip"``) is smaller near the
border, so its profile mixes "nearby pairs" with "pairs away from the border". The index is
therefore computed on the sampler's translation-invariant twin (``boundary="wrap"``, the image a
torus, where ``A(p, q) = a(q − p)`` exactly): clipping alone does not move it. What clipping
does is reported apart by :func:`border_clipping`, the index of the sampler as configured minus
the wrapped index. Samplers without a ``boundary`` (FMix, GridMix) are measured as they are.

Closed forms (:func:`~unimix.theory.closed_form`, exact) are used for Mixup, CutMix, HMix and
GMix; other samplers by a seeded Monte Carlo :func:`~unimix.theory.distance_profile` (4096
masks, generator seed 0: deterministic).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from unimix import registry
from unimix.theory._sampling import MethodLike, resolve_sampler
from unimix.theory.closed_forms import CLOSED_FORMS, closed_form
from unimix.theory.coefficients import DistanceProfile, distance_profile

__all__ = ["border_clipping", "locality_index", "locality_profile"]

_SAMPLES = 4096


def _accepts_boundary(method: MethodLike) -> bool:
    if isinstance(method, str):
        sampler = registry.get(method, "mask")
    else:
        sampler = method
    try:
        return "boundary" in inspect.signature(type(sampler).__init__).parameters
    except (TypeError, ValueError):
        return False


def locality_profile(
    method: MethodLike,
    height: int = 32,
    width: int = 32,
    alpha: float = 1.0,
    *,
    wrap: bool = True,
    **params: Any,
) -> DistanceProfile:
    """The label-weighted profile ``a(Δ)`` the index is read from (wrapped twin by default).

    Profiles of named masks are cached (they are deterministic); treat the result as read-only.
    """
    if isinstance(method, str):
        try:
            key = tuple(sorted(params.items()))
            hash(key)
        except TypeError:
            key = None
        if key is not None:
            return _cached(method, height, width, float(alpha), wrap, key)
    return _profile(method, height, width, alpha, wrap, **params)


@functools.lru_cache(maxsize=128)
def _cached(
    method: str, height: int, width: int, alpha: float, wrap: bool, key: tuple[Any, ...]
) -> DistanceProfile:
    return _profile(method, height, width, alpha, wrap, **dict(key))


def _profile(
    method: MethodLike, height: int, width: int, alpha: float, wrap: bool, **params: Any
) -> DistanceProfile:
    if isinstance(method, str):
        resolve_sampler(method, **params)  # validates the name and parameters
        params = dict(params)
        if _accepts_boundary(method):
            params["boundary"] = "wrap" if wrap else params.get("boundary", "clip")
        if wrap and method in CLOSED_FORMS and set(params) <= {"boundary", "r"}:
            return closed_form(
                method, height, width, alpha, weighting="label", r=params.get("r")
            )
    return distance_profile(
        method, height, width, alpha, samples=_SAMPLES,
        generator=torch.Generator().manual_seed(0), weighting="label", **params,
    )  # fmt: skip


def _index(profile: DistanceProfile) -> float:
    a = profile.offsets
    a0 = float(profile.at(0, 0))
    if a0 <= 0:
        return float("nan")  # no mixing: no regulariser to be local or not
    h, w = profile.height, profile.width
    dy = torch.arange(-h + 1, h, dtype=torch.float64)[:, None]
    dx = torch.arange(-w + 1, w, dtype=torch.float64)[None, :]
    far = ((dy**2 + dx**2).sqrt() >= min(h, w) / 4).to(a.dtype)
    weights = profile.pairs.to(a.dtype) * far
    return float((a * weights).sum() / weights.sum()) / a0


def locality_index(
    method: MethodLike, height: int = 32, width: int = 32, alpha: float = 1.0, **params: Any
) -> float:
    """``L = ā / a(0)`` of the label-weighted coefficients of ``method`` (module docstring).

    Args:
        method: a mask name of :mod:`unimix.masks` with its ``params`` (``r``, ``decay_power``,
            ``grid``, …; ``boundary`` is ignored: see :func:`border_clipping`), or a sampler.
        height, width: image size.
        alpha: ``α`` of ``λ ~ Beta(α, α)``.

    Returns:
        1 for Mixup, lower as the regulariser concentrates on nearby pixel pairs; NaN for no
        mixing.

        >>> from unimix.theory import locality_index
        >>> round(locality_index("mixup"), 6)
        1.0
        >>> locality_index("hmix", r=0.25) > locality_index("hmix", r=0.75)
        True
    """
    params = {k: v for k, v in params.items() if k != "boundary"}
    return _index(locality_profile(method, height, width, alpha, wrap=True, **params))


def border_clipping(
    method: MethodLike, height: int = 32, width: int = 32, alpha: float = 1.0, **params: Any
) -> float:
    """What border clipping adds to the apparent locality: the index of the sampler as configured
    (``boundary`` as given, default ``"clip"``) minus :func:`locality_index`. 0 for samplers that
    do not clip (Mixup, ``boundary="wrap"``, FMix, GridMix)."""
    if not (isinstance(method, str) and _accepts_boundary(method)):
        return 0.0
    if params.get("boundary", "clip") == "wrap":
        return 0.0
    as_given = _index(locality_profile(method, height, width, alpha, wrap=False, **params))
    return as_given - locality_index(method, height, width, alpha, **params)
