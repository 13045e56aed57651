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

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from unimix.masks import MaskSample

__all__ = ["MixPlan", "MixInfo", "Measured", "Applied"]


@dataclass(frozen=True, eq=False)
class MixPlan:
    """What one ``Mixer.sample(batch_size, height, width)`` drew.

    Attributes:
        batch_size, height, width: the batch the plan is for.
        mode: ``"batch"``, ``"pair"`` or ``"elem"``.
        partner: ``[B]`` int64, the row each row is mixed with.
        unit_of_row: ``[B]`` int64 unit of each row (``None`` in ``"batch"`` mode: one unit).
        unit_lam: λ drawn per unit (``[U]``, or a number in ``"batch"`` mode); 1 where not mixed.
        unit_lam_effective: mean of each unit's mask (``[U]`` or a number); NaN for units of an
            image-dependent method until the plan is applied (their λ̄ depends on the images).
        unit_method: index into ``method_names`` per unit (``[U]`` or an int).
        unit_applied: whether each unit is mixed at all (``prob``; ``[U]`` or a bool).
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
    unit_of_row: Tensor | None
    unit_lam: Tensor | float
    unit_lam_effective: Tensor | float
    unit_method: Tensor | int
    unit_applied: Tensor | bool
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
    def _rows(self, values: Tensor | float | int | bool, dtype: torch.dtype) -> Tensor:
        device = self.partner.device
        if not isinstance(values, Tensor):
            return torch.full((self.batch_size,), values, dtype=dtype, device=device)
        values = values.to(device)
        if self.unit_of_row is None:
            return values.expand(self.batch_size)
        if self.mode == "elem":
            return values
        return values.index_select(0, self.unit_of_row)

    @property
    def lam(self) -> Tensor:
        """``[B]`` λ drawn for each row (1 where the row is not mixed)."""
        return self._rows(self.unit_lam, torch.float32)

    @property
    def lam_effective(self) -> Tensor:
        """``[B]`` mean of each row's float32 mask as drawn (NaN for rows of image-dependent
        methods); the λ̄ actually applied (images' dtype) is in the :class:`Measured` that
        :meth:`Mixer.apply` returns."""
        return self._rows(self.unit_lam_effective, torch.float32)

    @property
    def label_weights(self) -> Tensor:
        """``[B]`` the weight of each row's own label under this plan's ``label_weight``."""
        return self.lam if self.label_weight == "nominal" else self.lam_effective

    @property
    def method(self) -> Tensor:
        """``[B]`` index into :attr:`method_names` of the method of each row."""
        return self._rows(self.unit_method, torch.long)

    @property
    def applied(self) -> Tensor:
        """``[B]`` whether each row is mixed."""
        return self._rows(self.unit_applied, torch.bool)

    @property
    def masks(self) -> Tensor | None:
        """``[B or 1, 1, H, W]`` weight of each row's own image (``[1, …]`` in ``"batch"`` mode);
        ``None`` when an image-dependent method mixed a row (its mix is no mask blend)."""
        units = unit_masks(self, torch.float32)
        if units is None:
            return None
        if self.unit_of_row is None or self.mode == "elem":
            return units
        return units.index_select(0, self.unit_of_row)

    @property
    def needs_images(self) -> bool:
        """Whether some unit uses an image-dependent method (its λ̄ is known after ``apply``)."""
        lam_eff = self.unit_lam_effective
        if isinstance(lam_eff, Tensor):
            return bool(torch.isnan(lam_eff).any())
        return lam_eff != lam_eff

    def __repr__(self) -> str:
        return (
            f"MixPlan(batch_size={self.batch_size}, height={self.height}, width={self.width}, "
            f"mode={self.mode!r}, methods={list(self.method_names)}, "
            f"label_weight={self.label_weight!r})"
        )


def unit_masks(
    plan: MixPlan, dtype: torch.dtype, *, ones_for_images: bool = False
) -> Tensor | None:
    """``[U, 1, H, W]`` masks of the plan's units (ones where not mixed), in ``dtype``. A unit of
    an image-dependent method has no mask: ``None`` then, or ones with ``ones_for_images`` (the
    engine blends those units with weight 1 and overwrites them). Made on each call."""
    if plan.needs_images and not ones_for_images:
        return None
    device = plan.partner.device
    if not isinstance(plan.unit_method, Tensor):  # "batch" mode: a single unit
        sample = plan.samples[plan.unit_method] if plan.unit_applied else None
        if sample is None:
            return torch.ones(1, 1, plan.height, plan.width, device=device, dtype=dtype)
        return sample.masks.to(dtype)
    present = [(m, s) for m, s in enumerate(plan.samples) if s is not None]
    n_units = plan.unit_method.shape[0]
    if len(present) == 1 and present[0][1].lam.shape[0] == n_units:
        return present[0][1].masks.to(dtype)
    out = torch.ones(n_units, 1, plan.height, plan.width, device=device, dtype=dtype)
    applied = plan.unit_applied
    for m, sample in present:
        sel = ((plan.unit_method == m) & applied).nonzero().squeeze(1)
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


def _fail(message: str) -> None:
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
    for name, allow_nan in (("unit_lam", False), ("unit_lam_effective", True)):
        value = getattr(plan, name)
        t = value if isinstance(value, Tensor) else torch.tensor(float(value))
        if t.device.type == "meta":
            continue
        nan = torch.isnan(t)
        if (nan.any() and not allow_nan) or bool(((t < 0) | (t > 1)).any()):
            _fail(f"{name} must lie in [0, 1], got {value!r}")
    method = plan.unit_method
    m = method if isinstance(method, Tensor) else torch.tensor(int(method))
    if m.device.type != "meta" and bool(((m < 0) | (m >= len(plan.method_names))).any()):
        _fail(f"unit_method must index method_names ({len(plan.method_names)}), got {method!r}")
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
