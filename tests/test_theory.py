"""Tests of unimix.theory: pairwise coefficients, closed forms, profiles, the loss decomposition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from unimix import Mixer
from unimix import masks as M
from unimix.mix import MixMethod
from unimix.theory import (
    closed_form,
    distance_profile,
    first_layer_form,
    glm_second_order,
    loss_decomposition,
    pairwise_coefficients,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixup_mask(alpha: float) -> float:
    return (alpha + 1) / (2 * (2 * alpha + 1))  # E[(1 − λ)²], λ ~ Beta(α, α)


def mixup_label(alpha: float) -> float:
    return alpha / (2 * (2 * alpha + 1))  # E[λ(1 − λ)]


def assert_within(mc, exact, sigmas: float = 4.0, floor: float = 1e-6, region=None) -> None:
    """Every offset and every radial bin of a Monte Carlo profile within ``sigmas`` SE of ``exact``."""
    diff = (mc.offsets - exact.offsets).abs()
    tol = sigmas * mc.offsets_stderr + floor
    if region is not None:
        diff, tol = diff[region], tol[region]
    worst = float((diff / tol).max())
    assert worst <= 1.0, f"{mc.method}: offsets off by {worst * sigmas:.2f} SE"
    if region is None:
        rdiff = (mc.radial - exact.radial).abs()
        assert bool((rdiff <= sigmas * mc.radial_stderr + floor).all()), f"{mc.method}: radial off"


# ---- closed forms against Monte Carlo ---------------------------------------------------------

CASES = [
    ("mixup", {}, {}),
    ("cutmix", {"boundary": "wrap"}, {}),
    ("hmix", {"boundary": "wrap", "r": 0.5}, {"r": 0.5}),
    ("hmix", {"boundary": "wrap", "r": 0.3}, {"r": 0.3}),
    ("gmix", {"boundary": "wrap"}, {}),
]


@pytest.mark.parametrize("weighting", ["mask", "label"])
@pytest.mark.parametrize(("name", "params", "cf_params"), CASES)
@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_closed_form_matches_monte_carlo(name, params, cf_params, weighting, alpha):
    mc = distance_profile(name, 10, 12, alpha, 3000, gen(7), weighting=weighting, **params)
    exact = closed_form(name, 10, 12, alpha, weighting=weighting, **cf_params)
    assert_within(mc, exact)


@pytest.mark.parametrize("lam", [0.2, 0.75])
@pytest.mark.parametrize("name", ["cutmix", "hmix"])
def test_closed_form_fixed_lambda(name, lam):
    mc = distance_profile(name, 9, 11, samples=1500, generator=gen(3), lam=lam, boundary="wrap")
    assert_within(mc, closed_form(name, 9, 11, lam=lam))


@pytest.mark.parametrize("weighting", ["mask", "label"])
@pytest.mark.parametrize("lam", [0.03, 0.97])
def test_gmix_plane_form_where_the_gaussian_is_small(lam, weighting):
    # the paper's untruncated form E[G_p G_q] = (s/2) exp(−π|p−q|²/(2sHW)) against the torus
    # sampler, at offsets well inside the torus (|Δ| ≤ H/4, where torus distance is plain distance)
    mc = distance_profile(
        "gmix", 24, 24, samples=400, generator=gen(1), lam=lam, weighting=weighting, boundary="wrap"
    )
    plane = closed_form("gmix", 24, 24, lam=lam, weighting=weighting, geometry="plane")
    centre = slice(23 - 6, 23 + 7)
    assert_within(mc, plane, region=(centre, centre))


@pytest.mark.parametrize("weighting", ["mask", "label"])
def test_gmix_plane_form_needs_a_small_gaussian(weighting):
    # the Gaussian's width grows with the image: at s = 0.3 or 0.5 the torus truncates it
    # whatever the size, at s = 0.03 the two forms agree
    centre = slice(23 - 6, 23 + 7)

    def gap(lam: float) -> float:
        torus = closed_form("gmix", 24, 24, lam=lam, weighting=weighting)
        plane = closed_form("gmix", 24, 24, lam=lam, weighting=weighting, geometry="plane")
        return float((torus.offsets - plane.offsets)[centre, centre].abs().max())

    assert gap(0.03) < 1e-9
    assert min(gap(0.3), gap(0.5)) > 5e-3


def test_mixup_closed_form_values():
    for alpha in (0.2, 1.0, 3.0):
        mask = closed_form("mixup", 5, 7, alpha)
        label = closed_form("mixup", 5, 7, alpha, weighting="label")
        np.testing.assert_allclose(mask.offsets, mixup_mask(alpha), rtol=1e-12)
        np.testing.assert_allclose(label.offsets, mixup_label(alpha), rtol=1e-12)
    assert closed_form("mixup", 3, 3).at(1, 1) == pytest.approx(1 / 3)
    assert closed_form("mixup", 3, 3, weighting="label").at(1, 1) == pytest.approx(1 / 6)
    assert float(closed_form("none", 4, 4).offsets.abs().max()) == 0.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    alpha=st.floats(0.2, 3.0),
    r=st.floats(0.0, 1.0),
    weighting=st.sampled_from(["mask", "label"]),
)
def test_closed_form_box_family_properties(h, w, alpha, r, weighting):
    prof = closed_form("hmix", h, w, alpha, r=r, weighting=weighting)
    a = prof.offsets
    # symmetric, a second moment bounded by its value at Δ = 0 (Cauchy–Schwarz), within [0, 1]
    np.testing.assert_allclose(a, a.flip(0).flip(1), atol=1e-12)
    assert float(a.max()) <= prof.at(0, 0) + 1e-12
    assert float(a.min()) >= -1e-12 and float(a.max()) <= 1 + 1e-12
    cut = closed_form("cutmix", h, w, alpha).offsets
    # CutMix: the probability that both pixels are in the box falls with the torus distance
    assert bool((cut[h - 1 : h + h // 2, w - 1].diff() <= 1e-12).all())
    assert bool((cut[h - 1, w - 1 : w + w // 2].diff() <= 1e-12).all())


# ---- what the profiles show -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("weighting", "level"), [("mask", mixup_mask(1.0)), ("label", mixup_label(1.0))]
)
def test_mixup_profile_is_flat(weighting, level):
    prof = distance_profile("mixup", 16, 16, samples=2000, generator=gen(2), weighting=weighting)
    assert float(prof.offsets.max() - prof.offsets.min()) < 1e-12
    assert float(prof.radial.max() - prof.radial.min()) < 1e-12
    assert abs(prof.at(0, 0) - level) <= 4 * float(prof.offsets_stderr[0, 0])


def test_cutmix_profile_decreases():
    prof = distance_profile("cutmix", 16, 16, samples=3000, generator=gen(4))
    rad, se = prof.radial, prof.radial_stderr
    assert bool((rad[1:] <= rad[:-1] + 2 * (se[1:] + se[:-1])).all())
    assert float(rad[0] - rad[-1]) > 0.25
    # along each axis, offsets fall monotonically (up to noise)
    row = prof.offsets[15, 15:]
    assert bool((row.diff() <= 4 * prof.offsets_stderr[15, 15:][1:]).all())


def test_cutmix_profile_is_zero_beyond_the_box():
    prof = distance_profile("cutmix", 16, 16, samples=400, generator=gen(5), lam=0.75)  # 8×8 boxes
    dy = torch.arange(-15, 16).abs()
    outside = torch.maximum(dy[:, None], dy[None, :]) >= 8
    assert float(prof.offsets[outside].abs().max()) < 1e-12
    assert float(prof.offsets[~outside].min()) > 0
    # pairs at distance > 7√2 can never share a box
    assert float(prof.radial[11:].abs().max()) < 1e-12 and float(prof.radial[10]) > 0


@pytest.mark.parametrize("weighting", ["mask", "label"])
def test_hmix_interpolates_mixup_and_cutmix(weighting):
    for alpha in (0.5, 1.0):
        np.testing.assert_allclose(
            closed_form("hmix", 12, 10, alpha, r=0.0, weighting=weighting).offsets,
            closed_form("mixup", 12, 10, alpha, weighting=weighting).offsets,
            atol=1e-12,
        )
    # r = 1 is CutMix's box; they differ only by whole-pixel rounding of the box, O(1/size)
    gap = {
        n: float(
            (
                closed_form("hmix", n, n, r=1.0, weighting=weighting).offsets
                - closed_form("cutmix", n, n, weighting=weighting).offsets
            )
            .abs()
            .max()
        )
        for n in (16, 32)
    }
    assert gap[32] < 0.25 / 32 and gap[32] < gap[16]
    # and so do the Monte Carlo profiles of the samplers. With clipping, HMix(r=1) is *not*
    # CutMix: where the box is clipped it keeps λ̄ = λ by mixing the rest of the image.
    for r, other, boundary in ((0.0, "mixup", {}), (1.0, "cutmix", {"boundary": "wrap"})):
        a = distance_profile(
            "hmix", 12, 12, samples=2000, generator=gen(8), r=r, weighting=weighting, **boundary
        )
        b = distance_profile(
            other, 12, 12, samples=2000, generator=gen(9), weighting=weighting, **boundary
        )
        tol = 4 * (a.radial_stderr.square() + b.radial_stderr.square()).sqrt() + 0.25 / 12
        assert bool(((a.radial - b.radial).abs() <= tol).all()), (r, other)


# ---- the pairwise matrix ----------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["mask", "label"])
@pytest.mark.parametrize("name", ["cutmix", "gmix", "hmix"])
def test_pairwise_matches_brute_force(name, weighting):
    n = 300
    coef = pairwise_coefficients(name, 3, 4, 0.7, n, gen(11), weighting=weighting, chunk_size=n)
    g = gen(11)
    lam = M.sample_lambda(0.7, n, g)
    m = M.get(name)(lam, 3, 4, generator=g).masks.reshape(n, 12).double()
    lam_bar = m.mean(1)[:, None, None]
    u = 1 - m
    per = u[:, :, None] * u[:, None, :]
    if weighting == "label":
        per = lam_bar * per + (1 - lam_bar) * m[:, :, None] * m[:, None, :]
    np.testing.assert_allclose(coef.values, per.mean(0), atol=1e-12)
    np.testing.assert_allclose(coef.stderr, per.std(0) / math.sqrt(n), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("weighting", ["mask", "label"])
def test_profile_is_the_matrix_averaged_over_diagonals(weighting):
    h, w = 6, 7
    coef = pairwise_coefficients(
        "hmix", h, w, samples=500, generator=gen(1), weighting=weighting, chunk_size=100
    )
    prof = distance_profile(
        "hmix", h, w, samples=500, generator=gen(1), weighting=weighting, chunk_size=100
    )
    a = coef.values.reshape(h, w, h, w)
    for dy in range(-(h - 1), h):
        for dx in range(-(w - 1), w):
            ys = range(max(0, -dy), min(h, h - dy))
            xs = range(max(0, -dx), min(w, w - dx))
            mean = np.mean([float(a[i, j, i + dy, j + dx]) for i in ys for j in xs])
            assert prof.at(dy, dx) == pytest.approx(mean, abs=1e-10)
    # A is a second-moment matrix: symmetric and positive semi-definite
    np.testing.assert_allclose(coef.values, coef.values.T, atol=1e-12)
    assert float(torch.linalg.eigvalsh(coef.values).min()) > -1e-10


def test_pixels_select_rows():
    full = pairwise_coefficients("gmix", 5, 6, samples=200, generator=gen(2), chunk_size=50)
    rows = pairwise_coefficients(
        "gmix", 5, 6, samples=200, generator=gen(2), chunk_size=50, pixels=[(2, 3), 0]
    )
    np.testing.assert_allclose(rows.values, full.values[[15, 0]], atol=1e-12)
    value, error = rows.map((2, 3))
    assert value.shape == (5, 6) and error.shape == (5, 6)
    with pytest.raises(ValueError, match="pixels="):
        rows.map((1, 1))


def test_large_images_without_the_matrix():
    with pytest.raises(ValueError, match="distance_profile"):
        pairwise_coefficients("cutmix", 224, 224, samples=4, generator=gen())
    prof = distance_profile("cutmix", 224, 224, samples=4, generator=gen())
    assert prof.offsets.shape == (447, 447) and prof.radial.shape == (
        round(223 * math.sqrt(2)) + 1,
    )
    row = pairwise_coefficients("gmix", 224, 224, samples=4, generator=gen(), pixels=[(112, 112)])
    assert row.values.shape == (1, 224 * 224)


def test_to_matrix_is_exact_for_stationary_forms():
    prof = closed_form("cutmix", 5, 4)
    mat = prof.to_matrix()
    assert mat.shape == (20, 20)
    # pixel (1, 1) and (3, 2): offset (2, 1)
    assert float(mat[1 * 4 + 1, 3 * 4 + 2]) == pytest.approx(prof.at(2, 1))
    np.testing.assert_allclose(mat, mat.T, atol=1e-15)


# ---- any sampler, and bad input ---------------------------------------------------------------


def stripes(lam, height, width, *, device=None, generator=None):
    """A user-written sampler: the first round(λW) columns from the first image."""
    cols = torch.arange(width)
    keep = (cols[None, :] < torch.round(lam[:, None] * width)).float()
    return keep[:, None, None, :].expand(-1, 1, height, width)


def test_custom_sampler_callable():
    prof = distance_profile(stripes, 6, 8, samples=500, generator=gen())
    # stripes span whole columns: a(Δ) does not depend on dy
    assert float((prof.offsets - prof.offsets[5:6]).abs().max()) < 1e-10
    coef = pairwise_coefficients(stripes, 6, 8, samples=500, generator=gen())
    assert coef.values.shape == (48, 48)


def test_image_dependent_methods_are_refused(monkeypatch):
    import unimix.registry

    class Saliency(MixMethod):
        def mix(self, images, partners, lam, *, generator, context):
            return images, lam

    with pytest.raises(TypeError, match="images"):
        distance_profile(Saliency(), 4, 4, samples=4)
    unimix.registry.register("saliency")(Saliency)
    try:
        with pytest.raises(TypeError, match="images"):
            pairwise_coefficients("saliency", 4, 4, samples=4)
    finally:
        unimix.registry.unregister("saliency")
    with pytest.raises(TypeError, match="signature"):
        distance_profile(lambda images, labels, model: None, 4, 4, samples=4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weighting": "both"}, ValueError, "weighting"),
        ({"samples": 1}, ValueError, "samples"),
        ({"alpha": 0.0}, ValueError, "alpha"),
        ({"lam": 1.5}, ValueError, "lam"),
        ({"height": 0}, ValueError, "height"),
        ({"method": "nope"}, ValueError, "unknown"),
        ({"method": stripes, "r": 0.5}, TypeError, "parameters"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"method": "cutmix", "height": 4, "width": 4, "samples": 8, **kwargs}
    with pytest.raises(error, match=match):
        distance_profile(**args)


def test_bad_sampler_output():
    with pytest.raises(ValueError, match="shape"):
        distance_profile(
            lambda lam, h, w, *, device=None, generator=None: torch.ones(len(lam), h),
            4,
            4,
            samples=4,
        )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distance_profile(
            lambda lam, h, w, *, device=None, generator=None: 2 * torch.ones(len(lam), 1, h, w),
            4,
            4,
            samples=4,
        )
    with pytest.raises(ValueError, match="no closed form"):
        closed_form("stripes", 4, 4)
    with pytest.raises(ValueError, match="plane"):
        closed_form("cutmix", 4, 4, geometry="plane")


# ---- the loss decomposition on real models --------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images[:400], dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target[:400])
    return x, y


def _train(model: nn.Module, x, y, loss, steps: int, lr: float) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss(model(x), y).mean().backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def logreg(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return _train(model, *digits, nn.functional.cross_entropy, 60, 0.1)


@pytest.fixture(scope="module")
def cnn(digits):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(6, 12, 3, padding=1),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 10),
    )
    x, y = digits
    return _train(model, x[:200], y[:200], nn.functional.cross_entropy, 40, 0.03)


@pytest.mark.parametrize("mode", ["elem", "batch", "pair"])
@pytest.mark.parametrize("which", ["logreg", "cnn"])
def test_decomposition_identity_and_remainder_slope(request, digits, which, mode):
    model = request.getfixturevalue(which)
    x, y = digits[0][:16], digits[1][:16]
    mixer = Mixer(["mixup", "cutmix"], mode=mode, generator=gen(1))
    dec = loss_decomposition(model, x, y, mixer, draws=6)
    assert dec.identity_error < 1e-10  # label-mixed loss = reweighted standard-label loss, exactly
    total = dec.zeroth + dec.first + dec.second + dec.remainder
    assert total == pytest.approx(dec.msda_loss, abs=1e-10)
    assert 2.5 <= dec.remainder_slope <= 3.5, dec.remainders
    assert dec.msda_loss > dec.standard_loss


def test_decomposition_zeroth_term_is_the_standard_loss(logreg, digits):
    x, y = digits[0][:32], digits[1][:32]
    dec = loss_decomposition(
        logreg, x, y, Mixer("cutmix", mode="elem", num_classes=10, generator=gen(2)), draws=32
    )
    assert abs(dec.zeroth - dec.standard_loss) <= 4 * dec.zeroth_stderr
    assert dec.second > 0  # softmax cross-entropy of a linear model is convex in the input


@pytest.mark.parametrize("method", ["mixup", "cutmix"])
def test_glm_closed_form_agrees_with_the_decomposition(logreg, digits, method):
    x, y = digits[0][:32], digits[1][:32]
    if method == "mixup":
        a_label = closed_form("mixup", 8, 8, weighting="label")
    else:
        a_label = pairwise_coefficients(
            "cutmix", 8, 8, samples=20000, generator=gen(3), weighting="label"
        )
    dec = loss_decomposition(logreg, x, y, Mixer(method, mode="elem", generator=gen(4)), draws=48)
    glm = glm_second_order(logreg[1], x, a_label)
    assert abs(dec.second - glm) <= 4 * dec.second_stderr
    # the first-layer form of a linear model is the GLM form
    assert first_layer_form(logreg, x, y, a_label).value == pytest.approx(glm, rel=1e-9)


def test_glm_binary_logistic(digits):
    x, y = digits[0][:32], (digits[1][:32] >= 5).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))

    def bce(z, t):
        return nn.functional.binary_cross_entropy_with_logits(z[:, 0], t.float(), reduction="none")

    _train(model, digits[0], (digits[1] >= 5).long(), bce, 60, 0.1)
    a_label = closed_form("mixup", 8, 8, weighting="label")
    glm = glm_second_order(model[1], x, a_label, loss="logistic")
    dec = loss_decomposition(
        model, x, y, Mixer("mixup", mode="elem", generator=gen(5)), draws=48, loss="logistic"
    )
    assert abs(dec.second - glm) <= 4 * dec.second_stderr
    assert 2.5 <= dec.remainder_slope <= 3.5
    form = first_layer_form(model, x, y, a_label, loss="logistic")
    assert form.value == pytest.approx(glm, rel=1e-9)


def test_first_layer_form_of_a_cnn(cnn, digits):
    x, y = digits[0][:16], digits[1][:16]
    a_label = pairwise_coefficients(
        "cutmix", 8, 8, samples=20000, generator=gen(6), weighting="label"
    )
    form = first_layer_form(cnn, x, y, a_label)
    dec = loss_decomposition(cnn, x, y, Mixer("cutmix", mode="elem", generator=gen(7)), draws=32)
    assert abs(dec.second - form.value) <= 4 * dec.second_stderr
    # a quadratic form in the first layer's weight: the parallelogram law, and its gradient
    w = cnn[0].weight.detach().double()
    v = torch.randn(w.shape, generator=gen(8), dtype=torch.float64) * w.std()
    plus, minus = float(form(w + v)), float(form(w - v))
    assert plus + minus == pytest.approx(2 * form.value + 2 * float(form(v)), rel=1e-8)
    w_var = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(form(w_var), w_var)
    # for a quadratic form the central difference is exact: (R(w+v) − R(w−v)) / 2 = ∇R·v
    assert float((grad * v).sum()) == pytest.approx((plus - minus) / 2, rel=1e-8)


def test_decomposition_bad_input(logreg, digits):
    x, y = digits[0][:8], digits[1][:8]
    with pytest.raises(ValueError, match="label_smoothing"):
        loss_decomposition(
            logreg, x, y, Mixer("mixup", label_smoothing=0.1, num_classes=10), draws=2
        )
    with pytest.raises(ValueError, match="draws"):
        loss_decomposition(logreg, x, y, Mixer("mixup"), draws=1)
    with pytest.raises(ValueError, match="weighting='label'"):
        glm_second_order(
            logreg[1], x, pairwise_coefficients("mixup", 8, 8, samples=8, generator=gen())
        )

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, inp):
            return self.fc(2 * inp.flatten(1))

    with pytest.raises(ValueError, match="raw input"):
        first_layer_form(Scaled(), x, y, closed_form("mixup", 8, 8, weighting="label"))
