"""Hugging Face ``transformers``: a mixing data collator and the soft-target loss wiring.

Two things go wrong when mixed batches meet a ``transformers`` image classifier as it is:
``MixCollate`` expects ``(image, label)`` samples where HF datasets give dicts, and an
``...ForImageClassification`` model given float labels ``[B, K]`` switches to *multi-label*
binary cross-entropy (``problem_type="multi_label_classification"``) — a different loss, silently.
Here:

* :class:`MixCollator` — the ``data_collator``: collates dict samples (``pixel_values``,
  ``labels``), mixes the batch and returns soft targets ``[B, K]`` under ``labels``;
* :func:`soft_target_loss` — a ``compute_loss_func`` for ``transformers.Trainer``: the labels
  never reach the model; soft targets get ``−Σ_k ỹ_k log softmax(z)_k`` and class indices the
  usual cross-entropy, never BCE;
* :class:`MixTrainer` — a ``Trainer`` with both wired: the collator mixes training batches only
  (evaluation and prediction batches are collated unmixed) and the loss is
  :func:`soft_target_loss`::

    from unimix import Mixer
    from unimix.integrations.hf import MixCollator, MixTrainer

    trainer = MixTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                         data_collator=MixCollator(Mixer(["mixup", "gmix"], num_classes=10)))

Importing this module imports ``transformers`` (``pip install 'unimix[hf]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate

from unimix.checks import check_callable, check_instance
from unimix.collate import MixCollate
from unimix.integrations import require
from unimix.mix import Mixer, soft_target_cross_entropy

_transformers = require("transformers", "hf")

__all__ = ["MixCollator", "MixTrainer", "soft_target_loss"]


def _as_is(pair: Any) -> Any:
    return pair


class MixCollator:
    """A ``data_collator`` that collates dict samples and mixes the batch.

    ``collator(features)`` takes a list of dicts (or one already-collated dict) holding the images
    under ``image_key`` (``[C, H, W]`` per sample, ``[B, C, H, W]`` batched) and the labels under
    ``label_key`` (class indices, or ``[K]`` probabilities per sample), and returns the collated
    dict with the images mixed by ``mixer`` and the labels replaced by float targets ``[B, K]``:
    ``ỹ_k = λ̄_k y_k + (1 − λ̄_k) y_{partner(k)}``, ``λ̄_k`` the mean of the mask applied to row ``k``.
    Other keys pass through. ``collate_fn`` (default: PyTorch's ``default_collate``) makes the
    batch from the list. As :class:`unimix.compat.MixCollate`, each ``DataLoader`` worker mixes
    with its own random stream when the mixer has a ``generator``.

    Use it with :class:`MixTrainer` (or pair it with :func:`soft_target_loss` yourself): a plain
    ``Trainer`` would also mix evaluation batches, and the model would score soft labels with BCE.
    """

    def __init__(
        self,
        mixer: Mixer,
        collate_fn: Callable[[list[Any]], Mapping[str, Any]] = default_collate,
        *,
        image_key: str = "pixel_values",
        label_key: str | None = None,
    ) -> None:
        check_instance("mixer", mixer, Mixer, "a unimix.Mixer")
        if mixer.num_classes is None:
            raise ValueError(
                "mixer needs num_classes to turn class-index labels into targets; "
                "build it as Mixer(..., num_classes=K)"
            )
        check_callable("collate_fn", collate_fn)
        self.mixer = mixer
        self.collate_fn = collate_fn
        self.image_key = image_key
        self.label_key = label_key
        # MixCollate gives each loader worker its own stream; it mixes a copy (the batch may be
        # the caller's own tensors when an already-collated dict is passed).
        self._mix = MixCollate(mixer, collate_fn=_as_is, inplace=False)

    def collate(self, features: list[Any] | Mapping[str, Any]) -> dict[str, Any]:
        """The batch as ``collate_fn`` makes it, unmixed (what evaluation uses)."""
        batch = features if isinstance(features, Mapping) else self.collate_fn(features)
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"collate_fn must return a dict batch, got {type(batch).__name__}; for "
                "(image, label) samples use unimix.compat.MixCollate"
            )
        batch = dict(batch)
        if self.label_key is None and "labels" not in batch and "label" in batch:
            batch["labels"] = batch.pop("label")  # HF datasets' name; models take "labels"
        for key in (self.image_key, self.label_key or "labels"):
            if key not in batch:
                raise KeyError(
                    f"the batch has no {key!r} (keys: {list(batch)}); set image_key/label_key"
                )
        return batch

    def __call__(self, features: list[Any] | Mapping[str, Any]) -> dict[str, Any]:
        batch = self.collate(features)
        label_key = self.label_key or "labels"
        images, targets = self._mix((batch[self.image_key], batch[label_key]))
        batch[self.image_key], batch[label_key] = images, targets
        return batch

    def __repr__(self) -> str:
        return (
            f"MixCollator({self.mixer!r}, image_key={self.image_key!r}, "
            f"label_key={self.label_key!r})"
        )


def soft_target_loss(
    outputs: Any, labels: Tensor, num_items_in_batch: Tensor | int | None = None
) -> Tensor:
    """Cross-entropy of the model's ``logits`` against soft targets or class indices.

    The ``compute_loss_func`` signature of ``transformers.Trainer``. ``labels`` ``[B, K]`` (floats,
    a mixed batch): ``−Σ_k ỹ_k log softmax(z)_k``; ``[B]`` (class indices; ``-100`` ignored): the
    usual cross-entropy. Summed over rows and divided by the number of rows — of the whole
    accumulated batch when the Trainer passes ``num_items_in_batch`` (which counts label
    *entries*, ``K`` per row for soft targets), else of this batch.
    """
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if labels.dim() == 2 and labels.is_floating_point():
        total = soft_target_cross_entropy(logits, labels, reduction="sum")
        rows = (
            labels.shape[0] if num_items_in_batch is None else num_items_in_batch / labels.shape[1]
        )
    elif labels.dim() == 1 and not labels.is_floating_point():
        total = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
        rows = labels.ne(-100).sum() if num_items_in_batch is None else num_items_in_batch
    else:
        raise ValueError(
            "labels must be soft targets [B, K] (float) or class indices [B] (int), got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    if isinstance(rows, Tensor):
        rows = rows.to(total.device)
    return total / rows


class MixTrainer(_transformers.Trainer):
    """``transformers.Trainer`` for mixed batches: soft-target cross-entropy, unmixed evaluation.

    Takes the ``Trainer``'s arguments. ``compute_loss_func`` defaults to :func:`soft_target_loss`,
    so the labels are taken out before the model's forward and the model never picks its own
    (multi-label BCE) loss for float labels. When ``data_collator`` is a :class:`MixCollator`,
    evaluation and test batches are collated by it without mixing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("compute_loss_func", soft_target_loss)
        super().__init__(*args, **kwargs)

    @contextmanager
    def _unmixed(self) -> Iterator[None]:
        collator = self.data_collator
        if isinstance(collator, MixCollator):
            self.data_collator = collator.collate
        try:
            yield
        finally:
            self.data_collator = collator

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        with self._unmixed():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> torch.utils.data.DataLoader:
        with self._unmixed():
            return super().get_test_dataloader(test_dataset)
