"""``unimix.Mixer`` behaviours no test pinned before the mutation run of issue 13: the loss
reductions, the method switch in every mode, the default Beta parameter, ``requires_model``,
and in-place mixing returning the caller's tensor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unimix import Mixer
from unimix.mix import SoftTargetCrossEntropy, soft_target_cross_entropy

MODES = ["batch", "pair", "elem"]


def test_soft_target_cross_entropy_reductions():
    """``ℓ_k = −Σ_c ỹ_kc log softmax(z_k)_c``, then mean, sum or none over rows."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    targets = torch.softmax(torch.randn(6, 4, generator=g), dim=1)
    per_row = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets), per_row.mean())
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets, "sum"), per_row.sum())
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets, "none"), per_row)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            SoftTargetCrossEntropy(reduction)(logits, targets),
            soft_target_cross_entropy(logits, targets, reduction),
        )
    with pytest.raises(ValueError, match="same shape"):
        soft_target_cross_entropy(logits, targets[:, :3])


@pytest.mark.parametrize("mode", MODES)
def test_two_methods_are_switched_with_switch_prob(mode):
    """Each unit (batch, pair, row) uses the second method with probability ``switch_prob``."""
    mixer = Mixer(
        ["mixup", "cutmix"],
        mode=mode,
        switch_prob=0.3,
        num_classes=4,
        generator=torch.Generator().manual_seed(0),
    )
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 4
    units = []
    calls = 300 if mode == "batch" else 60
    for _ in range(calls):
        _, _, info = mixer(x, y, return_info=True)
        method = info.method
        units.append(method[:1] if mode == "batch" else method[:4] if mode == "pair" else method)
    used = torch.cat(units).float()
    n = used.numel()
    assert abs(used.mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)


@pytest.mark.parametrize("mode", MODES)
def test_default_alpha_is_one_uniform_lambda(mode):
    """``alpha`` defaults to 1: λ ~ Beta(1, 1) = U(0, 1), variance 1/12 (Beta(2, 2): 1/20)."""
    mixer = Mixer("mixup", mode=mode, num_classes=2, generator=torch.Generator().manual_seed(1))
    x, y = torch.rand(8, 1, 2, 2), torch.arange(8) % 2
    lams = []
    for _ in range(400 if mode == "batch" else 100):
        _, _, info = mixer(x, y, return_info=True)
        lams.append(
            info.lam[:1] if mode == "batch" else info.lam[:4] if mode == "pair" else info.lam
        )
    lam = torch.cat(lams)
    assert abs(lam.var().item() - 1 / 12) < 0.015
    assert abs(lam.mean().item() - 0.5) < 0.04


def test_alpha_mapping_defaults_missing_methods_to_one():
    mixer = Mixer(
        ["mixup", "cutmix"],
        alpha={"mixup": 0.2},
        mode="elem",
        num_classes=2,
        generator=torch.Generator().manual_seed(2),
    )
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 2
    lam = {0: [], 1: []}
    for _ in range(150):
        _, _, info = mixer(x, y, return_info=True)
        for m in (0, 1):
            lam[m].append(info.lam[info.method == m])
    mixup, cutmix = torch.cat(lam[0]), torch.cat(lam[1])
    # Beta(0.2, 0.2) piles up at 0 and 1 (variance 0.18); Beta(1, 1) is flat (1/12)
    assert abs(mixup.var().item() - 0.25 / 1.4) < 0.03
    assert abs(cutmix.var().item() - 1 / 12) < 0.02


@pytest.mark.parametrize("method", ["mixup", "cutmix", "hmix", "gmix"])
def test_mask_methods_need_no_model(method):
    assert Mixer(method).requires_model is False


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["mixup", "cutmix", "hmix", "gmix"])
@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_inplace_returns_the_callers_tensor_and_out_of_place_leaves_it(mode, method, prob):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 3
    kw = dict(mode=mode, prob=prob, num_classes=3)
    original = x.clone()
    out, _ = Mixer(method, generator=torch.Generator().manual_seed(1), **kw)(x, y)
    assert out is not x and torch.equal(x, original)
    inplace, _ = Mixer(method, generator=torch.Generator().manual_seed(1), **kw)(x, y, inplace=True)
    assert inplace is x
    assert torch.equal(x, out)  # the same draws, mixed in place


@pytest.mark.parametrize("mode", ["batch", "elem"])  # "pair" needs an even batch
def test_a_single_image_is_returned_unmixed_with_its_own_target(mode):
    mixer = Mixer(["mixup", "cutmix"], mode=mode, num_classes=3)
    x = torch.rand(1, 2, 4, 4)
    out, targets, info = mixer(x, torch.tensor([2]), return_info=True)
    assert torch.equal(out, x)
    assert targets.tolist() == [[0.0, 0.0, 1.0]]
    assert info.lam_effective.tolist() == [1.0]


def test_requires_model_and_unknown_methods():
    assert Mixer("puzzlemix").requires_model is True
    assert Mixer(["mixup", "puzzlemix"]).requires_model is True
    with pytest.raises(ValueError, match="known methods: .*hmix"):
        Mixer("no-such-method")


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_info_masks_and_targets_have_their_documented_shapes_and_dtype(prob):
    """``masks``: ``[B or 1, 1, H, W]``; targets float32 even from float64 soft labels."""
    x = torch.rand(4, 3, 5, 6)
    soft = torch.softmax(torch.rand(4, 3, dtype=torch.float64), dim=1)
    _, targets, info = Mixer("mixup", prob=prob, num_classes=3)(x, soft, return_info=True)
    assert info.masks.dim() == 4 and info.masks.shape[1:] == (1, 5, 6)
    assert info.masks.shape[0] in (1, 4)
    assert targets.dtype == torch.float32


def test_repr_names_the_methods_and_their_weights():
    text = repr(Mixer({"mixup": 1.0, "cutmix": 3.0}))
    assert "mixup" in text and "cutmix" in text and "0.75" in text


def test_methods_must_be_given():
    for bad in ([], 3):
        with pytest.raises(ValueError, match="known methods: .*mixup"):
            Mixer(bad)


def test_uint8_mixup_next_to_an_image_method_blends_and_rounds():
    """A method list with an image-dependent method takes the general path; there, uint8 images
    under Mixup are the rounded blend ``λ̄ x + (1 − λ̄) x_partner``."""
    mixer = Mixer(
        {"mixup": 1.0, "resizemix": 0.0}, num_classes=2, generator=torch.Generator().manual_seed(0)
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 3, 6, 6), generator=g, dtype=torch.uint8)
    for _ in range(5):
        mixed, _, info = mixer(x.clone(), torch.tensor([0, 1, 0, 1]), return_info=True)
        lam = info.lam_effective.view(-1, 1, 1, 1)
        expect = lam * x.float() + (1 - lam) * x.flip(0).float()
        assert mixed.dtype == torch.uint8
        assert (mixed.float() - expect).abs().max() <= 0.5 + 1e-3
