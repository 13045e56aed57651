"""uint8 kernels of collate-time mixing: a collated batch mixed per row, reading partners from the
samples themselves.

In a collate function the samples are still at hand, unmodified, after they are stacked into the
batch ``x``. So a row can be mixed *in place* from its own pixels (already in ``x``) and its
partner's (read from the sample list), with no gathered copy of the batch and no full-image work
where nothing changes:

* a binary box mask (CutMix, GridMix-style boxes; ``M = 0`` in the box, 1 outside) writes only the
  box: ``x[k, :, box] = sample[partner[k]][:, box]`` — the rest of the row is the stacked copy;
* a constant mask (Mixup) blends the row in float32 with its ``λ̄`` and rounds;
* any other mask (GMix, HMix: ``λ_m`` outside its box) blends the row with the sampler's mask,
  one row at a time so that the float copies stay in cache, then the box of HMix is pasted
  (where ``M = 0`` the blend is the partner's pixel exactly, so pasting it changes nothing);
* rows whose ``λ̄`` is 1 are left as stacked.

The arithmetic is the engine's (:func:`unimix.blend.to_uint8` of ``lerp(x_partner, x, M)`` in
float32 with the same weights), so every pixel equals what ``Mixer.apply`` makes for the same plan.
Masks always come from the plan's :class:`~unimix.masks.MaskSample`; nothing here draws or
re-implements one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from unimix.masks import MaskSample
from unimix.plan import MixPlan

__all__ = ["single_sample", "mix_rows_uint8"]


def single_sample(plan: MixPlan) -> MaskSample | None:
    """The plan's one :class:`MaskSample` when it covers every unit of a ``pair``/``elem`` plan
    (one mask method, every unit mixed), else ``None`` (the caller falls back to the engine)."""
    if plan.mode not in ("pair", "elem"):
        return None
    return plan.covering_sample()


def mix_rows_uint8(
    x: Tensor,
    samples: Sequence[Tensor],
    partner: Tensor,
    unit_of_row: Tensor | None,
    sample: MaskSample,
    lam_rows: Tensor,
    rows: int,
) -> Tensor:
    """Mix rows ``0 … rows−1`` of the collated ``uint8`` batch ``x`` in place and return it.

    ``samples[k]`` is the ``[C, H, W]`` image stacked into ``x[k]`` (read, never written);
    ``partner[k]`` the row mixed into row ``k``; ``unit_of_row[k]`` the index of row ``k``'s mask in
    ``sample`` (``None``: one unit per row); ``lam_rows[k]`` the row's ``λ̄`` (rows at 1 are left
    as stacked). Rows from ``rows`` on are not touched (timm's ``mode="half"`` returns only the
    first half).
    """
    partners = partner[:rows].tolist()
    units = list(range(rows)) if unit_of_row is None else unit_of_row[:rows].tolist()
    skip = (lam_rows[:rows] == 1.0).tolist()
    boxes = sample.boxes.tolist() if sample.boxes is not None else None
    outside = sample.outside
    if boxes is not None and outside is not None and bool((outside == 1.0).all()):
        for k in range(rows):  # the collate's own loop over its samples: box slices only
            if not skip[k]:
                y0, y1, x0, x1 = boxes[units[k]]
                x[k, :, y0:y1, x0:x1] = samples[partners[k]][:, y0:y1, x0:x1]
        return x
    row = _RowBlend(x)
    if sample.constant:
        weights = lam_rows.to(torch.float32).view(-1, 1, 1, 1)
        for k in range(rows):
            if not skip[k]:
                row(k, samples[partners[k]], weights[k : k + 1])
        return x
    if boxes is not None and outside is not None:
        # HMix: λ_m outside the box, the partner's pixels in it (the blend at weight 0)
        weights = outside.to(torch.float32).view(-1, 1, 1, 1)
        for k in range(rows):
            if not skip[k]:
                u = units[k]
                row(k, samples[partners[k]], weights[u : u + 1])
                y0, y1, x0, x1 = boxes[u]
                x[k, :, y0:y1, x0:x1] = samples[partners[k]][:, y0:y1, x0:x1]
        return x
    masks = sample.masks
    for k in range(rows):
        if not skip[k]:
            u = units[k]
            row(k, samples[partners[k]], masks[u : u + 1].to(torch.float32))
    return x


class _RowBlend:
    """``x[k] = round(lerp(partner, x[k], w))`` in float32, as :func:`unimix.blend.blend` does
    for uint8, through buffers of one row reused for every row (they stay in cache; no
    allocation per row). Values stay in [0, 255], so no clamp is needed before the casts."""

    def __init__(self, x: Tensor) -> None:
        shape = (1, *x.shape[1:])
        self.x = x
        self.partner = torch.empty(shape, dtype=torch.float32, device=x.device)
        self.own = torch.empty(shape, dtype=torch.float32, device=x.device)
        self.levels = torch.empty(shape, dtype=torch.int16, device=x.device)

    def __call__(self, k: int, partner_image: Tensor, w: Tensor) -> None:
        own = self.x[k : k + 1]
        self.partner.copy_(partner_image.unsqueeze(0))
        self.own.copy_(own)
        self.partner.lerp_(self.own, w).round_()
        own.copy_(self.levels.copy_(self.partner))
