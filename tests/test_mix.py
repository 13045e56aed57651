"""Properties of the mixing engine (unimix.Mixer), over every registered method where they hold
for all of them (``registry.available()``), and the soft-target loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import unimix  # noqa: F401  (registers every method)
from unimix import Mixer, SoftTargetCrossEntropy, registry, soft_target_cross_entropy

MASKS = registry.available("mask")  # none, mixup, cutmix, hmix, gmix, fmix, gridmix, …
# every method that mixes without a model (the image methods ResizeMix, SaliencyMix included)
NO_MODEL = [m for m in registry.available() if not registry.requires_model(m)]
MODES = ["batch", "pair", "elem"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]


def _images(batch, channels, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, h, w, generator=g)
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


method_choices = st.one_of(
    st.sampled_from(MASKS),
    st.lists(
        st.sampled_from([m for m in MASKS if m != "none"]), min_size=2, max_size=4, unique=True
    ),
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
def test_the_same_seed_gives_the_same_pixels_and_targets(methods, mode, seed):
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


@pytest.mark.parametrize("prob", [0.0, 1.0])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", NO_MODEL)
def test_inplace_mixes_the_callers_tensor_as_out_of_place_mixes_a_copy(method, mode, prob):
    x = _images(8, 3, 10, 12, torch.float32)
    y = torch.arange(8)
    original = x.clone()
    a, ta = Mixer(method, mode=mode, prob=prob, num_classes=8,
                  generator=torch.Generator().manual_seed(1))(x, y)  # fmt: skip
    assert a is not x and torch.equal(x, original)
    b, tb = Mixer(method, mode=mode, prob=prob, num_classes=8,
                  generator=torch.Generator().manual_seed(1))(x, y, inplace=True)  # fmt: skip
    assert b is x
    assert torch.equal(x, a) and torch.equal(ta, tb)  # the same draws, written over x
    if prob == 1.0 and method != "none":
        assert not torch.equal(x, original)  # it did mix


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", NO_MODEL)
def test_channels_last_images_come_back_channels_last(method, mode):
    x = _images(4, 3, 8, 8, torch.float32).contiguous(memory_format=torch.channels_last)
    out, _ = Mixer(method, mode=mode, num_classes=4)(x, torch.arange(4))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_elem_mode_draws_one_lambda_per_row():
    mixer = Mixer("mixup", mode="elem", num_classes=4, generator=torch.Generator().manual_seed(0))
    _, _, info = mixer(
        _images(64, 1, 4, 4, torch.float32), torch.zeros(64, dtype=torch.long), return_info=True
    )
    assert info.lam.unique().numel() == 64


def test_mean_effective_lambda_is_the_beta_mean():
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


def test_method_weights_set_the_share_of_each_method():
    x = _images(3000, 1, 4, 4, torch.float32)
    y = torch.zeros(3000, dtype=torch.long)
    mixer = Mixer(
        {"mixup": 1, "gmix": 3},
        mode="elem",
        num_classes=2,
        generator=torch.Generator().manual_seed(0),
    )
    _, _, info = mixer(x, y, return_info=True)
    assert abs(info.method.float().mean() - 0.75) < 0.03


def test_prob_is_the_share_of_mixed_rows_and_unmixed_rows_keep_their_label():
    x = _images(4000, 1, 4, 4, torch.float32)
    y = torch.zeros(4000, dtype=torch.long)
    mixer = Mixer(
        "cutmix", prob=0.3, mode="elem", num_classes=2, generator=torch.Generator().manual_seed(0)
    )
    _, _, info = mixer(x, y, return_info=True)
    assert abs(info.applied.float().mean() - 0.3) < 0.03
    assert torch.all(info.lam_effective[~info.applied] == 1)


def test_label_smoothing_gives_timms_values_mixed_by_the_partner():
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


def test_soft_labels_are_mixed_by_the_mask_mean():
    x = _images(4, 1, 5, 5, torch.float32)
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    _, t, info = Mixer("hmix", generator=torch.Generator().manual_seed(0))(
        x, soft, return_info=True
    )
    lam = info.lam_effective[:, None]
    torch.testing.assert_close(t, soft * lam + soft.flip(0) * (1 - lam))


@pytest.mark.parametrize("mode", ["batch", "elem"])  # "pair" needs an even batch
@pytest.mark.parametrize("method", NO_MODEL)
def test_a_single_image_is_returned_unmixed_with_its_own_target(method, mode):
    x = _images(1, 3, 5, 7, torch.float32)
    out, targets, info = Mixer(method, mode=mode, num_classes=3)(
        x, torch.tensor([2]), return_info=True
    )
    assert torch.equal(out, x)
    assert targets.tolist() == [[0.0, 0.0, 1.0]]
    assert info.lam_effective.tolist() == [1.0]


@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize("method", [m for m in MASKS if m != "none"])
def test_odd_batches_mix_every_row_but_the_middle_one_which_is_its_own_partner(method, mode):
    """Rows k and B−1−k are partners; the middle row of an odd batch is its own partner, so it
    comes back as it was with its own label, and every other row is its mask's blend."""
    x = _images(7, 3, 6, 6, torch.float32)
    y = torch.arange(7)
    out, targets, info = Mixer(method, mode=mode, num_classes=7,
                               generator=torch.Generator().manual_seed(0))(x, y, return_info=True)  # fmt: skip
    assert torch.equal(info.partner, torch.arange(6, -1, -1))
    assert torch.equal(out[3], x[3]) and targets[3].tolist() == F.one_hot(y[3], 7).tolist()
    m = info.masks.expand(7, 1, 6, 6)
    torch.testing.assert_close(out, m * x + (1 - m) * x.flip(0), atol=1e-6, rtol=0)
    lam = info.lam_effective[:, None]
    onehot = F.one_hot(y, 7).float()
    torch.testing.assert_close(targets, lam * onehot + (1 - lam) * onehot.flip(0))


def test_soft_target_cross_entropy_is_torchs_cross_entropy_with_each_reduction():
    """``ℓ_k = −Σ_c ỹ_kc log softmax(z_k)_c``, then mean, sum or none over rows; one-hot
    targets give the class-index cross-entropy."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y)
    )
    targets = torch.softmax(torch.randn(6, 4, generator=g), dim=1)
    for reduction in ("mean", "sum", "none"):
        expect = F.cross_entropy(logits, targets, reduction=reduction)
        torch.testing.assert_close(soft_target_cross_entropy(logits, targets, reduction), expect)
        torch.testing.assert_close(SoftTargetCrossEntropy(reduction)(logits, targets), expect)
    torch.testing.assert_close(  # the default reduction is the mean
        SoftTargetCrossEntropy()(logits, targets), F.cross_entropy(logits, targets)
    )
    with pytest.raises(ValueError, match="same shape"):
        soft_target_cross_entropy(logits, targets[:, :3])
    with pytest.raises(ValueError, match="reduction must be one of"):
        SoftTargetCrossEntropy("avg")


def test_a_restored_state_dict_replays_the_same_draws():
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
@pytest.mark.parametrize("method", NO_MODEL)
def test_cuda_gives_the_cpu_pixels_and_targets_for_one_seed(mode, method):
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


# ---- method choice, α, documented shapes (pinned by issue 13's mutation run) ----------------


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


@pytest.mark.parametrize("method", registry.available())
def test_requires_model_is_true_exactly_for_the_methods_that_look_inside_the_model(method):
    assert Mixer(method).requires_model is (method in {"puzzlemix", "manifold"})
    assert Mixer(["mixup", method] if method != "mixup" else "mixup").requires_model is (
        method in {"puzzlemix", "manifold"}
    )
