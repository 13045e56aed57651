"""Collate-time mixing (``unimix.compat.FastCollateMixup``) gives, for the same generator state,
the pixels and targets main gave before the uint8 collate kernels (``unimix.collate_kernels``):
pinned by digests of three successive calls made with main at dc1ef05, and checked against the
engine's own path (``TimmMixup`` / ``Mixer.apply`` on the stacked batch) on random shapes, seeds,
methods, modes and partners; the kernels' rounding is checked on every pair of pixel values.
Every test runs twice: with the compiled one-pass kernel (``unimix.collate_fused``, numba) and
with the PyTorch operations that stand in where it cannot run."""

from __future__ import annotations

import hashlib
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("timm")

from mask_mixers import mask_mixers  # noqa: E402
from unimix import Mixer, collate_fused, collate_kernels, kernels  # noqa: E402
from unimix.blend import to_uint8  # noqa: E402
from unimix.collate_kernels import RowMasks, mix_uint8, row_masks  # noqa: E402
from unimix.compat import FastCollateMixup, TimmMixup  # noqa: E402
from unimix.masks import MaskSample  # noqa: E402


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def kernel(request: pytest.FixtureRequest):
    """Run the test with the numba kernel, then with PyTorch operations (the kernel refused).
    The references (``Mixer.apply``, ``TimmMixup``) always blend with the engine's own PyTorch
    kernel, never through the collate kernels they are checking."""
    with mock.patch.object(kernels, "_compiled_uint8", return_value=None):
        if request.param == "compiled":
            if not collate_fused.available():
                pytest.skip("numba is not installed (pip install 'unimix[fast]')")
            yield request.param
            return
        with mock.patch.object(collate_fused, "mix_rows", return_value=False):
            yield request.param


#: hypothesis tests reuse the ``kernel`` fixture's patch for all their examples, as intended
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

METHODS = {
    "mixup": {"mixup_alpha": 1.0, "cutmix_alpha": 0.0},
    "cutmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
    "hmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "cutmix_mode": "hmix"},
    "gmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "cutmix_mode": "gmix"},
    "switch": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
    "prob": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "cutmix_mode": "hmix", "prob": 0.6},
}

GOLDEN = {  # sha256[:16] of (images, targets) bytes of three calls, made by main at dc1ef05
    "batch/mixup": [
        ("7bd9f59eac735e6e", "51051baea0e14b69"),
        ("8a5af74ec9a7f87c", "cf8a8fba0e163ecd"),
        ("461cbfea990cf609", "b5067861844d102d"),
    ],
    "batch/cutmix": [
        ("e230edd50dc2b673", "007e4e3775ccbe36"),
        ("e8937bdb2a663af2", "f1e74948e0340246"),
        ("32710279cde58c78", "318592ce4742b109"),
    ],
    "batch/hmix": [
        ("d1a73e1033428026", "51051baea0e14b69"),
        ("14be86fcce533b2b", "b5067861844d102d"),
        ("383e5d210acda745", "2890c3713603438b"),
    ],
    "batch/gmix": [
        ("855440964fd13f37", "2bbcd864fd173da4"),
        ("2b8b9d5669b754f8", "faf53dffeca3ba7e"),
        ("2f2d4343116d4f26", "9be242606bfa15a4"),
    ],
    "batch/switch": [
        ("f4b0f3960907216d", "fb8c99a50ef8a021"),
        ("32710279cde58c78", "318592ce4742b109"),
        ("e137eb461cddacda", "9c2b7a6c74e39470"),
    ],
    "batch/prob": [
        ("3c392c981131a177", "cf8a8fba0e163ecd"),
        ("383e5d210acda745", "2890c3713603438b"),
        ("e675a945e623718c", "d57b1525404ab0de"),
    ],
    "pair/mixup": [
        ("ccc2002a6a7edb55", "c14841ad2fd76e19"),
        ("d2f214224b3c2955", "0d75994e7fd7b2fd"),
        ("f7f73fd37bc9c07b", "890a7cf95788e1f3"),
    ],
    "pair/cutmix": [
        ("54e11432713c7398", "dd8f917ca644070a"),
        ("ca603503007d792e", "ab85befee55c79bb"),
        ("aa0f34e0074508d1", "57bb036cc6b9f2b9"),
    ],
    "pair/hmix": [
        ("b83edd045b260506", "c14841ad2fd76e19"),
        ("9acf7eb1a06706e9", "b31ae03b76c32bd7"),
        ("40a18115025b0330", "1eccbacd923cd91c"),
    ],
    "pair/gmix": [
        ("2135b509ada399cb", "920853e7fd2e05fa"),
        ("62425c007d250eae", "cdff402f7945ce04"),
        ("7315b2de52dae733", "d346064f5911a4a7"),
    ],
    "pair/switch": [
        ("1e899433acc21c56", "4699eebd1bf6a201"),
        ("ba7304e223cdcd90", "0252fa19e76e1853"),
        ("0c1cb79efb144788", "74631eebcf002a4f"),
    ],
    "pair/prob": [
        ("9d7a9d34e9eee925", "75ae463a248d61e1"),
        ("d0ec0ad702c56a96", "75a33ad7ce3da0fe"),
        ("7bc0601a71af24f4", "d6dcfd71dae4913b"),
    ],
    "elem/mixup": [
        ("5857c5804b0178d0", "f27d68c35bed2e48"),
        ("853c7d86c77dfb96", "8f47d216156186bb"),
        ("7957ac8c71b1a8f1", "b53c851b8f28cb60"),
    ],
    "elem/cutmix": [
        ("c05afa490995a033", "4e358518e034e190"),
        ("9fde9f1105048967", "c413044826bdc124"),
        ("b7cc500a1f632fc6", "719476f1e95fb616"),
    ],
    "elem/hmix": [
        ("250722a67b617112", "76ecb2291ea18fa9"),
        ("3b0bf0166219d7f5", "d114a828df36f52d"),
        ("d0efab8dd58cd7c5", "46fc75aa0fde3198"),
    ],
    "elem/gmix": [
        ("2b7007562a764784", "a798d1521083622a"),
        ("4e9669f75368af65", "87e6b9eb11679236"),
        ("b728fabe354bff02", "cfd78ad039d94713"),
    ],
    "elem/switch": [
        ("b6723257c70728aa", "c3bd813dbc63798c"),
        ("c87792fb8218b0b3", "0c503a94ab55bc38"),
        ("ae46cdd33202ea9a", "a62f6ca868ce2dff"),
    ],
    "elem/prob": [
        ("7395a894ff38ae7d", "85c031657df51850"),
        ("3e8e9313cd63bbd9", "339dbc84d7fc33f1"),
        ("c8b683ac2226e305", "2b77aba7d21ef9fa"),
    ],
    "half/mixup": [
        ("ed44f3fc76e0318f", "92927663630d46eb"),
        ("455e17da639fce7f", "354ad1410758d287"),
        ("963fc62b7166d238", "0675fac5a6e2c62a"),
    ],
    "half/cutmix": [
        ("d19927b37cd3b3b2", "5a124860f7bc388a"),
        ("0e7e5465db64a366", "0e81e077e19a13e0"),
        ("b5c702aa88135cab", "4b348770def8f0e9"),
    ],
    "half/hmix": [
        ("6e64fd06cbeceea3", "d3a3513f33f72688"),
        ("07140902be6ddde4", "18d86208272099b2"),
        ("08237a0453aacbe5", "3fa1b6d653e09d26"),
    ],
    "half/gmix": [
        ("45470e2c8d0572db", "bad5bb6c43cb8a4b"),
        ("ccf2e2a8aa6f81ac", "825a84278e76d9f3"),
        ("7607fbfac21371e4", "72787adfa2a6435b"),
    ],
    "half/switch": [
        ("1e299a5099a112eb", "9b5024e6a41f86ca"),
        ("162cdcc553cad2f9", "0bb90bac75be60c4"),
        ("fb6be25ef8e034be", "e6b8be1dcc631055"),
    ],
    "half/prob": [
        ("f84fec2a9a4db4c6", "4dc06e7ec38d1a14"),
        ("ca4e91c55e797222", "ecfc72d1b0d74b6d"),
        ("118a5f2b72b25cec", "40fa2358329ff31b"),
    ],
}


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def _samples(batch: int, shape: tuple[int, int, int], seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, shape, dtype=np.uint8), i % 5) for i in range(batch)]


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_outputs_equal_mains(key: str) -> None:
    mode, name = key.split("/")
    samples = _samples(8, (3, 37, 45))
    collate = FastCollateMixup(
        **METHODS[name], mode=mode, num_classes=5, generator=torch.Generator().manual_seed(0)
    )
    got = []
    for _ in range(3):
        x, y = collate(samples)
        got.append((_digest(x), _digest(y)))
    assert got == GOLDEN[key]


@settings(FIXTURE_OK, max_examples=25, deadline=None)
@given(
    mode=st.sampled_from(["batch", "pair", "elem", "half"]),
    name=st.sampled_from(sorted(METHODS)),
    half_batch=st.integers(1, 5),
    odd=st.booleans(),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    correct_lam=st.booleans(),
)
def test_same_pixels_and_targets_as_the_engine(
    mode, name, half_batch, odd, height, width, seed, correct_lam
):
    batch = 2 * half_batch + (odd and mode in ("batch", "elem"))
    samples = _samples(batch, (3, height, width), seed)
    kwargs = dict(**METHODS[name], num_classes=5, label_smoothing=0.1, correct_lam=correct_lam)
    collate = FastCollateMixup(**kwargs, mode=mode, generator=torch.Generator().manual_seed(seed))
    engine = TimmMixup(
        **kwargs,
        mode="elem" if mode == "half" else mode,
        generator=torch.Generator().manual_seed(seed),
    )
    images = torch.stack([torch.as_tensor(a) for a, _ in samples])
    labels = torch.tensor([t for _, t in samples])
    want_x, want_y = engine(images, labels)
    before = [a.copy() for a, _ in samples]
    got_x, got_y = collate(samples)
    rows = batch // 2 if mode == "half" else batch
    assert torch.equal(got_x, want_x[:rows])
    assert torch.equal(got_y, want_y[:rows])
    for (a, _), b in zip(
        samples, before, strict=True
    ):  # partners are read from the samples, never written
        assert np.array_equal(a, b)


def _all_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``[1, 256, 256]`` uint8 images holding every pair of pixel values once."""
    levels = torch.arange(256, dtype=torch.uint8)
    return levels.view(1, 256, 1).expand(1, 256, 256).clone(), levels.view(1, 1, 256).expand(
        1, 256, 256
    ).clone()


@settings(FIXTURE_OK, max_examples=40, deadline=None)
@given(
    w=st.one_of(
        st.floats(0.0, 1.0, width=32),
        st.sampled_from([0.0, 0.5, 1.0, 2.0**-24, 1.0 - 2.0**-24, 0.25, 0.75, 1 / 3]),
    ),
    v=st.floats(0.0, 1.0, width=32),
)
def test_rounding_matches_the_engine_on_every_pixel_pair(w, v):
    # rows 0 and 1 are each other's partner (converted once, blended both ways) with weights w, v
    a, b = _all_pairs()
    lam = torch.tensor([w, v], dtype=torch.float32)
    sample = MaskSample(lam.view(-1, 1, 1, 1).expand(2, 1, 256, 256), lam, constant=True)
    got = mix_uint8([a, b], torch.tensor([1, 0]), RowMasks((sample,), [0, 0], [0, 1]))
    assert torch.equal(got[0], to_uint8(torch.lerp(b.float(), a.float(), lam[0])))
    assert torch.equal(got[1], to_uint8(torch.lerp(a.float(), b.float(), lam[1])))
    # and with a mask that is not constant (GMix's path): the same pixels
    masks = lam.view(-1, 1, 1, 1).expand(2, 1, 256, 256).contiguous()
    grid = MaskSample(masks, lam)
    assert torch.equal(
        mix_uint8([a, b], torch.tensor([1, 0]), RowMasks((grid,), [0, 0], [0, 1])), got
    )


@settings(FIXTURE_OK, max_examples=40, deadline=None)
@given(
    mixer_args=mask_mixers(),
    half_batch=st.integers(1, 6),
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
    block=st.sampled_from([None, 1, 2000]),
)
def test_kernels_equal_the_engine_for_any_plan(mixer_args, half_batch, height, width, seed, block):
    """Any plan of mask methods — random partners (not each other's), several methods, unmixed
    rows — mixes to the engine's pixels, and ``rows`` makes only the first rows; with blocks of
    many rows, of one row (as for 224×224 images) and in between."""
    mixer = Mixer(**mixer_args, generator=torch.Generator().manual_seed(seed))
    batch = 2 * half_batch
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=gen)
    samples = list(images.clone().unbind(0))
    plan = mixer.sample(batch, height, width)
    want = mixer.apply(images.clone(), plan).images
    masks = row_masks(plan)
    assert masks is not None
    size = collate_kernels.UINT8_BLOCK if block is None else block
    with mock.patch.object(collate_kernels, "UINT8_BLOCK", size):
        assert torch.equal(mix_uint8(samples, plan.partner, masks), want)
        assert torch.equal(mix_uint8(samples, plan.partner, masks, half_batch), want[:half_batch])
    assert torch.equal(torch.stack(samples), images)  # read, never written


def test_float_samples_are_refused_by_name():
    sample = MaskSample(torch.ones(2, 1, 1, 1), torch.ones(2), constant=True)
    with pytest.raises(TypeError, match="uint8 samples, got torch.float32"):
        mix_uint8(
            [torch.zeros(3, 2, 2)] * 2, torch.tensor([1, 0]), RowMasks((sample,), [0, 0], [0, 1])
        )


@pytest.mark.parametrize("mode", ["batch", "pair", "elem", "half"])
@pytest.mark.parametrize("name", ["mixup", "hmix", "gmix", "switch"])
def test_full_size_rows_equal_the_engine(mode, name):
    """At 224×224 a block is one row (the path timm's loaders take)."""
    samples = _samples(6, (3, 224, 224), seed=3)
    kwargs = dict(**METHODS[name], num_classes=5)
    collate = FastCollateMixup(**kwargs, mode=mode, generator=torch.Generator().manual_seed(7))
    engine = TimmMixup(
        **kwargs,
        mode="elem" if mode == "half" else mode,
        generator=torch.Generator().manual_seed(7),
    )
    images = torch.stack([torch.as_tensor(a) for a, _ in samples])
    want_x, want_y = engine(images, torch.tensor([t for _, t in samples]))
    got_x, got_y = collate(samples)
    rows = 3 if mode == "half" else 6
    assert torch.equal(got_x, want_x[:rows]) and torch.equal(got_y, want_y[:rows])


@pytest.mark.parametrize("mode", ["batch", "pair", "elem", "half"])
def test_channel_last_arrays_as_timm_makes_them(mode):
    """timm's ``ToNumpy`` hands over ``np.rollaxis(HWC, 2)``: strided, not contiguous, arrays."""
    rng = np.random.default_rng(5)
    samples = [
        (np.rollaxis(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), 2), i % 5) for i in range(6)
    ]
    assert not samples[0][0].flags["C_CONTIGUOUS"]
    for name in ("mixup", "cutmix", "hmix", "gmix", "switch"):
        kwargs = dict(**METHODS[name], num_classes=5)
        collate = FastCollateMixup(**kwargs, mode=mode, generator=torch.Generator().manual_seed(2))
        engine = TimmMixup(
            **kwargs,
            mode="elem" if mode == "half" else mode,
            generator=torch.Generator().manual_seed(2),
        )
        images = torch.stack([torch.from_numpy(np.ascontiguousarray(a)) for a, _ in samples])
        want_x, want_y = engine(images, torch.tensor([t for _, t in samples]))
        got_x, got_y = collate(samples)
        rows = 3 if mode == "half" else 6
        assert torch.equal(got_x, want_x[:rows]) and torch.equal(got_y, want_y[:rows])
