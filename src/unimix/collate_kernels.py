"""uint8 kernels of collate-time mixing: a batch mixed while it is collated, straight from its samples.

In a collate function the samples are still separate, unmodified tensors. So each row of the
output is written once, from its own sample and its partner's, with no stacked copy to mix in
place, no gathered copy of the partners and no full-image work where nothing changes:

* a row with a binary box mask (CutMix; ``M = 0`` in the box, 1 outside) is a copy of its sample
  with only the box copied from the partner;
* a row whose mask is a constant ``w`` (Mixup; HMix outside its box, where ``w = λ_m``) is blended
  in float32 with the scalar ``w``, then HMix's box is copied from the partner (where ``M = 0`` the
  blend is the partner's pixel exactly, so the copy changes nothing but the time);
* a row with any other mask (GMix) is blended with its mask row, read from the sampler's masks;
* a row whose mask is all ones (not mixed; ``w = 1``) is a copy of its sample, all zeros
  (``w = 0``) a copy of its partner — the blend at those weights is exactly that copy.

Blends run over blocks of rows of at most :data:`unimix.blend.UINT8_BLOCK` elements (one row of a
224×224 image, many rows of a small one), as the engine's uint8 path does, so that the float
copies stay in cache and a small image costs no more operations than a large one. Per block:
both operands converted to float32, ``lerp`` in place, the magic-number rounding (below), one
conversion back. The arithmetic is the engine's — ``to_uint8(lerp(partner, own, M))`` in float32
with the same weights — so every pixel equals what ``Mixer.apply`` makes for the same plan.

Rounding: for ``v ∈ [−½, 255½]``, ``v + 1.5·2²³`` rounds ``v`` to the nearest integer, ties to
even, exactly as ``torch.round`` does (the ulp there is 1), and the sum's float32 bits are
``0x4B400000 + round(v)``: their low byte, which an ``int32 → uint8`` cast keeps, is the pixel.
A lerp of two values in [0, 255] with a weight in [0, 1] lies in that range, so the engine's
clamp never acts. This is one pass where ``round → int16 → uint8`` takes three.

Masks always come from the plan's :class:`~unimix.masks.MaskSample`; nothing here draws or
re-implements one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from unimix import collate_fused
from unimix.blend import UINT8_BLOCK, UINT8_ROUNDER
from unimix.masks import MaskSample
from unimix.plan import MixPlan

__all__ = ["RowMasks", "row_masks", "mix_uint8"]

#: the same as a 0-dim tensor: ``add_`` with it skips wrapping a Python number on every call
_ROUNDER_TENSOR = torch.tensor(UINT8_ROUNDER)

_OWN, _PARTNER, _BLEND, _MASK = 0, 1, 2, 3


class RowMasks(NamedTuple):
    """Which mask each row of a plan applies.

    ``samples`` are the plan's mask samples that some row uses; row ``k`` applies mask
    ``index[k]`` of ``samples[sample[k]]``, or no mask at all (``sample[k] == −1``: not mixed).
    """

    samples: tuple[MaskSample, ...]
    sample: list[int]
    index: list[int]


def row_masks(plan: MixPlan) -> RowMasks | None:
    """Each row's mask in ``plan`` (every mode, several methods, ``prob < 1``), or ``None`` when
    an image-dependent method mixes some row (its pixels are no mask blend: use the engine).

    A method's sample holds the masks of the units that drew it and are mixed, in unit order.
    """
    if plan.needs_images:
        return None
    batch = plan.batch_size
    covering = plan.covering_sample()
    if covering is not None:  # one method, every unit mixed: unit u's mask is its row u
        return RowMasks((covering,), [0] * batch, plan.unit_of_row.tolist())
    method = plan.unit_method.cpu()
    applied = plan.unit_applied.cpu()
    of_unit = torch.full_like(method, -1)
    index_of_unit = torch.zeros_like(method)
    present = []
    for m, sample in enumerate(plan.samples):
        if sample is None:
            continue
        drew = (method == m) & applied
        of_unit[drew] = len(present)
        index_of_unit[drew] = torch.arange(int(drew.sum()))
        present.append(sample)
    unit = plan.unit_of_row.cpu()
    of_unit, index_of_unit = of_unit[unit], index_of_unit[unit]
    return RowMasks(tuple(present), of_unit.tolist(), index_of_unit.tolist())


def mix_uint8(
    samples: Sequence[Tensor],
    partner: Tensor,
    masks: RowMasks,
    rows: int | None = None,
    *,
    compiled: bool | None = None,
) -> Tensor:
    """Rows ``0 … rows−1`` of the mixed batch, made from the ``uint8`` ``[C, H, W]`` ``samples``.

    Row ``k`` is ``to_uint8(lerp(samples[partner[k]], samples[k], M_k))`` with ``M_k`` the mask
    ``masks`` gives it — bit for bit what ``Mixer.apply`` makes of the stacked batch — computed as
    the module docstring says. ``rows`` (default: all) lets timm's ``mode="half"`` make only the
    half it returns. The samples are read, never written.

    ``compiled`` picks the implementation: the one-pass numba kernel of
    :mod:`unimix.collate_fused` (``True``; it needs ``pip install "unimix[fast]"``) or PyTorch
    operations (``False``). The default uses the kernel where it can run (numba installed, CPU
    samples of one shape and layout). Both give the same bytes.
    """
    if samples[0].dtype != torch.uint8:
        raise TypeError(
            f"mix_uint8 mixes uint8 samples, got {samples[0].dtype}; mix float batches with "
            "Mixer.apply"
        )
    if compiled and not collate_fused.available():
        raise ValueError(
            'mix_uint8(compiled=True) needs numba: pip install "unimix[fast]", or pass '
            "compiled=None to fall back to PyTorch operations"
        )
    rows = len(samples) if rows is None else rows
    out = torch.empty((rows, *samples[0].shape), dtype=torch.uint8, device=samples[0].device)
    partners = partner[:rows].tolist()
    source, kind, weight, boxes, masked = _row_work(masks, rows, partners)
    if compiled is not False and _mix_compiled(
        samples, partners, masks, source, kind, weight, boxes, masked, out
    ):
        return out
    if compiled:
        raise ValueError(
            "mix_uint8(compiled=True) runs on CPU samples that share one shape and one layout; "
            "pass compiled=None to fall back to PyTorch operations for these"
        )
    groups: dict[int, list[int]] = {}  # -1: scalar weights, j: mask rows of sample j
    for k in range(rows):
        if kind[k] == _BLEND or kind[k] == _MASK:
            groups.setdefault(masked[k], []).append(k)
    if not groups:
        torch.stack([samples[s] for s in source], out=out)
    else:
        copied = [k for k in range(rows) if kind[k] == _OWN or kind[k] == _PARTNER]
        for start, stop in _runs(copied):
            torch.stack([samples[s] for s in source[start:stop]], out=out[start:stop])
        blend = _Blend(samples, out, partners)
        for j, group in groups.items():
            if j < 0:
                scalars = torch.tensor(
                    [weight[k] for k in group], dtype=torch.float32, device=out.device
                )
                weights, where = scalars.view(-1, 1, 1, 1), {k: i for i, k in enumerate(group)}
            else:
                weights, where = masks.samples[j].masks, {k: masks.index[k] for k in group}
            blend(group, weights, where)
    copies = {k for k in range(rows) if kind[k] == _OWN}
    _paste_boxes(out, samples, partners, boxes, copies)
    return out


def _mix_compiled(
    samples: Sequence[Tensor],
    partners: list[int],
    masks: RowMasks,
    source: list[int],
    kind: list[int],
    weight: list[float],
    boxes: list[tuple[int, tuple[int, ...]]],
    masked: list[int],
    out: Tensor,
) -> bool:
    """Every row of ``out`` by :func:`unimix.collate_fused.mix_rows`; ``False`` where it cannot run."""
    rows = out.shape[0]
    row_box: list[tuple[int, ...] | None] = [None] * rows
    for k, box in boxes:
        row_box[k] = box
    row_mask: list[Tensor | None] = [None] * rows
    mask_rows: dict[int, Tensor] = {}
    for k in range(rows):
        if kind[k] == _MASK:
            j = masked[k]
            if j not in mask_rows:
                mask_rows[j] = masks.samples[j].masks.to(torch.float32).contiguous()[:, 0]
            row_mask[k] = mask_rows[j][masks.index[k]]
    mates = [source[k] if kind[k] == _PARTNER else partners[k] for k in range(rows)]
    return collate_fused.mix_rows(samples, source, mates, weight, row_mask, row_box, out)


def _paste_boxes(
    out: Tensor,
    samples: Sequence[Tensor],
    partners: list[int],
    boxes: list[tuple[int, tuple[int, ...]]],
    copies: set[int],
) -> None:
    """``out[k, :, box] = samples[partner[k]][:, box]`` for each ``(k, box)``: one copy for all
    rows that share a box and lie at equal steps (the whole batch in ``mode="batch"``, the two
    rows of a pair), else one per row. Many rows sharing a box whose partners are among them
    and still plain copies of their samples (``copies``; CutMix in ``mode="batch"``) take the
    box from ``out`` itself, gathered before it is written, as the engine's ``paste_box``."""
    shared: dict[tuple[int, ...], list[int]] = {}
    for k, box in boxes:
        shared.setdefault(box, []).append(k)
    out_rows = out.unbind(0)
    for (y0, y1, x0, x1), rows in shared.items():
        if (
            len(rows) > 2
            and copies.issuperset(rows)
            and copies.issuperset(partners[k] for k in rows)
            and set(rows).issuperset(partners[k] for k in rows)
        ):
            region = out[:, :, y0:y1, x0:x1]
            mates = torch.tensor([partners[k] for k in rows], device=out.device)
            gathered = region.index_select(0, mates)
            if rows == list(range(out.shape[0])):
                region.copy_(gathered)
            else:
                region.index_copy_(0, torch.tensor(rows, device=out.device), gathered)
            continue
        crops = [samples[partners[k]][:, y0:y1, x0:x1] for k in rows]
        step = rows[1] - rows[0] if len(rows) > 1 else 0
        if step > 0 and all(b - a == step for a, b in zip(rows, rows[1:], strict=False)):
            torch.stack(crops, out=out[rows[0] : rows[-1] + 1 : step, :, y0:y1, x0:x1])
        else:
            for k, crop in zip(rows, crops, strict=True):
                out_rows[k][:, y0:y1, x0:x1].copy_(crop)


def _row_work(
    masks: RowMasks, rows: int, partners: list[int]
) -> tuple[list[int], list[int], list[float], list[tuple[int, tuple[int, ...]]], list[int]]:
    """Per row: the sample it starts from, its kind of work, its scalar weight, the boxes to copy
    from the partner and the sample of its mask (``_MASK`` rows)."""
    source, kind = list(range(rows)), [_OWN] * rows
    weight, masked = [1.0] * rows, [-1] * rows
    boxes: list[tuple[int, tuple[int, ...]]] = []
    per_sample = []
    for sample in masks.samples:
        scalar = None
        if sample.constant:
            scalar = sample.lam.tolist()
        elif sample.boxes is not None and sample.outside is not None:
            scalar = sample.outside.tolist()
        box = sample.boxes.tolist() if sample.boxes is not None else None
        per_sample.append((scalar, box))
    for k in range(rows):
        j = masks.sample[k]
        if j < 0:
            continue
        scalar, box = per_sample[j]
        i = masks.index[k]
        if scalar is None:
            kind[k], masked[k] = _MASK, j
            continue
        w = scalar[i]
        if w == 0.0:  # all the partner's pixels (a box of M = 0 included)
            kind[k], source[k] = _PARTNER, partners[k]
            continue
        if w != 1.0:
            kind[k], weight[k] = _BLEND, w
        if box is not None and box[i][0] < box[i][1] and box[i][2] < box[i][3]:
            boxes.append((k, tuple(box[i])))
    return source, kind, weight, boxes, masked


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of consecutive values in the sorted ``rows``."""
    runs: list[tuple[int, int]] = []
    for k in rows:
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    return runs


def _take(t: Tensor, index: list[int]) -> Tensor:
    """``t[index]``: a view when ``index`` is a run of consecutive rows, else a gathered copy."""
    if index == list(range(index[0], index[0] + len(index))):
        return t[index[0] : index[-1] + 1]
    return t.index_select(0, torch.tensor(index, device=t.device))


class _Blend:
    """``out[k] = to_uint8(lerp(samples[partner[k]], samples[k], w_k))`` for a list of rows,
    over blocks whose float32 copies stay in cache (buffers reused for every block).

    Two rows that are each other's partner (timm's flip pairs ``k``, ``B−1−k``; pairs in
    ``mode="pair"``) blend the same two images: both are converted to float once and serve both
    rows (``lerp(b, a, w_k)`` out of place, then ``lerp(a, b, w_p)`` in place), which saves two
    of the ten passes over the pair.
    """

    def __init__(self, samples: Sequence[Tensor], out: Tensor, partners: list[int]) -> None:
        self.samples, self.out, self.partners = samples, out, partners
        self.block = max(1, UINT8_BLOCK // max(1, out[0].numel()))
        shape = (min(self.block, out.shape[0]), *out.shape[1:])
        self.own, self.other, self.spare = (
            torch.empty(shape, dtype=torch.float32, device=out.device) for _ in range(3)
        )
        self.levels: Tensor | None = None

    def __call__(self, rows: list[int], weights: Tensor, where: dict[int, int]) -> None:
        """Blend ``rows``; row ``k``'s weight is ``weights[where[k]]`` (``[1, 1, 1]`` or
        ``[1, H, W]``, broadcast over the channels)."""
        partners, todo = self.partners, set(rows)
        firsts = [
            k
            for k in rows
            if partners[k] in todo and partners[k] > k and partners[partners[k]] == k
        ]
        singles = sorted(todo.difference(firsts, (partners[k] for k in firsts)))
        if self.block == 1:  # one row per block: the same operations on views made once
            self._rows(firsts, singles, weights, where)
            return
        for start in range(0, len(firsts), self.block):
            block = firsts[start : start + self.block]
            n, mates = len(block), [partners[k] for k in block]
            own, other, spare = self.own[:n], self.other[:n], self.spare[:n]
            _stack_into(own, [self.samples[k] for k in block])
            _stack_into(other, [self.samples[p] for p in mates])
            torch.lerp(other, own, _take(weights, [where[k] for k in block]), out=spare)
            self._write(block, spare.add_(UINT8_ROUNDER))
            own.lerp_(other, _take(weights, [where[p] for p in mates]))
            self._write(mates, own.add_(UINT8_ROUNDER))
        for start in range(0, len(singles), self.block):
            block = singles[start : start + self.block]
            n = len(block)
            own, other = self.own[:n], self.other[:n]
            _stack_into(own, [self.samples[k] for k in block])
            _stack_into(other, [self.samples[partners[k]] for k in block])
            other.lerp_(own, _take(weights, [where[k] for k in block]))
            self._write(block, other.add_(UINT8_ROUNDER))

    def _rows(
        self, firsts: list[int], singles: list[int], weights: Tensor, where: dict[int, int]
    ) -> None:
        samples, partners, rounder = self.samples, self.partners, _ROUNDER_TENSOR
        out, w = self.out.unbind(0), weights.unbind(0)
        own, other, spare = self.own[0], self.other[0], self.spare[0]
        own_levels, other_levels = own.view(torch.int32), other.view(torch.int32)
        spare_levels = spare.view(torch.int32)
        for k in firsts:
            p = partners[k]
            own.copy_(samples[k])
            other.copy_(samples[p])
            torch.lerp(other, own, w[where[k]], out=spare).add_(rounder)
            out[k].copy_(spare_levels)
            own.lerp_(other, w[where[p]]).add_(rounder)
            out[p].copy_(own_levels)
        for k in singles:
            own.copy_(samples[k])
            other.copy_(samples[partners[k]])
            other.lerp_(own, w[where[k]]).add_(rounder)
            out[k].copy_(other_levels)

    def _write(self, block: list[int], rounded: Tensor) -> None:
        """``out[block] =`` the pixels in the low bytes of ``rounded`` (see the module docstring)."""
        levels = rounded.view(torch.int32)
        n = len(block)
        if block == list(range(block[0], block[0] + n)):
            self.out[block[0] : block[0] + n].copy_(levels)
            return
        if self.levels is None:
            self.levels = torch.empty_like(self.out[: self.own.shape[0]])
        self.levels[:n].copy_(levels)
        self.out.index_copy_(0, torch.tensor(block, device=self.out.device), self.levels[:n])


def _stack_into(buffer: Tensor, images: list[Tensor]) -> None:
    """``buffer = stack(images)`` converted to ``buffer``'s dtype (one copy for a single row)."""
    if len(images) == 1:
        buffer[0].copy_(images[0])
    else:
        torch.stack(images, out=buffer)
