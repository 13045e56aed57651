"""``unimix.compat.TimmMixup`` where the timm comparison tests did not look (issue 13: survivors
of the mutation run): the settings it keeps, its defaults in use, ``cutmix_minmax`` box sides,
``multi_label`` targets and the input checks."""

from __future__ import annotations

import inspect

import pytest
import torch

from unimix.compat import TimmMixup, mixup_target

timm_mixup = pytest.importorskip("timm.data.mixup")

SETTINGS = [
    {},
    {"cutmix_minmax": (0.3, 0.7), "correct_lam": False, "num_classes": 10},
    {
        "mixup_alpha": 0.4,
        "cutmix_alpha": 1.0,
        "prob": 0.7,
        "switch_prob": 0.3,
        "mode": "elem",
        "label_smoothing": 0.0,
        "num_classes": 5,
        "multi_label": True,
    },
]


@pytest.mark.filterwarnings("ignore:correct_lam=False is ignored")
@pytest.mark.parametrize("kwargs", SETTINGS)
def test_settings_are_kept_as_timm_keeps_them(kwargs):
    """Every attribute timm's Mixup sets from its arguments, TimmMixup has with the same value
    (code reads them, e.g. ``mixup_fn.mixup_alpha`` or ``mixup_fn.cutmix_minmax``)."""
    if not set(kwargs) <= set(inspect.signature(timm_mixup.Mixup).parameters):
        pytest.skip("this timm release lacks one of the settings (multi_label: timm >= 1.0.30)")
    ours, theirs = TimmMixup(**kwargs), timm_mixup.Mixup(**kwargs)
    for name, value in vars(theirs).items():
        assert getattr(ours, name) == value, name


def test_default_timm_mixup_is_mixup_only():
    """timm's defaults (mixup_alpha=1, cutmix_alpha=0): every mask is constant over the image."""
    fn = TimmMixup(num_classes=2, label_smoothing=0.0, generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        x = torch.stack([torch.ones(1, 6, 7), torch.zeros(1, 6, 7)])
        mixed, targets = fn(x, torch.tensor([0, 1]))
        assert torch.all(mixed[0] == mixed[0, 0, 0, 0])  # row 0 is the mask itself: constant
        assert targets[0, 0].item() == pytest.approx(mixed[0, 0, 0, 0].item(), abs=1e-6)


def test_cutmix_minmax_box_sides_lie_in_the_range_given():
    """Box sides uniform in [min, max] of each side (timm's rand_bbox_minmax): measured from the
    pixels pasted, every side lies in the range and both ends of it are reached."""
    lo, hi, h, w, n = 0.3, 0.7, 20, 30, 3000
    fn = TimmMixup(
        mixup_alpha=0.0,
        cutmix_minmax=(lo, hi),
        mode="elem",
        num_classes=2,
        label_smoothing=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    x = torch.arange(float(n)).view(-1, 1, 1, 1).expand(n, 1, h, w).clone()  # rows all differ
    original = x.clone()
    fn(x, torch.zeros(n, dtype=torch.long))
    pasted = (x != original)[:, 0]
    rows = pasted.any(dim=2).sum(dim=1)  # box height in pixels
    cols = pasted.any(dim=1).sum(dim=1)
    keep = rows > 0  # the middle row is its own partner when n is odd; here none is
    assert bool(keep.all())
    assert int(rows.min()) >= int(lo * h) and int(rows.max()) <= int(hi * h)
    assert int(cols.min()) >= int(lo * w) and int(cols.max()) <= int(hi * w)
    assert int(rows.min()) <= int(lo * h) + 1 and int(rows.max()) >= int(hi * h) - 1
    assert int(cols.min()) <= int(lo * w) + 1 and int(cols.max()) >= int(hi * w) - 1


def test_multi_label_targets_are_mixed_as_timm_does():
    fn = TimmMixup(
        mixup_alpha=1.0,
        num_classes=4,
        label_smoothing=0.2,
        multi_label=True,
        generator=torch.Generator().manual_seed(0),
    )
    dense = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    x = torch.stack([torch.full((1, 3, 3), float(k)) for k in range(3)])
    mixed, targets = fn(x, dense)
    lam = mixed[2, 0, 0, 0].item() / 2  # row 2 = λ·2 + (1 − λ)·0 (partner: row 0)
    expect = mixup_target(dense, 4, lam, 0.2, multi_label=True)
    torch.testing.assert_close(targets, expect, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"target tensor should be of shape \[B, num_classes=4\]"):
        fn(x, torch.zeros(3, 5))  # dense targets of the wrong width


@pytest.mark.parametrize(
    "x", [torch.zeros(2, 4, 4), [[0.0]], torch.zeros(2, 1, 1, 4, 4)], ids=["3-D", "list", "5-D"]
)
def test_images_must_be_a_4d_tensor(x):
    fn = TimmMixup(num_classes=3)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        fn(x, torch.tensor([0, 1]))


def test_range_ends_are_accepted_and_bad_types_named():
    """hmix_ratio = 1 (CutMix's box family) and a single class are valid settings."""
    TimmMixup(cutmix_alpha=1.0, cutmix_mode="hmix", hmix_ratio=1.0, num_classes=3)
    TimmMixup(cutmix_alpha=1.0, cutmix_mode="hmix", hmix_ratio=0.0, num_classes=3)
    TimmMixup(num_classes=1)
    with pytest.raises(TypeError, match="hmix_ratio must be a number"):
        TimmMixup(cutmix_alpha=1.0, cutmix_mode="hmix", hmix_ratio="0.5")
    with pytest.raises(ValueError, match="num_classes"):
        TimmMixup(num_classes=0)


class _WorkerInfo:
    def __init__(self, seed: int) -> None:
        self.seed, self.id, self.num_workers = seed, 0, 1


def _batches(collate, worker_seeds, monkeypatch):
    """Collate-and-mix the same samples as if in DataLoader workers with these seeds (in this
    process, so that what a worker does is observable here)."""
    import unimix.collate as collate_module  # where MixCollate looks its worker up

    samples = [(torch.full((1, 6, 6), float(k)), k % 2) for k in range(4)]
    out = []
    for seed in worker_seeds:
        monkeypatch.setattr(collate_module, "get_worker_info", lambda s=seed: _WorkerInfo(s))
        out.append(collate(samples)[0])
    return out


@pytest.mark.parametrize("facade", ["mixer", "timm"])
def test_each_worker_mixes_with_its_own_reproducible_stream(facade, monkeypatch):
    from unimix import Mixer
    from unimix.compat import MixCollate

    def make():
        g = torch.Generator().manual_seed(3)
        if facade == "timm":
            return TimmMixup(cutmix_alpha=1.0, mixup_alpha=0.0, num_classes=2, generator=g), g
        return Mixer("cutmix", num_classes=2, generator=g), g

    mixer, parent = make()
    before = parent.get_state()
    a1, a2, b1 = _batches(MixCollate(mixer), [10, 10, 11], monkeypatch)
    assert torch.equal(parent.get_state(), before)  # the mixer passed in is never advanced
    assert not torch.equal(a1, a2)  # a worker's stream goes on from batch to batch
    again = _batches(MixCollate(make()[0]), [10, 10, 11], monkeypatch)
    assert all(torch.equal(x, y) for x, y in zip((a1, a2, b1), again, strict=True))
    assert not torch.equal(a1, b1)  # another worker (or epoch) seed: another stream
    # a pickled copy (what a worker process receives) starts its stream afresh
    import pickle

    used = MixCollate(make()[0])
    _batches(used, [10], monkeypatch)
    copy = pickle.loads(pickle.dumps(used))
    assert torch.equal(_batches(copy, [10], monkeypatch)[0], a1)


def test_collate_mixes_the_collated_batch_in_place_unless_told():
    """The default mixes the batch ``collate_fn`` returns in place; ``inplace=False`` leaves a
    batch the ``collate_fn`` keeps untouched."""
    from unimix import Mixer
    from unimix.compat import MixCollate

    kept = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 5, 5).clone()
    original = kept.clone()

    def keep(samples):
        return kept, torch.tensor([s[1] for s in samples])

    samples = [(None, k % 2) for k in range(4)]
    mixer = Mixer("mixup", num_classes=2, generator=torch.Generator().manual_seed(0))
    images, _ = MixCollate(mixer, keep, inplace=False)(samples)
    assert torch.equal(kept, original) and not torch.equal(images, original)
    images, _ = MixCollate(mixer, keep)(samples)
    assert images is kept and not torch.equal(kept, original)
