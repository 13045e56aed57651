"""Bad data files (issue 11, "Data files"): a corrupt image is reported with its path (during an
epoch, and up front with ``--check-data``), and an archive member is size-checked before it is
read, so a size bomb is refused without filling memory."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("torchvision")

from PIL import Image  # noqa: E402

from unimix.cli import main  # noqa: E402
from unimix.data import build_dataset, make_loader  # noqa: E402
from unimix.data.base import DatasetFormatError, check_dataset  # noqa: E402
from unimix.data.cifar import CIFAR_LAYOUTS, MAX_MEMBER_BYTES, read_cifar  # noqa: E402
from unimix.data.imagefolder import load_image  # noqa: E402


def write_tree(root: Path, per_class: int = 3, size: int = 12) -> list[Path]:
    """A small ImageFolder tree (two classes, PNG); returns the image paths."""
    rng = np.random.default_rng(0)
    paths = []
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                path = folder / f"{i}.png"
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
                paths.append(path)
    return paths


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- images -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_load_image_names_a_truncated_file(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    arr = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    good = load_image(path)
    assert good.mode == "RGB" and good.size == (32, 32)
    truncate(path)
    with pytest.raises(DatasetFormatError, match=f"cannot read image '{path}'"):
        load_image(path)


def test_load_image_names_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(DatasetFormatError, match="notes.png"):
        load_image(path)
    with pytest.raises(DatasetFormatError, match="gone.png"):
        load_image(tmp_path / "gone.png")


def test_a_corrupt_image_mid_epoch_is_named_by_the_dataset_and_the_loader(tmp_path):
    paths = write_tree(tmp_path)
    spec = build_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    bad = truncate(paths[4])  # train/dog/1.png
    index = [str(p) for p, _ in spec.train.samples].index(str(bad))
    assert spec.train[0][0].shape == (3, 8, 8)  # the others still load
    with pytest.raises(DatasetFormatError, match=str(bad)):
        spec.train[index]
    for workers in (0, 1):
        loader = make_loader(spec.train, 2, shuffle=False, num_workers=workers)
        with pytest.raises(Exception, match=str(bad)) as info:
            list(loader)
        assert isinstance(info.value, DatasetFormatError) or "DatasetFormatError" in str(info.value)


def test_check_dataset_reads_every_file_and_lists_the_bad_ones(tmp_path):
    paths = write_tree(tmp_path, per_class=4)
    spec = build_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    assert check_dataset(spec, workers=2) == len(paths)
    bad = [truncate(paths[1]), truncate(paths[9])]  # one in train, one in val
    (paths[6]).write_bytes(b"")  # empty file
    bad.append(paths[6])
    with pytest.raises(DatasetFormatError) as info:
        check_dataset(spec, workers=2)
    message = str(info.value)
    assert message.startswith(f"3 of {len(paths)} images cannot be read")
    for path in bad:
        assert f"'{path}'" in message
    with pytest.raises(DatasetFormatError, match=r"and 2 more"):
        check_dataset(spec, max_listed=1)


def test_check_dataset_counts_in_memory_sets():
    images = torch.zeros(5, 1, 4, 4)
    from unimix.data.base import DataSpec, TensorImageDataset

    ds = TensorImageDataset(images, torch.zeros(5), (0.5,), (0.5,))
    spec = DataSpec(ds, ds, 2, 1, (4, 4), (0.5,), (0.5,), "toy")
    assert check_dataset(spec) == 10


def _train(tmp_path, *extra):
    data = tmp_path / "tree"
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--model", "small_cnn"]
    args += ["--image-size", "8", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    return main([*args, "--no-tensorboard", "--out", str(tmp_path / "run"), *extra])


def test_train_names_the_bad_file_in_one_line(tmp_path, capsys):
    paths = write_tree(tmp_path / "tree")
    bad = truncate(paths[2])
    assert _train(tmp_path, "--num-workers", "0") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("unimix train: error: cannot read image")
    assert str(bad) in err[0]
    assert not (tmp_path / "run").exists()  # no half-made run


def test_check_data_finds_bad_files_before_training(tmp_path, capsys):
    paths = write_tree(tmp_path / "tree")
    bad = [truncate(paths[0]), truncate(paths[7])]
    assert _train(tmp_path, "--check-data") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("unimix train: error: 2 of 12 images")
    assert all(str(p) in err[0] for p in bad)
    assert not (tmp_path / "run").exists()  # found before anything was written


# -- archives -----------------------------------------------------------------------------------
def _batch(n: int, label_key: bytes) -> bytes:
    rng = np.random.default_rng(0)
    data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [0] * n}
    return pickle.dumps(data, protocol=2)


def write_cifar_tar(path: Path, sizes: dict[str, int] | None = None) -> Path:
    """A tiny CIFAR-10 archive; ``sizes`` pads named members to that many bytes (a bomb)."""
    layout = CIFAR_LAYOUTS["cifar10"]
    with tarfile.open(path, "w:gz") as tar:
        for name in (*layout.train, *layout.test, layout.meta):
            if name == layout.meta:
                payload = pickle.dumps({layout.names_key: [b"c"] * 10}, protocol=2)
            else:
                payload = _batch(2, layout.label_key)
            if sizes and name in sizes:
                payload = payload + b"\0" * (sizes[name] - len(payload))
            info = tarfile.TarInfo(f"{layout.folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_a_normal_archive_reads_under_the_limit(tmp_path):
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz")
    (train_x, _), (test_x, _), classes = read_cifar("cifar10", archive, max_member_bytes=64_000)
    assert train_x.shape == (10, 3, 32, 32) and test_x.shape == (2, 3, 32, 32)
    assert len(classes) == 10
    assert MAX_MEMBER_BYTES >= 200 * 1024 * 1024  # the real CIFAR-100 train file (155 MB) fits


def test_a_size_bomb_member_is_refused_before_it_is_read(tmp_path, monkeypatch):
    archive = write_cifar_tar(tmp_path / "bomb.tar.gz", sizes={"data_batch_3": 3_000_000})
    assert archive.stat().st_size < 100_000  # compresses to almost nothing
    opened = []
    real = tarfile.TarFile.extractfile

    def spy(self, member):
        opened.append(member.name if isinstance(member, tarfile.TarInfo) else member)
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    with pytest.raises(DatasetFormatError) as info:
        read_cifar("cifar10", archive, max_member_bytes=1_000_000)
    message = str(info.value)
    assert "cifar-10-batches-py/data_batch_3" in message and "3000000 bytes" in message
    assert "1000000" in message
    assert not any(name.endswith("data_batch_3") for name in opened)  # never opened


def test_the_limit_is_configurable_by_environment(tmp_path, monkeypatch):
    archive = write_cifar_tar(tmp_path / "a.tar.gz")
    monkeypatch.setenv("UNIMIX_MAX_MEMBER_BYTES", "1000")
    with pytest.raises(DatasetFormatError, match="over the limit of 1000 bytes"):
        read_cifar("cifar10", archive)
    monkeypatch.setenv("UNIMIX_MAX_MEMBER_BYTES", "lots")
    with pytest.raises(ValueError, match="UNIMIX_MAX_MEMBER_BYTES"):
        read_cifar("cifar10", archive)
    monkeypatch.delenv("UNIMIX_MAX_MEMBER_BYTES")
    with pytest.raises(ValueError, match="max_member_bytes"):
        read_cifar("cifar10", archive, max_member_bytes=0)


def test_a_huge_file_in_a_folder_is_refused_before_it_is_read(tmp_path, monkeypatch):
    layout = CIFAR_LAYOUTS["cifar10"]
    folder = tmp_path / layout.folder
    folder.mkdir()
    for name in (*layout.train, *layout.test):
        (folder / name).write_bytes(_batch(2, layout.label_key))
    big = folder / "data_batch_2"
    with open(big, "ab") as fh:  # a sparse 2 GB file: nothing is really written
        fh.truncate(2 * 1024**3)
    read = []
    real = Path.read_bytes

    def spy(self):
        read.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    with pytest.raises(DatasetFormatError, match=r"data_batch_2' is 2147483648 bytes"):
        read_cifar("cifar10", tmp_path)
    assert "data_batch_2" not in read


def test_the_cli_reports_a_bomb_in_one_line(tmp_path, capsys, monkeypatch):
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", sizes={"test_batch": 50_000})
    monkeypatch.setenv("UNIMIX_MAX_MEMBER_BYTES", "40000")
    code = main(
        ["train", "--dataset", "cifar10", "--data-dir", str(archive), "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "test_batch" in err[0] and "50000 bytes" in err[0]
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz"]
