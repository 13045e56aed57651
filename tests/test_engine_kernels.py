"""The engine's one apply path (issue 22, items 1 and 4): every plan is per-unit tensors, whatever
the mode; the kernel is chosen from the masks' kind; every kernel computes the one formula
``x̃ = M ⊙ x + (1 − M) ⊙ x[partner]``."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from unimix import Mixer, registry
from unimix.kernels import mask_kind

MODES = ("batch", "pair", "elem")
MASK_METHODS = registry.available("mask")
UNIT_DTYPES = {
    "unit_lam": torch.float32,
    "unit_lam_effective": torch.float32,
    "unit_method": torch.int64,
    "unit_applied": torch.bool,
}


def _mixer(methods, mode: str, seed: int = 0, **kw) -> Mixer:
    return Mixer(methods, mode=mode, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("methods", [*registry.available(), ["mixup", "cutmix", "resizemix"]])
def test_every_plan_holds_per_unit_tensors_in_every_mode(methods, mode):
    plan = _mixer(methods, mode, prob=0.7).sample(6, 9, 7)
    units = {"batch": 1, "pair": 3, "elem": 6}[mode]
    for name, dtype in UNIT_DTYPES.items():
        value = getattr(plan, name)
        assert isinstance(value, torch.Tensor), name
        assert value.dtype == dtype and value.shape == (units,), name
    assert plan.unit_of_row.dtype == torch.int64 and plan.unit_of_row.shape == (6,)
    assert int(plan.unit_of_row.max()) < units
    assert plan.n_units == units


@pytest.mark.parametrize("field", sorted(UNIT_DTYPES))
def test_a_plan_with_a_number_for_a_unit_field_is_refused(field):
    plan = _mixer("cutmix", "batch").sample(4, 8, 8)
    value = {"unit_method": 0, "unit_applied": True}.get(field, 0.5)
    with pytest.raises(ValueError, match=field):
        replace(plan, **{field: value})


@pytest.mark.parametrize(
    "methods, mode, nan, kind",
    [
        ("mixup", "batch", False, "constant"),
        ("mixup", "elem", False, "constant"),
        ("cutmix", "batch", False, "box"),
        ("cutmix", "batch", True, "box"),
        ("cutmix", "elem", False, "blend"),
        ("cutmix", "elem", True, "select"),
        ("fmix", "batch", True, "select"),
        ("gmix", "pair", False, "blend"),
        ("hmix", "batch", False, "blend"),
        ("none", "elem", False, "copy"),
        (["mixup", "cutmix"], "elem", False, "blend"),
    ],
)
def test_the_kernel_is_chosen_by_the_kind_of_the_masks(methods, mode, nan, kind):
    mixer = _mixer(methods, mode)
    plan = mixer.sample(8, 10, 12, lam=0.6)
    x = torch.rand(8, 3, 10, 12)
    if nan:
        x[0, 0, 0, 0] = math.nan
    no_mix = [m for m, name in enumerate(mixer.method_names) if name == "none"]
    assert mask_kind(plan, x, no_mix) == kind


def test_a_plan_that_mixes_nothing_is_a_copy():
    mixer = _mixer("cutmix", "batch", prob=0.0)
    plan = mixer.sample(4, 8, 8)
    x = torch.rand(4, 3, 8, 8)
    assert mask_kind(plan, x, ()) == "copy"
    assert torch.equal(mixer.apply(x, plan).images, x)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", MASK_METHODS)
def test_every_kernel_computes_the_mask_formula(method, mode, inplace):
    for seed in range(3):
        mixer = _mixer(method, mode, seed, prob=0.8)
        x = torch.rand(6, 2, 9, 11, generator=torch.Generator().manual_seed(seed))
        plan = mixer.sample(6, 9, 11)
        masks = plan.masks
        want = torch.lerp(x[plan.partner], x, masks)
        out, measured = mixer.apply(x.clone() if inplace else x, plan, inplace=inplace)
        torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(
            measured.lam_effective, masks.mean(dim=(1, 2, 3)).expand(6), atol=1e-5, rtol=0
        )
