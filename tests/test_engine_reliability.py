"""Nothing silently wrong in the engine (issue 11): threads, non-finite pixels, degenerate input."""

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from unimix import Mixer
from unimix.mix import one_hot_targets


def _check_consistent(out, x, targets, y, plan, k):
    m = plan.masks.expand(x.shape[0], 1, *x.shape[2:])
    torch.testing.assert_close(out, m * x + (1 - m) * x[plan.partner], atol=1e-6, rtol=0)
    onehot = F.one_hot(y, k).float()
    lam = plan.lam_effective[:, None]
    torch.testing.assert_close(targets, lam * onehot + (1 - lam) * onehot[plan.partner])


@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize("method", ["mixup", "cutmix", "gmix"])
def test_one_mixer_in_place_from_several_threads_keeps_pixels_and_targets_together(mode, method):
    mixer = Mixer(method, mode=mode, num_classes=8, generator=torch.Generator().manual_seed(0))
    failures: list[str] = []
    barrier = threading.Barrier(4)

    def worker(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        barrier.wait()
        try:  # any exception of a worker fails the test, not only a failed assertion
            for _ in range(30):
                x = torch.rand(16, 3, 24, 24, generator=g)
                y = torch.randint(0, 8, (16,), generator=g)
                original = x.clone()
                out, targets, plan = mixer(x, y, inplace=True, return_info=True)
                assert out is x
                _check_consistent(out, original, targets, y, plan, 8)
        except BaseException as err:  # pragma: no cover - the failure being tested for
            failures.append(f"{type(err).__name__}: {str(err)[:200]}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:2]


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_nan_in_one_image_never_reaches_pixels_that_do_not_read_it(mode):
    """Binary masks and unmixed rows copy pixels: a NaN stays in the pixels that come from its
    image, in every mode (blended pixels follow IEEE arithmetic, see docs/architecture.md)."""
    for method, prob in (("cutmix", 1.0), ("mixup", 0.5), ("cutmix", 0.5), ("gridmix", 1.0)):
        pasted = 0
        for seed in range(8):
            x = torch.rand(8, 2, 10, 12, generator=torch.Generator().manual_seed(seed))
            x[3] = float("nan")
            mixer = Mixer(method, mode=mode, prob=prob, num_classes=4,
                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
            for inplace in (False, True):
                xin = x.clone()
                out, _, plan = mixer(xin, torch.arange(8) % 4, inplace=inplace, return_info=True)
                m = plan.masks.expand(8, 1, 10, 12).expand(8, 2, 10, 12)
                partner = plan.partner
                reads_nan = ((m > 0) & (torch.arange(8) == 3).view(-1, 1, 1, 1)) | (
                    (m < 1) & (partner == 3).view(-1, 1, 1, 1)
                )
                assert torch.isnan(out[reads_nan]).all()
                assert not torch.isnan(out[~reads_nan]).any(), (method, prob, mode, seed)
                pasted += int(reads_nan[torch.arange(8) != 3].sum())
        assert pasted > 0, method  # NaN was pasted into other rows: the test saw a paste


def test_zero_sized_images_and_batches_are_clear_errors():
    mixer = Mixer("cutmix", num_classes=3)
    with pytest.raises(ValueError, match="empty image size"):
        mixer(torch.rand(4, 3, 0, 5), torch.arange(4) % 3)
    with pytest.raises(ValueError, match="empty batch"):
        mixer(torch.rand(0, 3, 4, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size"):
        mixer.sample(0, 4, 4)
    with pytest.raises(ValueError, match="height"):
        mixer.sample(4, 0, 4)


def test_in_place_mixing_of_a_tensor_that_needs_grad_is_refused_by_name():
    x = torch.rand(4, 3, 5, 5, requires_grad=True)
    with pytest.raises(ValueError, match="inplace=True"):
        Mixer("mixup", num_classes=3)(x, torch.arange(4) % 3, inplace=True)
    out, _ = Mixer("mixup", num_classes=3)(x, torch.arange(4) % 3)  # out of place: differentiable
    out.sum().backward()
    assert x.grad is not None


def test_load_state_dict_rejects_wrong_keys_and_values():
    mixer = Mixer("mixup", generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="'generator'"):
        mixer.load_state_dict({"generatr": None})
    with pytest.raises(ValueError, match="'generator'"):
        mixer.load_state_dict({"generator": None, "extra": 1})
    with pytest.raises(TypeError, match="uint8"):
        mixer.load_state_dict({"generator": torch.zeros(3)})
    other = Mixer("mixup", generator=torch.Generator().manual_seed(5))
    mixer.load_state_dict(other.state_dict())
    assert torch.equal(mixer.generator.get_state(), other.generator.get_state())


@pytest.mark.parametrize(
    "targets",
    [
        torch.tensor([[0.5, 0.6], [1.0, 0.0]]),  # a row sums to 1.1
        torch.tensor([[1.5, -0.5], [1.0, 0.0]]),  # a negative probability
        torch.tensor([[float("nan"), 1.0], [1.0, 0.0]]),
    ],
)
def test_invalid_soft_targets_are_refused(targets):
    with pytest.raises(ValueError, match="soft-target labels"):
        one_hot_targets(targets, None, 2)
    with pytest.raises(ValueError, match="soft-target labels"):
        Mixer("mixup")(torch.rand(2, 1, 3, 3), targets)


@pytest.mark.parametrize("weight", [math.inf, math.nan, -1.0])
def test_non_finite_or_negative_method_weights_are_refused(weight):
    with pytest.raises(ValueError, match=r"methods\['mixup'\]"):
        Mixer({"mixup": weight, "cutmix": 1.0})


def test_a_plan_applies_the_same_way_to_images_and_their_segmentation_maps():
    x = torch.rand(6, 3, 9, 11)
    seg = torch.randint(0, 255, (6, 1, 9, 11), dtype=torch.uint8)
    for method in ("cutmix", "gridmix", "fmix"):  # binary masks: every pixel from one source
        mixer = Mixer(method, mode="elem", generator=torch.Generator().manual_seed(0))
        plan = mixer.sample(6, 9, 11)
        mixed_x, _ = mixer.apply(x, plan)
        mixed_seg, _ = mixer.apply(seg, plan)
        from_own = plan.masks.bool().expand(6, 1, 9, 11)
        assert (~from_own).any() and from_own.any(), method  # both sources are read
        assert not torch.equal(mixed_seg, seg), method
        assert torch.equal(mixed_seg, torch.where(from_own, seg, seg[plan.partner]))
        assert torch.equal(mixed_x, torch.where(from_own, x, x[plan.partner]))


def test_apply_refuses_a_plan_for_another_batch():
    mixer = Mixer("cutmix")
    plan = mixer.sample(4, 8, 8)
    with pytest.raises(ValueError, match="plan was drawn for"):
        mixer.apply(torch.rand(4, 3, 8, 9), plan)
    with pytest.raises(TypeError, match="MixPlan"):
        mixer.apply(torch.rand(4, 3, 8, 8), {"partner": None})


def test_misspelt_call_keyword_is_a_type_error():
    mixer = Mixer("mixup", num_classes=3)
    with pytest.raises(TypeError):
        mixer(torch.rand(2, 1, 3, 3), torch.arange(2), modle=None)


def test_a_plan_can_be_saved_and_replayed(tmp_path):
    x, y = torch.rand(6, 3, 8, 10), torch.arange(6) % 3
    for mode in ("batch", "elem"):
        mixer = Mixer(["cutmix", "hmix", "gmix"], mode=mode, num_classes=3,
                      generator=torch.Generator().manual_seed(1))  # fmt: skip
        plan = mixer.sample(6, 8, 10)
        torch.save(plan, tmp_path / "plan.pt")
        replayed = torch.load(tmp_path / "plan.pt", weights_only=False)
        assert torch.equal(mixer.apply(x, replayed).images, mixer.apply(x, plan).images)
        assert torch.equal(mixer.targets(y, replayed), mixer.targets(y, plan))


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_sample_with_a_fixed_lambda_draws_everything_else(mode):
    for method in ("mixup", "hmix", "gmix", "resizemix"):
        mixer = Mixer(method, mode=mode, num_classes=3, generator=torch.Generator().manual_seed(0))
        plan = mixer.sample(6, 12, 16, lam=0.65)
        assert torch.all(plan.lam == 0.65)
        if method in ("mixup", "hmix"):  # λ̄ = λ for these masks
            torch.testing.assert_close(plan.lam_effective, torch.full((6,), 0.65))
    with pytest.raises(ValueError, match="lam must lie in"):
        Mixer("mixup").sample(4, 8, 8, lam=1.5)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_plan_records_its_mode_and_sizes(mode):
    for methods in ("cutmix", ["mixup", "resizemix"]):
        plan = Mixer(methods, mode=mode).sample(6, 7, 9)
        assert (plan.mode, plan.batch_size, plan.height, plan.width) == (mode, 6, 7, 9)
        assert plan.method_names == tuple([methods] if isinstance(methods, str) else methods)


def test_a_copied_mixer_given_a_generator_draws_from_it_alone():
    """``copy.copy`` of a Mixer shares its settings; given its own generator (as MixCollate does
    per worker) the copy draws from that generator only: the original's stream is untouched."""
    import copy

    mixer = Mixer("cutmix", mode="elem", generator=torch.Generator().manual_seed(0))
    reference = Mixer("cutmix", mode="elem", generator=torch.Generator().manual_seed(0))
    twin = copy.copy(mixer)
    twin.generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the twin draws: the original's generator must not move
        twin.sample(8, 10, 10)
    assert torch.equal(mixer.generator.get_state(), reference.generator.get_state())
    a, b = mixer.sample(8, 10, 10), reference.sample(8, 10, 10)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.lam, b.lam)
    twin.generator.manual_seed(0)
    assert torch.equal(twin.sample(8, 10, 10).masks, b.masks)  # same seed, same draws


def test_image_methods_receive_the_batch_rows_they_mix():
    from unimix import MixMethod, registry

    seen = {}

    class Probe(MixMethod):
        def mix(self, images, partners, lam, *, generator, context):
            seen.update(rows=context["rows"].clone(), partner_rows=context["partner_rows"].clone())
            return images, torch.ones_like(lam)

    registry.register("probe_rows")(Probe)
    try:
        mixer = Mixer({"probe_rows": 1.0, "cutmix": 1.0}, mode="elem",
                      generator=torch.Generator().manual_seed(3))  # fmt: skip
        x = torch.rand(10, 1, 4, 4)
        _, _, plan = mixer(x, torch.eye(10), return_info=True)
        probe_rows = (plan.method == 0).nonzero().squeeze(1)
        assert torch.equal(seen["rows"], probe_rows)
        assert torch.equal(seen["partner_rows"], plan.partner[probe_rows])
    finally:
        registry.unregister("probe_rows")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.uint8])
@pytest.mark.parametrize("inplace", [False, True])
def test_bit_select_is_torch_where(dtype, inplace):
    from unimix.blend import select

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 3, 5, 7, generator=g) * 200).to(dtype)
    if dtype.is_floating_point:
        x[2, 0, 1, 1] = float("nan")
        x[4, 1, 2, 3] = float("-inf")
    partner = torch.randperm(6, generator=g)
    keep = torch.rand(6, 1, 5, 7, generator=g) > 0.5
    expected = torch.where(keep, x, x[partner])
    xin = x.clone()
    out = select(xin, partner, keep, xin if inplace else None, torch.empty_like(x))
    assert (out is xin) == inplace
    assert torch.equal(out.view(torch.uint8), expected.view(torch.uint8))  # bit for bit
