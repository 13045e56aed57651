"""The plan contract: immutable, validated, replayable; ``apply`` returns what it measured."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
import torch
from torch import nn

from unimix import Mixer, registry
from unimix.plan import Measured, MixPlan

MODES = ("batch", "pair", "elem")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 5),
    )  # fmt: skip


def _mixer(method: str, mode: str, seed: int = 0) -> Mixer:
    return Mixer(method, mode=mode, num_classes=5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", registry.available())
def test_apply_never_changes_the_plan_and_replays_identically(method, mode):
    x = torch.rand(6, 3, 12, 14, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 5
    mixer = _mixer(method, mode)
    plan = mixer.sample(6, 12, 14)
    before = pickle.dumps(plan)
    net = _net() if mixer.requires_model else None
    first = mixer.apply(x, plan, model=net, labels=y)
    second = mixer.apply(x, plan, model=net, labels=y)
    if hasattr(mixer.methods[0], "disarm"):
        mixer.methods[0].disarm()
    assert pickle.dumps(plan) == before, "apply wrote to the plan"
    assert torch.equal(first.images, second.images), "one plan applied twice gave other pixels"
    assert torch.equal(first.measured.lam_effective, second.measured.lam_effective)
    t1 = mixer.targets(y, plan, first.measured)
    torch.testing.assert_close(t1, mixer.targets(y, plan, second))
    torch.testing.assert_close(t1.sum(1), torch.ones(6))


def test_targets_follow_the_measured_dtype_not_the_last_apply():
    mixer = _mixer("gmix", "elem")
    plan = mixer.sample(4, 16, 16)
    x = torch.rand(4, 3, 16, 16)
    y = torch.arange(4)
    m32 = mixer.apply(x, plan).measured
    m16 = mixer.apply(x.half(), plan).measured
    mixer.apply(x.bfloat16(), plan)  # no hidden state: this changes nothing below
    assert torch.equal(mixer.targets(y, plan, m32), mixer.targets(y, plan))
    assert not torch.equal(mixer.targets(y, plan, m16), mixer.targets(y, plan, m32))


def test_image_methods_need_the_measured_record_for_targets():
    mixer = _mixer("resizemix", "elem")
    plan = mixer.sample(4, 16, 16)
    with pytest.raises(ValueError, match="Mixer.apply"):
        mixer.targets(torch.arange(4), plan)


# ---- issue 20, item 5: NaN stays in its own image for method mixtures ---------------------------
@pytest.mark.parametrize("mode", ["pair", "elem"])
@pytest.mark.parametrize("methods", [["mixup", "cutmix"], ["gmix", "fmix"], ["hmix", "gridmix"]])
def test_nan_reaches_no_pixel_of_a_binary_mask_row_taken_from_the_other_image(methods, mode):
    for seed in range(12):
        x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        x[7] = math.nan
        mixer = Mixer(methods, mode=mode, generator=torch.Generator().manual_seed(seed))
        plan = mixer.sample(8, 16, 16)
        out, _ = mixer.apply(x, plan)
        masks = plan.masks.expand(8, 1, 16, 16)
        own = (masks == 1).expand_as(x)
        binary = {"cutmix", "fmix", "gridmix"}
        for k in range(8):  # pixels of a binary-mask row taken whole from a finite row are finite
            if plan.method_names[int(plan.method[k])] not in binary:
                continue  # blended pixels follow IEEE arithmetic (docs/architecture.md)
            if k != 7:
                assert not out[k][own[k]].isnan().any()
            if plan.partner[k] != 7:
                assert not out[k][(masks[k] == 0).expand_as(x[k])].isnan().any()


# ---- issue 20, item 6: huge method weights -------------------------------------------------------
def test_huge_method_weights_are_normalised_without_overflow():
    mixer = Mixer({"mixup": 1e308, "cutmix": 1e308}, mode="elem",
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(mixer.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    share = mixer.sample(4000, 2, 2).method.float().mean()
    assert 0.45 < float(share) < 0.55


# ---- issue 20, item 7: λ̄ is the mask's mean in the images' dtype ---------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("methods", ["gmix", "mixup", ["mixup", "gmix"], ["cutmix", "hmix"]])
def test_label_weight_is_the_mean_of_the_mask_as_applied_in_the_images_dtype(methods, mode, dtype):
    mixer = Mixer(methods, mode=mode, num_classes=2, generator=torch.Generator().manual_seed(3))
    x = torch.zeros(8, 1, 17, 23, dtype=dtype)
    x[:4] = 1  # rows 0-3 are ones, their flip partners zeros: a pixel is its own weight
    plan = mixer.sample(8, 17, 23)
    out, measured = mixer.apply(x, plan)
    share = out[:4].float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(measured.lam_effective[:4], share, atol=1e-6, rtol=0)
    targets = mixer.targets(torch.tensor([0] * 4 + [1] * 4), plan, measured)
    torch.testing.assert_close(targets[:4, 0], share, atol=1e-6, rtol=0)


# ---- issue 20, item 9: plans are validated ------------------------------------------------------
def _plan() -> MixPlan:
    return _mixer("cutmix", "elem").sample(4, 8, 8)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"unit_lam": torch.full((4,), 5.0)}, "unit_lam"),
        ({"unit_lam": torch.full((4,), 1.5)}, "unit_lam"),
        ({"unit_lam": torch.full((4,), -0.25)}, "unit_lam"),
        ({"unit_lam_effective": torch.full((4,), 1.5)}, "unit_lam_effective"),
        ({"partner": torch.tensor([3.0, 2.0, 1.0, 0.0])}, "partner"),
        ({"partner": torch.tensor([3, 2, 1])}, "partner"),
        ({"unit_method": torch.tensor([0, 0, 0, -1])}, "unit_method"),
        ({"method_names": ("cutmix", "mixup")}, "method_names"),
        ({"unit_lam": torch.full((4,), math.nan)}, "unit_lam"),
        ({"label_weight": "bogus"}, "label_weight"),
        ({"mode": "diagonal"}, "mode"),
        ({"partner": torch.tensor([0, 1, 2, 9])}, "partner"),
        ({"partner": torch.tensor([0, 1, 2, -1])}, "partner"),
        ({"unit_method": torch.tensor([0, 0, 0, 3])}, "unit_method"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_a_plan_with_a_field_out_of_range_is_refused_when_built_and_unpickled(change, field):
    plan = _plan()
    with pytest.raises(ValueError, match=field):
        replace(plan, **change)
    state = dict(plan.__dict__, **change)
    bad = MixPlan.__new__(MixPlan)
    with pytest.raises(ValueError, match=field):
        bad.__setstate__(state)


def test_an_image_method_plan_whose_lam_effective_is_not_measured_yet_is_valid():
    """Rows of image methods have no λ̄ before apply (NaN): a plan holding them is valid, built
    again or unpickled."""
    plan = _mixer("resizemix", "elem").sample(4, 8, 8)
    assert torch.isnan(torch.as_tensor(plan.unit_lam_effective)).any()
    again = replace(plan)
    assert torch.equal(again.partner, plan.partner)
    assert torch.equal(pickle.loads(pickle.dumps(plan)).partner, plan.partner)


def test_a_pickled_plan_round_trips():
    plan = _plan()
    again = pickle.loads(pickle.dumps(plan))
    assert torch.equal(again.partner, plan.partner) and again.mode == plan.mode


def test_a_plan_on_another_device_than_the_images_is_a_value_error_naming_both():
    mixer = _mixer("cutmix", "elem")
    plan = mixer.sample(4, 8, 8, device="meta")
    with pytest.raises(ValueError, match=r"cpu.*meta"):
        mixer.apply(torch.rand(4, 3, 8, 8), plan)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_plan_applied_to_cuda_images_is_a_value_error():
    plan = _mixer("cutmix", "elem").sample(4, 8, 8)
    with pytest.raises(ValueError, match="cuda"):
        _mixer("cutmix", "elem").apply(torch.rand(4, 3, 8, 8, device="cuda"), plan)


# ---- dense targets and integer label maps ------------------------------------------------------
MASK_METHODS = registry.available("mask")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", MASK_METHODS)
def test_dense_targets_weigh_each_pixels_classes_by_the_mask(method, mode):
    mixer = _mixer(method, mode)
    maps = torch.randint(0, 5, (6, 10, 12), generator=torch.Generator().manual_seed(2))
    plan = mixer.sample(6, 10, 12)
    dense = mixer.dense_targets(maps, plan, 5)
    assert dense.shape == (6, 5, 10, 12)
    torch.testing.assert_close(dense.sum(1), torch.ones(6, 10, 12))
    m = plan.masks.expand(6, 1, 10, 12)[:, 0]
    own = dense.gather(1, maps[:, None])[:, 0]
    other = dense.gather(1, maps[plan.partner][:, None])[:, 0]
    same = maps == maps[plan.partner]
    torch.testing.assert_close(torch.where(same, 1.0, own), torch.where(same, 1.0, m))
    torch.testing.assert_close(torch.where(same, 1.0, other), torch.where(same, 1.0, 1 - m))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["cutmix", "fmix", "gridmix", "cutmix_minmax", "none"])
def test_integer_maps_with_a_binary_plan_take_every_pixel_from_a_source(method, mode):
    mixer = _mixer(method, mode)
    maps = torch.randint(0, 50, (6, 1, 9, 11), generator=torch.Generator().manual_seed(4))
    plan = mixer.sample(6, 9, 11)
    out, _ = mixer.apply(maps, plan)
    keep = plan.masks.bool().expand(6, 1, 9, 11)
    assert torch.equal(out, torch.where(keep, maps, maps[plan.partner]))


def test_integer_maps_with_a_blending_plan_point_to_dense_targets():
    mixer = _mixer(["cutmix", "gmix"], "elem")
    plan = mixer.sample(6, 9, 11)
    with pytest.raises(ValueError, match="dense_targets"):
        mixer.apply(torch.randint(0, 3, (6, 1, 9, 11)), plan)


# ---- issue 20, item 24: the reference's GMix labels by the kernel's mean -------------------------
def _reference_gmix(
    lam: float, height: int, width: int, cy: int, cx: int
) -> tuple[torch.Tensor, float]:
    """GMix as the paper's reference describes it: a Gaussian kernel over the image centred at
    ``(cy, cx)`` with ``s = min(λ, 1−λ)``, ``exp(−π‖p−c‖²/(s·H·W))``, the first image's weight
    ``1 − kernel`` for λ ≥ ½ (else the kernel), and the label weight the mean of that weight
    over the image."""
    s = min(lam, 1 - lam)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    kernel = torch.exp(-math.pi * ((yy - cy) ** 2 + (xx - cx) ** 2).double() / (s * height * width))
    weight = 1 - kernel if lam >= 0.5 else kernel
    return weight, float(weight.mean())


def test_the_references_gmix_label_weight_is_label_weight_effective():
    y = torch.tensor([0, 1])
    for seed in range(40):
        mixer = Mixer("gmix", num_classes=2, label_weight="effective",
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip
        plan = mixer.sample(2, 32, 32)
        lam = float(plan.lam[0])
        m = plan.masks[0, 0].double()
        g = 1 - m if lam >= 0.5 else m
        cy, cx = divmod(int(g.argmax()), 32)
        ref_mask, ref_weight = _reference_gmix(lam, 32, 32, cy, cx)
        torch.testing.assert_close(m, ref_mask, atol=1e-5, rtol=0)
        targets = mixer.targets(y, plan, mixer.apply(torch.rand(2, 1, 32, 32), plan).measured)
        assert abs(float(targets[0, 0]) - ref_weight) < 1e-5


def test_no_document_says_nominal_labels_are_the_references_gmix():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = ["README.md", "docs/architecture.md", "docs/theory.md", "src/unimix/mix.py",
             "src/unimix/timm_mixup.py"]  # fmt: skip
    for name in files:
        text = " ".join((root / name).read_text().split())
        for claim in ("as the paper's reference code does for GMix",
                      "the paper's reference code for GMix, timm",
                      "the paper's reference code and timm",
                      "the paper's reference code does for GMix.",
                      "as the paper's reference code does)"):  # fmt: skip
            assert claim not in text, f"{name} still says {claim!r}"
    _ = Measured


@pytest.mark.parametrize(
    "args",
    [
        {"methods": ["nosuch"]},
        {"methods": "mixup", "r": 0.5},
        {"methods": ["mixup", "cutmix", "gmix"], "switch_prob": 0.5},
        {"methods": ["mixup"], "alpha": {"cutmix": 1.0}},
        {"methods": ["mixup", "mixup"]},
    ],
)
def test_check_mixer_refuses_what_mixer_refuses(args):
    from unimix.mix import check_mixer

    with pytest.raises((ValueError, TypeError)):
        check_mixer(**args)
    check_mixer(methods=["mixup", "cutmix"], switch_prob=0.5)
