"""unimix.data: formats (digits, CIFAR pickles, ImageFolder), transforms, errors and loaders."""

from __future__ import annotations

import os
import pickle
import random
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils.data import Dataset, DistributedSampler

from unimix.data import (
    DatasetFormatError,
    DataSpec,
    InMemoryLoader,
    TensorImageDataset,
    WorkerLoader,
    available_datasets,
    build_dataset,
    derive_seed,
    make_loader,
)
from unimix.data.cifar import CIFAR_LAYOUTS
from unimix.data.digits import load_digits_images
from unimix.data.transforms import RandomShiftFlip, random_shift_flip


# ------------------------------------------------------------------------------------------------
# helpers
def _shift_reference(x: torch.Tensor, dy: int, dx: int, flip: bool, fill: float) -> torch.Tensor:
    """One image [C, H, W] cropped at offset (dy, dx) of its s-padded copy, then mirrored."""
    c, h, w = x.shape
    s = max(abs(dy), abs(dx), 1)
    padded = F.pad(x, (s, s, s, s), value=fill)
    out = padded[:, s + dy : s + dy + h, s + dx : s + dx + w]
    return out.flip(-1) if flip else out


def _explain(aug: torch.Tensor, orig: torch.Tensor, s: int, flips: bool, fill: float):
    """All (dy, dx, flip) under which ``aug`` is the shifted/flipped ``orig``."""
    found = []
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            for flip in (False, True) if flips else (False,):
                if torch.equal(aug, _shift_reference(orig, dy, dx, flip, fill)):
                    found.append((dy, dx, flip))
    return found


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, label_key: bytes) -> dict:
    return {
        b"batch_label": b"training batch",
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(root: Path, name: str = "cifar10", n_train: int = 4, n_test: int = 3) -> dict:
    """A tiny CIFAR tree in the real python-pickle layout; returns the written dicts."""
    layout = CIFAR_LAYOUTS[name]
    rng = np.random.default_rng(0)
    folder = root / layout.folder
    folder.mkdir(parents=True)
    written = {}
    for f in layout.train + layout.test:
        written[f] = _cifar_batch(
            rng, n_train if f in layout.train else n_test, layout.num_classes, layout.label_key
        )
    names = [f"class_{i}".encode() for i in range(layout.num_classes)]
    written[layout.meta] = {layout.names_key: names, b"num_vis": 3072}
    for f, obj in written.items():
        (folder / f).write_bytes(pickle.dumps(obj, protocol=2))
    return written


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_imagefolder(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits() -> DataSpec:
    return build_dataset("digits")


# ------------------------------------------------------------------------------------------------
# transforms
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 3),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    s=st.integers(0, 3),
    flip=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_random_shift_flip_is_a_per_image_crop_of_the_padded_image(n, c, h, w, s, flip, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    out = random_shift_flip(x, s, flip, generator=torch.Generator().manual_seed(seed), fill=-7.0)
    assert out.shape == x.shape and out.is_contiguous()
    for k in range(n):
        assert _explain(out[k], x[k], s, flip, -7.0), "output is no shift/flip of its input"


def test_random_shift_flip_offsets_and_flips_are_uniform_and_per_image():
    n, s, size = 4000, 4, 16
    x = torch.zeros(n, 1, size, size)
    x[:, 0, 8, 8], x[:, 0, 8, 9] = 1.0, 2.0  # an asymmetric marker: reveals offset and flip
    out = random_shift_flip(x, s, flip=True, generator=torch.Generator().manual_seed(0))
    pos1 = (out[:, 0] == 1.0).flatten(1).float().argmax(1)
    pos2 = (out[:, 0] == 2.0).flatten(1).float().argmax(1)
    rows, cols1, cols2 = pos1 // size, pos1 % size, pos2 % size
    flipped = cols2 < cols1
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    dy = 8 - rows  # crop offset relative to the unpadded image, in [-s, s]
    dx = torch.where(flipped, cols1 - (size - 1 - 8), 8 - cols1)
    assert dy.abs().max() <= s and dx.abs().max() <= s
    counts = Counter(zip(dy.tolist(), dx.tolist(), strict=True))
    assert len(counts) == (2 * s + 1) ** 2
    observed = np.array(list(counts.values()))
    assert stats.chisquare(observed).pvalue > 1e-3


def test_random_shift_flip_reproducible_and_generator_driven():
    x = torch.randn(64, 3, 8, 8)
    aug = RandomShiftFlip(2, flip=True)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(random_shift_flip(x, 0), x)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShiftFlip(-1)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        random_shift_flip(torch.zeros(3, 8, 8), 1)


# ------------------------------------------------------------------------------------------------
# digits
def test_digits_spec_items_and_normalisation(digits):
    assert isinstance(digits, DataSpec)
    assert (digits.name, digits.num_classes, digits.in_chans) == ("digits", 10, 1)
    assert digits.image_size == (32, 32)
    assert len(digits.train) + len(digits.test) == 1797 and len(digits.test) == 360
    image, label = digits.test[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    x, y = digits.train_tensors()
    assert x.shape == (1437, 1, 32, 32) and y.shape == (1437,)
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1.0) < 1e-4
    tx, ty = digits.test_tensors()
    assert torch.equal(digits.test[5][0], tx[5]) and digits.test[5][1] == ty[5].item()
    low, high = digits.pixel_bounds()
    assert torch.allclose(digits.denormalize(x).amin(), torch.tensor(0.0), atol=1e-5)
    assert x.amin() >= low.squeeze() - 1e-5 and x.amax() <= high.squeeze() + 1e-5


def test_digits_native_size_is_the_raw_images_of_the_split():
    spec = build_dataset("digits", image_size=8, split_seed=3)
    raw, labels = load_digits_images()
    train_idx, test_idx = spec.info["train_indices"], spec.info["test_indices"]
    assert sorted(train_idx + test_idx) == list(range(1797))
    x, y = spec.train_tensors()
    assert torch.allclose(spec.denormalize(x), raw[list(train_idx)], atol=1e-5)
    assert torch.equal(y, labels[list(train_idx)])
    x, y = spec.test_tensors()
    assert torch.allclose(spec.denormalize(x), raw[list(test_idx)], atol=1e-5)


def test_digits_split_is_stratified_fixed_and_seeded():
    a = build_dataset("digits", image_size=8, split_seed=0)
    b = build_dataset("digits", image_size=8, split_seed=0)
    c = build_dataset("digits", image_size=8, split_seed=1)
    assert a.info["test_indices"] == b.info["test_indices"]
    assert a.info["test_indices"] != c.info["test_indices"]
    assert torch.equal(a.test_tensors()[0], b.test_tensors()[0])
    _, labels = load_digits_images()
    total = Counter(labels.tolist())
    test = Counter(a.test_tensors()[1].tolist())
    for k in range(10):
        assert abs(test[k] - 0.2 * total[k]) <= 1, (k, test[k], total[k])
    half = build_dataset("digits", image_size=8, test_size=0.5)
    assert len(half.test) in (898, 899)


def test_digits_upsampling_is_bilinear_without_antialiasing():
    native = build_dataset("digits", image_size=8, train_augment=False)
    big = build_dataset("digits", image_size=(16, 24), train_augment=False)
    assert big.image_size == (16, 24) and big.test[0][0].shape == (1, 16, 24)
    raw8 = native.denormalize(native.test_tensors()[0])
    raw = big.denormalize(big.test_tensors()[0])
    # bilinear (half-pixel centres) by a factor 2 vertically: output rows 1 and 2 are 3/4, 1/4
    # and 1/4, 3/4 blends of input rows 0 and 1; factor 3 horizontally: output column 4 is the
    # centre of input column 1 exactly
    assert torch.allclose(
        raw[..., 1, 4], 0.75 * raw8[..., 0, 1] + 0.25 * raw8[..., 1, 1], atol=1e-5
    )
    assert torch.allclose(
        raw[..., 2, 4], 0.25 * raw8[..., 0, 1] + 0.75 * raw8[..., 1, 1], atol=1e-5
    )


def test_digits_training_augmentation_is_a_small_translation(digits):
    x, _ = digits.train_tensors()
    fill = digits.normalize(torch.zeros(1, 1, 1)).item()
    loader = make_loader(digits.train, 64, shuffle=False, seed=0)
    aug, _ = next(iter(loader))
    assert not torch.equal(aug, x[:64])
    for k in range(16):
        moves = _explain(aug[k], x[k], 2, False, fill)
        assert moves, f"image {k} is not a translation by at most 2 pixels"
    assert digits.info["max_shift"] == 2
    assert build_dataset("digits", image_size=8).info["max_shift"] == 1
    plain = build_dataset("digits", train_augment=False)
    batch, _ = next(iter(make_loader(plain.train, 64, shuffle=False, seed=0)))
    assert torch.equal(batch, plain.train_tensors()[0][:64])


# ------------------------------------------------------------------------------------------------
# CIFAR
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_the_real_pickle_layout(tmp_path, name):
    written = write_cifar(tmp_path, name)
    layout = CIFAR_LAYOUTS[name]
    spec = build_dataset(name, data_dir=tmp_path, train_augment=False)
    assert (spec.num_classes, spec.in_chans, spec.image_size) == (layout.num_classes, 3, (32, 32))
    assert len(spec.train) == 4 * len(layout.train) and len(spec.test) == 3
    assert spec.classes[:2] == ("class_0", "class_1") and len(spec.classes) == layout.num_classes
    batch = written[layout.test[0]]
    raw = torch.from_numpy(batch[b"data"]).float().div(255).view(-1, 3, 32, 32)
    x, y = spec.test_tensors()
    assert torch.allclose(spec.denormalize(x), raw, atol=1e-5)
    assert y.tolist() == batch[layout.label_key]
    # the channel planes are R, G, B in row-major order
    assert x[1, 2, 0, 5].item() == pytest.approx(
        (batch[b"data"][1, 2048 + 5] / 255 - layout.mean[2]) / layout.std[2], abs=1e-5
    )
    first = written[layout.train[0]]
    assert spec.train_tensors()[1][:4].tolist() == first[layout.label_key]


def test_cifar_accepts_folder_parent_archive_and_archive_parent(tmp_path):
    write_cifar(tmp_path / "extracted")
    folder = tmp_path / "extracted" / "cifar-10-batches-py"
    (tmp_path / "dl").mkdir()
    archive = tar_folder(folder, tmp_path / "dl" / "cifar-10-python.tar.gz")
    ref = build_dataset("cifar10", data_dir=folder).test_tensors()
    for where in (tmp_path / "extracted", archive, tmp_path / "dl", str(archive)):
        got = build_dataset("cifar10", data_dir=where).test_tensors()
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_cifar_training_transform_is_crop_with_padding_and_flip(tmp_path):
    write_cifar(tmp_path, n_train=40)
    spec = build_dataset("cifar10", data_dir=tmp_path)
    plain = spec.train.tensors()[0]
    fill = spec.normalize(torch.zeros(3, 1, 1))
    loader = make_loader(spec.train, 100, shuffle=False, seed=1)
    aug, _ = next(iter(loader))
    flips, shifts = 0, set()
    for k in range(len(aug)):
        # pad with each channel's normalised black: compare in pixel space instead
        moves = _explain(spec.denormalize(aug[k]), spec.denormalize(plain[k]), 4, True, 0.0)
        assert moves, f"image {k} is no crop-with-padding-4 and flip of its original"
        flips += moves[0][2]
        shifts.add(moves[0][:2])
    assert 25 < flips < 75 and len(shifts) > 20
    assert torch.allclose(aug.amin(dim=(0, 2, 3)), fill.view(3), atol=1e-4)
    big = build_dataset("cifar10", data_dir=tmp_path, image_size=48)
    assert big.train[0][0].shape == (3, 48, 48) and big.image_size == (48, 48)


def test_cifar_missing_or_malformed_data_names_path_and_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*cifar-10-batches-py.*data_batch_1"):
        build_dataset("cifar10", data_dir=missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*cifar-100-python"):
        build_dataset("cifar100", data_dir=tmp_path / "empty")
    write_cifar(tmp_path / "partial")
    (tmp_path / "partial" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetFormatError, match="missing data_batch_3"):
        build_dataset("cifar10", data_dir=tmp_path / "partial")
    not_tar = tmp_path / "file.tar.gz"
    not_tar.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="file.tar.gz.*not a tar archive"):
        build_dataset("cifar10", data_dir=not_tar)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.pop(b"data"), "b'data'"),
        (lambda d: d.update({b"data": d[b"data"][:, :100]}), r"uint8 \[N, 3072\]"),
        (lambda d: d.update({b"labels": [0, 1]}), "integer labels"),
        (lambda d: d.update({b"labels": [0, 1, 2, 10]}), r"labels must lie in \[0, 10\)"),
    ],
)
def test_cifar_malformed_batches_are_rejected(tmp_path, corrupt, message):
    written = write_cifar(tmp_path)
    batch = written["data_batch_2"]
    corrupt(batch)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetFormatError, match=message) as info:
        build_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_2" in str(info.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickles_cannot_run_code(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetFormatError, match="refusing to load.*system"):
        build_dataset("cifar10", data_dir=tmp_path)


# ------------------------------------------------------------------------------------------------
# ImageFolder
def test_imagefolder_tree_with_imagenet_transforms(tmp_path):
    pytest.importorskip("torchvision")
    write_imagefolder(tmp_path)
    spec = build_dataset("imagefolder", data_dir=tmp_path, image_size=24)
    assert (spec.num_classes, spec.in_chans, spec.image_size) == (2, 3, (24, 24))
    assert spec.classes == ("cat", "dog") and len(spec.train) == 6 and len(spec.test) == 6
    assert spec.train_tensors() is None and not spec.in_memory
    x, label = spec.test[4]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and label == 1
    assert torch.equal(spec.test[4][0], x)  # evaluation is deterministic
    pixels = spec.denormalize(x)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    torch.manual_seed(0)
    a = spec.train[0][0]
    torch.manual_seed(0)
    b = spec.train[0][0]
    c = spec.train[0][0]
    assert a.shape == (3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)


def test_imagefolder_test_transform_keeps_aspect_and_crops_the_centre(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    from unimix.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD

    arr = np.zeros((30, 60, 3), dtype=np.uint8)  # red | green | blue stripes, 20 px each
    arr[:, :20, 0], arr[:, 20:40, 1], arr[:, 40:, 2] = 255, 255, 255
    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.fromarray(arr).save(tmp_path / split / "only" / "0.png")
    spec = build_dataset("imagefolder", data_dir=tmp_path, image_size=24)
    x, _ = spec.test[0]
    green = torch.tensor([(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    green[1] = (1 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    is_green = torch.isclose(x, green.view(3, 1, 1), atol=1e-4).all(0).all(0)
    # shorter side 30 -> 27 (24 * 256/224), so 60 -> 54 and the centre 24 columns span original
    # columns 16.7-43.3: about 18 of them green; squashing to 27 x 27 would give about 9
    assert 16 <= int(is_green.sum()) <= 19


def test_imagefolder_errors_name_path_and_layout(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError, match="absent.*train/<class>/<image>"):
        build_dataset("imagefolder", data_dir=tmp_path / "absent")
    write_imagefolder(tmp_path / "a")
    for p in (tmp_path / "a" / "val").rglob("*.png"):
        p.unlink()
    for p in (tmp_path / "a" / "val").iterdir():
        p.rmdir()
    with pytest.raises(DatasetFormatError, match=r"a/val.*ImageNet layout"):
        build_dataset("imagefolder", data_dir=tmp_path / "a")
    write_imagefolder(tmp_path / "b")
    (tmp_path / "b" / "val" / "dog").rename(tmp_path / "b" / "val" / "wolf")
    with pytest.raises(DatasetFormatError, match=r"only in train: \['dog'\].*\['wolf'\]"):
        build_dataset("imagefolder", data_dir=tmp_path / "b")
    (tmp_path / "c" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"c/val"):
        build_dataset("imagefolder", data_dir=tmp_path / "c")


def test_build_dataset_rejects_unknown_names_and_options():
    assert available_datasets() == [
        "digits", "digits_local", "digits_pair", "cifar10", "cifar100", "imagefolder"
    ]
    with pytest.raises(ValueError, match="digits, digits_local, digits_pair, cifar10, cifar100"):
        build_dataset("mnist")
    with pytest.raises(TypeError, match="padding"):
        build_dataset("digits", padding=4)


# ------------------------------------------------------------------------------------------------
# loaders
def _epoch(loader, epoch=None, start=0):
    if epoch is not None:
        loader.set_epoch(epoch, start=start)
    return [tuple(t.clone() for t in batch) for batch in loader]


def test_in_memory_loader_order_is_a_pure_function_of_seed_and_epoch(digits):
    loader = make_loader(digits.train, 100, shuffle=True, seed=7)
    assert isinstance(loader, InMemoryLoader) and len(loader) == 15
    e0, e1 = _epoch(loader), _epoch(loader)  # without set_epoch: epochs 0, 1
    assert loader.epoch == 2
    labels0 = torch.cat([y for _, y in e0])
    assert sorted(labels0.tolist()) == sorted(digits.train_tensors()[1].tolist())
    assert not torch.equal(labels0, torch.cat([y for _, y in e1]))
    other = make_loader(digits.train, 100, shuffle=True, generator=torch.Generator().manual_seed(7))
    again = _epoch(other, 1)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e1, again, strict=True)
    )
    assert (
        _epoch(make_loader(digits.train, 100, shuffle=True, seed=8), 1)[0][1].tolist()
        != e1[0][1].tolist()
    )
    tail = _epoch(loader, 1, start=9)  # resume in the middle of epoch 1
    assert len(tail) == 6
    assert all(torch.equal(a[0], b[0]) for a, b in zip(e1[9:], tail, strict=True))


def test_in_memory_loader_augmentation_differs_across_epochs_not_seeds(digits):
    loader = make_loader(digits.train, 1437, shuffle=False, seed=0, drop_last=True)
    (a, _), (b, _) = _epoch(loader, 0)[0], _epoch(loader, 1)[0]
    (c, _) = _epoch(loader, 0)[0]
    assert torch.equal(a, c) and not torch.equal(a, b)
    assert (a != b).flatten(1).any(1).float().mean() > 0.9  # nearly every image moves anew


def test_loader_drop_last_len_and_argument_checks(digits):
    loader = make_loader(digits.test, 100, shuffle=False, drop_last=True)
    assert len(loader) == 3 and sum(len(y) for _, y in loader) == 300
    assert len(make_loader(digits.test, 100, shuffle=False)) == 4
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(digits.test, 0, shuffle=False)
    with pytest.raises(ValueError, match="shuffle must be False"):
        make_loader(digits.test, 8, shuffle=True, sampler=range(10))
    with pytest.raises(ValueError, match="either as seed or as generator"):
        make_loader(digits.test, 8, shuffle=False, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(-1)
    with pytest.raises(TypeError, match="TensorImageDataset"):
        make_loader(_Noisy(4), 2, shuffle=False, in_memory=True)


class _Noisy(Dataset):
    """Item i is i plus a draw of the global torch RNG and one of python's random."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([float(i), torch.rand(()).item(), random.random()]), i


def test_worker_loader_is_reproducible_and_independent_of_workers():
    data = _Noisy(24)
    runs = {}
    for workers in (0, 2):
        loader = make_loader(data, 5, shuffle=True, num_workers=workers, seed=3)
        assert isinstance(loader, WorkerLoader) and len(loader) == 5
        runs[workers] = [_epoch(loader, 0), _epoch(loader, 1), _epoch(loader, 1, start=2)]
        del loader
    for a, b in zip(runs[0], runs[2], strict=True):
        assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    e0, e1, tail = runs[0]
    x0, x1 = torch.cat([b[0] for b in e0]), torch.cat([b[0] for b in e1])
    assert sorted(x0[:, 0].tolist()) == [float(i) for i in range(24)]
    assert not torch.equal(x0[:, 0], x1[:, 0])  # a new order each epoch
    assert x0[:, 1:].unique().numel() == 48  # no draw repeated across items, workers or RNGs
    assert not set(x0[:, 1].tolist()) & set(x1[:, 1].tolist())  # nor across epochs
    assert all(torch.equal(a[0], b[0]) for a, b in zip(e1[2:], tail, strict=True))


def test_worker_loader_leaves_the_callers_rng_alone():
    loader = make_loader(_Noisy(6), 3, shuffle=True, seed=0)
    torch.manual_seed(123)
    random.seed(123)
    expected = (torch.rand(()).item(), random.random())
    torch.manual_seed(123)
    random.seed(123)
    _epoch(loader)
    assert (torch.rand(()).item(), random.random()) == expected


def test_both_paths_give_the_same_order(digits):
    fast = make_loader(digits.train, 64, shuffle=True, seed=5)
    slow = make_loader(digits.train, 64, shuffle=True, seed=5, in_memory=False)
    for epoch in (0, 3):
        a = torch.cat([y for _, y in _epoch(fast, epoch)])
        b = torch.cat([y for _, y in _epoch(slow, epoch)])
        assert torch.equal(a, b)


def test_collate_fn_gets_items_and_a_seeded_rng(digits):
    seen = []

    def collate(items):
        seen.append(len(items))
        images = torch.stack([im for im, _ in items])
        labels = torch.tensor([lab for _, lab in items])
        assert all(isinstance(lab, int) for _, lab in items)
        return images, labels, torch.rand(())

    for dataset, kw in ((digits.test, {}), (_Noisy(20), {})):
        loader = make_loader(dataset, 8, shuffle=True, seed=0, collate_fn=collate, **kw)
        a = [b[2].item() for b in _epoch(loader, 0)]
        b = [b[2].item() for b in _epoch(loader, 0)]
        c = [b[2].item() for b in _epoch(loader, 1)]
        assert a == b and a != c and len(set(a)) == len(a)
    assert seen[0] == 8


def test_sampler_set_epoch_is_passed_through(digits):
    sampler = DistributedSampler(digits.test, num_replicas=2, rank=1, shuffle=True, seed=4)
    loader = make_loader(digits.test, 50, shuffle=False, sampler=sampler, seed=0)
    assert len(loader) == 4
    labels = torch.cat([y for _, y in _epoch(loader, 3)])
    sampler.set_epoch(3)
    expected = digits.test_tensors()[1][list(sampler)]
    assert torch.equal(labels, expected)
    ranged = make_loader(digits.test, 50, shuffle=False, sampler=range(1, 360, 2))
    assert torch.equal(torch.cat([y for _, y in ranged]), digits.test_tensors()[1][1::2])


def test_derive_seed_separates_streams():
    seeds = {derive_seed(s, e) for s in range(20) for e in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


def test_tensor_dataset_checks_and_device_copy():
    with pytest.raises(ValueError, match="labels must have shape"):
        TensorImageDataset(torch.zeros(3, 1, 4, 4), torch.zeros(2), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="one value per channel"):
        TensorImageDataset(torch.zeros(3, 2, 4, 4), torch.zeros(3), (0.0,), (1.0,))
    ds = TensorImageDataset(
        torch.full((3, 1, 4, 4), 255, dtype=torch.uint8), torch.arange(3), (0.5,), (0.25,)
    )
    assert torch.allclose(ds[2][0], torch.full((1, 4, 4), 2.0)) and ds[2][1] == 2
    assert ds.to("cpu") is ds
    with pytest.raises(IndexError):
        ds[3]
