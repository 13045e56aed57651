"""Mask samplers: every mixed sample data augmentation (MSDA) method as a random mixing mask.

Park, Yun & Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
Perspective" (NeurIPS 2022) describe Mixup, CutMix and their new HMix and GMix by one recipe:
draw ``λ ~ Beta(α, α)``, draw a mask ``M ∈ [0, 1]^{H×W}`` given ``λ``, and mix

    x̃ = M ⊙ x_a + (1 − M) ⊙ x_b ,        ỹ = λ̄ y_a + (1 − λ̄) y_b ,   λ̄ = mean(M).

A sampler here is the second step only. It takes a vector of ``λ`` (one per mask), the image height
and width, a device and an optional :class:`torch.Generator`, and returns the masks ``[N, 1, H, W]``
with their *effective* ratios ``λ̄`` (the masks' exact means, so labels always match the pixels).

Random parameters (box centres, Gaussian centres) are drawn on the generator's device (CPU when no
generator is given) and the masks are built on the requested device by arithmetic alone, so the
same seed gives the same masks on CPU and CUDA. Everything is vectorised over ``N``.

    >>> import torch, unimix.masks as masks
    >>> sampler = masks.get("hmix", r=0.5)
    >>> out = sampler(torch.tensor([0.3, 0.7]), 32, 48)
    >>> out.masks.shape, out.lam.shape
    (torch.Size([2, 1, 32, 48]), torch.Size([2]))
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import ClassVar, Literal, cast

import numpy as np
import torch
from torch import Tensor

from unimix import registry
from unimix.checks import (
    check_alpha,
    check_choice,
    check_generator,
    check_interval,
    check_lam,
    check_positive_int,
    check_unit,
)
from unimix.registry import get  # documented as masks.get: the registry's one lookup

__all__ = [
    "MaskSample",
    "MaskSampler",
    "NoMix",
    "Mixup",
    "CutMix",
    "CutMixMinMax",
    "HMix",
    "GMix",
    "get",
    "sample_lambda",
    "sample_lambda_one",
    "sample_boxes",
]

Boundary = Literal["clip", "wrap"]


class MaskSample:
    """Masks drawn by a sampler.

    Attributes:
        masks: ``[N, 1, H, W]`` float32 weights of the *first* image (``M`` above). May be an
            expanded (stride-0) view when the mask is constant per row (Mixup). A sampler may
            pass ``build`` instead, a function that makes them on first access: the engine's
            fast paths (e.g. pasting a CutMix box) never need the full masks.
        lam: ``[N]`` float32 effective ratios ``λ̄ = mean(M)`` of exactly these masks.
        boxes: optional ``[N, 4]`` int64 ``(y0, y1, x0, x1)`` of an axis-aligned box in which the
            mask is 0 (CutMix/HMix with clipping); ``None`` when the mask is no such box.
        outside: optional ``[N]`` value of the mask outside ``boxes`` (1 for CutMix, ``λ_m`` for HMix).
        constant: True when every mask is constant over the image (Mixup, no mixing).
        binary: True when every mask value is 0 or 1 (CutMix, FMix, …): the engine then selects
            pixels instead of blending them.
    """

    __slots__ = ("_masks", "_build", "_build_keep", "lam", "boxes", "outside", "constant", "binary")

    def __init__(
        self,
        masks: Tensor | None = None,
        lam: Tensor | None = None,
        boxes: Tensor | None = None,
        outside: Tensor | None = None,
        constant: bool = False,
        binary: bool = False,
        *,
        build: Callable[[], Tensor] | None = None,
        build_keep: Callable[[], Tensor] | None = None,
    ) -> None:
        if (masks is None) == (build is None):
            raise TypeError("MaskSample needs exactly one of masks and build")
        if lam is None:
            raise TypeError("MaskSample needs lam, the masks' effective ratios")
        self._masks, self._build, self._build_keep = masks, build, build_keep
        self.lam, self.boxes, self.outside = lam, boxes, outside
        self.constant, self.binary = constant, binary

    @property
    def masks(self) -> Tensor:
        if self._masks is None:
            assert self._build is not None
            self._masks, self._build = self._build(), None
        return self._masks

    def keep(self) -> Tensor:
        """``[N, 1, H, W]`` bool: where a binary mask keeps the first image (``M = 1``). Box
        samplers make it without the float masks (the engine's exact pixel selection)."""
        if self._build_keep is not None and self._masks is None:
            return self._build_keep()
        return self.masks.bool()

    def __getstate__(self) -> dict[str, object]:
        # lazily built masks are made now: a saved (or logged) sample holds its masks
        state = {k: getattr(self, k) for k in ("lam", "boxes", "outside", "constant", "binary")}
        state["_masks"] = self.masks
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_build", None)
        object.__setattr__(self, "_build_keep", None)

    def __repr__(self) -> str:
        shape = tuple(self._masks.shape) if self._masks is not None else "lazy"
        return f"MaskSample(masks={shape}, lam={self.lam}, constant={self.constant}, binary={self.binary})"


def _check_boundary(boundary: str) -> Boundary:
    return cast(Boundary, check_choice("boundary", boundary, ("clip", "wrap")))


def _random_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def sample_lambda(
    alpha: float,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``n`` mixing ratios ``λ ~ Beta(α, α)`` (Zhang et al., "mixup", ICLR 2018).

    PyTorch's Beta sampler takes no generator, so NumPy's draws it from a bit generator seeded by
    ``generator`` (or by PyTorch's global RNG): the result is a pure function of the torch
    generator's state, which advances by one draw.
    """
    alpha = check_alpha("alpha", alpha)
    dev = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=dev))
    lam = np.random.Generator(np.random.SFC64(seed)).beta(alpha, alpha, n)
    return torch.from_numpy(lam).to(device=device or "cpu", dtype=torch.float32)


def sample_lambda_one(alpha: float, generator: torch.Generator | None = None) -> float:
    """One ``λ ~ Beta(α, α)`` as a Python number (the engine's ``batch`` mode): like
    :func:`sample_lambda`, a pure function of the torch generator's state, which advances."""
    alpha = check_alpha("alpha", alpha)
    dev = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=dev))
    return random.Random(seed).betavariate(alpha, alpha)


def sample_boxes(
    area: Tensor,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    boundary: Boundary = "clip",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random boxes covering a fraction ``area`` of an ``H×W`` image, centre uniform over pixels.

    The box has side ratio ``√area`` in each dimension (Yun et al., "CutMix", ICCV 2019), rounded
    to whole pixels. Returns unclipped ``(y0, x0, box_h, box_w)`` as int64 tensors on the
    generator's device; ``boundary="clip"`` callers clip them to the image, ``"wrap"`` callers
    wrap them around it (a torus: every pixel equally likely to be covered).
    """
    side = area.clamp(0, 1).sqrt()
    box_h = torch.round(side * height).long().clamp_(0, height)
    box_w = torch.round(side * width).long().clamp_(0, width)
    n = area.shape[0]
    cy = torch.randint(0, height, (n,), generator=generator, device=area.device)
    cx = torch.randint(0, width, (n,), generator=generator, device=area.device)
    return cy - box_h // 2, cx - box_w // 2, box_h, box_w


class MaskSampler:
    """Base class of mask samplers (the ``"mask"`` kind of :mod:`unimix.registry`).

    Call as ``sampler(lam, height, width, device=None, generator=None) -> MaskSample``; the call
    checks its arguments and hands them to :meth:`sample`, which a subclass implements.
    """

    kind: ClassVar[str] = "mask"
    name: ClassVar[str] = ""
    #: True when the masks do not depend on λ (e.g. ``cutmix_minmax``): the drawn λ then plays no
    #: role, and the engine's nominal label weight is the effective one.
    ignores_lam: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # samplers written before `sample` was public override `_sample`: keep them working
        if "_sample" in cls.__dict__ and "sample" not in cls.__dict__:
            type.__setattr__(cls, "sample", cls.__dict__["_sample"])  # a method, set late

    def __call__(
        self,
        lam: Tensor,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskSample:
        lam = self._check_lam(lam)
        check_positive_int("height", height)
        check_positive_int("width", width)
        check_generator(generator)
        device = torch.device(device) if device is not None else lam.device
        lam = lam.to(device=_random_device(generator), dtype=torch.float32)
        return self.sample(lam, height, width, device, generator)

    @staticmethod
    def _check_lam(lam: Tensor) -> Tensor:
        return check_lam(lam)

    def sample(
        self,
        lam: Tensor,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> MaskSample:
        """The override point: masks for checked ``lam`` ``[N]`` (float32, on the generator's
        device), built on ``device``; every random draw from ``generator``."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def _sample(self, lam, height, width, device, generator):  # the pre-0.2 name of `sample`
        return self.sample(lam, height, width, device, generator)

    def sample_one(
        self,
        lam: float,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> MaskSample:
        """One mask ``[1, 1, H, W]`` for a Python ``λ`` (the engine's ``batch`` mode).

        Same draws as :meth:`sample` with ``N = 1`` (the same generator state gives the same
        mask); samplers may override it with a path that draws its few parameters as Python
        numbers, which is what costs time for a single mask.
        """
        lam_t = torch.tensor([lam], dtype=torch.float32, device=_random_device(generator))
        return self.sample(lam_t, height, width, device, generator)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def _constant_masks(value: Tensor, height: int, width: int, device: torch.device) -> Tensor:
    return value.to(device).view(-1, 1, 1, 1).expand(-1, 1, height, width)


@registry.register("none")
class NoMix(MaskSampler):
    """No mixing: ``M ≡ 1`` (the baseline every MSDA method is compared with)."""

    def sample(self, lam, height, width, device, generator):
        ones = torch.ones_like(lam)
        masks = _constant_masks(ones, height, width, device)
        return MaskSample(masks, ones.to(device), constant=True, binary=True)


@registry.register("mixup")
class Mixup(MaskSampler):
    """Mixup (Zhang et al., ICLR 2018): ``M ≡ λ``, the same weight at every pixel."""

    def sample(self, lam, height, width, device, generator):
        return MaskSample(
            _constant_masks(lam, height, width, device), lam.to(device), constant=True
        )


def _box_masks(
    y0: Tensor,
    x0: Tensor,
    box_h: Tensor,
    box_w: Tensor,
    height: int,
    width: int,
    device: torch.device,
    boundary: Boundary,
) -> tuple[Callable[[], tuple[Tensor, Tensor]], Tensor, Tensor | None]:
    """A function making the boxes as two float indicator factors (see :func:`_outer`), the
    boxes' areas, and the clipped boxes (``None`` if wrapped around the image)."""
    y0, x0, box_h, box_w = (t.to(device) for t in (y0, x0, box_h, box_w))
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    if boundary == "wrap":

        def wrapped() -> Tensor:
            in_y = (rows - y0[:, None]).remainder(height) < box_h[:, None]
            in_x = (cols - x0[:, None]).remainder(width) < box_w[:, None]
            return _outer(in_y, in_x)

        return wrapped, box_h * box_w, None
    y1 = (y0 + box_h).clamp_(0, height)
    x1 = (x0 + box_w).clamp_(0, width)
    y0 = y0.clamp(0, height)
    x0 = x0.clamp(0, width)
    boxes = torch.stack([y0, y1, x0, x1], dim=1)

    def clipped() -> Tensor:
        in_y = (rows >= y0[:, None]) & (rows < y1[:, None])
        in_x = (cols >= x0[:, None]) & (cols < x1[:, None])
        return _outer(in_y, in_x)

    return clipped, (y1 - y0) * (x1 - x0), boxes


def _outer(in_y: Tensor, in_x: Tensor) -> tuple[Tensor, Tensor]:
    """The box ``in_y ⊗ in_x`` as two float factors ``[N, 1, H, 1]`` and ``[N, 1, 1, W]``."""
    return in_y.float()[:, None, :, None], in_x.float()[:, None, None, :]


def _outside_box(value: Tensor, factors: tuple[Tensor, Tensor]) -> Tensor:
    """``[N, 1, H, W]`` masks equal to ``value`` (per row) outside the box and 0 inside it:
    ``value − value · in_y ⊗ in_x``, in one pass."""
    in_y, in_x = factors
    value = value.view(-1, 1, 1, 1)
    shape = (in_y.shape[0], 1, in_y.shape[2], in_x.shape[3])
    return torch.addcmul(value.expand(shape), in_y * value, in_x, value=-1)


def _outside_keep(factors: tuple[Tensor, Tensor]) -> Tensor:
    """``[N, 1, H, W]`` bool, True outside the box (where a CutMix mask is 1)."""
    in_y, in_x = factors
    return (in_y.bool() & in_x.bool()).logical_not_()


def _one_box(
    area: float, height: int, width: int, generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """One clipped box ``(y0, y1, x0, x1)`` as :func:`sample_boxes` draws it, in Python numbers."""
    side = math.sqrt(min(max(area, 0.0), 1.0))
    box_h = min(round(side * height), height)
    box_w = min(round(side * width), width)
    dev = _random_device(generator)  # two draws, as sample_boxes: the same stream, the same box
    cy = int(torch.randint(0, height, (1,), generator=generator, device=dev))
    cx = int(torch.randint(0, width, (1,), generator=generator, device=dev))
    y0, x0 = cy - box_h // 2, cx - box_w // 2
    y1, x1 = min(max(y0 + box_h, 0), height), min(max(x0 + box_w, 0), width)
    return max(y0, 0), y1, max(x0, 0), x1


def _one_box_sample(
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    outside: float,
    lam: float,
    height: int,
    width: int,
    device: torch.device,
    binary: bool,
) -> MaskSample:
    def build() -> Tensor:
        masks = torch.full((1, 1, height, width), outside, device=device)
        masks[:, :, y0:y1, x0:x1] = 0.0
        return masks

    return MaskSample(
        lam=torch.tensor([lam], device=device),
        boxes=torch.tensor([[y0, y1, x0, x1]], device=device),
        outside=torch.tensor([outside], device=device),
        binary=binary,
        build=build,
    )


@registry.register("cutmix")
class CutMix(MaskSampler):
    """CutMix (Yun et al., ICCV 2019): ``M = 0`` in a box of side ratio ``√(1−λ)``, 1 outside.

    The box centre is uniform over the pixels. ``boundary="clip"`` (the paper's) clips the box
    to the image, so the pasted area can be smaller than ``1−λ``: the effective ``λ̄`` reports
    the area actually pasted. ``boundary="wrap"`` wraps the box around the image (a torus), so
    ``λ̄`` only differs from ``λ`` by rounding to whole pixels.
    """

    def __init__(self, boundary: Boundary = "clip") -> None:
        self.boundary = _check_boundary(boundary)

    def sample(self, lam, height, width, device, generator):
        y0, x0, bh, bw = sample_boxes(1 - lam, height, width, generator, self.boundary)
        inbox, area, boxes = _box_masks(y0, x0, bh, bw, height, width, device, self.boundary)
        eff = 1 - area.float() / (height * width)
        ones = torch.ones_like(eff)
        return MaskSample(
            lam=eff,
            boxes=boxes,
            outside=ones if boxes is not None else None,
            binary=True,
            build=lambda: _outside_box(ones, inbox()),
            build_keep=lambda: _outside_keep(inbox()),
        )

    def sample_one(self, lam, height, width, device, generator):
        if self.boundary == "wrap":
            return super().sample_one(lam, height, width, device, generator)
        y0, y1, x0, x1 = _one_box(1.0 - lam, height, width, generator)
        eff = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
        return _one_box_sample(y0, y1, x0, x1, 1.0, eff, height, width, device, binary=True)


@registry.register("cutmix_minmax")
class CutMixMinMax(MaskSampler):
    """CutMix with box sides drawn uniformly in ``[min, max]`` of each side, independently of λ
    (the "Darknet" variant behind timm's ``cutmix_minmax``); the box lies inside the image.

    λ is ignored (at λ = 1, "not mixed", the mask is all ones); ``λ̄ = 1 − |box|/HW`` is the
    area actually kept, so labels match pixels.
    """

    ignores_lam = True

    def __init__(self, minmax: tuple[float, float] = (0.2, 0.8)) -> None:
        self.minmax = check_interval("minmax", minmax, 0.0, 1.0)

    def sample(self, lam, height, width, device, generator):
        n, lo, hi = lam.shape[0], *self.minmax
        u = torch.rand(n, 4, generator=generator, device=lam.device)
        sides = torch.tensor([height, width], device=lam.device)
        box = (sides * (lo + (hi - lo) * u[:, :2])).long().minimum(sides)
        box = torch.where((lam < 1)[:, None], box, 0)  # λ = 1: not mixed
        start = ((sides - box + 1) * u[:, 2:]).long().minimum(sides - box)
        inbox, area, boxes = _box_masks(
            start[:, 0], start[:, 1], box[:, 0], box[:, 1], height, width, device, "clip"
        )
        eff = 1 - area.float() / (height * width)
        return MaskSample(
            lam=eff,
            boxes=boxes,
            outside=torch.ones_like(eff),
            binary=True,
            build=lambda: _outside_box(torch.ones_like(eff), inbox()),
            build_keep=lambda: _outside_keep(inbox()),
        )


@registry.register("hmix")
class HMix(MaskSampler):
    """HMix (Park et al., NeurIPS 2022): a CutMix box, Mixup outside it.

    The box has side ratio ``√(r(1−λ))``; with ``λ_c = 1 − |box|/HW`` (the box actually cut,
    after clipping) and ``λ_m = min(1, λ/λ_c)``, ``M = 0`` in the box and ``λ_m`` outside, so
    ``mean(M) = λ_m λ_c = λ`` up to whole-pixel rounding. ``r = 0`` is Mixup, ``r = 1`` CutMix's
    box family. The paper's default is ``r = 0.5``.
    """

    def __init__(self, r: float = 0.5, boundary: Boundary = "clip") -> None:
        self.r = check_unit("r", r)
        self.boundary = _check_boundary(boundary)

    def sample(self, lam, height, width, device, generator):
        y0, x0, bh, bw = sample_boxes(self.r * (1 - lam), height, width, generator, self.boundary)
        inbox, area, boxes = _box_masks(y0, x0, bh, bw, height, width, device, self.boundary)
        lam_c = 1 - area.float() / (height * width)
        lam_d = lam.to(device)
        lam_m = torch.where(lam_c > 0, lam_d / lam_c.clamp_min(1e-12), torch.ones_like(lam_d))
        lam_m = lam_m.clamp(max=1.0)
        return MaskSample(
            lam=lam_m * lam_c,
            boxes=boxes,
            outside=lam_m if boxes is not None else None,
            build=lambda: _outside_box(lam_m, inbox()),
        )

    def sample_one(self, lam, height, width, device, generator):
        if self.boundary == "wrap":
            return super().sample_one(lam, height, width, device, generator)
        y0, y1, x0, x1 = _one_box(self.r * (1.0 - lam), height, width, generator)
        lam_c = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
        lam_m = min(1.0, lam / lam_c) if lam_c > 0 else 1.0
        return _one_box_sample(
            y0, y1, x0, x1, lam_m, lam_m * lam_c, height, width, device, binary=False
        )


@registry.register("gmix")
class GMix(MaskSampler):
    """GMix, Gaussian Mixup (Park et al., NeurIPS 2022): a smooth Gaussian patch.

    Centre ``c`` uniform over the pixels, ``s = min(λ, 1−λ)`` and
    ``G(p) = exp(−π‖p − c‖² / (s·H·W))``, whose integral over the plane is ``s·HW``;
    ``M = 1 − G`` if ``λ ≥ ½`` else ``M = G``. Any ``H×W`` (the reference code is square-only).
    ``boundary="clip"`` truncates the Gaussian at the image border (the paper's), ``"wrap"``
    measures distance on the torus. ``λ̄`` is the exact mean of the mask.
    """

    def __init__(self, boundary: Boundary = "clip") -> None:
        self.boundary = _check_boundary(boundary)

    def sample(self, lam, height, width, device, generator):
        n = lam.shape[0]
        cy = torch.randint(0, height, (n,), generator=generator, device=lam.device).to(device)
        cx = torch.randint(0, width, (n,), generator=generator, device=lam.device).to(device)
        lam_d = lam.to(device)
        s = torch.minimum(lam_d, 1 - lam_d)
        dy = (torch.arange(height, device=device) - cy[:, None]).abs()
        dx = (torch.arange(width, device=device) - cx[:, None]).abs()
        if self.boundary == "wrap":
            dy = torch.minimum(dy, height - dy)
            dx = torch.minimum(dx, width - dx)
        # G is separable: exp(-π(dy² + dx²)/(sHW)) = gy ⊗ gx; s = 0 gives G ≡ 0.
        scale = torch.where(s > 0, -math.pi / (s.clamp_min(1e-30) * height * width), -math.inf)
        gy = torch.exp(dy.float().square() * scale[:, None]).nan_to_num_(0.0)
        gx = torch.exp(dx.float().square() * scale[:, None]).nan_to_num_(0.0)
        # One [N, H, W] buffer: gy ⊗ gx, then M = sign·G + off in place, i.e. 1 − G (sign −1,
        # off 1) where λ ≥ ½ and G (sign 1, off 0) elsewhere, bit for bit (sign·G is exact).
        # Two passes with one broadcast operand each run vectorised, as one addcmul with two
        # broadcast operands does not.
        g = torch.mul(gy[:, :, None], gx[:, None, :])
        if not bool((s > 0).all()):
            g[~(s > 0)] = 0.0
        off = (lam_d >= 0.5).to(g.dtype)[:, None, None]
        masks = g.mul_(1 - 2 * off).add_(off).unsqueeze(1)
        return MaskSample(masks, masks.mean(dim=(1, 2, 3)))
