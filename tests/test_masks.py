"""Properties of the mask samplers (unimix.masks)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import unimix  # noqa: F401  (registers every method)
from unimix import masks, registry

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
