"""Properties of the mask samplers (unimix.masks)."""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import unimix  # noqa: F401  (registers every method)
from unimix import masks, registry
from unimix.mix import Mixer

CORE = ["none", "mixup", "cutmix", "hmix", "gmix"]
ALL = registry.available("mask")  # the core four, cutmix_minmax, fmix, gridmix, smoothmix, …

sizes = st.integers(min_value=1, max_value=23)
lams = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(ALL), h=sizes, w=sizes, lam=lams, seed=st.integers(0, 2**31))
def test_shape_range_and_effective_lambda_is_mask_mean(name, h, w, lam, seed):
    g = torch.Generator().manual_seed(seed)
    out = masks.get(name)(torch.tensor(lam), h, w, generator=g)
    assert out.masks.shape == (len(lam), 1, h, w)
    assert out.masks.dtype == torch.float32
    assert out.masks.min() >= 0 and out.masks.max() <= 1
    torch.testing.assert_close(out.lam, out.masks.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(ALL), h=sizes, w=sizes, lam=lams, seed=st.integers(0, 2**31))
def test_same_seed_same_masks(name, h, w, lam, seed):
    a = masks.get(name)(torch.tensor(lam), h, w, generator=torch.Generator().manual_seed(seed))
    b = masks.get(name)(torch.tensor(lam), h, w, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.lam, b.lam)


@pytest.mark.parametrize("name", ["cutmix", "hmix", "cutmix_minmax"])
@settings(max_examples=40, deadline=None)
@given(h=sizes, w=sizes, lam=lams, seed=st.integers(0, 2**31))
def test_box_methods_report_their_box(name, h, w, lam, seed):
    out = masks.get(name)(torch.tensor(lam), h, w, generator=torch.Generator().manual_seed(seed))
    for k, (y0, y1, x0, x1) in enumerate(out.boxes.tolist()):
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        m = out.masks[k, 0]
        assert torch.all(m[inside] == 0)
        assert torch.all(m[~inside] == out.outside[k])


def test_cutmix_box_area_follows_lambda_without_clipping():
    lam = torch.linspace(0, 1, 101)
    out = masks.get("cutmix", boundary="wrap")(
        lam, 40, 64, generator=torch.Generator().manual_seed(0)
    )
    # side ratio √(1−λ), rounded to whole pixels in each dimension
    bh = torch.round((1 - lam).sqrt() * 40)
    bw = torch.round((1 - lam).sqrt() * 64)
    torch.testing.assert_close(out.lam, 1 - bh * bw / (40 * 64))
    assert (out.lam - lam).abs().max() < 0.05


def test_hmix_r0_is_mixup_and_r1_is_cutmix_family():
    lam = torch.rand(64, generator=torch.Generator().manual_seed(1))
    mix = masks.get("mixup")(lam, 13, 17)
    h0 = masks.get("hmix", r=0.0)(lam, 13, 17, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(h0.masks, mix.masks)
    torch.testing.assert_close(h0.lam, lam)
    c = masks.get("cutmix")(lam, 13, 17, generator=torch.Generator().manual_seed(3))
    h1 = masks.get("hmix", r=1.0)(lam, 13, 17, generator=torch.Generator().manual_seed(3))
    # same boxes; zero inside; outside a constant that is 1 unless clipping/rounding left the box
    # smaller than 1−λ, in which case HMix keeps the mean at λ
    assert torch.equal(h1.boxes, c.boxes)
    assert torch.equal(h1.masks == 0, c.masks == 0)
    lam_c = c.lam
    torch.testing.assert_close(h1.outside, torch.clamp(lam / lam_c, max=1.0))
    torch.testing.assert_close(h1.lam, torch.minimum(lam, lam_c))
    # on the torus the box is never clipped: only whole-pixel rounding separates them
    hw = masks.get("hmix", r=1.0, boundary="wrap")(
        lam, 64, 64, generator=torch.Generator().manual_seed(4)
    )
    partial = lam > 0.05  # below that the box can cover the whole torus
    assert (hw.masks.amax(dim=(1, 2, 3))[partial] - 1).abs().max() < 0.1


def test_hmix_mean_is_lambda():
    lam = torch.rand(200, generator=torch.Generator().manual_seed(5))
    out = masks.get("hmix", r=0.5)(lam, 31, 20, generator=torch.Generator().manual_seed(6))
    # λ_m λ_c = λ exactly whenever λ_m < 1, which holds for r < 1
    torch.testing.assert_close(out.lam, lam, atol=1e-6, rtol=0)


def test_gmix_formula_and_mean_on_torus():
    lam = torch.tensor([0.2, 0.8, 0.5])
    h, w = 48, 36
    out = masks.get("gmix", boundary="wrap")(lam, h, w, generator=torch.Generator().manual_seed(0))
    s = torch.minimum(lam, 1 - lam)
    for k in range(3):
        g = out.masks[k, 0] if lam[k] < 0.5 else 1 - out.masks[k, 0]
        cy, cx = divmod(int(g.argmax()), w)
        dy = torch.arange(h) - cy
        dx = torch.arange(w) - cx
        dy = torch.minimum(dy.abs(), h - dy.abs()).float()
        dx = torch.minimum(dx.abs(), w - dx.abs()).float()
        expect = torch.exp(-math.pi * (dy[:, None] ** 2 + dx[None, :] ** 2) / (s[k] * h * w))
        torch.testing.assert_close(g, expect)
    # the Gaussian integrates to s·HW, so where the torus barely truncates it (small s) the
    # mean is close to λ; at s = ½ its tails overlap around the torus
    assert (out.lam - lam)[:2].abs().max() < 0.01


@pytest.mark.parametrize("name", CORE)
def test_lambda_at_the_ends(name):
    out = masks.get(name)(
        torch.tensor([0.0, 1.0]), 9, 5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(out.masks).all()
    assert torch.all(out.masks[1] == 1)
    if name not in ("none", "cutmix"):  # a clipped CutMix box may not cover the image at λ = 0
        assert torch.all(out.masks[0] == 0)


@pytest.mark.parametrize("name", ["mixup", "cutmix", "hmix", "gmix"])
def test_expected_effective_lambda_matches_lambda_mean(name):
    g = torch.Generator().manual_seed(0)
    lam = masks.sample_lambda(1.0, 4000, g)
    out = masks.get(name)(lam, 32, 32, generator=g)
    se = out.lam.std() / math.sqrt(len(lam))
    # clipping makes CutMix paste less than 1−λ at the border: its mean λ̄ is higher
    if name == "cutmix":
        assert out.lam.mean() > 0.5
    else:
        assert abs(out.lam.mean() - 0.5) < 4 * se + 0.01


def test_sample_lambda_is_beta_and_reproducible():
    a = masks.sample_lambda(0.4, 20000, torch.Generator().manual_seed(3))
    b = masks.sample_lambda(0.4, 20000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # Beta(α, α): mean ½, variance 1 / (4(2α + 1))
    assert abs(a.mean() - 0.5) < 0.01
    assert abs(a.var() - 1 / (4 * 1.8)) < 0.01


def test_masks_follow_the_device_of_lambda_unless_told():
    lam = torch.tensor([0.3, 0.6])
    a = masks.get("gmix")(lam, 8, 6, device="cpu", generator=torch.Generator().manual_seed(1))
    b = masks.get("gmix")(lam, 8, 6, generator=torch.Generator().manual_seed(1))
    assert a.masks.device == lam.device
    assert torch.equal(a.masks, b.masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CORE)
def test_cuda_masks_equal_cpu_masks(name):
    lam = torch.rand(16, generator=torch.Generator().manual_seed(0))
    a = masks.get(name)(lam, 19, 23, device="cuda", generator=torch.Generator().manual_seed(1))
    b = masks.get(name)(lam, 19, 23, generator=torch.Generator().manual_seed(1))
    assert a.masks.device.type == "cuda"
    torch.testing.assert_close(a.masks.cpu(), b.masks, atol=1e-6, rtol=0)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="unknown mixing method 'nope'.*cutmix"):
        masks.get("nope")
    with pytest.raises(ValueError, match="r must lie in"):
        masks.get("hmix", r=1.5)
    with pytest.raises(ValueError, match="NaN"):
        masks.get("mixup")(torch.tensor([float("nan")]), 4, 4)
    with pytest.raises(ValueError, match="lam must lie in"):
        masks.get("cutmix")(torch.tensor([1.2]), 4, 4)
    with pytest.raises(ValueError, match="height"):
        masks.get("cutmix")(torch.tensor([0.5]), 0, 4)
    with pytest.raises(ValueError, match="alpha"):
        masks.sample_lambda(0.0, 3)
    with pytest.raises(ValueError, match="boundary"):
        masks.get("gmix", boundary="reflect")
    with pytest.raises(TypeError, match="method 'mixup' takes no parameter 'r'"):
        masks.get("mixup", r=0.3)


# ---- ------------------------------------------------------------------------------------------
# The single-draw path of every mask sampler (``MaskSampler.sample_one``, behind the engine's
# default ``batch`` mode) against its batched path and against λ itself (issue 13).
#
# A sampler has two ways to draw a mask: the batched ``sampler(lam, H, W, generator=g)`` and
# ``sample_one(λ, H, W, device, g)``, which box methods override to draw their few parameters as
# Python numbers. Both must be the same function of the generator's state — same box, same mask,
# same ``λ̄`` — and ``λ̄`` must be what the method promises given λ: ``min(λ, λ_c)`` for HMix
# (``= λ`` up to whole-pixel rounding), ``1 − |box|/HW`` for CutMix. Comparing a mask with its own
# mean is not enough: a wrong Mixup ratio ``λ_m`` outside the HMix box still has mean ``λ̄``.

CPU = torch.device("cpu")

# Every registered sampler with its defaults, and the box methods' other settings.
SAMPLERS = [(name, {}) for name in registry.available("mask")] + [
    ("cutmix", {"boundary": "wrap"}),
    ("hmix", {"r": 0.25}),
    ("hmix", {"r": 0.75}),
    ("hmix", {"r": 1.0}),
    ("hmix", {"r": 0.5, "boundary": "wrap"}),
    ("hmix", {"r": 1.0, "boundary": "wrap"}),
    ("gmix", {"boundary": "wrap"}),
]
# Box methods whose λ̄ follows λ (HMix: min(λ, λ_c); wrapped CutMix: 1 − |box|/HW).
TRACKING = [
    ("hmix", {"r": 0.25}),
    ("hmix", {"r": 0.5}),
    ("hmix", {"r": 0.75}),
    ("hmix", {"r": 1.0}),
    ("hmix", {"r": 0.5, "boundary": "wrap"}),
    ("cutmix", {"boundary": "wrap"}),
]
BOXES = [("cutmix", {}), ("hmix", {"r": 0.5}), ("hmix", {"r": 1.0})]  # clipped box methods

# λ = k/64 is exact in float32 and float64, so both paths see the same box sides.
LAMS = [0.0, 1 / 64, 0.125, 0.25, 0.4375, 0.5, 41 / 64, 0.75, 61 / 64, 1.0]
SIZES = [(1, 1), (5, 9), (8, 8), (16, 11), (32, 32), (1, 24), (24, 1)]


def _ids(case: tuple[str, dict]) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def rounding_slack(h: int, w: int) -> float:
    """Largest change of ``|box|/HW`` from rounding a box's sides ``s·H``, ``s·W`` (s ≤ 1) to
    whole pixels: ``(½(H + W) + ¼) / HW``."""
    return (0.5 * (h + w) + 0.25) / (h * w)


def one_and_batched(sampler, lam: float, h: int, w: int, seed: int):
    g1 = torch.Generator().manual_seed(seed)
    g2 = torch.Generator().manual_seed(seed)
    one = sampler.sample_one(lam, h, w, CPU, g1)
    batched = sampler(torch.tensor([lam]), h, w, generator=g2)
    return one, batched, g1, g2


@pytest.mark.parametrize("case", SAMPLERS, ids=_ids)
def test_single_draw_path_is_the_batched_path(case):
    """Same generator state → same mask and λ̄, and the generator advanced the same way."""
    sampler = masks.get(case[0], **case[1])
    for h, w in SIZES:
        for k, lam in enumerate(LAMS):
            one, batched, g1, g2 = one_and_batched(sampler, lam, h, w, seed=1000 * h + k)
            where = f"λ={lam}, {h}×{w}"
            assert one.masks.shape == (1, 1, h, w), where
            torch.testing.assert_close(one.masks, batched.masks, atol=1e-6, rtol=0, msg=where)
            torch.testing.assert_close(one.lam, batched.lam, atol=1e-6, rtol=0, msg=where)
            if batched.boxes is not None:
                assert one.boxes.tolist() == batched.boxes.tolist(), where
                torch.testing.assert_close(one.outside, batched.outside, atol=1e-6, rtol=0)
            assert torch.equal(g1.get_state(), g2.get_state()), f"{where}: draws differ in number"


def single_draws(max_size: int) -> dict[str, st.SearchStrategy]:
    """A mask size up to ``max_size`` on each side, a λ and a generator seed."""
    return {
        "h": st.integers(1, max_size),
        "w": st.integers(1, max_size),
        "lam": st.floats(0.0, 1.0),
        "seed": st.integers(0, 2**31),
    }


@pytest.mark.parametrize("case", SAMPLERS, ids=_ids)
@settings(max_examples=25, deadline=None)
@given(**single_draws(max_size=24))
def test_single_draw_mask_is_a_mask_with_its_mean(case, h, w, lam, seed):
    sampler = masks.get(case[0], **case[1])
    one = sampler.sample_one(lam, h, w, CPU, torch.Generator().manual_seed(seed))
    m = one.masks
    assert m.shape == (1, 1, h, w) and m.dtype == torch.float32
    assert m.min() >= 0 and m.max() <= 1
    assert one.lam.shape == (1,)
    assert one.lam.item() == pytest.approx(m.mean().item(), abs=1e-6)
    if one.boxes is not None:  # 0 inside the box, ``outside`` elsewhere
        y0, y1, x0, x1 = one.boxes[0].tolist()
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.all(m[0, 0][inside] == 0)
        assert torch.all(m[0, 0][~inside] == one.outside[0])


@pytest.mark.parametrize("case", TRACKING, ids=_ids)
@settings(max_examples=60, deadline=None)
@given(**single_draws(max_size=40))
def test_single_draw_effective_lambda_is_lambda_up_to_rounding(case, h, w, lam, seed):
    """HMix: ``λ̄ = λ_m λ_c = min(λ, λ_c)`` and ``λ_c ≥ λ`` but for rounding; wrapped CutMix:
    ``λ̄ = 1 − |box|/HW`` with ``|box| = (1 − λ) HW`` but for rounding."""
    name, params = case
    one = masks.get(name, **params).sample_one(lam, h, w, CPU, torch.Generator().manual_seed(seed))
    lam_bar = one.lam.item()
    assert abs(lam_bar - lam) <= rounding_slack(h, w) + 1e-6
    if name == "hmix":
        assert lam_bar <= lam + 1e-6  # λ_m ≤ 1
        if one.boxes is not None:
            y0, y1, x0, x1 = one.boxes[0].tolist()
            lam_c = 1 - (y1 - y0) * (x1 - x0) / (h * w)
            assert lam_bar == pytest.approx(min(lam, lam_c), abs=1e-6)
            expect_m = min(1.0, lam / lam_c) if lam_c > 0 else 1.0
            assert one.outside.item() == pytest.approx(expect_m, abs=1e-6)


def test_hmix_single_draw_is_exactly_lambda_when_the_box_fits():
    """With r ≤ ½ the box never covers more than the image can spare: λ̄ = λ to float precision."""
    sampler = masks.get("hmix", r=0.5)
    g = torch.Generator().manual_seed(3)
    rng = random.Random(3)
    for _ in range(300):
        lam = rng.betavariate(1.0, 1.0)
        one = sampler.sample_one(lam, 31, 20, CPU, g)
        assert one.lam.item() == pytest.approx(lam, abs=1e-6)
        assert one.masks.mean().item() == pytest.approx(lam, abs=1e-6)


@pytest.mark.parametrize("case", TRACKING, ids=_ids)
def test_mean_effective_lambda_of_single_draws_is_mean_lambda(case):
    """Over many draws ``mean λ̄ ≈ mean λ ≈ E[λ] = ½`` (λ ~ Beta(1, 1))."""
    name, params = case
    sampler = masks.get(name, **params)
    g = torch.Generator().manual_seed(11)
    lams = [masks.sample_lambda_one(1.0, g) for _ in range(1500)]
    bars = [sampler.sample_one(lam, 48, 40, CPU, g).lam.item() for lam in lams]
    mean_lam, mean_bar = sum(lams) / len(lams), sum(bars) / len(bars)
    assert abs(mean_bar - mean_lam) < 2e-3
    assert abs(mean_bar - 0.5) < 4 * math.sqrt(1 / 12 / len(lams))


@pytest.mark.parametrize("case", BOXES, ids=_ids)
def test_single_draw_and_batched_paths_have_the_same_distribution(case):
    """Clipped boxes: ``λ̄ ≥ λ`` (a box clipped at the border pastes less), and the two paths
    give the same mean λ̄ and box position for the same λ — whatever their random streams."""
    sampler = masks.get(case[0], **case[1])
    h, w, n = 24, 17, 3000
    lam = masks.sample_lambda(1.0, n, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    singles = [sampler.sample_one(float(x), h, w, CPU, g) for x in lam]
    batched = sampler(lam, h, w, generator=torch.Generator().manual_seed(2))
    one_lam = torch.cat([s.lam for s in singles])
    assert torch.all(one_lam >= lam - rounding_slack(h, w) - 1e-6)
    se = math.sqrt((one_lam.var() + batched.lam.var()).item() / n)
    assert abs(one_lam.mean() - batched.lam.mean()).item() < 4 * se
    # box centres: uniform over the pixels in both paths
    for axis, size in ((0, h), (2, w)):
        one_c = torch.stack([s.boxes[0, axis] + s.boxes[0, axis + 1] for s in singles]).float()
        bat_c = (batched.boxes[:, axis] + batched.boxes[:, axis + 1]).float()
        se = math.sqrt((one_c.var() + bat_c.var()).item() / n)
        assert abs(one_c.mean() - bat_c.mean()).item() < 4 * se, f"axis of size {size}"


def test_hmix_single_draw_at_the_ends():
    """λ = 0 with r = 1: the box is the whole image, λ_c = 0 and the mask is all zeros; λ = 1:
    no box, all ones."""
    sampler = masks.get("hmix", r=1.0)
    for h, w in SIZES:
        zero = sampler.sample_one(0.0, h, w, CPU, torch.Generator().manual_seed(0))
        assert torch.all(zero.masks == 0) and zero.lam.item() == 0.0
        one = sampler.sample_one(1.0, h, w, CPU, torch.Generator().manual_seed(0))
        assert torch.all(one.masks == 1) and one.lam.item() == 1.0


@pytest.mark.parametrize("method", ["hmix", "cutmix", "mixup"])
def test_batch_mode_labels_weigh_the_pixels_and_follow_lambda(method):
    """The engine's default batch mode (the single-draw path): mixing an all-ones image with an
    all-zeros one makes the mixed image the mask itself, so its mean is the label weight; and
    that weight follows the λ drawn (HMix, Mixup: up to rounding; CutMix: never below it)."""
    h, w = 20, 24
    mixer = Mixer(method, mode="batch", num_classes=2, generator=torch.Generator().manual_seed(7))
    images = torch.stack([torch.ones(3, h, w), torch.zeros(3, h, w)])
    labels = torch.tensor([0, 1])
    weights, lams = [], []
    for _ in range(400):
        mixed, targets, info = mixer(images, labels, return_info=True)
        weight = targets[0, 0].item()
        assert mixed[0].mean().item() == pytest.approx(weight, abs=1e-5)
        # row 1 (partner row 0) gets the same mask over its own image: 1 − M, its label λ̄
        assert mixed[1].mean().item() == pytest.approx(1 - weight, abs=1e-5)
        assert targets[1, 1].item() == pytest.approx(weight, abs=1e-6)
        lam = info.lam[0].item()
        if method == "cutmix":
            assert weight >= lam - rounding_slack(h, w) - 1e-6
        else:
            assert abs(weight - lam) <= rounding_slack(h, w) + 1e-6
        weights.append(weight)
        lams.append(lam)
    if method != "cutmix":
        assert abs(sum(weights) - sum(lams)) / len(lams) < 3e-3


@pytest.mark.parametrize("boundary", ["clip", "wrap"])
@pytest.mark.parametrize("h, w", [(1, 24), (24, 1), (1, 1)])
def test_a_box_less_than_half_a_pixel_high_is_no_box(boundary, h, w):
    """CutMix at λ = 0.9 on a one-pixel-high image: the box side √0.1 · 1 rounds to 0 rows, so
    nothing is pasted (λ̄ = 1), on both paths, wherever the centre falls."""
    sampler = masks.get("cutmix", boundary=boundary)
    for seed in range(5):
        batched = sampler(torch.tensor([0.9]), h, w, generator=torch.Generator().manual_seed(seed))
        one = sampler.sample_one(0.9, h, w, CPU, torch.Generator().manual_seed(seed))
        for out in (batched, one):
            assert torch.all(out.masks == 1) and out.lam.item() == 1.0


def test_cutmix_minmax_box_position_is_uniform_and_independent_per_axis():
    """The box lies inside the image, its start uniform over every position that keeps it there
    (both ends reached), the two axes drawn independently."""
    n, h, w = 4000, 9, 13
    out = masks.get("cutmix_minmax", minmax=(0.2, 0.8))(
        torch.full((n,), 0.5), h, w, generator=torch.Generator().manual_seed(0)
    )
    y0, y1, x0, x1 = out.boxes.T
    assert torch.all((y0 >= 0) & (y1 <= h) & (x0 >= 0) & (x1 <= w))
    assert bool((y0 == 0).any()) and bool((y1 == h).any())
    assert bool((x0 == 0).any()) and bool((x1 == w).any())
    # (start + ½) / number of start positions: mean ½ per axis, uncorrelated across axes
    fy = (y0.double() + 0.5) / (h - (y1 - y0) + 1).double()
    fx = (x0.double() + 0.5) / (w - (x1 - x0) + 1).double()
    assert abs(fy.mean().item() - 0.5) < 0.03 and abs(fx.mean().item() - 0.5) < 0.03
    assert abs(torch.corrcoef(torch.stack([fy, fx]))[0, 1].item()) < 0.1


FLAGS = {  # (constant, binary) as MaskSample documents them
    "none": (True, True),
    "mixup": (True, False),
    "cutmix": (False, True),
    "cutmix_minmax": (False, True),
    "hmix": (False, False),
    "gmix": (False, False),
}


@pytest.mark.parametrize("name", registry.available("mask"))
def test_mask_flags_describe_the_masks(name):
    """``constant``: every mask constant over the image; ``binary``: every value 0 or 1 — the
    engine takes its fast paths on these flags, so they must be true when set, and the core
    methods set them."""
    sampler = masks.get(name)
    lam = torch.tensor([0.0, 0.3, 0.7, 1.0])
    for out in (
        sampler(lam, 9, 7, generator=torch.Generator().manual_seed(0)),
        sampler.sample_one(0.3, 9, 7, CPU, torch.Generator().manual_seed(0)),
    ):
        m = out.masks
        if out.constant:
            assert torch.all(m == m[:, :, :1, :1])
        if out.binary:
            assert torch.all((m == 0) | (m == 1))
        if name in FLAGS:
            assert (bool(out.constant), bool(out.binary)) == FLAGS[name]


def test_samplers_take_a_list_of_lambdas_and_name_bad_shapes():
    sampler = masks.get("hmix")
    from_list = sampler([0.3, 0.7], 6, 5, generator=torch.Generator().manual_seed(0))
    from_tensor = sampler(
        torch.tensor([0.3, 0.7]), 6, 5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(from_list.masks, from_tensor.masks)
    with pytest.raises(ValueError, match="1-D tensor"):
        sampler(torch.full((2, 2), 0.5), 6, 5)


def test_registry_names_and_errors():
    assert masks.get("hmix").name == "hmix" and masks.HMix.name == "hmix"
    with pytest.raises(ValueError, match="unknown mask method 'resizemix'"):  # an image method
        registry.get("resizemix", "mask")
    with pytest.raises(TypeError, match="method instance"):
        masks.get(masks.get("cutmix"), boundary="wrap")
    with pytest.raises(ValueError, match="already registered"):

        @registry.register("cutmix")
        class Impostor(masks.MaskSampler):
            pass


def test_sample_lambda_one_is_a_function_of_the_generator_state():
    a = [masks.sample_lambda_one(0.7, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(4)
    assert masks.sample_lambda_one(0.7, g) == a[0] != masks.sample_lambda_one(0.7, g)
    with pytest.raises(ValueError, match="alpha must be"):
        masks.sample_lambda_one(0.0)
    state = torch.get_rng_state()  # no generator: torch's global RNG
    try:
        torch.manual_seed(8)
        first = masks.sample_lambda_one(0.7)
        torch.manual_seed(8)
        assert masks.sample_lambda_one(0.7) == first
    finally:
        torch.set_rng_state(state)


def test_cutmix_minmax_sides_range_and_lambda_one():
    lo, hi, h, w = 0.25, 0.5, 40, 24
    sampler = masks.get("cutmix_minmax", minmax=(lo, hi))
    out = sampler(torch.full((3000,), 0.5), h, w, generator=torch.Generator().manual_seed(0))
    y0, y1, x0, x1 = out.boxes.T
    for side, size in ((y1 - y0, h), (x1 - x0, w)):
        assert int(side.min()) == int(lo * size) and int(side.max()) in (
            int(hi * size) - 1,
            int(hi * size),
        )
    ends = sampler(torch.tensor([1.0, 1.0]), h, w, generator=torch.Generator().manual_seed(0))
    assert torch.all(ends.masks == 1) and torch.all(ends.lam == 1)
    with pytest.raises(ValueError, match="minmax"):
        masks.get("cutmix_minmax", minmax=(0.9, 0.1))


@pytest.mark.parametrize("name", ["mixup", "cutmix", "hmix", "gmix"])
def test_masks_are_float32_whatever_the_dtype_of_lambda(name):
    lam = torch.tensor([0.2, 0.9], dtype=torch.float64)
    out = masks.get(name)(lam, 5, 6, generator=torch.Generator().manual_seed(0))
    assert out.masks.dtype == torch.float32 and out.lam.dtype == torch.float32
    if name == "cutmix":  # built on first use: "lazy" until then, then its shape
        assert "masks=lazy" in repr(
            masks.get(name)(lam, 5, 6, generator=torch.Generator().manual_seed(0))
        )
    assert "MaskSample(masks=(2, 1, 5, 6)" in repr(out)
