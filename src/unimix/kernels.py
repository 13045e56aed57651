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

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from unimix.blend import blend, blend_exact, memory_format, paste_box, select, to_uint8
from unimix.mixmethod import MixMethod
from unimix.plan import Measured, MixPlan, unit_masks

__all__ = [
    "Kind",
    "mask_kind",
    "apply_masks",
    "traced_blend",
    "select_exactly",
    "apply_map",
    "run_image_methods",
    "copied_rows",
    "as_applied",
    "dense_targets",
]

Kind = Literal["copy", "box", "constant", "select", "blend"]
"""The kernel a plan's masks call for (see the module docstring)."""


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
        plan.mode == "batch"
        and covering is not None
        and covering.boxes is not None
        and covering.outside is not None
        and covering.outside.item() == 1.0  # one unit: one value
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
    images: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Mix ``x`` by the plan's masks with the kernel of ``kind`` into ``out`` (``x`` itself when
    in place, a new tensor when ``None``). Returns the mixed batch, ``λ̄`` per unit as applied
    (in the images' dtype) and the masks as applied ``[B or 1, 1, H, W]`` when half precision
    changed them (else ``None``). Units of image-dependent methods (``images``: the plan has
    some) get weight 1 here, their rows overwritten afterwards."""
    wdtype = x.dtype if x.is_floating_point() else torch.float32
    half = wdtype not in (torch.float32, torch.float64)
    lam_u = plan.unit_lam_effective  # copied below where the rows could alias the plan's
    if images or plan.mode != "batch":
        lam_u = lam_u.nan_to_num(1.0)
    partner = plan.partner
    if kind == "copy":
        return (x.clone() if out is None else out), lam_u, None
    covering = plan.covering_sample() if kind in ("box", "select") else None
    if kind == "box":
        assert covering is not None and covering.boxes is not None
        y0, y1, x0, x1 = covering.boxes.tolist()[0]
        return paste_box(x, partner, (y0, y1, x0, x1), out), lam_u, None
    if (
        kind in ("constant", "blend")
        and x.dtype == torch.uint8
        and not images
        and not torch.compiler.is_compiling()
    ):
        mixed = _compiled_uint8(x, plan, out)
        if mixed is not None:
            return mixed, lam_u, None
    ws = workspace if out is x else None
    if kind == "constant":
        if plan.mode == "batch" and x.is_floating_point() and not half and x.device.type == "cpu":
            return blend(x, partner, lam_u.item(), out, ws), lam_u, None
        w_u, mean = as_applied(lam_u.view(-1, 1, 1, 1), wdtype)
        return blend(x, partner, _rows(plan, w_u), out, ws), lam_u if mean is None else mean, None
    if kind == "select":
        keep = covering.keep() if covering is not None else _masks(plan, torch.float32).bool()
        return select(x, partner, _rows(plan, keep), out, workspace), lam_u, None
    weights, mean = as_applied(_masks(plan, torch.float32), wdtype)
    w_rows = _rows(plan, weights)
    applied = None if mean is None else w_rows
    lam_u = lam_u if mean is None else mean
    binary = any(s is not None and s.binary for s in plan.samples)
    if binary and select_exactly(x):  # binary rows among blended ones stay exact copies
        return blend_exact(x, partner, w_rows, out), lam_u, applied
    return blend(x, partner, w_rows, out, ws), lam_u, applied


def _compiled_uint8(x: Tensor, plan: MixPlan, out: Tensor | None) -> Tensor | None:
    """A uint8 batch on the CPU mixed in one compiled pass per row
    (:func:`unimix.collate_kernels.mix_uint8`, with ``unimix[fast]``): the bytes of :func:`blend`,
    several times faster. ``None`` where it cannot run (no numba, not the CPU)."""
    from unimix import collate_fused, collate_kernels  # numba loads when uint8 is first mixed

    rows = list(x.unbind(0))
    if not collate_fused.runs_on(rows):
        return None
    masks = collate_kernels.row_masks(plan)
    if masks is None:
        return None
    mixed = collate_kernels.mix_uint8(rows, plan.partner, masks, compiled=True)
    if out is None:  # a new batch, laid out as blend lays it out
        if mixed.is_contiguous(memory_format=memory_format(x)):
            return mixed
        out = torch.empty_like(x, memory_format=memory_format(x))
    return out.copy_(mixed)  # in place: the rows were read from x while they were mixed


def as_applied(weights: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Mask weights ``[N, 1, h, w]`` as applied, in ``dtype`` (the images' dtype; float32 for
    uint8), and, where that dtype rounds them (half precision), their means ``[N]``: the λ̄ the
    labels must weigh. ``None`` otherwise (the float32 λ̄ of the plan stands)."""
    applied = weights.to(dtype)
    if dtype in (torch.float32, torch.float64):
        return applied, None
    return applied, applied.float().mean(dim=(1, 2, 3))


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
    weights, mean = as_applied(masks.to(x.device), wdtype)
    gathered = x.index_select(0, partner)
    if x.is_floating_point():
        blended = torch.lerp(gathered, x, weights)
        mixed = torch.where(weights == 1, x, torch.where(weights == 0, gathered, blended))
    else:
        mixed = to_uint8(torch.lerp(gathered.float(), x.float(), weights))
    out = x.copy_(mixed) if inplace else mixed
    lam_rows = (lam_eff if mean is None else mean).to(x.device).expand(x.shape[0])
    return out, Measured(lam_rows, None if mean is None else weights)


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


def run_image_methods(
    methods: Sequence[object],
    x: Tensor,
    plan: MixPlan,
    context: Mapping[str, Any],
    generator_device: torch.device,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Rows mixed by image-dependent methods (:class:`~unimix.mixmethod.MixMethod`): ``(rows,
    mixed rows, λ̄ of the rows)`` each. Method ``m`` draws from a generator seeded
    ``plan.image_seed + m``, so one plan replays the same pixels. ``context`` holds ``model``
    (and ``labels``); they read the original rows, so they run before any in-place mix."""
    results = []
    lam_rows, method_rows, applied_rows = plan.lam, plan.method, plan.applied
    seed = plan.image_seed if plan.image_seed is not None else 0
    for m, obj in enumerate(methods):
        if not isinstance(obj, MixMethod):
            continue
        rows = ((method_rows == m) & applied_rows).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        partner_rows = plan.partner[rows]
        mixed, lam_m = obj.mix(
            x.index_select(0, rows),
            x.index_select(0, partner_rows),
            lam_rows[rows],
            generator=torch.Generator(generator_device).manual_seed(seed + m),
            context={**context, "rows": rows, "partner_rows": partner_rows},
        )
        if not x.is_floating_point():
            mixed = to_uint8(mixed.float())
        results.append((rows, mixed.to(x.dtype), lam_m.to(x.device, torch.float32)))
    return results


def dense_targets(maps: Tensor, plan: MixPlan, num_classes: int) -> Tensor:
    """Per-pixel soft targets ``[B, K, H, W]`` of checked class-id maps ``[B, H, W]``:
    ``M ⊙ onehot(s) + (1 − M) ⊙ onehot(s[partner])``."""
    masks = plan.masks
    if masks is None:
        raise ValueError(
            "dense_targets needs the plan's masks; an image-dependent method mixed a row"
        )
    onehot = torch.nn.functional.one_hot(maps.long(), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.to(device=masks.device, dtype=torch.float32)
    partner = plan.partner.to(masks.device)
    return torch.lerp(onehot.index_select(0, partner), onehot, masks)


def copied_rows(plan: MixPlan, no_mix: Collection[int], prob: float) -> Tensor | None:
    """Rows left unmixed (``prob < 1``, or the methods ``no_mix``) in a mix, or ``None``: the
    engine copies them over the kernel's output (a copy, never arithmetic: NaN stays put)."""
    if prob == 1.0 and not no_mix:
        return None
    exact = ~plan.applied
    for m in no_mix:
        exact |= plan.method == m
    rows = exact.nonzero().squeeze(1)
    return rows if rows.numel() else None
