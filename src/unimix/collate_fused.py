"""One compiled pass per output row for collate-time mixing of ``uint8`` samples (numba).

:func:`unimix.collate_kernels.mix_uint8` calls :func:`mix_rows` when numba is installed
(``pip install "unimix[fast]"``) and the samples are CPU tensors that share one shape and one
layout; otherwise it runs the same arithmetic as a sequence of PyTorch operations. Row ``k`` is

    out[k] = round(fl32(b + w · (a − b)))      a = samples[k], b = samples[partner[k]]

with ``w`` the row's scalar weight or its mask ``M_k[y, x]``, and inside the row's box (CutMix,
HMix) ``out[k] = b``, the value the blend takes where ``M = 0``. Every pixel is read once from
each image and written once: no float copy of an image, no second pass to round, no mask made for
a row whose weight is one number.

Why this is bit for bit PyTorch's ``to_uint8(lerp(b, a, w))``: ATen's vectorised CPU ``lerp``
computes ``b + w·(a − b)`` (``w < ½``) or ``a + (w − 1)·(a − b)`` (``w ≥ ½``) with one fused
multiply-add, so one rounding of the exact value to float32. Both forms have the same exact value
(``w − 1`` is exact for ``w ∈ [½, 1]``), and ``fma(w, a − b, b)`` rounds that same value once:
the kernel calls LLVM's ``fma`` intrinsic for it (without it, the float32 product and sum round
twice and about one pixel in 10⁴ comes out one level off). The rounding to an integer is the
magic-number addition described in :mod:`unimix.collate_kernels`; the kernel keeps the low byte of
the sum's bits. ``tests/test_collate_kernels.py`` checks every ``(a, b)`` pair against
``torch.lerp`` for many weights, and every row kind against ``Mixer.apply``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from unimix.blend import UINT8_ROUNDER

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload
except ImportError:  # pragma: no cover - the optional extra "fast" is not installed
    numba = None

__all__ = ["available", "runs_on", "mix_rows"]


def available() -> bool:
    """Whether the compiled kernel can run here (numba is installed)."""
    return numba is not None


def runs_on(samples: Sequence[Tensor]) -> bool:
    """Whether :func:`mix_rows` can mix ``samples`` here: numba installed, ``uint8`` CPU tensors
    of one shape and one layout (no negative strides)."""
    if numba is None or not samples:
        return False
    first = samples[0]
    shape, strides = first.shape, first.stride()
    return (
        first.dim() == 3
        and first.dtype == torch.uint8
        and first.device.type == "cpu"
        and min(strides, default=0) >= 0
        and all(
            s.shape == shape
            and s.stride() == strides
            and s.dtype == first.dtype
            and s.device == first.device
            for s in samples
        )
    )


if numba is not None:

    @intrinsic
    def _pointer(typingctx, address):
        """The ``int64`` address of a tensor's data as a ``void*`` for ``numba.carray``."""

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return types.voidptr(types.int64), codegen

    @intrinsic
    def _lerp_byte(typingctx, b, d, w):
        """``round(fl32(b + w·d))`` as a byte: ``fma(w, d, b)`` plus ``1.5·2²³``, low 8 bits."""

        def codegen(context, builder, signature, args):
            b, d, w = args
            rounder = ir.Constant(ir.FloatType(), UINT8_ROUNDER)
            total = builder.fadd(builder.fma(w, d, b), rounder)
            return builder.trunc(builder.bitcast(total, ir.IntType(32)), ir.IntType(8))

        return types.uint8(types.float32, types.float32, types.float32), codegen

    def _at(w, x):
        """The weight of pixel ``x``: ``w`` itself (one weight for the row) or ``w[x]`` (a mask)."""

    @overload(_at, inline="always")
    def _at_typed(w, x):
        if isinstance(w, types.Array):
            return lambda w, x: w[x]
        return lambda w, x: w

    @numba.njit(inline="always", boundscheck=False)
    def _lerp_loop(out, a, b, w, n, step):
        for x in range(n):
            p = np.float32(b[x * step])
            out[x] = _lerp_byte(p, np.float32(a[x * step]) - p, _at(w, x))

    @numba.njit(inline="always", boundscheck=False)
    def _copy_loop(out, a, n, step):
        for x in range(n):
            out[x] = a[x * step]

    @numba.njit(inline="always", boundscheck=False)
    def _blend_run(o, a, b, w, step, n):
        """``o[x] = lerp_byte(b, a, w)`` for ``x < n``: ``o``, ``a``, ``b`` are addresses, the
        images are read every ``step`` bytes, ``w`` is one float32 or a float32 array of ``n``."""
        out = numba.carray(_pointer(o), (n,), np.uint8)
        span = max(0, (n - 1) * step + 1)
        x1 = numba.carray(_pointer(a), (span,), np.uint8)
        x2 = numba.carray(_pointer(b), (span,), np.uint8)
        # the literal steps let LLVM vectorise: contiguous rows, and one channel of RGB stored
        # channel-last (timm's ToNumpy)
        if step == 1:
            _lerp_loop(out, x1, x2, w, n, 1)
        elif step == 3:
            _lerp_loop(out, x1, x2, w, n, 3)
        else:
            _lerp_loop(out, x1, x2, w, n, step)

    @numba.njit(inline="always", boundscheck=False)
    def _copy_run(o, a, step, n):
        """``o[x] = a[x·step]`` for ``x < n`` (addresses)."""
        out = numba.carray(_pointer(o), (n,), np.uint8)
        x1 = numba.carray(_pointer(a), (max(0, (n - 1) * step + 1),), np.uint8)
        if step == 1:
            _copy_loop(out, x1, n, 1)
        elif step == 3:
            _copy_loop(out, x1, n, 3)
        else:
            _copy_loop(out, x1, n, step)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _mix_rows(own, partner, weight, mask, box, out, channels, height, width, strides):
        """Row ``k`` of the ``out`` buffer at address ``out`` (contiguous ``[rows, C, H, W]``)."""
        hw = height * width
        sc, sy, sx = strides[0], strides[1], strides[2]
        for k in range(own.shape[0]):
            a, b, o, w = own[k], partner[k], out + k * channels * hw, weight[k]
            y0, y1, x0, x1 = box[k, 0], box[k, 1], box[k, 2], box[k, 3]
            if mask[k] != 0:
                for c in range(channels):
                    for y in range(height):
                        src, dst = c * sc + y * sy, c * hw + y * width
                        m = numba.carray(_pointer(mask[k] + 4 * y * width), (width,), np.float32)
                        _blend_run(o + dst, a + src, b + src, m, sx, width)
                continue
            blend = w != 1.0
            for c in range(channels):
                for y in range(height):
                    src, dst = c * sc + y * sy, o + c * hw + y * width
                    start, stop = (x0, x1) if y0 <= y < y1 else (width, width)
                    if blend:
                        _blend_run(dst, a + src, b + src, w, sx, start)
                    else:
                        _copy_run(dst, a + src, sx, start)
                    _copy_run(dst + start, b + src + start * sx, sx, stop - start)
                    rest = src + stop * sx
                    if blend:
                        _blend_run(dst + stop, a + rest, b + rest, w, sx, width - stop)
                    else:
                        _copy_run(dst + stop, a + rest, sx, width - stop)


def mix_rows(
    samples: Sequence[Tensor],
    own: Sequence[int],
    partner: Sequence[int],
    weight: Sequence[float],
    masks: Sequence[Tensor | None],
    boxes: Sequence[tuple[int, ...] | None],
    out: Tensor,
) -> bool:
    """Write every row of ``out`` (``uint8``, contiguous ``[rows, C, H, W]``) in one compiled call.

    Row ``k`` blends ``samples[own[k]]`` with ``samples[partner[k]]`` at ``weight[k]`` or, where
    ``masks[k]`` is given, at that float32 ``[H, W]`` mask; ``boxes[k] = (y0, y1, x0, x1)`` is
    taken whole from the partner. Weight 1 with no box is a copy of ``samples[own[k]]``. Returns
    ``False`` without writing when the kernel cannot run here (numba not installed, tensors not on
    the CPU, samples of different shapes or layouts): the caller then mixes with PyTorch
    operations.
    """
    if not runs_on(samples) or out.device.type != "cpu" or not out.is_contiguous():
        return False
    rows = out.shape[0]
    channels, height, width = samples[0].shape
    strides = samples[0].stride()
    mask = np.zeros(rows, dtype=np.int64)
    for k, m in enumerate(masks):
        if m is not None:
            if m.dtype != torch.float32 or m.shape != (height, width) or not m.is_contiguous():
                raise ValueError(
                    f"mix_rows: masks[{k}] must be a contiguous float32 [{height}, {width}] "
                    f"tensor, got {m.dtype} {tuple(m.shape)}"
                )
            mask[k] = m.data_ptr()
    box = np.zeros((rows, 4), dtype=np.int64)
    for k, b in enumerate(boxes):
        if b is not None:
            box[k] = b
    y0, y1, x0, x1 = box.T
    if not ((0 <= y0) & (y0 <= y1) & (y1 <= height) & (0 <= x0) & (x0 <= x1) & (x1 <= width)).all():
        raise ValueError(
            f"mix_rows: every box (y0, y1, x0, x1) must satisfy 0 <= y0 <= y1 <= {height} and "
            f"0 <= x0 <= x1 <= {width}"
        )
    _mix_rows(
        np.array([samples[i].data_ptr() for i in own], dtype=np.int64),
        np.array([samples[i].data_ptr() for i in partner], dtype=np.int64),
        np.asarray(weight, dtype=np.float32),
        mask,
        box,
        out.data_ptr(),
        channels,
        height,
        width,
        np.array(strides, dtype=np.int64),
    )
    return True
