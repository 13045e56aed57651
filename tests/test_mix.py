"""Properties of the mixing engine (unimix.Mixer)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from unimix import Mixer, SoftTargetCrossEntropy, soft_target_cross_entropy

CORE = ["none", "mixup", "cutmix", "hmix", "gmix"]
MODES = ["batch", "pair", "elem"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]


def _images(batch, channels, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, h, w, generator=g)
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


method_choices = st.one_of(
    st.sampled_from(CORE),
    st.lists(st.sampled_from(CORE[1:]), min_size=2, max_size=4, unique=True),
)


@settings(max_examples=80, deadline=None)
@given(
    methods=method_choices,
    mode=st.sampled_from(MODES),
    partner=st.sampled_from(["flip", "random"]),
    half_batch=st.integers(1, 5),
    odd=st.booleans(),
    h=st.integers(1, 19),
    w=st.integers(1, 19),
    dtype=st.sampled_from(DTYPES),
    prob=st.sampled_from([1.0, 0.5]),
    seed=st.integers(0, 2**31),
)
def test_label_weight_is_mean_of_applied_mask_and_pixels_lie_between_sources(
    methods, mode, partner, half_batch, odd, h, w, dtype, prob, seed
):
    batch = 2 * half_batch + (odd and mode != "pair")
    x = _images(batch, 3, h, w, dtype, seed)
    labels = torch.randint(0, 7, (batch,), generator=torch.Generator().manual_seed(seed))
    mixer = Mixer(
        methods,
        mode=mode,
        partner=partner,
        prob=prob,
        num_classes=7,
        generator=torch.Generator().manual_seed(seed),
    )
    before = x.clone()
    out, targets, info = mixer(x, labels, return_info=True)
    assert torch.equal(x, before), "the input must not be modified unless inplace=True"
    assert out.shape == x.shape and out.dtype == x.dtype
    assert targets.shape == (batch, 7) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(batch))

    # The own label's weight is the mean of the mask applied to the row (in the images' dtype).
    m = info.masks.expand(batch, 1, h, w)
    applied = m.to(x.dtype).float() if x.is_floating_point() else m.float()
    torch.testing.assert_close(info.lam_effective, applied.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
    rows = torch.arange(batch)
    same = labels == labels[info.partner]
    expect_own = torch.where(same, 1.0, info.lam_effective)
    torch.testing.assert_close(targets[rows, labels], expect_own, atol=1e-6, rtol=0)

    # The pixels are the mask's blend of the two sources, hence between them.
    xa, xb = x.double(), x[info.partner].double()
    recon = applied.double() * xa + (1 - applied.double()) * xb
    # uint8: rounding to whole levels, of a float32 blend (its own error ~1e-5 at 255)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.uint8: 0.5 + 1e-3}.get(dtype, 1e-5)
    assert (out.double() - recon).abs().max() <= tol + 1e-9
    lo, hi = torch.minimum(xa, xb), torch.maximum(xa, xb)
    assert torch.all(out.double() >= lo) and torch.all(out.double() <= hi)

    # pair mode: rows of a pair share λ and mask, and are each other's partners
    if mode == "pair":
        assert torch.equal(info.partner[info.partner], rows)
        torch.testing.assert_close(info.lam, info.lam[info.partner])
        torch.testing.assert_close(info.masks, info.masks[info.partner])
    if mode == "batch":
        assert torch.all(info.lam == info.lam[0])


@settings(max_examples=25, deadline=None)
@given(methods=method_choices, mode=st.sampled_from(MODES), seed=st.integers(0, 2**31))
def test_same_seed_same_result(methods, mode, seed):
    x = _images(6, 2, 9, 14, torch.float32)
    y = torch.arange(6)
    a = Mixer(
        methods,
        mode=mode,
        num_classes=6,
        partner="random",
        generator=torch.Generator().manual_seed(seed),
    )(x, y)
    b = Mixer(
        methods,
        mode=mode,
        num_classes=6,
        partner="random",
        generator=torch.Generator().manual_seed(seed),
    )(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", CORE)
def test_inplace_equals_out_of_place(mode, method):
    x = _images(8, 3, 10, 12, torch.float32)
    y = torch.arange(8)
    a, ta = Mixer(method, mode=mode, num_classes=8, generator=torch.Generator().manual_seed(1))(
        x, y
    )
    x2 = x.clone()
    b, tb = Mixer(method, mode=mode, num_classes=8, generator=torch.Generator().manual_seed(1))(
        x2, y, inplace=True
    )
    assert b.data_ptr() == x2.data_ptr()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta, tb)


@pytest.mark.parametrize("mode", MODES)
def test_channels_last_is_kept(mode):
    x = _images(4, 3, 8, 8, torch.float32).contiguous(memory_format=torch.channels_last)
    for method in CORE:
        out, _ = Mixer(method, mode=mode, num_classes=4)(x, torch.arange(4))
        assert out.is_contiguous(memory_format=torch.channels_last), method


def test_each_element_draws_its_own_lambda():
    mixer = Mixer("mixup", mode="elem", num_classes=4, generator=torch.Generator().manual_seed(0))
    _, _, info = mixer(
        _images(64, 1, 4, 4, torch.float32), torch.zeros(64, dtype=torch.long), return_info=True
    )
    assert info.lam.unique().numel() == 64


def test_expected_effective_lambda_matches_beta_mean():
    mixer = Mixer(
        ["mixup", "hmix", "gmix"],
        alpha=0.7,
        mode="elem",
        num_classes=2,
        generator=torch.Generator().manual_seed(0),
    )
    x = _images(4000, 1, 16, 16, torch.float32)
    _, _, info = mixer(x, torch.zeros(4000, dtype=torch.long), return_info=True)
    se = info.lam_effective.std() / math.sqrt(4000)
    assert abs(info.lam_effective.mean() - 0.5) < 4 * se + 0.01


def test_switch_prob_and_weights_choose_methods():
    x = _images(3000, 1, 4, 4, torch.float32)
    y = torch.zeros(3000, dtype=torch.long)
    mixer = Mixer(
        ["mixup", "cutmix"],
        switch_prob=0.25,
        mode="elem",
        num_classes=2,
        generator=torch.Generator().manual_seed(0),
    )
    _, _, info = mixer(x, y, return_info=True)
    assert abs(info.method.float().mean() - 0.25) < 0.03
    mixer = Mixer(
        {"mixup": 1, "gmix": 3},
        mode="elem",
        num_classes=2,
        generator=torch.Generator().manual_seed(0),
    )
    _, _, info = mixer(x, y, return_info=True)
    assert abs(info.method.float().mean() - 0.75) < 0.03


def test_prob_is_applied_once():
    x = _images(4000, 1, 4, 4, torch.float32)
    y = torch.zeros(4000, dtype=torch.long)
    mixer = Mixer(
        "cutmix", prob=0.3, mode="elem", num_classes=2, generator=torch.Generator().manual_seed(0)
    )
    _, _, info = mixer(x, y, return_info=True)
    assert abs(info.applied.float().mean() - 0.3) < 0.03
    assert torch.all(info.lam_effective[~info.applied] == 1)


def test_label_smoothing_matches_timm_definition():
    mixer = Mixer(
        "mixup", label_smoothing=0.1, num_classes=5, generator=torch.Generator().manual_seed(0)
    )
    y = torch.tensor([0, 1, 2, 3])
    _, t, info = mixer(_images(4, 1, 3, 3, torch.float32), y, return_info=True)
    off, on = 0.1 / 5, 1 - 0.1 + 0.1 / 5
    lam = info.lam_effective
    own = F.one_hot(y, 5) * on + (1 - F.one_hot(y, 5)) * off
    expect = own * lam[:, None] + own.flip(0) * (1 - lam[:, None])
    torch.testing.assert_close(t, expect)


def test_soft_and_one_hot_labels():
    x = _images(4, 1, 5, 5, torch.float32)
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    _, t, info = Mixer("hmix", generator=torch.Generator().manual_seed(0))(
        x, soft, return_info=True
    )
    lam = info.lam_effective[:, None]
    torch.testing.assert_close(t, soft * lam + soft.flip(0) * (1 - lam))


def test_batch_of_one_is_returned_unmixed():
    x = _images(1, 3, 5, 7, torch.float32)
    out, t = Mixer("cutmix", num_classes=3)(x, torch.tensor([2]))
    assert torch.equal(out, x)
    assert torch.equal(t, torch.tensor([[0.0, 0.0, 1.0]]))


def test_odd_batches_work_outside_pair_mode():
    x = _images(7, 3, 5, 5, torch.float32)
    for mode in ("batch", "elem"):
        out, t = Mixer("cutmix", mode=mode, num_classes=7)(x, torch.arange(7))
        assert out.shape == x.shape


def test_soft_target_cross_entropy_matches_torch():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 2, 2])
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y)
    )
    soft = torch.softmax(torch.randn(5, 4), 1)
    torch.testing.assert_close(
        SoftTargetCrossEntropy()(logits, soft), F.cross_entropy(logits, soft)
    )


def test_state_dict_round_trip_reproduces_draws():
    mixer = Mixer("gmix", mode="elem", num_classes=4, generator=torch.Generator().manual_seed(0))
    x, y = _images(4, 1, 6, 6, torch.float32), torch.arange(4)
    mixer(x, y)
    state = mixer.state_dict()
    a = mixer(x, y)
    mixer.load_state_dict(state)
    b = mixer(x, y)
    assert torch.equal(a[0], b[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", CORE)
def test_cuda_matches_cpu(mode, method):
    x = _images(8, 3, 11, 13, torch.float32)
    y = torch.arange(8)
    a = Mixer(method, mode=mode, num_classes=8, generator=torch.Generator().manual_seed(3))(x, y)
    b = Mixer(method, mode=mode, num_classes=8, generator=torch.Generator().manual_seed(3))(
        x.cuda(), y.cuda()
    )
    assert b[0].is_cuda
    torch.testing.assert_close(a[0], b[0].cpu())
    torch.testing.assert_close(a[1], b[1].cpu())


def test_bad_input_errors_name_the_argument():
    x = _images(4, 3, 5, 5, torch.float32)
    y = torch.arange(4)
    with pytest.raises(ValueError, match="alpha"):
        Mixer("mixup", alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        Mixer("mixup", alpha=-1)
    with pytest.raises(ValueError, match="prob"):
        Mixer("mixup", prob=1.5)
    with pytest.raises(ValueError, match="r must lie"):
        Mixer("hmix", r=2.0)
    with pytest.raises(ValueError, match="unknown mixing method 'cutout'.*known methods:.*gmix"):
        Mixer("cutout")
    with pytest.raises(TypeError, match="unknown method parameter 'q'"):
        Mixer("hmix", q=1)
    with pytest.raises(ValueError, match="mode"):
        Mixer("mixup", mode="row")
    with pytest.raises(ValueError, match="4-D"):
        Mixer("mixup", num_classes=4)(x[0], y)
    with pytest.raises(ValueError, match="batch size"):
        Mixer("mixup", num_classes=4)(x, y[:3])
    with pytest.raises(ValueError, match=r"num_classes=3\)"):
        Mixer("mixup", num_classes=3)(x, y)
    with pytest.raises(ValueError, match="num_classes must be passed"):
        Mixer("mixup")(x, y)
    with pytest.raises(ValueError, match="even batch"):
        Mixer("mixup", mode="pair", num_classes=4)(x[:3], y[:3])
    with pytest.raises(ValueError, match="switch_prob"):
        Mixer(["mixup", "cutmix", "gmix"], switch_prob=0.5)
    with pytest.raises(TypeError, match="images"):
        Mixer("mixup", num_classes=4)(x.long(), y)
    with pytest.raises(ValueError, match="alpha"):
        Mixer("mixup", alpha=float("nan"))
