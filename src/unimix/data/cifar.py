"""CIFAR-10 and CIFAR-100 from the standard python-pickle archives in a local directory.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009). The archives
``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz`` hold one pickled dict per batch::

    cifar-10-batches-py/  data_batch_1 … data_batch_5, test_batch, batches.meta
    cifar-100-python/     train, test, meta

Each batch dict has ``b"data"`` (uint8 ``[N, 3072]``: the 1024 red, then green, then blue values
of a 32×32 image in row-major order) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
(CIFAR-100); the meta dict names the classes (``b"label_names"`` / ``b"fine_label_names"``).
``data_dir`` may be the extracted folder, its parent, the ``.tar.gz`` archive itself (read with
:mod:`tarfile`, no extraction) or a folder holding the archive under its standard name.

Pickles can run code when loaded; these are read with an unpickler that only resolves the few
numpy names an array needs, so a tampered file fails instead of executing.

Training images get the usual augmentation (random crop 32 with zero padding 4, then horizontal
flip, each image its own draw) and both splits are normalised with the standard per-channel
statistics of the CIFAR training sets. The images stay in memory as uint8 (150 MB for the
training set); augmentation and normalisation run a batch at a time (see
:class:`~unimix.data.base.TensorImageDataset`).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from unimix.data.base import DatasetFormatError, DataSpec, TensorImageDataset, as_size
from unimix.data.transforms import RandomShiftFlip

__all__ = ["CIFAR_LAYOUTS", "MAX_MEMBER_BYTES", "CifarLayout", "build_cifar", "read_cifar"]

#: Largest file (archive member or file on disk) read as a CIFAR batch: 512 MiB, over three times
#: the largest real one (CIFAR-100 ``train``, 155 MB). Checked from the tar header or the file's
#: size BEFORE a byte is read, so a size bomb is refused without filling memory. Override with
#: the ``max_member_bytes`` argument or the ``UNIMIX_MAX_MEMBER_BYTES`` environment variable.
MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_MEMBER_BYTES_ENV = "UNIMIX_MAX_MEMBER_BYTES"


@dataclass(frozen=True)
class CifarLayout:
    """Where the pieces of one CIFAR variant live and what they are called."""

    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        files = ", ".join(self.train + self.test + (self.meta,))
        return (
            f"the folder '{self.folder}/' holding {files} (python-pickle format), its parent "
            f"folder, or the archive '{self.archive}'"
        )


#: The file layout of each CIFAR data set, as its authors distribute it.
CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train=("train",),
        test=("test",),
        meta="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only what a dict of numpy arrays, lists, bytes and strings needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise DatasetFormatError(f"{where} is not a readable CIFAR python pickle: {err}") from err
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where} should hold a pickled dict, found {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _locate(root: Path, layout: CifarLayout) -> tuple[str, Path]:
    """``("dir", folder)`` or ``("tar", archive)`` for ``root``, or a clear error."""
    needed = layout.train + layout.test
    if not root.exists():
        raise FileNotFoundError(
            f"CIFAR data not found at '{root}': expected {layout.describe()}. "
            "unimix never downloads data; fetch the archive from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and point data_dir at it."
        )
    if root.is_file():
        if not tarfile.is_tarfile(root):
            raise DatasetFormatError(
                f"'{root}' is a file but not a tar archive: expected {layout.describe()}"
            )
        return "tar", root
    for folder in (root, root / layout.folder):
        if folder.is_dir() and all((folder / f).is_file() for f in needed):
            return "dir", folder
    if (root / layout.archive).is_file():
        return "tar", root / layout.archive
    for folder in (root / layout.folder, root):
        if folder.is_dir() and any((folder / f).exists() for f in needed):
            missing = [f for f in needed if not (folder / f).is_file()]
            raise DatasetFormatError(
                f"CIFAR folder '{folder}' is incomplete: missing {', '.join(missing)}; "
                f"expected {layout.describe()}"
            )
    raise FileNotFoundError(
        f"no CIFAR data in '{root}': expected {layout.describe()}. "
        "unimix never downloads data; fetch the archive from "
        "https://www.cs.toronto.edu/~kriz/cifar.html and point data_dir at it."
    )


def _max_member_bytes(value: int | None) -> int:
    """The size limit: ``value``, else ``$UNIMIX_MAX_MEMBER_BYTES``, else :data:`MAX_MEMBER_BYTES`."""
    if value is None:
        env = os.environ.get(MAX_MEMBER_BYTES_ENV)
        if not env:
            return MAX_MEMBER_BYTES
        try:
            value = int(env)
        except ValueError:
            raise ValueError(
                f"{MAX_MEMBER_BYTES_ENV} must be a number of bytes, got {env!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_member_bytes must be a positive number of bytes, got {value!r}")
    return value


def _check_size(where: str, size: int, limit: int) -> None:
    if size > limit:
        raise DatasetFormatError(
            f"'{where}' is {size} bytes, over the limit of {limit} bytes for one CIFAR file "
            f"(the largest real one is about 155 MB); refusing to read it. Raise the limit with "
            f"{MAX_MEMBER_BYTES_ENV} if the file is genuine"
        )


def _read_tar(
    path: Path,
    layout: CifarLayout,
    wanted: tuple[str, ...],
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> dict[str, bytes]:
    """The bytes of the ``wanted`` files in the archive, read in one sequential pass; each
    member's size is checked from its header before it is read."""
    found: dict[str, tuple[bool, bytes]] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            p = PurePosixPath(member.name)
            if not member.isfile() or p.name not in wanted:
                continue
            standard = p.parent.name == layout.folder
            if p.name in found and (found[p.name][0] or not standard):
                continue  # the copy in the standard folder wins over strays elsewhere
            _check_size(f"{path}:{member.name}", member.size, max_member_bytes)
            f = tar.extractfile(member)
            if f is not None:
                data = f.read(max_member_bytes + 1)  # never more than the limit, whatever it says
                _check_size(f"{path}:{member.name}", len(data), max_member_bytes)
                found[p.name] = (standard, data)
    return {name: data for name, (_, data) in found.items()}


def read_cifar(
    name: str, data_dir: str | os.PathLike, max_member_bytes: int | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], tuple[str, ...]]:
    """Read ``((train_x, train_y), (test_x, test_y), class_names)`` of ``name`` from disk.

    Images are uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]``. Raises FileNotFoundError when
    nothing is found at ``data_dir`` and :class:`DatasetFormatError` (a ValueError) when what is
    found is incomplete or malformed; both name the path and the expected layout. A file (or
    archive member) larger than ``max_member_bytes`` (default :data:`MAX_MEMBER_BYTES`, or
    ``$UNIMIX_MAX_MEMBER_BYTES``) is refused before it is read.
    """
    limit = _max_member_bytes(max_member_bytes)
    layout = CIFAR_LAYOUTS[name]
    kind, where = _locate(Path(data_dir).expanduser(), layout)
    wanted = layout.train + layout.test + (layout.meta,)
    if kind == "tar":
        try:
            files = _read_tar(where, layout, wanted, limit)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DatasetFormatError(
                f"cannot read the archive '{where}': {err}; expected {layout.describe()}"
            ) from err
    else:
        files = {}
        for f in wanted:
            if (where / f).is_file():
                _check_size(str(where / f), (where / f).stat().st_size, limit)
                files[f] = (where / f).read_bytes()
    missing = [f for f in layout.train + layout.test if f not in files]
    if missing:
        raise DatasetFormatError(
            f"'{where}' lacks {', '.join(missing)}: expected {layout.describe()}"
        )
    train = _read_split(files, layout.train, layout, where)
    test = _read_split(files, layout.test, layout, where)
    classes: tuple[str, ...] = ()
    if layout.meta in files:
        meta = _unpickle(files[layout.meta], f"{where}/{layout.meta}")
        names = meta.get(layout.names_key)
        if names is not None:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            if len(classes) != layout.num_classes:
                raise DatasetFormatError(
                    f"{where}/{layout.meta} names {len(classes)} classes, "
                    f"expected {layout.num_classes}"
                )
    return train, test, classes


def _read_split(
    files: dict[str, bytes], names: tuple[str, ...], layout: CifarLayout, where: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for f in names:
        label = f"{where}/{f}"
        batch = _unpickle(files[f], label)
        if b"data" not in batch or layout.label_key not in batch:
            raise DatasetFormatError(
                f"{label} should be a dict with keys b'data' and {layout.label_key!r}, "
                f"found {sorted(batch)}"
            )
        data = np.asarray(batch[b"data"])
        y = np.asarray(batch[layout.label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetFormatError(
                f"{label}: b'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
            )
        if y.shape != (data.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetFormatError(
                f"{label}: {layout.label_key!r} must be {data.shape[0]} integer labels, "
                f"got {y.dtype} {list(y.shape)}"
            )
        if y.size and (y.min() < 0 or y.max() >= layout.num_classes):
            raise DatasetFormatError(
                f"{label}: labels must lie in [0, {layout.num_classes}), "
                f"found [{y.min()}, {y.max()}]"
            )
        images.append(torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32))
        labels.append(torch.from_numpy(y.astype(np.int64)))
    return torch.cat(images), torch.cat(labels)


def build_cifar(
    name: str,
    data_dir: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    train_augment: bool = True,
    padding: int = 4,
    flip: bool = True,
) -> DataSpec:
    """The CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) :class:`DataSpec`.

    Args:
        data_dir: see the module docstring for what it may point at.
        image_size: output size; images are resized bilinearly after augmentation when it is not
            32 (default 32).
        train_augment: random crop with zero ``padding`` and horizontal ``flip`` for training.
    """
    if name not in CIFAR_LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {name!r}; choose from {sorted(CIFAR_LAYOUTS)}")
    layout = CIFAR_LAYOUTS[name]
    size = as_size(32 if image_size is None else image_size)
    (train_x, train_y), (test_x, test_y), classes = read_cifar(name, data_dir)
    augment = RandomShiftFlip(int(padding), flip=flip) if train_augment else None
    resize_to = None if size == (32, 32) else size
    common = {"mean": layout.mean, "std": layout.std, "size": resize_to, "classes": classes}
    return DataSpec(
        train=TensorImageDataset(train_x, train_y, augment=augment, **common),
        test=TensorImageDataset(test_x, test_y, **common),
        num_classes=layout.num_classes,
        in_chans=3,
        image_size=size,
        mean=layout.mean,
        std=layout.std,
        name=name,
        classes=classes,
        root=str(data_dir),
        info={"padding": padding, "flip": flip},
    )
