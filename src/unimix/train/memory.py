"""Memory checked up front: what a command needs at least, against what the device has.

A command whose sizes cannot fit (``unimix train --image-size 100000``, ``unimix profile --size
100000``) is refused before it allocates anything, with one line that says how much it needs,
how much there is and what to lower — not an allocator error for terabytes after minutes.

The estimates are lower bounds (tensors the work cannot avoid: a batch, its mixed copy and masks,
the images a dataset keeps in memory; a profile's one mask in the Fourier domain), so a command
is refused only when it certainly cannot run; activations of the model come on top.

Only torch and the standard library: used by core commands (``profile``) too.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = [
    "available_memory",
    "check_fits",
    "check_run_memory",
    "profile_bytes",
    "run_bytes",
]

#: Input channels of the built-in datasets.
DATASET_CHANNELS = {
    "digits": 1,
    "digits_local": 1,
    "digits_pair": 1,
    "cifar10": 3,
    "cifar100": 3,
    "imagefolder": 3,
}
#: Images the in-memory datasets keep at the run's image size (float32), all splits together.
RESIDENT_IMAGES = {"digits": 1797, "digits_local": 6000, "digits_pair": 6000}
#: Copies of a batch a training step holds at least: the images, the mixed images, the masks and
#: the gradient of the loss with respect to the input of the first layer.
BATCH_COPIES = 4


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes free for new tensors on ``device``: the GPU's free memory for CUDA
    (``torch.cuda.mem_get_info``), else the host's available memory (Linux ``MemAvailable``,
    else the physical memory); ``None`` when unknown."""
    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(text)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def check_fits(need: int, device: str | torch.device, what: str, lower: str) -> None:
    """Raise a ValueError (one line: ``what`` needs ``need`` bytes, the device has so much,
    lower ``lower``) when ``need`` exceeds :func:`available_memory` of ``device``."""
    have = available_memory(device)
    if have is None or need <= have:
        return
    where = "GPU" if str(device).startswith("cuda") else "memory"
    raise ValueError(
        f"{what} needs at least {_gib(need)} of {where} but {_gib(have)} is available; "
        f"lower {lower}"
    )


def _size(image_size: Any, default: int = 32) -> tuple[int, int]:
    if image_size is None:
        return default, default
    if isinstance(image_size, int):
        return image_size, image_size
    h, *rest = list(image_size)
    return int(h), int(rest[0] if rest else h)


def run_bytes(cfg: Any) -> int:
    """The least memory a training run of ``cfg`` (a :class:`~unimix.train.TrainConfig`) takes:
    :data:`BATCH_COPIES` copies of a training batch, an evaluation batch, and the images an
    in-memory dataset keeps at the run's size, all float32."""
    name = str(cfg.dataset).lower().replace("-", "_")
    h, w = _size(cfg.image_size, 224 if name == "imagefolder" else 32)
    image = DATASET_CHANNELS.get(name, 3) * h * w * 4
    batches = BATCH_COPIES * cfg.batch_size + (cfg.eval_batch_size or cfg.batch_size)
    return image * (batches + RESIDENT_IMAGES.get(name, 0))


def check_run_memory(cfg: Any) -> None:
    """Refuse a run whose sizes cannot fit in its device's memory (:func:`run_bytes`)."""
    h, w = _size(cfg.image_size)
    check_fits(
        run_bytes(cfg),
        cfg.device,
        f"a run with image_size {h}x{w} and batch_size {cfg.batch_size} (a batch, its mixed "
        f"copy and masks, and the {cfg.dataset} images held in memory)",
        "image_size or batch_size",
    )


def profile_bytes(height: int, width: int) -> int:
    """The least memory of ``unimix profile`` at ``height × width``: one mask's correlation in
    the Fourier domain (6 complex128 planes of ``2H × (W + 1)``) and the offset grid
    (5 float64/int64 planes of ``(2H − 1) × (2W − 1)``)."""
    return 16 * 6 * (2 * height) * (width + 1) + 5 * 8 * (2 * height - 1) * (2 * width - 1)
