"""The earlier state of the art in the engine: FMix, SmoothMix, GridMix, ResizeMix, SaliencyMix,
Puzzle Mix and Manifold Mixup (unimix.methods)."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import unimix
import unimix.methods  # noqa: F401  (registers the methods)
from unimix import masks, registry
from unimix.methods import ManifoldMixup, requires_model
from unimix.methods.fmix import low_frequency_noise
from unimix.methods.manifold import eligible_layers
from unimix.methods.puzzlemix import (
    grid_labels_energy,
    input_gradient_saliency,
    puzzle_mix,
    solve_grid_labels,
    transport_blocks,
)
from unimix.methods.resizemix import resize_mix
from unimix.methods.saliencymix import (
    fine_grained_saliency,
    saliency_mix,
    saliency_peaks,
    spectral_residual_saliency,
)

SAMPLERS = ["fmix", "smoothmix", "gridmix"]
IMAGE_METHODS = ["resizemix", "saliencymix"]
MODES = ["batch", "pair", "elem"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_method_is_registered_by_name():
    assert set(SAMPLERS) <= set(registry.available("mask"))
    assert set(SAMPLERS + IMAGE_METHODS + ["puzzlemix", "manifold"]) <= set(registry.available())
    assert requires_model("puzzlemix") and requires_model("manifold")
    assert not any(requires_model(n) for n in SAMPLERS + IMAGE_METHODS)


# ---- the three image-independent samplers: the core samplers' properties -------------------------
sizes = st.integers(min_value=1, max_value=21)
lams = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=5)
sampler_params = {
    "fmix": [{}, {"max_soft": 0.3}],
    "smoothmix": [{}, {"shape": "square"}],
    "gridmix": [{}, {"grid": (1, 6)}],
}


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(SAMPLERS),
    variant=st.integers(0, 1),
    h=sizes,
    w=sizes,
    lam=lams,
    seed=st.integers(0, 2**31),
)
def test_sampler_shape_range_mean_and_reproducibility(name, variant, h, w, lam, seed):
    sampler = masks.get(name, **sampler_params[name][variant])
    out = sampler(torch.tensor(lam), h, w, generator=gen(seed))
    assert out.masks.shape == (len(lam), 1, h, w) and out.masks.dtype == torch.float32
    assert out.masks.min() >= 0 and out.masks.max() <= 1
    torch.testing.assert_close(out.lam, out.masks.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
    again = sampler(torch.tensor(lam), h, w, generator=gen(seed))
    assert torch.equal(out.masks, again.masks) and torch.equal(out.lam, again.lam)


# ---- FMix -----------------------------------------------------------------------------------------
def test_fmix_mask_is_the_top_of_the_low_frequency_field():
    lam = torch.tensor([0.2, 0.5, 0.77])
    out = masks.get("fmix")(lam, 24, 31, generator=gen(3))
    field = low_frequency_noise(3, 24, 31, 3.0, generator=gen(3)).reshape(3, -1)
    m = out.masks.reshape(3, -1)
    k = m.sum(1).long()
    for i in range(3):
        kth = field[i].sort(descending=True).values[k[i] - 1]
        assert torch.equal(m[i] > 0, field[i] >= kth)
    # the threshold gives λ̄ = k / HW with k within one pixel of λ·HW
    assert ((k - lam * 24 * 31).abs() < 1).all()
    torch.testing.assert_close(out.lam, k / (24 * 31))


def test_top_k_mask_is_exact_with_ties():
    from unimix.methods.fmix import _top_k_mask

    values = torch.tensor(
        [[1.0, 1.0, 1.0, 0.0, 2.0], [3.0, 3.0, 3.0, 3.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0]]
    )
    k = torch.tensor([2, 3, 0])
    m = _top_k_mask(values, k)
    assert m.sum(1).tolist() == [2.0, 3.0, 0.0]
    assert m[0, 4] == 1 and m[0, 3] == 0  # the largest is in, the smallest out
    assert _top_k_mask(values, torch.tensor([5, 5, 5])).sum().item() == 15


def test_fmix_mean_matches_lambda_in_expectation():
    lam = torch.full((4000,), 0.3413)  # λ·HW = 21.5: floor or round would be 1/126 off
    out = masks.get("fmix")(lam, 7, 9, generator=gen(4))
    assert set(torch.unique(out.masks).tolist()) <= {0.0, 1.0}
    assert ((out.lam * 63).round() - out.lam * 63).abs().max() < 1e-4  # whole pixels
    # stochastic rounding: E[λ̄ | λ] = λ; λ̄ takes the two values next to λ·HW
    assert abs(out.lam.double().mean().item() - 0.3413) < 4 * (1 / 63) * 0.5 / math.sqrt(4000)


def test_fmix_masks_are_low_frequency_and_max_soft_keeps_the_mean():
    lam = torch.full((64,), 0.5)
    hard = masks.get("fmix")(lam, 32, 32, generator=gen(5)).masks
    flips = (hard[..., 1:] != hard[..., :-1]).float().mean()
    assert flips < 0.15  # an i.i.d. mask with the same mean flips half the time
    soft = masks.get("fmix", max_soft=0.1)(lam, 32, 32, generator=gen(5))
    frac = ((soft.masks > 0) & (soft.masks < 1)).float().mean(dim=(1, 2, 3))
    # the ramp runs from 1 down to 0 over 2·⌊0.1·HW⌋ ranks: all but its two ends are fractional
    torch.testing.assert_close(frac, torch.full_like(frac, (2 * math.floor(0.1 * 1024) - 2) / 1024))
    assert ((soft.lam * 1024 - (soft.lam * 1024).round()).abs() < 1e-3).all()
    with pytest.raises(ValueError, match="max_soft"):
        masks.get("fmix", max_soft=0.7)


# ---- SmoothMix ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["circle", "square"])
def test_smoothmix_profile_and_spread(shape):
    # λ = 1 gives s = 0.25: σ = 10 pixels on a 40×40 image
    out = masks.get("smoothmix", shape=shape)(torch.ones(32), 40, 40, generator=gen(6))
    for m in out.masks[:, 0]:
        cy, cx = divmod(int(m.argmin()), 40)
        assert m[cy, cx] == 0  # the partner fully at the centre
        dy = 10 if cy + 10 < 40 else -10
        dx = 10 if cx + 10 < 40 else -10
        torch.testing.assert_close(m[cy + dy, cx], torch.tensor(1 - math.exp(-0.5)))
        corner = 1 - math.exp(-1.0) if shape == "circle" else 1 - math.exp(-0.5)
        torch.testing.assert_close(m[cy + dy, cx + dx], torch.tensor(corner))
    # λ drives σ: a smaller λ pastes a wider bump, so less of the first image is kept
    lo = masks.get("smoothmix")(torch.zeros(256), 32, 32, generator=gen(7)).lam.mean()
    hi = masks.get("smoothmix")(torch.ones(256), 32, 32, generator=gen(7)).lam.mean()
    assert lo < hi


# ---- GridMix --------------------------------------------------------------------------------------
def test_gridmix_cells_are_whole_and_mean_follows_lambda():
    lam = torch.full((3000,), 0.3)
    out = masks.get("gridmix", grid=4)(lam, 16, 12, generator=gen(8))
    cells = out.masks.reshape(3000, 4, 4, 4, 3)
    assert torch.equal(cells.amax(dim=(2, 4)), cells.amin(dim=(2, 4)))  # constant per 4×3 cell
    se = math.sqrt(0.3 * 0.7 / 16 / 3000)
    assert abs(out.lam.double().mean().item() - 0.3) < 4 * se
    with pytest.raises(ValueError, match="grid"):
        masks.get("gridmix", grid=(5, 2))


# ---- ResizeMix ------------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_resizemix_pastes_the_resized_partner(interpolation):
    x = torch.rand(6, 3, 23, 30, generator=gen(9))
    partners = x.flip(0)
    lam = torch.rand(6, generator=gen(10))
    res = resize_mix(x, partners, lam, interpolation=interpolation, generator=gen(11))
    for k, (y0, y1, x0, x1) in enumerate(res.boxes.tolist()):
        h, w = y1 - y0, x1 - x0
        tau = 0.1 + 0.7 * (1 - lam[k].item())
        assert h == round(tau * 23) and w == round(tau * 30)
        assert 0 <= y0 and y1 <= 23 and 0 <= x0 and x1 <= 30
        mode = "nearest-exact" if interpolation == "nearest" else interpolation
        extra = {} if interpolation == "nearest" else {"align_corners": False}
        expected = F.interpolate(partners[k : k + 1], size=(h, w), mode=mode, **extra)[0]
        torch.testing.assert_close(res.images[k, :, y0:y1, x0:x1], expected, atol=1e-5, rtol=1e-5)
        outside = torch.ones(23, 30, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(res.images[k][:, outside], x[k][:, outside])
        assert res.lam[k].item() == pytest.approx(1 - h * w / (23 * 30))


def test_resizemix_in_mixer_batch_mode_shares_the_size_and_handles_uint8():
    x = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8, generator=gen(12))
    y = torch.arange(8)
    out, targets, info = unimix.Mixer("resizemix", mode="batch", num_classes=8, generator=gen(13))(
        x, y, return_info=True
    )
    assert out.dtype == torch.uint8 and info.masks is None
    assert torch.unique(info.lam_effective).numel() == 1
    changed = (out != x).any(1).float().mean(dim=(1, 2))
    assert (changed <= 1 - info.lam_effective + 1e-6).all()


# ---- SaliencyMix ----------------------------------------------------------------------------------
def _synthetic(h, w, blobs):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for cy, cx, s, r, g, b in blobs:
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        img += bump[..., None] * np.array([r, g, b])
    img += 0.1 * (np.sin(0.7 * xx + 0.3 * yy) * 0.5 + 0.5)[..., None]
    img = np.round(255 * img / img.max()).astype(np.uint8)
    return torch.from_numpy(img).permute(2, 0, 1)[None]


# Peaks of OpenCV's StaticSaliencyFineGrained / StaticSaliencySpectralResidual
# (opencv-contrib-python-headless 5.0.0.93) on these images, given in BGR order as OpenCV expects.
OPENCV_PEAKS = [
    ((24, 30, [(6, 20, 2.5, 1.0, 0.2, 0.1), (16, 8, 4.0, 0.2, 0.6, 0.9)]), (13, 29), (0, 0)),
    (
        (
            32,
            32,
            [
                (25, 5, 3.0, 0.9, 0.9, 0.1),
                (10, 12, 6.0, 0.1, 0.3, 0.4),
                (20, 26, 2.0, 0.5, 0.1, 0.8),
            ],
        ),
        (25, 5),
        (0, 0),
    ),
    ((40, 28, [(30, 14, 5.0, 0.3, 0.8, 0.3), (8, 22, 1.5, 1.0, 1.0, 1.0)]), (8, 22), (8, 22)),
]


@pytest.mark.parametrize(("case", "fine", "spectral"), OPENCV_PEAKS)
def test_saliency_detectors_find_opencvs_peaks(case, fine, spectral):
    img = _synthetic(*case)
    assert tuple(int(v) for v in saliency_peaks(fine_grained_saliency(img))) == fine
    assert tuple(int(v) for v in saliency_peaks(spectral_residual_saliency(img))) == spectral


@pytest.mark.parametrize("detector", ["fine_grained", "spectral_residual"])
def test_saliencymix_box_contains_the_partners_peak(detector):
    x = torch.rand(8, 3, 26, 19, generator=gen(14))
    x[:, :, 2:5, 14:17] += torch.rand(8, 3, 1, 1, generator=gen(15)) * 3  # a salient spot per image
    partners = x.roll(1, 0)
    lam = torch.rand(8, generator=gen(16)) * 0.9
    res = saliency_mix(x, partners, lam, detector=detector)
    detect = fine_grained_saliency if detector == "fine_grained" else spectral_residual_saliency
    py, px = saliency_peaks(detect(partners))
    for k, (y0, y1, x0, x1) in enumerate(res.boxes.tolist()):
        assert (y0 <= py[k] < y1) and (x0 <= px[k] < x1)
        inside = torch.zeros(26, 19, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(res.images[k][:, inside], partners[k][:, inside])
        assert torch.equal(res.images[k][:, ~inside], x[k][:, ~inside])
        assert res.lam[k].item() == pytest.approx(1 - inside.float().mean().item())
    assert torch.equal(res.peaks, torch.stack((py, px), 1))


# ---- image methods in the Mixer: every mode, label = content ---------------------------------------
@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("resizemix", "batch"),
        ("resizemix", "pair"),
        ("resizemix", "elem"),
        ("saliencymix", "elem"),
        ("saliencymix", "batch"),
        ("saliencymix", "pair"),
    ],
)
def test_image_methods_label_matches_content_in_mixer(name, mode):
    x = torch.rand(10, 3, 16, 18, generator=gen(17))
    y = torch.arange(10)
    out, targets, info = unimix.Mixer(name, mode=mode, num_classes=10, generator=gen(18))(
        x, y, return_info=True
    )
    kept = (out == x).all(1).float().mean(dim=(1, 2))  # pixels left as the row's own
    torch.testing.assert_close(info.lam_effective, kept, atol=1e-6, rtol=0)
    rows = torch.arange(10)
    torch.testing.assert_close(targets[rows, y], info.lam_effective)
    torch.testing.assert_close(targets[rows, info.partner], 1 - info.lam_effective)


# ---- Manifold Mixup -------------------------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.layer2(self.layer1(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("layer", ["input", "layer1", "layer2"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_manifold_mixup_mixes_at_the_chosen_layer_and_leaves_the_model_as_it_was(layer, mode):
    torch.manual_seed(0)
    model = Tiny()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 2, 8, 8, generator=gen(21))
    y = torch.randint(0, 3, (6,), generator=gen(22))
    mm = ManifoldMixup(model, alpha=2.0, mode=mode, num_classes=3, generator=gen(23))
    assert mm.choices == ["input", "layer1", "layer2"]  # the paper's S = {0, 1, 2}
    logits, targets = mm(x, y, layer=layer)
    info = mm.last_info
    lam = info.lam_effective.view(-1, 1, 1, 1)
    # recompute: run the model by hand, mixing the chosen layer's output
    h = x
    for name in ["input", "stem", "layer1", "layer2"]:
        if name != "input":
            h = getattr(model, name)(h)
        if name == layer:
            h = lam * h + (1 - lam) * h[info.partner]
    expected = model.head(h.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, expected)
    onehot = F.one_hot(y, 3).float()
    torch.testing.assert_close(
        targets, lam[:, :, 0, 0] * onehot + (1 - lam[:, :, 0, 0]) * onehot[info.partner]
    )
    logits.sum().backward()  # gradients flow through the mix
    assert model.layer1[0].weight.grad is not None
    assert _hooks(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k


def test_manifold_mixup_removes_its_hook_on_error_and_checks_layers():
    model = Tiny()
    mm = ManifoldMixup(
        model, layers=["layer2"], include_input=False, num_classes=3, generator=gen(0)
    )
    with pytest.raises(RuntimeError):
        mm(torch.randn(4, 5, 8, 8), torch.arange(4) % 3)  # wrong channel count fails inside forward
    assert _hooks(model) == 0
    with pytest.raises(ValueError, match="not modules"):
        ManifoldMixup(model, layers=["nope"])
    seen = {mm.choices[0]}
    mm2 = ManifoldMixup(model, num_classes=3, generator=gen(1))
    for _ in range(30):
        mm2(torch.randn(4, 2, 8, 8), torch.arange(4) % 3)
        seen.add(mm2.last_layer)
    assert seen == {"input", "layer1", "layer2"}
    assert eligible_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))) == ["0"]


def test_manifold_by_name_in_mixer_mixes_the_next_forward_once():
    torch.manual_seed(1)
    model = Tiny()
    x = torch.randn(6, 2, 8, 8, generator=gen(24))
    y = torch.arange(6) % 3
    mixer = unimix.Mixer("manifold", alpha=2.0, mode="elem", num_classes=3, generator=gen(25))
    method = mixer.methods[0]
    layers_seen = set()
    for _ in range(12):
        out, targets, info = mixer(x, y, model=model, return_info=True)
        layers_seen.add(method.last_layer)
        logits = model(out)
        lam = info.lam_effective.view(-1, 1, 1, 1)
        h = x
        for name in ["input", "stem", "layer1", "layer2"]:
            if name != "input":
                h = getattr(model, name)(h)
            if name == method.last_layer:
                h = lam * h + (1 - lam) * h[info.partner]
        torch.testing.assert_close(logits, model.head(h.mean(dim=(2, 3))))
        assert _hooks(model) == 0  # fired once and removed
        torch.testing.assert_close(model(x), model(x))
    assert layers_seen == {"input", "layer1", "layer2"}
    with pytest.raises(ValueError, match="model"):
        mixer(x, y)


# ---- Puzzle Mix -----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 3), w=st.integers(1, 3), n_labels=st.integers(2, 4), seed=st.integers(0, 2**31)
)
def test_grid_labelling_is_exact_against_brute_force(h, w, n_labels, seed):
    if n_labels ** (h * w) > 6561:
        n_labels = 2
    g = gen(seed)
    unary = torch.randint(0, 60, (2, h, w, n_labels), generator=g)
    cost_v = torch.randint(0, 25, (2, h - 1, w), generator=g)
    cost_h = torch.randint(0, 25, (2, h, w - 1), generator=g)
    labels = solve_grid_labels(unary, cost_v, cost_h)
    assert labels.shape == (2, h, w) and labels.min() >= 0 and labels.max() < n_labels
    energy = grid_labels_energy(unary, cost_v, cost_h, labels)
    every = torch.tensor(list(itertools.product(range(n_labels), repeat=h * w))).view(-1, h, w)
    for r in range(2):
        e = grid_labels_energy(
            unary[r : r + 1].expand(len(every), -1, -1, -1),
            cost_v[r : r + 1].expand(len(every), -1, -1),
            cost_h[r : r + 1].expand(len(every), -1, -1),
            every,
        )
        assert energy[r] == e.min()


@pytest.mark.parametrize(("n_labels", "h", "w"), [(3, 2, 3), (4, 2, 2), (3, 1, 5)])
def test_grid_labelling_is_exact_on_many_multilabel_grids(n_labels, h, w):
    # one max-flow for 300 grids; multi-label jumps (|l_p − l_q| ≥ 2) must be priced (Δl)²
    n = 300
    g = gen(n_labels * 100 + h * 10 + w)
    unary = torch.randint(0, 60, (n, h, w, n_labels), generator=g)
    cost_v = torch.randint(0, 25, (n, h - 1, w), generator=g)
    cost_h = torch.randint(0, 25, (n, h, w - 1), generator=g)
    energy = grid_labels_energy(unary, cost_v, cost_h, solve_grid_labels(unary, cost_v, cost_h))
    every = torch.tensor(list(itertools.product(range(n_labels), repeat=h * w))).view(-1, h, w)
    m = every.shape[0]
    brute = grid_labels_energy(
        unary.repeat_interleave(m, 0),
        cost_v.repeat_interleave(m, 0),
        cost_h.repeat_interleave(m, 0),
        every.repeat(n, 1, 1),
    ).view(n, m)
    assert torch.equal(energy, brute.min(dim=1).values)


def test_exact_transport_is_the_optimal_assignment():
    g = gen(26)
    visible = (torch.rand(5, 2, 2, generator=g) > 0.5).float()
    sal = torch.rand(5, 2, 2, generator=g)
    plan = transport_blocks(visible, sal, eps=0.3)
    d = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 1], [2, 1, 1, 0]], dtype=torch.float)
    for r in range(5):
        cost = 0.3 * d - sal[r].reshape(-1, 1) * visible[r].reshape(1, -1)

        def total(src_of, cost=cost):
            return float(sum(cost[s, j] for j, s in enumerate(src_of)))

        best = min(total(p) for p in itertools.permutations(range(4)))
        assert sorted(plan[r].tolist()) == [0, 1, 2, 3]
        assert total(plan[r].tolist()) == pytest.approx(best, abs=1e-6)


def test_greedy_transport_moves_each_block_at_most_once():
    g = gen(31)
    visible = (torch.rand(6, 4, 4, generator=g) > 0.4).float()
    sal = torch.rand(6, 4, 4, generator=g)
    plan = transport_blocks(visible, sal, eps=0.8, solver="greedy")
    assert plan.shape == (6, 16) and plan.min() >= -1 and plan.max() < 16
    for row in plan.tolist():
        moved = [s for s in row if s >= 0]
        assert len(moved) == len(set(moved)) and len(moved) >= 8


def _is_block_permutation(moved, original, m):
    c, height, width = original.shape
    bh, bw = height // m, width // m

    def blocks(t):
        return t.reshape(c, m, bh, m, bw).permute(1, 3, 0, 2, 4).reshape(m * m, -1)

    a, b = blocks(moved), blocks(original)
    match = (a[:, None, :] == b[None, :, :]).all(-1)
    return bool(match.any(1).all()) and bool(match.any(0).all())


@pytest.mark.parametrize("n_labels", [2, 3])
@pytest.mark.parametrize("block_num", [2, 4, 8])
def test_puzzlemix_mask_respects_blocks_and_labels_match_transported_content(n_labels, block_num):
    g = gen(27)
    x = torch.rand(4, 3, 32, 32, generator=g)
    p = x.roll(1, 0)
    sal = torch.rand(4, 32, 32, generator=g)
    lam = torch.rand(4, generator=g)
    res = puzzle_mix(
        x, p, sal, sal.roll(1, 0), lam, block_num=block_num, n_labels=n_labels, t_size=4
    )
    bs = 32 // block_num
    blocks = res.masks.reshape(4, block_num, bs, block_num, bs)
    assert torch.equal(blocks.amax(dim=(2, 4)), blocks.amin(dim=(2, 4)))  # constant per block
    allowed = torch.linspace(0, 1, n_labels)
    assert torch.isin(res.masks, allowed).all()
    torch.testing.assert_close(res.lam, res.masks.mean(dim=(1, 2, 3)))
    torch.testing.assert_close(res.images, res.masks * res.own + (1 - res.masks) * res.partner)
    m = 8  # t_size = 4 on 32×32 images: 8×8 transport blocks whatever block_num
    for k in range(4):
        assert _is_block_permutation(res.own[k], x[k], m)
        assert _is_block_permutation(res.partner[k], p[k], m)
    if n_labels == 2:  # binary: the label is the share of the row's own (transported) pixels
        own_px = (res.images == res.own).all(1).float().mean(dim=(1, 2))
        torch.testing.assert_close(own_px, res.lam)


def test_puzzlemix_keeps_each_images_salient_region():
    x = torch.rand(2, 3, 16, 16, generator=gen(28))
    own_sal = torch.zeros(2, 16, 16)
    own_sal[:, :8, :8] = 1.0  # own image salient top-left
    partner_sal = torch.zeros(2, 16, 16)
    partner_sal[:, 8:, 8:] = 1.0  # partner salient bottom-right
    res = puzzle_mix(
        x,
        x.flip(0),
        own_sal,
        partner_sal,
        torch.full((2,), 0.5),
        block_num=4,
        transport=False,
        n_labels=2,
    )
    assert (res.masks[:, 0, :8, :8] == 1).all() and (res.masks[:, 0, 8:, 8:] == 0).all()


def test_input_gradient_saliency_touches_neither_weights_nor_mode():
    torch.manual_seed(2)
    model = Tiny().train()
    x = torch.randn(4, 2, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    sal = input_gradient_saliency(model, x, y)
    assert sal.shape == (4, 8, 8) and (sal >= 0).all()
    assert model.training and all(p.grad is None for p in model.parameters())
    xr = x.clone().requires_grad_(True)
    model.eval()
    F.cross_entropy(model(xr), y).backward()
    torch.testing.assert_close(sal, xr.grad.square().mean(1).sqrt())


def test_puzzlemix_by_name_in_mixer():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )
    x = torch.rand(6, 3, 16, 16, generator=gen(29))
    y = torch.arange(6) % 5
    mixer = unimix.Mixer("puzzlemix", mode="elem", num_classes=5, generator=gen(30))
    out, targets, info = mixer(x, y, model=model, batch_labels=y, return_info=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert ((info.lam_effective >= 0) & (info.lam_effective <= 1)).all()
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    with pytest.raises(ValueError, match="model"):
        mixer(x, y)
    # the Mixer hands the batch's labels to the method itself
    again = unimix.Mixer("puzzlemix", mode="elem", num_classes=5, generator=gen(30))
    out2, targets2 = again(x, y, model=model)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(targets2, targets)
    with pytest.raises(ValueError, match="divides"):
        unimix.Mixer("puzzlemix", num_classes=5, block_num=[3])(x, y, model=model, batch_labels=y)
