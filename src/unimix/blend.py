"""Pixel kernels of the engine: blend a batch with its partner rows, paste a box, round to uint8.

``x̃ = M ⊙ x + (1 − M) ⊙ x[partner]`` is computed as ``lerp(x[partner], x, M)``, which copies
finite values exactly where ``M`` is 0 or 1. :func:`select` copies the pixels' bits instead, so a
NaN or ±inf in one image cannot reach a pixel that does not come from it; the engine uses it for
binary masks when a batch holds such values (and always on GPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["blend", "blend_exact", "select", "paste_box", "to_uint8", "memory_format"]


def blend(
    x: Tensor,
    partner: Tensor,
    w: Tensor | float,
    out: Tensor | None,
    workspace: Tensor | None = None,
) -> Tensor:
    """``out = w ⊙ x + (1 − w) ⊙ x[partner]`` without touching ``x`` unless ``out is x``.

    ``workspace`` (same shape, dtype and strides as ``x``) receives the gathered partners when
    mixing in place, so no fresh tensor is allocated.
    """
    if not x.is_floating_point():
        return _blend_uint8(x, partner, w, out)
    if out is x:
        if workspace is not None:
            torch.index_select(x, 0, partner, out=workspace)
            return torch.lerp(workspace, x, w, out=x)
        return torch.lerp(x.index_select(0, partner), x, w, out=x)
    gathered = x.index_select(0, partner)
    if out is None:
        if not gathered.is_contiguous(memory_format=memory_format(x)):
            gathered = gathered.contiguous(memory_format=memory_format(x))
        return gathered.lerp_(x, w)
    return out.copy_(gathered.lerp_(x, w))


def blend_exact(x: Tensor, partner: Tensor, w: Tensor, out: Tensor | None) -> Tensor:
    """:func:`blend` for float batches holding NaN or ±inf: where ``w`` is exactly 1 (0) the
    pixel is a copy of ``x`` (``x[partner]``), so a non-finite value of one image reaches no
    pixel taken whole from the other (``lerp`` would compute ``0 · NaN``); in between it blends.
    """
    gathered = x.index_select(0, partner)
    w = w.to(x.dtype)
    mixed = torch.where(w == 1, x, torch.where(w == 0, gathered, torch.lerp(gathered, x, w)))
    return mixed if out is None else out.copy_(mixed)


#: float32 elements per block of the uint8 blend (1 MiB): the block's float copies stay in cache
UINT8_BLOCK = 1 << 18
#: ``1.5 · 2²³``: added to a float32 in [−½, 255½] it rounds it, ties to even, to an integer that
#: the low byte of the sum's bits holds (the uint8 row kernels' rounding)
UINT8_ROUNDER = 12582912.0


def _blend_uint8(x: Tensor, partner: Tensor, w: Tensor | float, out: Tensor | None) -> Tensor:
    """uint8 blend, computed in float32 and rounded, over blocks of rows that fit in cache.

    The float copies of a whole batch would make the blend memory-bound (several passes over
    4× the batch); blocks of ``UINT8_BLOCK`` elements keep them in cache. The blocks split the
    memory, not the work: each is one vectorised blend of many rows (all of them for small
    images). The partners are gathered first, so mixing into ``out is x`` reads no mixed row.
    """
    gathered = x.index_select(0, partner)
    target = torch.empty_like(x, memory_format=memory_format(x)) if out is None else out
    batch = x.shape[0]
    rows = max(1, UINT8_BLOCK // max(1, x[0].numel()))
    w = w.float() if isinstance(w, Tensor) else w
    per_row = isinstance(w, Tensor) and w.dim() > 0 and w.shape[0] == batch and batch > 1
    for start in range(0, batch, rows):
        stop = min(start + rows, batch)
        ws = w[start:stop] if per_row and isinstance(w, Tensor) else w
        mixed = gathered[start:stop].float().lerp_(x[start:stop].float(), ws)
        target[start:stop] = to_uint8(mixed)
    return target


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def select(
    x: Tensor, partner: Tensor, keep: Tensor, out: Tensor | None, workspace: Tensor | None = None
) -> Tensor:
    """Binary masks: ``x`` where ``keep`` (bool, broadcastable), ``x[partner]`` elsewhere.

    An exact bit copy, by ``g ^ ((x ^ g) & m)`` on the pixels' bits with ``m`` all ones where
    ``keep``: no arithmetic, so a NaN or ±inf never reaches a pixel that does not come from it,
    and several times faster than ``torch.where`` on CPU. The partners are gathered once (into
    ``workspace`` when mixing in place) and the result is written over them, or over ``x`` when
    ``out is x``.
    """
    bits = _BITS[x.element_size()]
    ones = keep.to(bits).neg_() if bits != torch.uint8 else keep.to(bits).mul_(255)
    if out is x:
        gathered = x.index_select(0, partner) if workspace is None else workspace
        if workspace is not None:
            torch.index_select(x, 0, partner, out=workspace)
        g = gathered.view(bits)
        x.view(bits).bitwise_xor_(g).bitwise_and_(ones).bitwise_xor_(g)
        return x
    gathered = x.index_select(0, partner)
    if not gathered.is_contiguous(memory_format=memory_format(x)):
        gathered = gathered.contiguous(memory_format=memory_format(x))
    g = gathered.view(bits)
    if workspace is not None and workspace.stride() == gathered.stride():
        scratch = torch.bitwise_xor(x.view(bits), g, out=workspace.view(bits))
    else:
        scratch = torch.bitwise_xor(x.view(bits), g)
    g.bitwise_xor_(scratch.bitwise_and_(ones))
    return gathered if out is None else out.copy_(gathered)


def paste_box(
    x: Tensor, partner: Tensor, box: tuple[int, int, int, int], out: Tensor | None
) -> Tensor:
    """One box ``(y0, y1, x0, x1)`` for the whole batch: only the box is written from the partners."""
    y0, y1, x0, x1 = box
    out = x.clone() if out is None else out
    out[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1].index_select(0, partner)
    return out


def to_uint8(values: Tensor) -> Tensor:
    """Round float pixel values in [0, 255] to uint8 (through int16: PyTorch's direct
    float → uint8 cast is several times slower on CPU)."""
    return values.round_().clamp_(0, 255).to(torch.int16).to(torch.uint8)


def memory_format(x: Tensor) -> torch.memory_format:
    """``channels_last`` for a 4-D tensor stored that way, else the contiguous format."""
    if (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    ):
        return torch.channels_last
    return torch.contiguous_format
