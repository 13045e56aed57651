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

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unimix.masks import MaskSample

__all__ = ["MixPlan", "MixInfo"]


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
    #: filled by ``Mixer.apply``: the λ̄ actually applied (images' dtype; image methods' rows)
    outcome: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
        """``[B]`` weight of each row's own label under ``label_weight="effective"``: the mean of
        the mask actually applied (after :meth:`Mixer.apply`, in the images' dtype)."""
        applied = self.outcome.get("lam_effective")  # per row (or one number)
        if isinstance(applied, Tensor):
            return applied.expand(self.batch_size)
        if applied is not None:
            return self._rows(applied, torch.float32)
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
        applied = self.outcome.get("masks")
        if applied is not None:
            return applied
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


#: The name of ``return_info=True``'s result before plans existed.
MixInfo = MixPlan
