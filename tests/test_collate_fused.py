"""The compiled one-pass uint8 kernel (``unimix.collate_fused``): every pair of pixel values at
any weight equals ``to_uint8(torch.lerp(...))`` — the engine's arithmetic — at lengths that are
and are not a multiple of the vector width; boxes, masks, copies and strided samples equal the
PyTorch path; ``mix_uint8`` runs it where it can and says why where it cannot."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mask_mixers import mask_mixers
from unimix import Mixer, collate_fused, kernels
from unimix.blend import to_uint8
from unimix.collate_kernels import RowMasks, mix_uint8
from unimix.masks import MaskSample

pytestmark = pytest.mark.skipif(
    not collate_fused.available(), reason="numba is not installed (pip install 'unimix[fast]')"
)

WEIGHTS = st.one_of(
    st.floats(0.0, 1.0, width=32),
    st.sampled_from([0.0, 0.5, 1.0, 2.0**-24, 0.5 - 2.0**-25, 1.0 - 2.0**-24, 1 / 3, 0.7]),
)


def _all_pairs(extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``[1, 1, 65536 + extra]`` images holding every pair of pixel values (then a few more)."""
    levels = torch.arange(256, dtype=torch.uint8)
    a = torch.cat([levels.repeat_interleave(256), levels[:extra]])
    b = torch.cat([levels.repeat(256), levels.flip(0)[:extra]])
    return a.view(1, 1, -1), b.view(1, 1, -1)


def _lerp_uint8(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    return to_uint8(torch.lerp(b.float(), a.float(), w))


@settings(max_examples=30, deadline=None)
@given(w=WEIGHTS, v=WEIGHTS, extra=st.sampled_from([0, 1, 7, 15, 17, 63]))
def test_every_pixel_pair_equals_torch_lerp(w, v, extra):
    a, b = _all_pairs(extra)
    out = torch.empty(3, *a.shape, dtype=torch.uint8)
    mask = torch.full(a.shape[1:], v, dtype=torch.float32)
    assert collate_fused.mix_rows(
        [a, b], [0, 1, 0], [1, 0, 1], [w, v, 1.0], [None, None, mask], [None] * 3, out
    )
    w32 = torch.tensor(w, dtype=torch.float32)
    assert torch.equal(out[0], _lerp_uint8(a, b, w32))
    assert torch.equal(out[1], _lerp_uint8(b, a, torch.tensor(v, dtype=torch.float32)))
    assert torch.equal(out[2], _lerp_uint8(a, b, mask))


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 4),
    height=st.integers(1, 20),
    width=st.integers(1, 40),
    layout=st.sampled_from(["chw", "hwc"]),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_rows_of_every_kind_equal_their_definition(channels, height, width, layout, seed, data):
    """Copies, partner copies, boxes (CutMix), boxes over a blend (HMix), scalar blends and mask
    blends, for contiguous and channel-last (strided) samples."""
    gen = torch.Generator().manual_seed(seed)
    shape = (channels, height, width)
    images = torch.randint(0, 256, (4, height, width, channels), dtype=torch.uint8, generator=gen)
    if layout == "hwc":
        samples = list(images.permute(0, 3, 1, 2).unbind(0))
    else:
        samples = list(images.permute(0, 3, 1, 2).contiguous().unbind(0))
    rows = 6
    own = data.draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows))
    mate = data.draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows))
    weight = data.draw(st.lists(WEIGHTS, min_size=rows, max_size=rows))
    use_mask = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    y = data.draw(st.lists(st.integers(0, height), min_size=2, max_size=2))
    x = data.draw(st.lists(st.integers(0, width), min_size=2, max_size=2))
    box = (min(y), max(y), min(x), max(x))
    use_box = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    masks = [torch.rand(height, width, generator=gen) if m else None for m in use_mask]
    boxes = [box if b and m is None else None for b, m in zip(use_box, masks, strict=True)]
    out = torch.empty(rows, *shape, dtype=torch.uint8)
    assert collate_fused.mix_rows(samples, own, mate, weight, masks, boxes, out)
    for k in range(rows):
        a, b = samples[own[k]], samples[mate[k]]
        w = masks[k] if masks[k] is not None else torch.tensor(weight[k], dtype=torch.float32)
        want = _lerp_uint8(a, b, w)
        if boxes[k] is not None:
            y0, y1, x0, x1 = boxes[k]
            want[:, y0:y1, x0:x1] = b[:, y0:y1, x0:x1]
        assert torch.equal(out[k], want), k


def test_what_it_cannot_run_it_leaves_to_pytorch():
    a = torch.zeros(3, 4, 5, dtype=torch.uint8)
    out = torch.empty(2, 3, 4, 5, dtype=torch.uint8)
    mixed_layouts = [a, a.permute(0, 2, 1).contiguous().permute(0, 2, 1)]
    args = ([0, 1], [1, 0], [0.5, 0.5], [None, None], [None, None])
    assert not collate_fused.mix_rows(mixed_layouts, *args, out)
    assert not collate_fused.mix_rows([a, a], *args, out.permute(0, 1, 3, 2))
    with mock.patch.object(collate_fused, "numba", None):
        assert not collate_fused.available()
        assert not collate_fused.mix_rows([a, a], *args, out)


def test_bad_boxes_and_masks_are_refused_by_name():
    a = torch.zeros(3, 4, 5, dtype=torch.uint8)
    out = torch.empty(1, 3, 4, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match="0 <= x0 <= x1 <= 5"):
        collate_fused.mix_rows([a], [0], [0], [1.0], [None], [(0, 2, 3, 6)], out)
    with pytest.raises(ValueError, match=r"masks\[0\] must be a contiguous float32 \[4, 5\]"):
        collate_fused.mix_rows([a], [0], [0], [1.0], [torch.ones(5, 4)], [None], out)


def _pair_plan() -> tuple[list[torch.Tensor], torch.Tensor, RowMasks]:
    lam = torch.tensor([0.3, 0.6])
    sample = MaskSample(lam.view(-1, 1, 1, 1).expand(2, 1, 4, 5), lam, constant=True)
    samples = [torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8) for _ in range(2)]
    return samples, torch.tensor([1, 0]), RowMasks((sample,), [0, 0], [0, 1])


def test_mix_uint8_uses_the_kernel_where_it_can():
    samples, partner, masks = _pair_plan()
    with mock.patch.object(collate_fused, "mix_rows", wraps=collate_fused.mix_rows) as spy:
        fused = mix_uint8(samples, partner, masks)
    assert spy.call_count == 1
    assert torch.equal(fused, mix_uint8(samples, partner, masks, compiled=False))
    # samples of two layouts: the PyTorch path, same bytes; compiled=True says why it cannot
    strided = [samples[0], samples[1].permute(1, 2, 0).contiguous().permute(2, 0, 1)]
    assert torch.equal(mix_uint8(strided, partner, masks), fused)
    with pytest.raises(ValueError, match="share one shape and one layout"):
        mix_uint8(strided, partner, masks, compiled=True)
    with mock.patch.object(collate_fused, "numba", None):
        with pytest.raises(ValueError, match=r"unimix\[fast\]"):
            mix_uint8(samples, partner, masks, compiled=True)
        assert torch.equal(mix_uint8(samples, partner, masks), fused)


@settings(max_examples=40, deadline=None)
@given(
    mixer_args=mask_mixers(),
    batch=st.integers(1, 7),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    channels_last=st.booleans(),
    inplace=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_engines_uint8_blends_keep_their_bytes(
    mixer_args, batch, height, width, channels_last, inplace, seed
):
    """``Mixer.apply`` on a uint8 CPU batch mixes through the kernel: the same bytes, the same λ̄
    and the same memory layout as the engine's PyTorch blend, in place or not."""
    if mixer_args["mode"] == "pair" and batch % 2:
        batch += 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mixer = Mixer(**mixer_args, generator=gen)
    plan = mixer.sample(batch, height, width)
    with mock.patch.object(kernels, "_compiled_uint8", return_value=None):
        want = mixer.apply(x.clone(), plan, inplace=inplace)
    with mock.patch.object(collate_fused, "mix_rows", wraps=collate_fused.mix_rows) as spy:
        source = x.clone()
        got = mixer.apply(source, plan, inplace=inplace)
    assert torch.equal(got.images, want.images)
    assert got.images.stride() == want.images.stride()
    assert (got.images.data_ptr() == source.data_ptr()) == inplace
    assert torch.equal(got.measured.lam_effective, want.measured.lam_effective)
    assert spy.call_count <= 1


@pytest.mark.parametrize("method", ["mixup", "cutmix", "hmix", "gmix"])
def test_the_engine_mixes_uint8_rows_through_the_kernel(method):
    x = torch.randint(0, 256, (6, 3, 9, 7), dtype=torch.uint8)
    mixer = Mixer(method, mode="elem", generator=torch.Generator().manual_seed(1))
    with mock.patch.object(collate_fused, "mix_rows", wraps=collate_fused.mix_rows) as spy:
        mixer.apply(x, mixer.sample(6, 9, 7))
        mixer.apply(x.float(), mixer.sample(6, 9, 7))  # float batches: the engine's blend
    assert spy.call_count == 1
