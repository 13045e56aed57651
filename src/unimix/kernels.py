"""The engine's apply step for mask methods: one path, the pixel kernel chosen by the masks' kind.

A plan's masks are of one of four kinds, read from its :class:`~unimix.masks.MaskSample`\\ s:

* **copy** — no unit is mixed by a mask (``prob``, the ``none`` method, image methods only);
* **box paste** — one binary box for the whole batch (CutMix in ``batch`` mode): only the box
  is written, from the partner rows;
* **constant blend** — every mask is constant over the image (Mixup):
  ``lerp(x[partner], x, λ̄)`` with one weight per row (a number for a single unit);
* **binary select** — every mask is 0/1 and the batch holds a NaN or ±inf (always on GPU): the
  pixels' bits are selected, so a non-finite value stays in the pixels taken from its image;
* **general blend** — anything else: ``lerp(x[partner], x, M)`` with the masks spread to the
  rows (``lerp`` copies finite values exactly where ``M`` is 0 or 1).

The batch fast path is no second plan shape: a ``batch``-mode plan has one unit, whose mask
broadcasts over the rows. The label weight is measured here once: the mean of each mask in the
images' dtype (half precision rounds the weights; binary masks are exact in every dtype).
Under ``torch.compile`` :func:`traced_blend` is the kernel: tensors of fixed shapes only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import torch
from torch import Tensor

from unimix.blend import blend, blend_exact, paste_box, select, to_uint8
from unimix.plan import Measured, MixPlan, unit_masks

__all__ = ["Kind", "mask_kind", "apply_masks", "traced_blend", "select_exactly", "apply_map"]

Kind = Literal["copy", "box", "constant", "select", "blend"]


def select_exactly(x: Tensor) -> bool:
    """Whether binary masks must select pixel bits rather than blend: ``lerp`` with weights 0/1 is
    an exact copy of finite values, but ``0 · NaN`` is NaN. uint8 has no such values; on CPU one
    reduction tells whether the batch has any (a sum is finite iff every value is, short of an
    overflow, which only sends it to the exact path); on GPU the selection is always exact (no
    host synchronisation)."""
    if not x.is_floating_point():
        return False
    if x.device.type != "cpu":
        return True
    return not bool(torch.isfinite(x.sum()))


def mask_kind(plan: MixPlan, x: Tensor, no_mix: Collection[int]) -> Kind:
    """The kernel for ``x`` under ``plan``; ``no_mix`` are the indices of methods that mix
    nothing (their rows are copies)."""
    present = [s for m, s in enumerate(plan.samples) if s is not None and m not in no_mix]
    if not present:
        return "copy"
    if all(s.constant for s in present):
        return "constant"
    covering = plan.covering_sample()
    if (
        plan.n_units == 1
        and covering is not None
        and covering.boxes is not None
        and covering.outside is not None
        and float(covering.outside[0]) == 1.0
    ):
        return "box"
    if all(s.binary for s in present) and select_exactly(x):
        return "select"
    return "blend"


def _rows(plan: MixPlan, per_unit: Tensor) -> Tensor:
    """Per-unit values to the rows; ``batch`` mode's one unit stays ``[1, …]`` and broadcasts."""
    return per_unit if plan.mode == "batch" else plan.spread(per_unit)


def apply_masks(
    x: Tensor,
    plan: MixPlan,
    kind: Kind,
    out: Tensor | None,
    workspace: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Mix ``x`` by the plan's masks with the kernel of ``kind`` into ``out`` (``x`` itself when
    in place, a new tensor when ``None``). Returns the mixed batch, ``λ̄`` per unit as applied
    (in the images' dtype) and the masks as applied ``[B or 1, 1, H, W]`` when half precision
    changed them (else ``None``). Units of image-dependent methods get weight 1 here."""
    wdtype = x.dtype if x.is_floating_point() else torch.float32
    half = wdtype not in (torch.float32, torch.float64)
    lam_u = plan.unit_lam_effective.nan_to_num(1.0)
    partner = plan.partner
    if kind == "copy":
        return (x.clone() if out is None else out), lam_u, None
    covering = plan.covering_sample()
    if kind == "box":
        assert covering is not None and covering.boxes is not None
        y0, y1, x0, x1 = covering.boxes[0].tolist()
        return paste_box(x, partner, (y0, y1, x0, x1), out), lam_u, None
    ws = workspace if out is x else None
    if kind == "constant":
        if half:
            lam_u = lam_u.to(wdtype).float()
        w: Tensor | float = _rows(plan, lam_u.to(wdtype)).view(-1, 1, 1, 1)
        if plan.n_units == 1 and x.is_floating_point() and x.device.type == "cpu":
            w = float(lam_u[0])
        return blend(x, partner, w, out, ws), lam_u, None
    if kind == "select":
        keep = covering.keep() if covering is not None else _masks(plan, torch.float32).bool()
        return select(x, partner, _rows(plan, keep), out, workspace), lam_u, None
    weights = _masks(plan, wdtype)
    applied = None
    if half:  # the label must weigh the mask actually applied: its values in the images' dtype
        lam_u = weights.float().mean(dim=(1, 2, 3))
        applied = _rows(plan, weights)
    w_rows = _rows(plan, weights)
    binary = any(s is not None and s.binary for s in plan.samples)
    if binary and select_exactly(x):  # binary rows among blended ones stay exact copies
        return blend_exact(x, partner, w_rows, out), lam_u, applied
    return blend(x, partner, w_rows, out, ws), lam_u, applied


def _masks(plan: MixPlan, dtype: torch.dtype) -> Tensor:
    masks = unit_masks(plan, dtype, ones_for_images=True)
    assert masks is not None
    return masks


def traced_blend(
    x: Tensor, partner: Tensor, masks: Tensor, lam_eff: Tensor, inplace: bool
) -> tuple[Tensor, Measured]:
    """Mask methods under ``torch.compile``, in every mode: ``masks`` ``[B or 1, 1, H, W]`` and
    ``lam_eff`` ``[B]`` drawn outside the graph; tensors only, fixed shapes (a new λ, method or
    box is new data, not a new graph). Weights 0 and 1 copy their pixel (a NaN stays put)."""
    wdtype = x.dtype if x.is_floating_point() else torch.float32
    weights = masks.to(device=x.device, dtype=wdtype)
    gathered = x.index_select(0, partner)
    if x.is_floating_point():
        blended = torch.lerp(gathered, x, weights)
        mixed = torch.where(weights == 1, x, torch.where(weights == 0, gathered, blended))
    else:
        mixed = to_uint8(torch.lerp(gathered.float(), x.float(), weights))
    out = x.copy_(mixed) if inplace else mixed
    half = wdtype not in (torch.float32, torch.float64)
    if half:
        lam_eff = weights.float().mean(dim=(1, 2, 3))
    lam_rows = lam_eff.to(x.device).expand(x.shape[0])
    return out, Measured(lam_rows, weights if half else None)


def apply_map(maps: Tensor, plan: MixPlan, inplace: bool) -> tuple[Tensor, Measured]:
    """Integer label maps: every pixel copied from one of the two sources, which only binary
    masks allow (a blend would invent class ids)."""
    masks = plan.masks
    present = [s for s in plan.samples if s is not None]
    if (
        masks is None
        or not all(s.binary or s.constant for s in present)
        or not bool(((masks == 0) | (masks == 1)).all())
    ):
        raise ValueError(
            f"the plan's masks are not binary ({list(plan.method_names)}), so a mix of integer "
            f"label maps ({maps.dtype}) would blend class ids; use "
            "Mixer.dense_targets(maps, plan, num_classes) for per-pixel soft targets"
        )
    keep = masks.bool().expand(plan.batch_size, 1, plan.height, plan.width)
    out = select(maps, plan.partner, keep, maps if inplace else None)
    return out, Measured(masks.mean(dim=(1, 2, 3)).expand(plan.batch_size))
