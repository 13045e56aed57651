"""Lightning: mix images *and* targets where Lightning means batch augmentation to happen.

A callback's ``on_train_batch_start`` sees the batch but cannot replace it: mixing there changes
the images in place and leaves the labels as they were, so the model trains on mixed images with
unmixed labels. Lightning's hook for batch augmentation is ``on_after_batch_transfer`` (of the
``LightningModule`` or the ``LightningDataModule``), whose return value *is* the batch the
``training_step`` receives. :class:`MixMixin` implements it::

    import lightning as L
    from unimix import Mixer
    from unimix.integrations.lightning import MixMixin

    class Classifier(MixMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ...
            self.mixer = Mixer(["mixup", "cutmix", "hmix", "gmix"], num_classes=10)

        def training_step(self, batch, batch_idx):
            images, targets = batch              # mixed images, soft targets [B, 10]
            return self.mix_loss(self.net(images), targets)

Mixing happens on the device (after the transfer), only while training (never in validation,
test, predict or the sanity check). Importing this module needs ``lightning`` or
``pytorch_lightning`` (``pip install 'unimix[lightning]'``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from unimix.mix import Mixer, soft_target_cross_entropy

__all__ = ["MixMixin", "mix_loss"]


def _import_lightning() -> Any:
    for name in ("lightning", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "unimix.integrations.lightning needs 'lightning' (or 'pytorch_lightning'), which is not "
        "installed: pip install 'unimix[lightning]'"
    )


_lightning = _import_lightning()

#: Where :class:`MixMixin` keeps the mixer's random state in a Lightning checkpoint.
CHECKPOINT_KEY = "unimix_mixer"

_IMAGE_KEYS = ("image", "images", "pixel_values", "img", "input", "inputs", "x")
_LABEL_KEYS = ("labels", "label", "targets", "target", "y")


def mix_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy for either kind of target, averaged over the batch.

    Soft targets ``[B, K]`` (a mixed training batch): ``−Σ_k ỹ_k log softmax(z)_k``
    (:func:`unimix.soft_target_cross_entropy`). Class indices ``[B]`` (validation, test):
    the usual cross-entropy. Never the multi-label (sigmoid) loss.
    """
    if targets.dim() == 1 and not targets.is_floating_point():
        return F.cross_entropy(logits, targets)
    return soft_target_cross_entropy(logits, targets)


class MixMixin:
    """Mix each training batch in ``on_after_batch_transfer``: images and targets together.

    Put it before ``LightningModule`` (or ``LightningDataModule``) in the bases and set
    ``self.mixer`` (a :class:`unimix.Mixer` with ``num_classes``) in ``__init__``. Each training
    batch is then replaced by ``(mixed images, soft targets [B, K], *rest)`` before
    ``training_step`` sees it, with the label weight of every row the mean of the mask applied to
    it (``λ̄``); validation, test and predict batches are left alone. Use :meth:`mix_loss` (soft
    cross-entropy in training, the usual cross-entropy on class indices) as the loss.

    Batches: a tuple/list whose first two items are the images ``[B, C, H, W]`` and the labels,
    or a dict; the dict's keys are ``mix_keys`` if set, else the first of ``"image"``,
    ``"images"``, ``"pixel_values"``, … and of ``"labels"``, ``"label"``, ``"targets"``, … present.
    Set ``mix_enabled = False`` to stop mixing (e.g. for the last epochs). On a
    ``LightningModule`` the mixer's random state (:meth:`unimix.Mixer.state_dict`) is saved in
    checkpoints and restored on resume.
    """

    mixer: Mixer | None = None
    mix_enabled: bool = True
    mix_keys: tuple[Any, Any] | None = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]
        trainer = self.trainer  # type: ignore[attr-defined]
        if trainer is None or not trainer.training or not self.mix_enabled:
            return batch
        mixer = self.mixer
        if not isinstance(mixer, Mixer):
            raise TypeError(
                f"{type(self).__name__}.mixer must be a unimix.Mixer, got {type(mixer).__name__}; "
                "set self.mixer = Mixer(..., num_classes=K) in __init__ (or mix_enabled = False)"
            )
        image_key, label_key = self._mix_keys(batch)
        images, targets = mixer(batch[image_key], batch[label_key])
        if isinstance(batch, Mapping):
            return {**batch, image_key: images, label_key: targets}
        values = list(batch)
        values[image_key], values[label_key] = images, targets
        return type(batch)(*values) if hasattr(batch, "_fields") else type(batch)(values)

    def _mix_keys(self, batch: Any) -> tuple[Any, Any]:
        if self.mix_keys is not None:
            return self.mix_keys
        if isinstance(batch, Mapping):
            image = next((k for k in _IMAGE_KEYS if k in batch), None)
            label = next((k for k in _LABEL_KEYS if k in batch), None)
            if image is None or label is None:
                raise TypeError(
                    f"cannot tell the images and labels apart among the batch keys {list(batch)}; "
                    "set mix_keys = (image_key, label_key) on the module"
                )
            return image, label
        if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) >= 2:
            return 0, 1
        raise TypeError(
            "MixMixin mixes batches that are (images, labels, ...) or dicts; got "
            f"{type(batch).__name__}. Set mix_keys, or mix in your own on_after_batch_transfer"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the mixer's random state with the checkpoint, so a resumed run draws on."""
        parent = getattr(super(), "on_save_checkpoint", None)
        if parent is not None:
            parent(checkpoint)
        if isinstance(self.mixer, Mixer):
            checkpoint[CHECKPOINT_KEY] = self.mixer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the mixer's random state saved by :meth:`on_save_checkpoint`."""
        parent = getattr(super(), "on_load_checkpoint", None)
        if parent is not None:
            parent(checkpoint)
        if isinstance(self.mixer, Mixer) and CHECKPOINT_KEY in checkpoint:
            self.mixer.load_state_dict(checkpoint[CHECKPOINT_KEY])

    @staticmethod
    def mix_loss(logits: Tensor, targets: Tensor) -> Tensor:
        """:func:`mix_loss`: soft-target cross-entropy for ``[B, K]``, cross-entropy for ``[B]``."""
        return mix_loss(logits, targets)
