"""Shared plumbing of :mod:`unimix.theory`: turning a method into a mask sampler and drawing masks.

A *method* is anything that describes a mask distribution given ``λ``: a registered name of
:mod:`unimix.masks` (with its parameters), a :class:`~unimix.masks.MaskSampler`, or any callable
with the sampler signature ``(lam [N], height, width, *, device=None, generator=None)`` returning a
:class:`~unimix.masks.MaskSample` or a ``[N, 1, H, W]`` / ``[N, H, W]`` tensor of masks in
``[0, 1]``. Methods that must look at the images (saliency-based mixes, :class:`unimix.mixmethod.MixMethod`)
have no mask distribution independent of the data, so the theory does not apply to them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from unimix import masks as _masks
from unimix import registry
from unimix.checks import check_alpha, check_unit

Weighting = Literal["mask", "label"]
MethodLike = str | _masks.MaskSampler | Callable[..., Any]

__all__ = ["MethodLike", "Weighting", "resolve_sampler", "method_name", "MaskDraws", "draw_masks"]


def _check_weighting(weighting: str) -> Weighting:
    if weighting not in ("mask", "label"):
        raise ValueError(
            f"weighting must be 'mask' (A under the plain mask distribution) or 'label' (A under "
            f"the label-reweighted symmetrised mask: the coefficient of the loss expansion), "
            f"got {weighting!r}"
        )
    return weighting  # type: ignore[return-value]


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_alpha(alpha: object) -> float:
    return check_alpha("alpha", alpha)  # type: ignore[arg-type]


def _check_lam(lam: object) -> float | None:
    return None if lam is None else check_unit("lam", lam)  # type: ignore[arg-type]


def resolve_sampler(method: MethodLike, **params: Any) -> Callable[..., Any]:
    """The mask sampler a method describes (see the module docstring); parameters go to names.

    Raises:
        TypeError: for image-dependent methods and for callables without the sampler signature.
        ValueError: for unknown names.
    """
    if isinstance(method, str):
        if method in registry.available("image"):
            raise TypeError(
                f"{method!r} is not a mask sampler (it looks at the images or mixes inside the "
                "model), so it has no mask distribution of its own and no pixel-level coefficients "
                f"A(p, q); the theory covers mask samplers: {', '.join(registry.available('mask'))}"
            )
        return registry.get(method, "mask", **params)
    if params:
        raise TypeError(
            f"parameters {sorted(params)} can only be given with a method name; "
            "configure the sampler instance instead"
        )
    if isinstance(method, _masks.MaskSampler):
        return method
    image_kind = getattr(method, "kind", None) == "image"  # the registry's kind of a method
    if image_kind or getattr(method, "needs_images", False):
        raise TypeError(
            f"{method!r} mixes by looking at the images, so it has no mask distribution of its own "
            "and no pixel-level coefficients A(p, q); the theory covers mask samplers "
            "(unimix.masks) only"
        )
    if not callable(method):
        raise TypeError(
            "method must be a mask name, a unimix.masks.MaskSampler or a callable "
            f"(lam, height, width, *, device=None, generator=None); got {type(method).__name__}"
        )
    try:
        inspect.signature(method).bind(torch.zeros(1), 1, 1, device=None, generator=None)
    except TypeError:
        raise TypeError(
            f"method {method!r} does not have the sampler signature "
            "(lam, height, width, *, device=None, generator=None); an image-dependent method "
            "(one that needs the images) has no pixel-level coefficients"
        ) from None
    except ValueError:  # builtins without a signature: trust them
        pass
    return method


def method_name(method: MethodLike) -> str:
    """A short label for plots and tables."""
    if isinstance(method, str):
        return method
    name = getattr(method, "name", "") or getattr(method, "__name__", "")
    return name or type(method).__name__


@dataclass(frozen=True)
class MaskDraws:
    """One chunk of masks, flattened: ``masks`` ``[n, H·W]`` float64, ``lam_effective`` ``[n]``.

    ``constant`` is True when every mask is constant over the image (Mixup), which lets the
    estimators skip the pairwise work.
    """

    masks: Tensor
    lam_effective: Tensor
    constant: bool

    def features(self, weighting: Weighting) -> list[tuple[Tensor, Tensor]]:
        """``(weight [n], vector [n, HW])`` terms whose weighted outer products average to ``A``.

        ``mask``: ``(1, 1 − M)``. ``label``: the mask symmetrised (``M̃ = M`` or ``1 − M``, each
        with probability ½) and re-weighted by ``2·mean(M̃)`` gives
        ``E[λ̄ (1−M)(1−M)ᵀ + (1−λ̄) M Mᵀ]``: the terms ``(λ̄, 1 − M)`` and ``(1 − λ̄, M)``.
        """
        keep = 1.0 - self.masks
        if weighting == "mask":
            return [(torch.ones_like(self.lam_effective), keep)]
        return [(self.lam_effective, keep), (1.0 - self.lam_effective, self.masks)]


def draw_masks(
    sampler: Callable[..., Any],
    samples: int,
    height: int,
    width: int,
    *,
    alpha: float,
    lam: float | None,
    chunk_size: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Iterator[MaskDraws]:
    """Draw ``samples`` masks in chunks: ``λ ~ Beta(α, α)`` (or fixed ``lam``), then the mask.

    λ is drawn on the generator's device and the masks are built on ``device``; both follow
    :mod:`unimix.masks`, so a seed gives the same masks on CPU and CUDA.
    """
    rand_device = generator.device if generator is not None else torch.device("cpu")
    done = 0
    while done < samples:
        n = min(chunk_size, samples - done)
        if lam is None:
            lam_n = _masks.sample_lambda(alpha, n, generator, rand_device)
        else:
            lam_n = torch.full((n,), lam, dtype=torch.float32, device=rand_device)
        out = sampler(lam_n, height, width, device=device, generator=generator)
        constant = bool(getattr(out, "constant", False))
        raw = out.masks if isinstance(out, _masks.MaskSample) else out
        if not isinstance(raw, Tensor):
            raise TypeError(
                f"the sampler returned {type(raw).__name__}; it must return a MaskSample or a "
                "tensor of masks [N, 1, H, W]"
            )
        if raw.shape not in ((n, 1, height, width), (n, height, width)):
            raise ValueError(
                f"the sampler returned masks of shape {tuple(raw.shape)} for {n} draws of a "
                f"{height}×{width} image; expected [{n}, 1, {height}, {width}]"
            )
        flat = raw.reshape(n, height * width).to(device=device, dtype=torch.float64)
        lo, hi = float(flat.min()), float(flat.max())
        if lo < -1e-6 or hi > 1 + 1e-6 or math.isnan(lo + hi):
            raise ValueError(
                f"masks must lie in [0, 1], the sampler returned values in [{lo:.4g}, {hi:.4g}]"
            )
        yield MaskDraws(flat.clamp(0.0, 1.0), flat.mean(dim=1), constant)
        done += n


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar when asked for and available, else a no-op with the same ``update``/``close``."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit="mask", leave=False)
        except ImportError:  # tqdm is an optional dependency
            pass

    class _Silent:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return _Silent()
