"""Tests of unimix.evaluate: metrics, attacks, occlusion, evaluate_model, plots and the command."""

from __future__ import annotations

import argparse
import copy
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss, top_k_accuracy_score
from torch import nn

from unimix.evaluate import (
    EvalResult,
    evaluate_model,
    expected_calibration_error,
    fgsm,
    format_table,
    nll,
    pgd,
    random_occlusion,
    reliability_diagram,
    topk_correct,
    topk_error,
)
from unimix.evaluate.attacks import attack_loss, frozen_eval
from unimix.evaluate.occlusion import occlusion_boxes

# --------------------------------------------------------------------------- fixtures


class Digits:
    """The scikit-learn digits (8×8, pixels in [0, 1]) with a small MLP trained on 1300 of them."""

    def __init__(self) -> None:
        data = load_digits()
        pixels = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
        labels = torch.tensor(data.target, dtype=torch.long)
        self.mean, self.std = 0.3, 0.4  # deliberately not (0, 1): the attacks must convert
        images = (pixels - self.mean) / self.std
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        train, test = perm[:1300], perm[1300:]
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        for _ in range(150):  # full batch, well under a second
            opt.zero_grad()
            F.cross_entropy(self.model(images[train]), labels[train]).backward()
            opt.step()
        self.model.eval()
        self.images, self.labels = images[test], labels[test]

    def accuracy(self, images: torch.Tensor) -> float:
        with torch.no_grad():
            return (self.model(images).argmax(1) == self.labels).double().mean().item()


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits()


def small_cnn(in_chans: int = 3, num_classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


MEAN3 = (0.5, 0.4, 0.3)
STD3 = (0.2, 0.3, 0.1)


def rgb_batch(
    n: int = 16, size: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] with exact 0s and 1s (so clamping is exercised), normalised, and labels."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, size, size, generator=g)
    pixels[:, :, 0, :] = 0.0
    pixels[:, :, -1, :] = 1.0
    mean = torch.tensor(MEAN3).view(1, 3, 1, 1)
    std = torch.tensor(STD3).view(1, 3, 1, 1)
    labels = torch.randint(0, 5, (n,), generator=g)
    return pixels, (pixels - mean) / std, labels


def to_pixels(images: torch.Tensor, mean=MEAN3, std=STD3) -> torch.Tensor:
    c = images.shape[1]
    return images * torch.tensor(std).view(1, c, 1, 1) + torch.tensor(mean).view(1, c, 1, 1)


# --------------------------------------------------------------------------- metrics


def test_topk_and_nll_by_hand() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.0, 0.5, 1.0]])
    labels = torch.tensor([0, 2, 1, 0])
    # row 0 top-1 right; row 1 label second; row 2 label third; row 3 label third.
    assert topk_error(logits, labels, 1) == pytest.approx(3 / 4)
    assert topk_error(logits, labels, 2) == pytest.approx(2 / 4)
    assert topk_error(logits, labels, 3) == 0.0
    assert topk_error(logits, labels, 5) == 0.0  # k beyond the number of classes: all correct
    assert topk_correct(logits, labels, (1, 2)).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
    ]
    expected = -np.mean(
        [
            np.log(np.exp(row[y]) / np.exp(row).sum())
            for row, y in zip(logits.numpy(), labels.numpy(), strict=True)
        ]
    )
    assert nll(logits, labels) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    k_classes=st.integers(3, 12),  # sklearn wants 1-d scores for two classes
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 5.0),
)
def test_topk_and_nll_match_sklearn(n: int, k_classes: int, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k_classes, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, k_classes, (n,), generator=g)
    classes = list(range(k_classes))
    for k in (1, 2, 5):
        if k >= k_classes:
            continue  # sklearn warns and returns 1 there; covered by the hand test
        ref = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=classes)
        assert 1.0 - topk_error(logits, labels, k) == pytest.approx(ref, abs=1e-12)
    probs = torch.softmax(logits, 1).numpy()
    # sklearn clips probabilities at float64 eps; compare where that does not bite.
    assume(probs.min() > 1e-12)
    assert nll(logits, labels) == pytest.approx(
        log_loss(labels.numpy(), probs, labels=classes), rel=1e-6
    )


def test_ece_constructed_cases() -> None:
    # Perfectly calibrated: 10 predictions at confidence 0.8, 8 of them right -> ECE 0.
    conf = torch.full((10,), 0.8, dtype=torch.float64)
    correct = torch.tensor([1] * 8 + [0] * 2, dtype=torch.bool)
    assert reliability_diagram(conf, correct).ece == pytest.approx(0.0, abs=1e-12)
    # Overconfident: confidence 0.9, accuracy 0.6 -> ECE 0.3.
    conf = torch.full((10,), 0.9, dtype=torch.float64)
    correct = torch.tensor([1] * 6 + [0] * 4, dtype=torch.bool)
    rel = reliability_diagram(conf, correct)
    assert rel.ece == pytest.approx(0.3, abs=1e-12)
    assert rel.count[13] == 10 and sum(rel.count) == 10  # 0.9 lies in (13/15, 14/15]
    # Two bins by hand: 4 at 0.95 (3 right), 6 at 0.55 (all wrong).
    conf = torch.tensor([0.95] * 4 + [0.55] * 6, dtype=torch.float64)
    correct = torch.tensor([1, 1, 1, 0] + [0] * 6, dtype=torch.bool)
    assert reliability_diagram(conf, correct).ece == pytest.approx(
        0.4 * 0.2 + 0.6 * 0.55, abs=1e-12
    )


def test_ece_bins_are_right_closed() -> None:
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)[1:]  # 1/15, …, 1: tops of the bins
    rel = reliability_diagram(edges, torch.ones(15, dtype=torch.bool), n_bins=15)
    assert rel.count == [1] * 15
    assert rel.bin_edges[0] == 0.0 and rel.bin_edges[-1] == 1.0 and len(rel.bin_edges) == 16
    empty = reliability_diagram(torch.tensor([0.5]), torch.tensor([True]))
    assert sum(math.isnan(c) for c in empty.confidence) == 14


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), n_bins=st.integers(1, 20), seed=st.integers(0, 2**31 - 1))
def test_ece_matches_a_loop_reference(n: int, n_bins: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, n)
    correct = rng.uniform(0, 1, n) < conf**2
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    got = reliability_diagram(torch.tensor(conf), torch.tensor(correct), n_bins)
    assert got.ece == pytest.approx(ece, abs=1e-9)
    assert 0.0 <= got.ece <= 1.0


def test_ece_of_sampled_calibrated_predictions_is_small() -> None:
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(40000, generator=g) * 0.9 + 0.1
    correct = torch.rand(40000, generator=g) < conf  # right with probability = confidence
    assert reliability_diagram(conf, correct).ece < 0.015
    overconfident = torch.rand(40000, generator=g) < conf - 0.1
    assert reliability_diagram(conf, overconfident).ece == pytest.approx(0.1, abs=0.015)


def test_ece_from_logits_uses_max_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 7, generator=g) * 3
    labels = torch.randint(0, 7, (300,), generator=g)
    probs = logits.softmax(1)
    ref = reliability_diagram(probs.max(1).values, probs.argmax(1) == labels).ece
    assert expected_calibration_error(logits, labels) == pytest.approx(ref, abs=1e-12)


def test_metrics_reject_bad_input() -> None:
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="labels must lie"):
        topk_error(logits, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        nll(logits, torch.zeros(4))
    with pytest.raises(ValueError, match="probabilities, not logits"):
        reliability_diagram(torch.tensor([2.0, -1.0]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="n_bins"):
        reliability_diagram(torch.tensor([0.5]), torch.tensor([True]), n_bins=0)


# --------------------------------------------------------------------------- attacks


def test_eps_zero_is_clean_exactly(digits: Digits) -> None:
    x, y = digits.images, digits.labels
    for adv in (
        fgsm(digits.model, x, y, eps=0.0, mean=digits.mean, std=digits.std),
        pgd(digits.model, x, y, eps=0.0, mean=digits.mean, std=digits.std, steps=5),
    ):
        assert torch.equal(adv, x)
    res = evaluate_model(
        digits.model,
        (x, y),
        mean=digits.mean,
        std=digits.std,
        eps_list=(0.0, 0.05),
        pgd_steps=3,
        occlusion_size=None,
    )
    assert res.fgsm_accuracy[0] == res.accuracy and res.pgd_accuracy[0] == res.accuracy


def test_attack_error_ordering_on_trained_model(digits: Digits) -> None:
    x, y = digits.images, digits.labels
    clean = 1 - digits.accuracy(x)
    assert clean < 0.05  # the model is trained
    errs = []
    for eps in (2 / 255, 8 / 255, 0.1, 0.2):
        f_err = 1 - digits.accuracy(
            fgsm(digits.model, x, y, eps=eps, mean=digits.mean, std=digits.std)
        )
        p_err = 1 - digits.accuracy(
            pgd(
                digits.model,
                x,
                y,
                eps=eps,
                mean=digits.mean,
                std=digits.std,
                steps=10,
                generator=torch.Generator().manual_seed(0),
            )
        )
        assert clean <= f_err <= p_err, (eps, clean, f_err, p_err)
        errs.append((f_err, p_err))
    # The attacks bite, and PGD clearly more than FGSM at a large radius.
    assert errs[2][0] > clean + 0.2
    assert errs[3][1] > errs[3][0] + 0.05
    # Error grows with ε.
    assert all(a[1] <= b[1] for a, b in zip(errs[:-1], errs[1:], strict=True))


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_accuracy_never_rises_with_steps(digits: Digits, random_start: bool) -> None:
    x, y = digits.images, digits.labels
    accs = []
    for steps in range(0, 13):
        adv = pgd(
            digits.model,
            x,
            y,
            eps=0.1,
            mean=digits.mean,
            std=digits.std,
            steps=steps,
            step_size=0.02,
            random_start=random_start,
            generator=torch.Generator().manual_seed(3),
        )
        accs.append(digits.accuracy(adv))
    assert all(b <= a for a, b in zip(accs[:-1], accs[1:], strict=True)), accs
    assert accs[-1] < accs[0] - 0.2  # and it really attacks


def test_pgd_early_stop_is_the_worst_case_over_iterates(digits: Digits) -> None:
    # Correct after T early-stopped steps <=> correct at every iterate 0..T of plain PGD.
    def correct(**kw) -> torch.Tensor:
        adv = pgd(
            digits.model,
            digits.images,
            digits.labels,
            eps=0.1,
            mean=digits.mean,
            std=digits.std,
            step_size=0.03,
            generator=torch.Generator().manual_seed(4),
            **kw,
        )
        with torch.no_grad():
            return digits.model(adv).argmax(1) == digits.labels

    for random_start in (False, True):
        always = torch.ones_like(digits.labels, dtype=torch.bool)
        for steps in range(8):
            always &= correct(steps=steps, random_start=random_start, early_stop=False)
            assert torch.equal(correct(steps=steps, random_start=random_start), always), steps


class Bump(nn.Module):
    """Predicts class 1 only in a band of width ~0.08 in pixel units (narrower than a PGD step).

    Input: one pixel normalised with mean 0.5, std 0.25, so ``z = (x - 0.5) / 0.25``.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        bump = 4 * torch.exp(-((z.flatten(1).sum(1) / 0.1) ** 2)) - 2
        return torch.stack([torch.zeros_like(bump), bump], dim=1)


def test_pgd_overshooting_steps_cannot_repair_a_fooled_example() -> None:
    # From x = 0.47 (class 0, right) a step of 0.04 lands at 0.51 inside the band (fooled), the
    # next step jumps back out (right again): the last iterate alternates right/wrong. Pixels at
    # 0.1 are far from the band (zero gradient): they stay right and keep the attack running.
    model = Bump()
    x = ((torch.tensor([0.47, 0.47, 0.1, 0.1]) - 0.5) / 0.25).view(4, 1, 1, 1)
    y = torch.zeros(4, dtype=torch.long)

    def accuracy(steps: int, early_stop: bool) -> float:
        adv = pgd(
            model,
            x,
            y,
            eps=0.05,
            mean=0.5,
            std=0.25,
            steps=steps,
            step_size=0.04,
            random_start=False,
            early_stop=early_stop,
        )
        return (model(adv).argmax(1) == y).double().mean().item()

    plain = [accuracy(t, early_stop=False) for t in range(6)]
    assert plain == [1.0, 0.5, 1.0, 0.5, 1.0, 0.5]  # the toy does what it is built for
    assert [accuracy(t, early_stop=True) for t in range(6)] == [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.1])
def test_perturbation_in_pixel_space(eps: float) -> None:
    model = small_cnn()
    pixels, x, y = rgb_batch()
    advs = {
        "fgsm": fgsm(model, x, y, eps=eps, mean=MEAN3, std=STD3),
        "pgd": pgd(
            model,
            x,
            y,
            eps=eps,
            mean=MEAN3,
            std=STD3,
            steps=5,
            early_stop=False,
            generator=torch.Generator().manual_seed(0),
        ),
    }
    for name, adv in advs.items():
        adv_pixels = to_pixels(adv)
        delta = adv_pixels - pixels
        assert delta.abs().max() <= eps + 1e-6, name
        assert adv_pixels.min() >= -1e-6 and adv_pixels.max() <= 1 + 1e-6, name
        # The budget is used in pixel units in every channel (not ε·std or ε/std).
        interior = (pixels > eps + 1e-4) & (pixels < 1 - eps - 1e-4)
        for c in range(3):
            assert delta[:, c][interior[:, c]].abs().max() == pytest.approx(eps, abs=1e-5), (
                name,
                c,
            )
    # FGSM equals the sign step of the gradient taken in pixel space, clipped to [0, 1].
    px = pixels.clone().requires_grad_(True)
    model.eval()
    logits = model(
        (px - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)
    )
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), px)
    expected = (pixels + eps * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(to_pixels(advs["fgsm"]), expected, atol=1e-5, rtol=0)


class Scaled(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.model(x)


def test_margin_loss_attacks(digits: Digits) -> None:
    x, y = digits.images, digits.labels
    kw = {"eps": 0.1, "mean": digits.mean, "std": digits.std, "loss": "margin"}
    # Sharpening the softmax (x4 logits, an exact scaling) changes nothing for the margin loss.
    sharp = Scaled(digits.model, 4.0)
    assert torch.equal(fgsm(digits.model, x, y, **kw), fgsm(sharp, x, y, **kw))
    a = pgd(digits.model, x, y, steps=5, generator=torch.Generator().manual_seed(0), **kw)
    b = pgd(sharp, x, y, steps=5, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b)
    clean, f_err = 1 - digits.accuracy(x), 1 - digits.accuracy(fgsm(digits.model, x, y, **kw))
    assert clean + 0.2 < f_err <= 1 - digits.accuracy(a)
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    labels = torch.tensor([1, 0])
    assert attack_loss(logits, labels, "margin").item() == pytest.approx((2 - 3) + (5 - 0))
    assert attack_loss(logits, labels, "ce").item() == pytest.approx(
        F.cross_entropy(logits, labels, reduction="sum").item()
    )
    with pytest.raises(ValueError, match="loss must be"):
        fgsm(digits.model, x, y, eps=0.1, mean=digits.mean, std=digits.std, loss="cw")


def test_attacks_leave_model_untouched() -> None:
    model = small_cnn()
    model[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pixels, x, y = rgb_batch()
    x_before = x.clone()
    adv1 = pgd(
        model,
        x,
        y,
        eps=8 / 255,
        mean=MEAN3,
        std=STD3,
        steps=4,
        generator=torch.Generator().manual_seed(5),
    )
    fgsm(model, x, y, eps=8 / 255, mean=MEAN3, std=STD3)
    evaluate_model(
        model, (x, y), mean=MEAN3, std=STD3, eps_list=(4 / 255,), pgd_steps=2, occlusion_size=2
    )
    assert model.training  # restored
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # BatchNorm stats unchanged: ran in eval mode
        assert torch.equal(v, state[k]), k
    assert torch.equal(x, x_before)
    # Same generator seed, same attack; eval mode made dropout inactive so it is deterministic.
    adv2 = pgd(
        model,
        x,
        y,
        eps=8 / 255,
        mean=MEAN3,
        std=STD3,
        steps=4,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(adv1, adv2)


def test_frozen_eval_restores_on_error() -> None:
    model = small_cnn()
    model.train()
    with pytest.raises(RuntimeError), frozen_eval(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_attacks_work_under_no_grad_and_inference_mode() -> None:
    model = small_cnn()
    _, x, y = rgb_batch()
    ref = fgsm(model, x, y, eps=4 / 255, mean=MEAN3, std=STD3)
    with torch.no_grad():
        assert torch.equal(fgsm(model, x, y, eps=4 / 255, mean=MEAN3, std=STD3), ref)
    with torch.inference_mode():
        x_inf = x.clone()
    assert torch.equal(fgsm(model, x_inf, y, eps=4 / 255, mean=MEAN3, std=STD3), ref)


def test_pgd_random_start_follows_generator() -> None:
    model = small_cnn()
    _, x, y = rgb_batch()

    def start(seed: int) -> torch.Tensor:
        return pgd(
            model,
            x,
            y,
            eps=4 / 255,
            mean=MEAN3,
            std=STD3,
            steps=0,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(start(1), start(1))
    assert not torch.equal(start(1), start(2))
    assert torch.equal(
        pgd(model, x, y, eps=4 / 255, mean=MEAN3, std=STD3, steps=0, random_start=False), x
    )


def test_attacks_reject_bad_input() -> None:
    model = small_cnn()
    _, x, y = rgb_batch()
    with pytest.raises(ValueError, match="eps must lie"):
        fgsm(model, x, y, eps=-0.1, mean=MEAN3, std=STD3)
    with pytest.raises(ValueError, match="not \\[0, 1\\]"):
        fgsm(model, x, y, eps=0.1, mean=0.0, std=1.0)  # wrong statistics
    with pytest.raises(ValueError, match="3 channels"):
        fgsm(model, x, y, eps=0.1, mean=(0.5, 0.5), std=STD3)
    with pytest.raises(ValueError, match="std must be > 0"):
        fgsm(model, x, y, eps=0.1, mean=MEAN3, std=(0.2, 0.0, 0.1))
    with pytest.raises(ValueError, match="steps"):
        pgd(model, x, y, eps=0.1, mean=MEAN3, std=STD3, steps=-1)


# --------------------------------------------------------------------------- occlusion


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 12), w=st.integers(1, 12), frac=st.floats(0, 1), seed=st.integers(0, 2**31 - 1)
)
def test_occlusion_patch_is_a_whole_square(h: int, w: int, frac: float, seed: int) -> None:
    size = round(frac * min(h, w))
    images = torch.rand(6, 3, h, w, generator=torch.Generator().manual_seed(seed)) + 1.0
    out, boxes = random_occlusion(
        images, size, generator=torch.Generator().manual_seed(seed), return_boxes=True
    )
    hit = out == 0
    assert torch.equal(hit[:, 0], hit[:, 1]) and torch.equal(hit[:, 0], hit[:, 2])
    assert (hit[:, 0].sum(dim=(1, 2)) == size * size).all()
    assert ((boxes[:, 1] - boxes[:, 0]) == size).all() and (
        (boxes[:, 3] - boxes[:, 2]) == size
    ).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= h).all()
    assert (boxes[:, 2] >= 0).all() and (boxes[:, 3] <= w).all()
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        assert hit[i, 0, y0:y1, x0:x1].all()
    assert torch.equal(out[~hit], images[~hit])  # nothing else changed


def test_occlusion_positions_are_per_image_and_cover_the_range() -> None:
    boxes = occlusion_boxes(4000, 10, 12, 4, generator=torch.Generator().manual_seed(0))
    assert boxes[:, 0].min() == 0 and boxes[:, 0].max() == 10 - 4
    assert boxes[:, 2].min() == 0 and boxes[:, 2].max() == 12 - 4
    counts = torch.bincount(boxes[:, 0], minlength=7).double()
    assert counts.min() > 0.8 * counts.mean()  # roughly uniform over the 7 rows
    again = occlusion_boxes(4000, 10, 12, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    clip = occlusion_boxes(
        4000, 10, 12, 5, boundary="clip", generator=torch.Generator().manual_seed(0)
    )
    area = (clip[:, 1] - clip[:, 0]) * (clip[:, 3] - clip[:, 2])
    assert area.max() == 25 and area.min() < 25 and area.min() > 0  # CutOut: clipped at borders


def test_occlusion_fill_and_errors() -> None:
    images = torch.rand(3, 1, 6, 6) + 1
    assert torch.equal(random_occlusion(images, 0), images)
    assert ((random_occlusion(images, 2, fill=-5.0) == -5.0).sum() == 3 * 4).item()
    with pytest.raises(ValueError, match="does not fit"):
        random_occlusion(images, 7)
    with pytest.raises(ValueError, match="size must be an int"):
        random_occlusion(images, -1)


# --------------------------------------------------------------------------- evaluate_model


def test_evaluate_model_matches_direct_computation(digits: Digits) -> None:
    x, y = digits.images, digits.labels
    res = evaluate_model(
        digits.model,
        (x, y),
        mean=digits.mean,
        std=digits.std,
        eps_list=(2 / 255, 0.1),
        pgd_steps=5,
        occlusion_size=3,
        batch_size=128,
    )
    with torch.no_grad():
        logits = digits.model(x)
    assert res.n == len(y) and res.num_classes == 10
    assert res.top1_error == pytest.approx(topk_error(logits, y, 1), abs=1e-12)
    assert res.top5_error == pytest.approx(topk_error(logits, y, 5), abs=1e-12)
    assert res.nll == pytest.approx(nll(logits, y), rel=1e-5)
    assert res.ece == pytest.approx(expected_calibration_error(logits, y), abs=1e-9)
    assert sum(res.reliability.count) == len(y)
    assert res.pgd_step_size == pytest.approx([2.5 * e / 5 for e in res.eps])
    for f_acc, p_acc in zip(res.fgsm_accuracy, res.pgd_accuracy, strict=True):
        assert p_acc <= f_acc <= res.accuracy
    assert res.occlusion_accuracy is not None and res.occlusion_accuracy < res.accuracy
    assert res.images_per_second > 0 and res.total_seconds > 0
    # The same batches through a DataLoader give the same result.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)
    res2 = evaluate_model(
        digits.model,
        loader,
        mean=digits.mean,
        std=digits.std,
        eps_list=(2 / 255, 0.1),
        pgd_steps=5,
        occlusion_size=3,
    )
    for key in ("top1_error", "nll", "ece", "fgsm_accuracy", "pgd_accuracy", "occlusion_accuracy"):
        assert getattr(res2, key) == getattr(res, key), key
    short = evaluate_model(
        digits.model,
        loader,
        mean=digits.mean,
        std=digits.std,
        eps_list=(),
        occlusion_size=None,
        max_batches=2,
    )
    assert short.n == 256 and short.occlusion_accuracy is None and short.pgd_accuracy == []


def test_evaluate_model_rejects_bad_options(digits: Digits) -> None:
    data = (digits.images, digits.labels)
    kw = {"mean": digits.mean, "std": digits.std}
    with pytest.raises(ValueError, match="eps_list"):
        evaluate_model(digits.model, data, eps_list=(2,), **kw)
    with pytest.raises(ValueError, match="occlusion_size"):
        evaluate_model(digits.model, data, occlusion_size=9, **kw)
    with pytest.raises(ValueError, match="pgd_steps"):
        evaluate_model(digits.model, data, pgd_steps=-2, **kw)
    with pytest.raises(TypeError, match="data must be"):
        evaluate_model(digits.model, 3, **kw)


@pytest.fixture(scope="module")
def result(digits: Digits) -> EvalResult:
    return evaluate_model(
        digits.model,
        (digits.images, digits.labels),
        mean=digits.mean,
        std=digits.std,
        eps_list=(1 / 255, 8 / 255),
        pgd_steps=3,
        occlusion_size=2,
    )


def test_json_round_trip(result: EvalResult, tmp_path: Path) -> None:
    assert any(math.isnan(c) for c in result.reliability.confidence)  # empty bins are exercised
    text = result.to_json()
    assert "NaN" not in text and json.loads(text)["top1_error"] == result.top1_error
    back = EvalResult.from_json(text)
    assert back.to_dict() == result.to_dict()
    path = tmp_path / "r.json"
    result.to_json(str(path))
    assert EvalResult.from_json(str(path)).to_dict() == result.to_dict()
    curve = back.robustness_curve()
    assert curve["eps"] == [0.0, 1 / 255, 8 / 255] and curve["pgd"][0] == result.accuracy


def test_table_shows_every_metric(result: EvalResult) -> None:
    table = format_table(result)
    for label in (
        "examples",
        "top-1 error",
        "top-5 error",
        "NLL",
        "ECE (15 bins)",
        "occlusion 2px acc.",
        "FGSM acc. ε=1/255",
        "FGSM acc. ε=8/255",
        "PGD-3 acc. ε=1/255",
        "PGD-3 acc. ε=8/255",
        "images/s",
        "total seconds",
    ):
        assert label in table, label
    assert f"{100 * result.top1_error:.2f}%" in table
    assert f"{100 * result.pgd_accuracy[1]:.2f}%" in table
    assert f"{result.nll:.4f}" in table
    both = format_table({"mixup": result, "cutmix": result.to_dict()})
    header = both.splitlines()[0].split()
    assert header == ["metric", "mixup", "cutmix"]
    assert len({len(line) for line in both.splitlines()}) == 1  # aligned columns


def test_plots_are_written(result: EvalResult, tmp_path: Path) -> None:
    from unimix.viz.reliability import plot_reliability
    from unimix.viz.robustness import plot_robustness

    paths = [
        plot_reliability(result, tmp_path / "one.png"),
        plot_reliability({"a": result, "b": json.loads(result.to_json())}, tmp_path / "two.png"),
        plot_robustness({"a": result, "b": result.to_dict()}, tmp_path / "rob.png"),
        plot_robustness(result, tmp_path / "rob1.png", attacks=("pgd",)),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="attacks"):
        plot_robustness(result, tmp_path / "x.png", attacks=("cw",))


# --------------------------------------------------------------------------- command


def test_cli_evaluate(digits: Digits, tmp_path: Path, monkeypatch, capsys) -> None:
    import unimix.train
    from unimix.commands import evaluate as command

    calls = []

    def load_run(run_dir, device):
        calls.append((Path(run_dir), torch.device(device)))
        spec = types.SimpleNamespace(
            test=torch.utils.data.TensorDataset(digits.images, digits.labels),
            test_tensors=lambda: (digits.images, digits.labels),
            mean=(digits.mean,),
            std=(digits.std,),
            num_classes=10,
        )
        return digits.model, spec, {"dataset": "digits", "model": "mlp"}

    # The trainer's load_run builds model and data from a run directory; stand in for it.
    monkeypatch.setattr(unimix.train, "load_run", load_run, raising=False)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").touch()  # a run directory (load_run is stood in for)
    out = tmp_path / "out" / "eval.json"
    args = parser.parse_args(
        [
            str(run_dir),
            "--eps",
            "0, 4/255,0.05",
            "--pgd-steps",
            "2",
            "--occlusion-size",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--plots",
            "--attack-loss",
            "margin",
        ]
    )
    assert command.run(args) == 0 and calls == [(run_dir, torch.device("cpu"))]
    res = EvalResult.from_json(str(out))
    assert res.eps == [0.0, 4 / 255, 0.05] and res.pgd_steps == 2 and res.occlusion_size == 2
    assert res.meta["dataset"] == "digits" and res.n == len(digits.labels)
    assert res.attack_loss == "margin"
    printed = capsys.readouterr().out
    assert "top-1 error" in printed and "PGD-2 acc. ε=4/255" in printed
    assert (out.parent / "eval_reliability.png").exists()
    assert (out.parent / "eval_robustness.png").exists()
    # Default output next to the run; a missing directory is an error, not a traceback.
    assert command.run(parser.parse_args([str(run_dir), "--eps", "0", "--pgd-steps", "0"])) == 0
    assert EvalResult.from_json(str(run_dir / "evaluation.json")).eps == [0.0]
    from unimix.errors import UsageError

    with pytest.raises(UsageError, match="does not exist"):  # cli.main prints it as one line
        command.run(parser.parse_args([str(tmp_path / "missing")]))
    assert command.parse_eps_list("1/255, 0.5") == [1 / 255, 0.5]
    with pytest.raises(SystemExit):
        parser.parse_args([str(run_dir), "--eps", "abc"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_cuda_matches_cpu(digits: Digits) -> None:
    kw = {
        "mean": digits.mean,
        "std": digits.std,
        "eps_list": (0.0, 0.1),
        "pgd_steps": 4,
        "occlusion_size": 3,
    }
    data = (digits.images, digits.labels)
    cpu = evaluate_model(copy.deepcopy(digits.model), data, device="cpu", **kw)
    gpu = evaluate_model(copy.deepcopy(digits.model), data, device="cuda", **kw)
    assert gpu.device.startswith("cuda")
    # Same generator draws (on the CPU) and the same model: agreement up to float rounding.
    assert gpu.top1_error == pytest.approx(cpu.top1_error, abs=2 / cpu.n)
    assert gpu.nll == pytest.approx(cpu.nll, rel=1e-3)
    assert gpu.pgd_accuracy == pytest.approx(cpu.pgd_accuracy, abs=3 / cpu.n)
    assert gpu.occlusion_accuracy == pytest.approx(cpu.occlusion_accuracy, abs=2 / cpu.n)
    assert gpu.fgsm_accuracy[0] == gpu.accuracy
    adv = pgd(
        copy.deepcopy(digits.model).cuda(),
        digits.images.cuda(),
        digits.labels.cuda(),
        eps=0.1,
        mean=digits.mean,
        std=digits.std,
        steps=3,
        generator=torch.Generator(device="cuda").manual_seed(0),
    )
    assert adv.device.type == "cuda"
    assert (
        to_pixels(adv.cpu(), (digits.mean,), (digits.std,))
        - to_pixels(digits.images, (digits.mean,), (digits.std,))
    ).abs().max() <= 0.1 + 1e-6
