"""``MixPlan``: everything a :class:`unimix.Mixer` drew for one batch, frozen.

Sample → plan → apply (as in kornia's and torchvision v2's augmentations): ``Mixer.sample`` makes
the random draws — partner rows, λ, the method of each row, whether it is mixed at all, the masks —
into a plan; ``Mixer.apply`` and ``Mixer.targets`` are pure functions of it. So one plan mixes an
image batch and its segmentation maps the same way, can be logged, or replayed.

Draws are made per *unit*: the whole batch (``mode="batch"``), a pair of rows (``"pair"``) or a
row (``"elem"``); ``unit_of_row[k]`` is the unit of row ``k``. The per-row views (``lam``,
``lam_effective``, ``method``, ``applied``, ``masks``) spread them to the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, NoReturn

import torch
from torch import Tensor

from unimix.masks import MaskSample

__all__ = ["MixPlan", "MixInfo", "Measured", "Applied", "covering_sample", "unit_masks"]


@dataclass(frozen=True, eq=False)
class MixPlan:
    """What one ``Mixer.sample(batch_size, height, width)`` drew.

    Attributes:
        batch_size, height, width: the batch the plan is for.
        mode: ``"batch"``, ``"pair"`` or ``"elem"``.
        partner: ``[B]`` int64, the row each row is mixed with.
        unit_of_row: ``[B]`` int64 unit of each row (all 0 in ``"batch"`` mode: one unit).
        unit_lam: ``[U]`` float32 λ drawn per unit; 1 where not mixed.
        unit_lam_effective: ``[U]`` float32 mean of each unit's mask; NaN for units of an
            image-dependent method (their λ̄ depends on the images: ``Mixer.apply`` measures it).
        unit_method: ``[U]`` int64 index into ``method_names`` per unit.
        unit_applied: ``[U]`` bool, whether each unit is mixed at all (``prob``).
        samples: per method, the :class:`~unimix.masks.MaskSample` of the units that drew it, in
            unit order (``None`` for image-dependent methods and methods no unit drew).
        method_names: the Mixer's method names.
        label_weight: ``"effective"`` (labels weighted by ``λ̄``) or ``"nominal"`` (by λ).
        image_seed: the seed of the image-dependent methods' random choices (ResizeMix's boxes,
            SaliencyMix's and PuzzleMix's draws, Manifold's layer), drawn by ``sample``: applying
            one plan twice gives the same pixels. ``None`` when the Mixer has no such method.

    The plan is immutable: ``Mixer.apply`` never writes to it (what it measures comes back in a
    :class:`Measured`). A plan is validated when it is built and when it is unpickled: λ in
    [0, 1], partner indices in range, known ``mode`` and ``label_weight`` (``ValueError``).
    """

    batch_size: int
    height: int
    width: int
    mode: str
    partner: Tensor
    unit_of_row: Tensor
    unit_lam: Tensor
    unit_lam_effective: Tensor
    unit_method: Tensor
    unit_applied: Tensor
    samples: tuple[MaskSample | None, ...]
    method_names: tuple[str, ...]
    label_weight: str = "effective"
    image_seed: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {f.name: state.get(f.name, f.default) for f in fields(self)}
        self.__dict__.update(state)
        _validate(self)

    @classmethod
    def _trusted(cls, **values: Any) -> MixPlan:
        """A plan built by ``Mixer.sample``, whose draws are valid by construction (no checks on
        the hot path)."""
        plan = cls.__new__(cls)
        plan.__dict__.update(values)
        return plan

    # ---- per-row views -------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        """``U``: 1 in ``"batch"`` mode, ``B/2`` in ``"pair"``, ``B`` in ``"elem"``."""
        return int(self.unit_method.shape[0])

    def spread(self, per_unit: Tensor) -> Tensor:
        """Per-unit values ``[U, …]`` spread to the rows ``[B, …]`` (a view where it can be)."""
        if self.mode == "elem":
            return per_unit
        if self.mode == "batch":
            return per_unit.expand(self.batch_size, *per_unit.shape[1:])
        return per_unit.index_select(0, self.unit_of_row.to(per_unit.device))

    def covering_sample(self) -> MaskSample | None:
        """The one :class:`MaskSample` that covers every unit (one mask method, every unit
        mixed: its rows are the units), else ``None``."""
        return covering_sample(self.samples, self.n_units)

    @property
    def lam(self) -> Tensor:
        """``[B]`` λ drawn for each row (1 where the row is not mixed)."""
        return self.spread(self.unit_lam)

    @property
    def lam_effective(self) -> Tensor:
        """``[B]`` mean of each row's float32 mask as drawn (NaN for rows of image-dependent
        methods); the λ̄ actually applied (images' dtype) is in the :class:`Measured` that
        :meth:`Mixer.apply` returns."""
        return self.spread(self.unit_lam_effective)

    @property
    def label_weights(self) -> Tensor:
        """``[B]`` the weight of each row's own label under this plan's ``label_weight``."""
        return self.lam if self.label_weight == "nominal" else self.lam_effective

    @property
    def method(self) -> Tensor:
        """``[B]`` index into :attr:`method_names` of the method of each row."""
        return self.spread(self.unit_method)

    @property
    def applied(self) -> Tensor:
        """``[B]`` whether each row is mixed."""
        return self.spread(self.unit_applied)

    @property
    def masks(self) -> Tensor | None:
        """``[B or 1, 1, H, W]`` weight of each row's own image (``[1, …]`` in ``"batch"`` mode);
        ``None`` when an image-dependent method mixed a row (its mix is no mask blend)."""
        units = unit_masks(self, torch.float32)
        if units is None or self.mode == "batch":
            return units
        return self.spread(units)

    @property
    def needs_images(self) -> bool:
        """Whether some unit uses an image-dependent method (its λ̄ is known after ``apply``)."""
        return bool(torch.isnan(self.unit_lam_effective).any())

    def __repr__(self) -> str:
        return (
            f"MixPlan(batch_size={self.batch_size}, height={self.height}, width={self.width}, "
            f"mode={self.mode!r}, methods={list(self.method_names)}, "
            f"label_weight={self.label_weight!r})"
        )


def covering_sample(samples: Sequence[MaskSample | None], n_units: int) -> MaskSample | None:
    """The one sample of ``samples`` whose masks are those of all ``n_units`` units, or ``None``
    (several methods drew, or some unit is not mixed by a mask)."""
    present = [s for s in samples if s is not None]
    if len(present) == 1 and present[0].lam.shape[0] == n_units:
        return present[0]
    return None


def unit_masks(
    plan: MixPlan, dtype: torch.dtype, *, ones_for_images: bool = False
) -> Tensor | None:
    """``[U, 1, H, W]`` masks of the plan's units (ones where not mixed), in ``dtype``. A unit of
    an image-dependent method has no mask: ``None`` then, or ones with ``ones_for_images`` (the
    engine blends those units with weight 1 and overwrites them). Made on each call."""
    if not ones_for_images and plan.needs_images:
        return None
    covering = plan.covering_sample()
    if covering is not None:
        return covering.masks.to(dtype)
    device = plan.partner.device
    out = torch.ones(plan.n_units, 1, plan.height, plan.width, device=device, dtype=dtype)
    for m, sample in enumerate(plan.samples):
        if sample is not None:
            sel = ((plan.unit_method == m) & plan.unit_applied).nonzero().squeeze(1)
            out[sel] = sample.masks.to(dtype)
    return out


class Measured(NamedTuple):
    """What :meth:`Mixer.apply` measured, for :meth:`Mixer.targets`: ``lam_effective`` ``[B]``
    float32, the mean of each row's mask as applied in the images' dtype (the λ̄ of
    image-dependent methods' rows from the images), and ``masks`` ``[B or 1, 1, H, W]`` the
    masks in that dtype when they differ from the plan's float32 masks (half precision), else
    ``None``."""

    lam_effective: Tensor
    masks: Tensor | None = None


class Applied(NamedTuple):
    """``Mixer.apply``'s result: the mixed ``images`` and what was :class:`Measured`."""

    images: Tensor
    measured: Measured


_UNIT_FIELDS = {
    "unit_lam": torch.float32,
    "unit_lam_effective": torch.float32,
    "unit_method": torch.int64,
    "unit_applied": torch.bool,
}


def _fail(message: str) -> NoReturn:
    raise ValueError(f"invalid MixPlan: {message}")


def _validate(plan: MixPlan) -> None:
    """Every field of a plan in its range (a ``ValueError`` naming the field otherwise)."""
    for name in ("batch_size", "height", "width"):
        value = getattr(plan, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"{name} must be a positive int, got {value!r}")
    if plan.mode not in ("batch", "pair", "elem"):
        _fail(f"mode must be one of 'batch', 'pair', 'elem', got {plan.mode!r}")
    if plan.label_weight not in ("effective", "nominal"):
        _fail(f"label_weight must be 'effective' or 'nominal', got {plan.label_weight!r}")
    partner, batch = plan.partner, plan.batch_size
    if not isinstance(partner, Tensor) or partner.dtype != torch.int64 or partner.shape != (batch,):
        _fail(f"partner must be an int64 tensor of shape [{batch}], got {partner!r}")
    if partner.device.type != "meta" and bool(((partner < 0) | (partner >= batch)).any()):
        _fail(f"partner indices must lie in [0, {batch}), got {partner.tolist()}")
    if not isinstance(plan.method_names, tuple) or len(plan.samples) != len(plan.method_names):
        _fail("samples and method_names must be tuples of the same length")
    units = {"batch": 1, "pair": batch // 2, "elem": batch}[plan.mode]
    for name, dtype in _UNIT_FIELDS.items():
        value = getattr(plan, name)
        if not isinstance(value, Tensor) or value.dtype != dtype or value.shape != (units,):
            _fail(f"{name} must be a {dtype} tensor of shape [{units}], got {value!r}")
    unit_of_row = plan.unit_of_row
    if not isinstance(unit_of_row, Tensor) or unit_of_row.shape != (batch,):
        _fail(f"unit_of_row must be an int64 tensor of shape [{batch}], got {unit_of_row!r}")
    if partner.device.type == "meta":
        return
    for name, allow_nan in (("unit_lam", False), ("unit_lam_effective", True)):
        t = getattr(plan, name)
        if (torch.isnan(t).any() and not allow_nan) or bool(((t < 0) | (t > 1)).any()):
            _fail(f"{name} must lie in [0, 1], got {t!r}")
    for name, bound in (("unit_method", len(plan.method_names)), ("unit_of_row", units)):
        t = getattr(plan, name)
        if bool(((t < 0) | (t >= bound)).any()):
            _fail(f"{name} must index [0, {bound}), got {t!r}")
    if plan.image_seed is not None and not isinstance(plan.image_seed, int):
        _fail(f"image_seed must be an int or None, got {plan.image_seed!r}")


class MixInfo:
    """``mixer(images, labels, return_info=True)``'s third item: the :class:`MixPlan` and what
    ``apply`` :class:`Measured`. It reads like the plan, except that ``lam_effective``,
    ``label_weights`` and ``masks`` are the values applied (images' dtype, image methods'
    λ̄)."""

    __slots__ = ("plan", "measured")

    def __init__(self, plan: MixPlan, measured: Measured) -> None:
        self.plan, self.measured = plan, measured

    def __getattr__(self, name: str) -> Any:
        if name in ("plan", "measured"):
            raise AttributeError(name)
        return getattr(self.plan, name)

    @property
    def lam_effective(self) -> Tensor:
        """``[B]`` λ̄ as applied."""
        return self.measured.lam_effective.expand(self.plan.batch_size)

    @property
    def label_weights(self) -> Tensor:
        """``[B]`` the weight of each row's own label in the targets."""
        return self.plan.lam if self.plan.label_weight == "nominal" else self.lam_effective

    @property
    def masks(self) -> Tensor | None:
        """The masks as applied (images' dtype), ``None`` where an image method mixed a row."""
        return self.measured.masks if self.measured.masks is not None else self.plan.masks

    def __repr__(self) -> str:
        return f"MixInfo({self.plan!r})"
