"""timm's fast, collate-time mixing on unimix's engine — the collate function timm's loader knows.

timm's training script, with its default prefetching loader, mixes in the ``DataLoader``'s
``collate_fn``: a ``timm.data.FastCollateMixup`` collates the ``uint8`` ``C×H×W`` samples into one
``uint8`` batch, mixes it and returns the mixed targets; ``PrefetchLoader`` then moves the batch to
the device and normalises it. ``PrefetchLoader.mixup_enabled`` (set to ``False`` by
``--mixup-off-epoch``) reaches the collate function only if it *is* a ``FastCollateMixup``.
:class:`FastCollateMixup` here is one (a subclass), so that switch works, and it adds HMix and GMix
(Park, Yun & Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
Perspective", NeurIPS 2022) as ``cutmix_mode``::

    from timm.data import create_loader
    from unimix.compat import FastCollateMixup

    collate = FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_mode="gmix",
                               label_smoothing=0.1, num_classes=1000)
    loader = create_loader(dataset, input_size=(3, 224, 224), batch_size=128, is_training=True,
                           use_prefetcher=True, collate_fn=collate)

Importing this module imports timm (``pip install 'unimix[vision]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from unimix.checks import check_choice, check_same_batch
from unimix.collate import MixCollate
from unimix.collate_kernels import mix_uint8, row_masks
from unimix.integrations import require
from unimix.targets import mix_targets
from unimix.timm_mixup import TimmMixup, mixup_target, timm_targets

_timm_mixup = require("timm.data.mixup", "vision")

__all__ = ["FastCollateMixup"]

# Read-only views of the settings, as timm's Mixup exposes them; they are fixed at construction.
_SETTINGS = frozenset(
    {
        "mixup_alpha", "cutmix_alpha", "cutmix_minmax", "mix_prob", "switch_prob",
        "correct_lam", "label_smoothing", "num_classes", "multi_label", "cutmix_mode",
        "hmix_ratio",
    }
)  # fmt: skip


def _collate_uint8(samples: list[Any]) -> tuple[Tensor, Tensor]:
    """Stack ``(uint8 image [C, H, W] (array or tensor), target)`` samples as timm's fast collate.

    Scalar targets become a ``long`` ``[B]`` tensor; dense targets are stacked as they are.
    """
    images, targets = _images_uint8(samples)
    return torch.stack(images), targets


def _images_uint8(samples: list[Any]) -> tuple[list[Tensor], Tensor]:
    """The samples' images as ``uint8`` ``[C, H, W]`` tensors (views of arrays) and the targets."""
    if not samples or not isinstance(samples[0], Sequence) or len(samples[0]) != 2:
        raise TypeError(
            "FastCollateMixup collates (image, target) samples; got "
            f"{type(samples[0]).__name__ if samples else 'an empty batch'}"
        )
    images = [
        torch.from_numpy(image) if isinstance(image, np.ndarray) else torch.as_tensor(image)
        for image, _ in samples
    ]
    if images[0].dtype != torch.uint8 or images[0].dim() != 3:
        raise TypeError(
            "FastCollateMixup expects uint8 [C, H, W] images, as timm's transforms make with "
            f"use_prefetcher=True; got {images[0].dtype} of shape {tuple(images[0].shape)}. "
            "For float images use unimix.compat.MixCollate"
        )
    targets = default_collate([target for _, target in samples])
    if targets.dim() == 1:
        targets = targets.long()
    return images, targets


class FastCollateMixup(_timm_mixup.FastCollateMixup):
    """``timm.data.FastCollateMixup`` on unimix's engine, plus HMix and GMix as CutMix modes.

    Use it as the ``collate_fn`` of timm's ``create_loader(..., use_prefetcher=True)``. Called on a
    list of ``(uint8 image [C, H, W], target)`` samples it returns ``(uint8 images [B, C, H, W],
    targets [B, num_classes])``: the batch mixed (blends rounded to whole levels, as timm) and the
    targets ``mixup_target`` makes — ``ỹ_k = λ̄_k y_k + (1 − λ̄_k) y_{B−1−k}`` with ``y`` the smoothed
    one-hot target and ``λ̄_k`` the mean of the mask applied to row ``k``.

    The arguments are timm's (see :class:`unimix.compat.TimmMixup` for each, and for the few
    deliberate differences), plus ``cutmix_mode`` (``"bbox"``: CutMix, ``"hmix"``: HMix(r =
    ``hmix_ratio``), ``"gmix"``: GMix) and ``generator``. ``mode="half"`` is timm's: rows are mixed
    per element with their flip partner and only the first half of the batch is returned.

    ``mixup_enabled = False`` (what timm's ``PrefetchLoader.mixup_enabled`` setter and
    ``--mixup-off-epoch`` do) switches mixing off: images are collated as they are and targets are
    only smoothed. The flag lives in shared memory, so it also reaches persistent loader workers.
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        *,
        cutmix_mode: str = "bbox",
        hmix_ratio: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        # timm's own __init__ is not called: the settings live in the TimmMixup below.
        check_choice("mode", mode, ("batch", "pair", "elem", "half"))
        self._mixup = TimmMixup(
            mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob,
            "elem" if mode == "half" else mode, correct_lam, label_smoothing, num_classes,
            multi_label, cutmix_mode=cutmix_mode, hmix_ratio=hmix_ratio, generator=generator,
        )  # fmt: skip
        self._collate = MixCollate(self._mixup, collate_fn=_collate_uint8)
        self._mode = mode
        self._enabled = torch.ones(1, dtype=torch.bool).share_memory_()

    @property
    def mode(self) -> str:
        """``"batch"``, ``"pair"``, ``"elem"`` or ``"half"``."""
        return self._mode

    @property
    def mixer(self) -> Any:
        """The :class:`unimix.Mixer` that draws and applies every mask."""
        return self._mixup.mixer

    @property
    def mixup_enabled(self) -> bool:  # type: ignore[override]
        """Whether batches are mixed; timm's training loop sets it to ``False`` to stop mixing."""
        return bool(self._enabled[0])

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self._enabled.fill_(bool(value))

    def __getattr__(self, name: str) -> Any:
        if name in _SETTINGS:
            return getattr(self.__dict__["_mixup"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS or name == "mode":
            raise AttributeError(
                f"FastCollateMixup.{name} is fixed at construction; build a new FastCollateMixup "
                "to change it (only mixup_enabled may change during training)"
            )
        super().__setattr__(name, value)

    def __call__(self, batch: list[Any], _: Any = None) -> tuple[Tensor, Tensor]:
        """Collate and mix ``batch``, a list of ``(uint8 image [C, H, W], target)`` samples."""
        size = len(batch)
        if self._mode in ("pair", "half") and size % 2:
            raise ValueError(
                f"mode={self._mode!r} needs an even batch, got {size}; use drop_last=True"
            )
        if self.mixup_enabled:
            images, targets = self._collate_and_mix(batch)
        else:
            images, labels = _collate_uint8(batch)
            targets = mixup_target(
                labels, self.num_classes, 1.0, self.label_smoothing, self.multi_label
            )
        if self._mode == "half":
            return images[: size // 2], targets[: size // 2]
        return images, targets

    def _collate_and_mix(self, batch: list[Any]) -> tuple[Tensor, Tensor]:
        """Mix the batch while collating it (:func:`unimix.collate_kernels.mix_uint8`): each row is
        written once from its own sample and its partner's, box masks write only their box,
        unmixed rows are plain copies, and ``mode="half"`` makes only the half it returns. A plan
        with an image-dependent method goes through the engine. Both give the pixels and targets
        of ``TimmMixup`` on the stacked batch for the same generator state."""
        mixer = self._collate.local_mixer().mixer  # this worker's generator  # type: ignore[union-attr]
        samples, labels = _images_uint8(batch)
        size = len(samples)
        _, height, width = samples[0].shape
        y1 = timm_targets(labels, self.num_classes, self.label_smoothing, self.multi_label)
        check_same_batch("the images", size, "targets", y1.shape[0])
        plan = mixer.sample(size, height, width, device=samples[0].device)
        masks = row_masks(plan)
        if masks is None:
            images = torch.stack(samples)
            lam = mixer.apply(images, plan, inplace=True).measured.lam_effective.expand(size)
        else:
            rows = size // 2 if self._mode == "half" else size
            images = mix_uint8(samples, plan.partner, masks, rows)
            lam = plan.lam_effective  # uint8 is blended in float32: λ̄ is the plan's
        if plan.label_weight == "nominal":
            lam = plan.lam
        if plan.mode == "batch":
            return images, mix_targets(y1, plan.partner, float(lam[0]))
        return images, mix_targets(y1, plan.partner, lam.to(torch.float32))

    def __repr__(self) -> str:
        inner = repr(self._mixup).replace("TimmMixup(", "FastCollateMixup(", 1)
        return inner.replace(f"mode={self._mixup.mode!r}", f"mode={self._mode!r}", 1)
