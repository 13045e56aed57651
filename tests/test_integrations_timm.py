"""unimix.compat.FastCollateMixup driven by timm's own loader (create_loader + PrefetchLoader)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

timm_data = pytest.importorskip("timm.data")
PIL_Image = pytest.importorskip("PIL.Image")

from unimix.compat import FastCollateMixup  # noqa: E402

K = 4
# One RGB colour per class: a sample's image is its class colour everywhere, so the mean of a
# mixed image is λ̄ c_a + (1 − λ̄) c_b, which the targets must reproduce as targets @ colours.
COLOURS = np.array([[10, 200, 30], [250, 5, 120], [60, 60, 60], [180, 90, 240]], dtype=np.float64)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
SIZE = 16


class ClassColours(torch.utils.data.Dataset):
    """PIL images of one colour per class; timm's create_loader sets ``transform``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.transform = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        k = i % K
        image = PIL_Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in COLOURS[k]))
        return (self.transform(image) if self.transform is not None else image), k


def make_loader(collate, num_workers: int = 0, batch_size: int = 8, n: int = 32):
    return timm_data.create_loader(
        ClassColours(n),
        input_size=(3, SIZE, SIZE),
        batch_size=batch_size,
        is_training=True,
        no_aug=True,  # resize + centre crop only: a one-colour image stays one colour
        use_prefetcher=True,
        mean=MEAN,
        std=STD,
        num_workers=num_workers,
        collate_fn=collate,
        device=torch.device("cpu"),
    )


def pixel_levels(images: torch.Tensor) -> torch.Tensor:
    """Undo PrefetchLoader's normalisation: back to the uint8 levels the collate function made."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return images.double() * std.double() + mean.double()


def check_batch(images: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> None:
    levels = pixel_levels(images)
    # uint8 collation: every pixel is a whole level in [0, 255]
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert levels.min() > -1e-3 and levels.max() < 255 + 1e-3
    assert targets.shape == (images.shape[0], K) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(images.shape[0]))
    # label/mask consistency: unsmoothed targets weigh the class colours as the pixels do
    plain = (targets.double() - smoothing / K) / (1 - smoothing)
    expected = plain @ torch.from_numpy(COLOURS)  # [B, 3]
    got = levels.mean(dim=(2, 3))
    assert (got - expected).abs().max() <= 0.5 + 1e-3  # blends are rounded to whole levels


def test_is_a_timm_fast_collate_mixup_and_prefetch_loader_switches_it():
    collate = FastCollateMixup(mixup_alpha=1.0, cutmix_alpha=1.0, cutmix_mode="hmix", num_classes=K)
    assert isinstance(collate, timm_data.FastCollateMixup)
    loader = make_loader(collate)
    assert isinstance(loader, timm_data.loader.PrefetchLoader)
    assert loader.mixup_enabled is True
    loader.mixup_enabled = False  # what timm's train.py does at --mixup-off-epoch
    assert collate.mixup_enabled is False
    assert loader.mixup_enabled is False


@pytest.mark.parametrize(
    ("cutmix_mode", "mode"),
    [("bbox", "batch"), ("hmix", "elem"), ("gmix", "pair"), ("gmix", "batch"), ("hmix", "half")],
)
def test_create_loader_mixing_epoch_then_off_epoch(cutmix_mode: str, mode: str):
    collate = FastCollateMixup(
        mixup_alpha=1.0, cutmix_alpha=1.0, cutmix_mode=cutmix_mode, mode=mode,
        label_smoothing=0.0, num_classes=K, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    loader = make_loader(collate)
    rows = 4 if mode == "half" else 8
    mixed_rows = 0
    for images, targets in loader:  # epoch 1: mixing
        assert images.shape == (rows, 3, SIZE, SIZE) and images.dtype == torch.float32
        check_batch(images, targets)
        mixed_rows += int((targets.max(1).values < 1 - 1e-6).sum())
    assert mixed_rows > 0

    loader.mixup_enabled = False
    for images, targets in loader:  # epoch 2: no mixing — one-hot targets, untouched images
        assert images.shape == (rows, 3, SIZE, SIZE)
        check_batch(images, targets)
        assert set(targets.unique().tolist()) <= {0.0, 1.0}
        colours = torch.from_numpy(COLOURS)[targets.argmax(1)]
        levels = pixel_levels(images)
        assert (levels - colours[:, :, None, None]).abs().max() < 1e-3


def test_off_epoch_targets_are_timms_own():
    # With mixing off, timm's FastCollateMixup gives the smoothed one-hot targets: ours must match.
    samples = [(np.full((3, SIZE, SIZE), COLOURS[i % K, 0], np.uint8), i % K) for i in range(6)]
    ours = FastCollateMixup(label_smoothing=0.1, num_classes=K)
    theirs = timm_data.FastCollateMixup(label_smoothing=0.1, num_classes=K)
    ours.mixup_enabled = theirs.mixup_enabled = False
    (x1, y1), (x2, y2) = ours(samples), theirs(samples)
    assert x1.dtype == x2.dtype == torch.uint8
    assert torch.equal(x1, x2)
    torch.testing.assert_close(y1, y2)


def test_persistent_worker_sees_mixup_off():
    # timm's create_loader keeps its workers between epochs: the switch must still reach them.
    collate = FastCollateMixup(mixup_alpha=1.0, num_classes=K, label_smoothing=0.0)
    loader = make_loader(collate, num_workers=1, n=16)
    assert loader.loader.persistent_workers
    assert any((t.max(1).values < 1 - 1e-6).any() for _, t in loader)
    loader.mixup_enabled = False
    for images, targets in loader:
        check_batch(images, targets)
        assert set(targets.unique().tolist()) <= {0.0, 1.0}


@settings(max_examples=25, deadline=None)
@given(
    cutmix_mode=st.sampled_from(["bbox", "hmix", "gmix"]),
    mode=st.sampled_from(["batch", "pair", "elem", "half"]),
    batch=st.sampled_from([2, 4, 6]),
    height=st.integers(3, 12),
    width=st.integers(3, 12),
    switch_prob=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_collate_labels_match_pixels(cutmix_mode, mode, batch, height, width, switch_prob, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, batch)
    samples = [
        (
            np.broadcast_to(COLOURS[k].astype(np.uint8)[:, None, None], (3, height, width)).copy(),
            int(k),
        )
        for k in labels
    ]
    collate = FastCollateMixup(
        mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob, cutmix_mode=cutmix_mode,
        mode=mode, label_smoothing=0.0, num_classes=K,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    images, targets = collate(samples)
    rows = batch // 2 if mode == "half" else batch
    assert images.dtype == torch.uint8 and images.shape == (rows, 3, height, width)
    expected = targets.double() @ torch.from_numpy(COLOURS)
    assert (images.double().mean(dim=(2, 3)) - expected).abs().max() <= 0.5 + 1e-6
    # a row's targets sit on its own class and its flip partner's
    partner = labels[::-1][:rows]
    support = targets > 1e-7
    allowed = torch.zeros(rows, K, dtype=torch.bool)
    allowed[torch.arange(rows), torch.from_numpy(labels[:rows])] = True
    allowed[torch.arange(rows), torch.from_numpy(partner.copy())] = True
    assert not (support & ~allowed).any()


def test_settings_are_fixed_and_bad_input_is_named():
    collate = FastCollateMixup(num_classes=K)
    assert collate.num_classes == K and collate.label_smoothing == 0.1 and collate.mode == "batch"
    with pytest.raises(AttributeError, match="mixup_enabled"):
        collate.num_classes = 10
    with pytest.raises(ValueError, match="mode"):
        FastCollateMixup(mode="halves")
    with pytest.raises(ValueError, match="cutmix_mode"):
        FastCollateMixup(cutmix_alpha=1.0, cutmix_mode="box")
    with pytest.raises(TypeError, match="uint8"):
        collate([(torch.zeros(3, 4, 4), 0), (torch.zeros(3, 4, 4), 1)])
    with pytest.raises(ValueError, match="even batch"):
        FastCollateMixup(mode="pair", num_classes=K)([(np.zeros((3, 4, 4), np.uint8), 0)] * 3)


def test_pickles_with_its_switch():
    collate = FastCollateMixup(cutmix_alpha=1.0, cutmix_mode="gmix", num_classes=K)
    collate.mixup_enabled = False
    copy = pickle.loads(pickle.dumps(collate))
    assert copy.mixup_enabled is False and copy.cutmix_mode == "gmix"
    assert "FastCollateMixup(" in repr(copy) and "gmix" in repr(copy)


def test_benchmark_script_runs(capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fast_collate.py"
    spec = importlib.util.spec_from_file_location("bench_fast_collate", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for layout in ("chw", "hwc"):  # (--allocator default: leave this process's malloc alone)
        args = ["--batch", "4", "--size", "8", "--classes", "10", "--rounds", "1"]
        assert module.main([*args, "--layout", layout, "--allocator", "default"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert f"{layout}, uint8" in lines[0] and "allocator: glibc default" in lines[0]
        rows = [line.split() for line in lines[2:] if line.split()[0] in module.MODES]
        assert len(rows) == 16  # batch, pair, elem, half x mixup, cutmix, hmix, gmix
        assert lines[1].split()[-3:] == ["ms", "unimix/floor", "faults"]
        assert all(float(row[-2]) > 0 for row in rows)  # unimix's time as a multiple of the floor
        assert all(int(row[-1]) >= 0 for row in rows)  # page faults of unimix's fastest round
