"""FGSM and PGD step exactly as far as they are told to (issue 13).

On a two-class linear model ``z = W x_n`` the input gradient of either attack loss has a
constant sign: ``∇_x ℓ = c (W_o − W_y) / σ`` with ``c > 0`` (cross-entropy: ``c = p_o``; margin:
``c = 1``), ``o`` the other class and ``σ`` the per-channel std. So one PGD step from the clean
image is exactly ``δ = Π_F(α · sign(W_o − W_y))``, ``T`` steps without early stop are
``Π_F(T α · sign(W_o − W_y))`` (the iterates move along one direction until they hit the
bounds), and FGSM is the one-step attack with ``α = ε``; ``F`` is the ε-ball intersected with
``[0, 1]`` in pixel space. These pin the step size, which the accuracy tests cannot see.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from unimix.evaluate.attacks import default_step_size, fgsm, pgd

C, H, W = 2, 3, 4


class Linear2(nn.Module):
    """``z = W x_n`` on normalised images, two classes, no bias."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def problem(seed: int, batch: int = 5, interior: bool = False):
    """A linear model, normalised images, their labels (the model's own predictions, so every
    example starts correctly classified), the pixel images and the channel statistics."""
    g = torch.Generator().manual_seed(seed)
    weight = 0.1 * torch.randn(2, C * H * W, generator=g)
    pixels = torch.rand(batch, C, H, W, generator=g)
    if interior:
        pixels = 0.25 + 0.5 * pixels  # at least 1/4 from either bound
    mean = torch.tensor([0.4, 0.6])
    std = torch.tensor([0.5, 0.25])
    images = (pixels - mean.view(1, C, 1, 1)) / std.view(1, C, 1, 1)
    model = Linear2(weight)
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, images, labels, pixels, mean, std


def expected_delta(model, labels, pixels, eps: float, reach: float) -> torch.Tensor:
    """``Π_F(reach · sign(W_o − W_y))`` in pixel space."""
    w = model.weight.detach()
    direction = (w[1 - labels] - w[labels]).sign().view_as(pixels)
    return torch.minimum(torch.maximum((reach * direction).clamp(-eps, eps), -pixels), 1 - pixels)


def pixel_delta(adv: torch.Tensor, images: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (adv - images) * std.view(1, C, 1, 1)


def pgd_from_clean(model, images, labels, mean, std, *, eps, step_size, steps=1, **kw):
    """:func:`pgd` without a random start: its first iterate is the clean image."""
    return pgd(
        model,
        images,
        labels,
        eps=eps,
        mean=mean,
        std=std,
        steps=steps,
        step_size=step_size,
        random_start=False,
        **kw,
    )


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_one_pgd_step_moves_every_pixel_by_the_step_size(loss):
    model, images, labels, pixels, mean, std = problem(0, interior=True)
    eps, alpha = 0.2, 0.03
    adv = pgd_from_clean(model, images, labels, mean, std, eps=eps, step_size=alpha, loss=loss)
    delta = pixel_delta(adv, images, std)
    # interior pixels, α < ε: nothing is clipped, every pixel moves by exactly α
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, alpha), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        delta, expected_delta(model, labels, pixels, eps, alpha), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("early_stop", [False, True])
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    eps=st.floats(1 / 255, 0.5),
    ratio=st.floats(0.05, 3.0),
    loss=st.sampled_from(["ce", "margin"]),
)
def test_one_pgd_step_is_the_projected_sign_step(early_stop, seed, eps, ratio, loss):
    """Any ε, any α (below or above ε), pixels anywhere in [0, 1]: one step is Π_F(α·sign g)."""
    model, images, labels, pixels, mean, std = problem(seed)
    alpha = ratio * eps
    adv = pgd_from_clean(
        model, images, labels, mean, std, eps=eps, step_size=alpha, early_stop=early_stop, loss=loss
    )
    expect = expected_delta(model, labels, pixels, eps, alpha)
    torch.testing.assert_close(pixel_delta(adv, images, std), expect, atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    eps=st.floats(1 / 255, 0.3),
    steps=st.integers(0, 6),
    ratio=st.floats(0.05, 1.0),
)
def test_pgd_steps_add_up_along_the_gradient_sign(seed, eps, steps, ratio):
    """Without early stop, T steps of α on a linear model reach Π_F(T α · sign g)."""
    model, images, labels, pixels, mean, std = problem(seed)
    alpha = ratio * eps / 2
    adv = pgd_from_clean(
        model,
        images,
        labels,
        mean,
        std,
        eps=eps,
        step_size=alpha,
        steps=steps,
        early_stop=False,
        loss="margin",
    )
    expect = expected_delta(model, labels, pixels, eps, steps * alpha)
    torch.testing.assert_close(pixel_delta(adv, images, std), expect, atol=1e-5, rtol=0)


def test_pgd_default_step_is_madrys():
    model, images, labels, pixels, mean, std = problem(3, interior=True)
    eps, steps = 0.1, 8
    assert default_step_size(eps, steps) == pytest.approx(2.5 * eps / steps)
    one = pgd_from_clean(
        model, images, labels, mean, std, eps=eps, step_size=None, early_stop=False
    )  # α = 2.5 ε > ε: one step reaches the ball's corner
    torch.testing.assert_close(
        pixel_delta(one, images, std).abs(), torch.full_like(images, eps), atol=1e-6, rtol=0
    )
    kw = dict(eps=eps, mean=mean, std=std, steps=steps, random_start=False, early_stop=False)
    by_default = pgd(model, images, labels, step_size=None, **kw)
    explicit = pgd(model, images, labels, step_size=2.5 * eps / steps, **kw)
    assert torch.equal(by_default, explicit)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_fgsm_moves_every_pixel_by_eps(loss):
    model, images, labels, pixels, mean, std = problem(1)
    eps = 8 / 255
    adv = fgsm(model, images, labels, eps=eps, mean=mean, std=std, loss=loss)
    expect = expected_delta(model, labels, pixels, eps, eps)
    torch.testing.assert_close(pixel_delta(adv, images, std), expect, atol=1e-6, rtol=0)
    interior = (pixels > eps) & (pixels < 1 - eps)
    assert torch.allclose(pixel_delta(adv, images, std).abs()[interior], torch.tensor(eps))


def test_random_start_then_one_step():
    """From a random start δ_0 (projected), one step is Π_F(δ_0 + α sign g): the start is
    reproduced from the same generator by a zero-step run."""
    model, images, labels, pixels, mean, std = problem(4, interior=True)
    eps, alpha = 0.1, 0.02
    kw = dict(eps=eps, mean=mean, std=std, random_start=True, early_stop=False, loss="margin")
    start = pgd(model, images, labels, steps=0, generator=torch.Generator().manual_seed(9), **kw)
    one = pgd(
        model,
        images,
        labels,
        steps=1,
        step_size=alpha,
        generator=torch.Generator().manual_seed(9),
        **kw,
    )
    d0 = pixel_delta(start, images, std)
    assert d0.abs().max() <= eps + 1e-6 and d0.abs().max() > eps / 2
    w = model.weight.detach()
    direction = (w[1 - labels] - w[labels]).sign().view_as(pixels)
    expect = (d0 + alpha * direction).clamp(-eps, eps)  # interior pixels: only the ball binds
    torch.testing.assert_close(pixel_delta(one, images, std), expect, atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), eps=st.floats(0.01, 0.3), random_start=st.booleans())
def test_more_pgd_steps_never_raise_accuracy(seed, eps, random_start):
    """With early stop (the default) an example fooled at step t stays fooled, so accuracy
    under T + 1 steps is at most that under T steps, for the same start."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    pixels = torch.rand(64, C, H, W, generator=g)
    images = (pixels - 0.5) / 0.5
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[::4] = (labels[::4] + 1) % 3  # some examples start misclassified
    accs: list[float] = []
    previous: torch.Tensor | None = None
    for steps in range(7):
        adv = pgd(
            model,
            images,
            labels,
            eps=eps,
            mean=0.5,
            std=0.5,
            steps=steps,
            step_size=eps / 3,
            random_start=random_start,
            generator=torch.Generator().manual_seed(seed),
        )
        with torch.no_grad():
            correct = model(adv).argmax(1) == labels
        if previous is not None:
            # per example: once fooled, fooled for every larger number of steps
            assert not (correct & ~previous).any()
        previous = correct
        accs.append(correct.float().mean().item())
    assert accs == sorted(accs, reverse=True)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_a_batch_of_one_is_attacked(attack):
    model, images, labels, pixels, mean, std = problem(5, batch=1, interior=True)
    eps = 0.05
    if attack == "fgsm":
        adv = fgsm(model, images, labels, eps=eps, mean=mean, std=std)
    else:
        adv = pgd_from_clean(model, images, labels, mean, std, eps=eps, step_size=eps)
    expect = expected_delta(model, labels, pixels, eps, eps)
    torch.testing.assert_close(pixel_delta(adv, images, std), expect, atol=1e-6, rtol=0)


def test_pgd_stops_early_by_default():
    """The default keeps the first fooling iterate: a fooled example is not pushed further."""
    model, images, labels, pixels, mean, std = problem(6, batch=64)
    kw = dict(eps=0.5, mean=mean, std=std, steps=20, step_size=0.01, random_start=False)
    by_default = pgd(model, images, labels, **kw)
    assert torch.equal(by_default, pgd(model, images, labels, early_stop=True, **kw))
    assert not torch.equal(by_default, pgd(model, images, labels, early_stop=False, **kw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_start_is_uniform_in_the_ball_from_the_generator_or_torchs_rng(dtype):
    """δ_0 = Π_F(ε (2u − 1)), u ~ U[0, 1) drawn in the images' dtype from ``generator``, or from
    torch's global RNG when no generator is given."""
    model, images, labels, pixels, mean, std = problem(7, interior=True)
    model, images = model.to(dtype), images.to(dtype)
    eps = 0.1
    kw = dict(eps=eps, mean=mean, std=std, steps=0, random_start=True)
    start = pgd(model, images, labels, generator=torch.Generator().manual_seed(3), **kw)
    u = torch.rand(images.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    expect = (eps * (2 * u - 1)).clamp(-eps, eps)  # interior pixels: only the ball binds
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    got = pixel_delta(start, images, std.to(dtype))
    torch.testing.assert_close(got, expect, atol=tol, rtol=0)
    torch.manual_seed(11)
    a = pgd(model, images, labels, **kw)
    torch.manual_seed(11)
    assert torch.equal(a, pgd(model, images, labels, **kw))


def test_float64_images_are_attacked_in_float64():
    """Channel statistics take the images' dtype: the pixel bounds hold to float64 precision."""
    model, images, labels, pixels, mean, std = problem(8)
    model = model.double()
    images = images.double()
    pixels = images * std.double().view(1, C, 1, 1) + mean.double().view(1, C, 1, 1)
    eps = 0.1
    for mean_arg, std_arg in (([0.4, 0.6], [0.5, 0.25]), (0.4, 0.5)):
        x = (pixels - torch.tensor(mean_arg, dtype=torch.float64).view(-1, 1, 1)) / torch.tensor(
            std_arg, dtype=torch.float64
        ).view(-1, 1, 1)
        adv = fgsm(model, x, labels, eps=eps, mean=mean_arg, std=std_arg)
        assert adv.dtype == torch.float64
        s = torch.tensor(std_arg, dtype=torch.float64).view(-1, 1, 1)
        m = torch.tensor(mean_arg, dtype=torch.float64).view(-1, 1, 1)
        adv_pixels, clean = adv * s + m, x * s + m
        assert float((adv_pixels - clean).abs().max()) <= eps + 1e-12
        assert float(adv_pixels.min()) >= -1e-12 and float(adv_pixels.max()) <= 1 + 1e-12


def test_attacks_name_bad_arguments():
    model, images, labels, pixels, mean, std = problem(9)
    kw = dict(mean=mean, std=std)
    with pytest.raises(TypeError, match="eps must be a number.*got str"):
        fgsm(model, images, labels, eps="0.1", **kw)
    with pytest.raises(TypeError, match="step_size must be a number"):
        pgd(model, images, labels, eps=0.1, step_size="0.1", **kw)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fgsm(model, images, labels.tolist(), eps=0.1, **kw)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fgsm(model, images.tolist(), labels, eps=0.1, **kw)
    with pytest.raises(ValueError, match="labels must be class indices of shape \\[5\\]"):
        fgsm(model, images, labels[:, None], eps=0.1, **kw)
    with pytest.raises(ValueError, match="labels must be class indices of shape \\[5\\]"):
        fgsm(model, images, labels[:3], eps=0.1, **kw)
    with pytest.raises(ValueError, match="normalised float"):
        fgsm(model, (pixels * 255).to(torch.uint8), labels, eps=0.1, mean=0.0, std=1.0)
    with pytest.raises(TypeError, match="mean must be a number"):
        fgsm(model, images, labels, eps=0.1, mean="0.5", std=std)
    for off in (1.01, 1.5, 3.0):  # pixels outside [0, 1] beyond the 1e-3 tolerance
        bad = images.clone()
        bad[0, 0, 0, 0] = (off - 0.4) / 0.5
        with pytest.raises(ValueError, match="not \\[0, 1\\]"):
            fgsm(model, bad, labels, eps=0.1, **kw)
    bad = images.clone()
    bad[0, 0, 0, 0] = (-0.01 - 0.4) / 0.5
    with pytest.raises(ValueError, match="not \\[0, 1\\]"):
        fgsm(model, bad, labels, eps=0.1, **kw)


class _MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model was run")


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_nothing_to_attack_runs_no_model(attack):
    """ε = 0 or an empty batch: the clean images come back and the model is never called."""
    images, labels = torch.rand(3, C, H, W), torch.tensor([0, 1, 0])
    fn = fgsm if attack == "fgsm" else pgd
    for x, y, eps in ((images, labels, 0.0), (images[:0], labels[:0], 0.1)):
        out = fn(_MustNotRun(), x, y, eps=eps, mean=0.0, std=1.0)
        assert torch.equal(out, x)


def test_channel_stats_shape():
    from unimix.evaluate.attacks import channel_stats

    like = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    for value in (0.5, [0.1, 0.2, 0.3], torch.tensor([0.1, 0.2, 0.3])):
        t = channel_stats(value, "mean", 3, like)
        assert t.shape == (1, 3, 1, 1) and t.dtype == torch.float64
