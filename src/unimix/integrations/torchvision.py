"""A ``torchvision.transforms.v2`` batch transform on unimix's engine.

torchvision mixes whole batches with ``v2.MixUp``/``v2.CutMix``, called after the ``DataLoader``
collated them (in the loop, or in ``collate_fn``). :class:`MixTransform` is called the same way
and follows the same conventions, for any unimix method — Mixup, CutMix, HMix, GMix (Park, Yun &
Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function Perspective",
NeurIPS 2022) and the rest::

    from torchvision.transforms import v2
    from unimix.integrations.torchvision import GMix, MixTransform

    mix = v2.RandomChoice([MixTransform("hmix", r=0.5, num_classes=10), GMix(num_classes=10)])
    images, targets = mix(images, labels)          # targets: [B, 10] floats
    batch = mix({"image": images, "labels": labels, "ids": ids})   # dicts work too

The conventions kept: it is an ``nn.Module`` (a ``v2.Transform``) and composes with ``v2.Compose``
and ``v2.RandomChoice``; the labels are found by ``labels_getter`` (``"default"``: the second item
of a tuple/list, or the ``"labels"``-like key of a dict; or a callable); labels are class indices
``[B]`` (with ``num_classes``) or probabilities ``[B, K]``, and come back as float ``[B, K]``;
``tv_tensors.Image``/``Video`` stay ``Image``/``Video``; everything else in the sample is passed
through; PIL images, boxes, masks and keypoints are refused; bad input raises ``ValueError``.

Where unimix differs: the label weight of every row is the mean of the mask actually applied
(``λ̄``), the partner of row ``k`` is row ``B−1−k`` (torchvision rolls by one), and ``uint8``
images are mixed too (rounded). Importing this module imports torchvision
(``pip install 'unimix[vision]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from unimix.checks import check_positive_int, check_same_batch
from unimix.collate import MixCollate
from unimix.integrations import require
from unimix.mix import Mixer
from unimix.targets import one_hot_targets

_tv_tensors = require("torchvision.tv_tensors", "vision")
_v2 = require("torchvision.transforms.v2", "vision")

__all__ = ["MixTransform", "HMix", "GMix"]

LabelsGetter = str | Callable[[Any], Any]


def _flatten(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """Leaves of nested tuples/lists/dicts, and a function that rebuilds the tree from new leaves."""
    if isinstance(tree, Mapping):
        keys = list(tree)
        parts = [_flatten(tree[k]) for k in keys]
    elif isinstance(tree, (tuple, list)):
        keys = None
        parts = [_flatten(v) for v in tree]
    else:
        return [tree], lambda leaves: leaves[0]
    sizes = [len(leaves) for leaves, _ in parts]
    flat = [leaf for leaves, _ in parts for leaf in leaves]

    def rebuild(leaves: list[Any]) -> Any:
        values, start = [], 0
        for size, (_, build) in zip(sizes, parts, strict=True):
            values.append(build(leaves[start : start + size]))
            start += size
        if keys is not None:
            pairs = list(zip(keys, values, strict=True))
            try:
                return type(tree)(pairs)
            except TypeError:  # a mapping type that cannot be built from pairs
                return dict(pairs)
        if hasattr(tree, "_fields"):  # a namedtuple
            return type(tree)(*values)
        return type(tree)(values)

    return flat, rebuild


def default_labels_getter(inputs: Any) -> Any:
    """torchvision's ``labels_getter="default"`` rule.

    A tuple/list: its second item, itself the labels (a plain tensor) or a dict holding them. A
    dict: the value under the key ``"labels"`` (any case), else under the first key containing
    ``"label"`` (any case).
    """
    if isinstance(inputs, (tuple, list)):
        if len(inputs) < 2:
            raise ValueError(
                "When using the default labels_getter, the input must be (images, labels) or a "
                f"dict with a 'labels' key; got a {type(inputs).__name__} of length "
                f"{len(inputs)}. Pass labels_getter=callable to say where the labels are"
            )
        inputs = inputs[1]
    if isinstance(inputs, Tensor) and not isinstance(inputs, _tv_tensors.TVTensor):
        return inputs
    if not isinstance(inputs, Mapping):
        raise ValueError(
            "When using the default labels_getter, the labels must be a tensor in (images, "
            f"labels), (images, dict) or a dict; got {type(inputs).__name__}. Pass "
            "labels_getter=callable to say where the labels are"
        )
    keys = [k for k in inputs if isinstance(k, str)]
    key = next((k for k in keys if k.lower() == "labels"), None)
    key = key or next((k for k in keys if "label" in k.lower()), None)
    if key is None:
        raise ValueError(
            f"Could not infer where the labels are in the sample: no labels key among "
            f"{list(inputs)} (looked for 'labels', then any key containing 'label'); pass "
            "labels_getter=callable to say where the labels are"
        )
    return inputs[key]


def _is_pure_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and not isinstance(value, _tv_tensors.TVTensor)


class MixTransform(_v2.Transform):
    """Mix a batch with any unimix method, as a ``torchvision.transforms.v2`` transform.

    Args:
        methods: a :class:`unimix.Mixer` to use as it is, or what :class:`~unimix.Mixer` takes as
            ``methods`` (``"mixup"``, ``"cutmix"``, ``"hmix"``, ``"gmix"``, a list, ``{name:
            weight}``); then ``alpha``, ``mode``, ``generator`` and ``**method_params`` (e.g.
            ``r=0.5`` for HMix) build it. ``mode="batch"`` (the default) draws one ``λ ~ Beta(α,
            α)`` and one mask per batch, as torchvision's MixUp and CutMix do.
        num_classes: ``K``, needed when the labels are class indices ``[B]``.
        labels_getter: ``"default"`` (see :func:`default_labels_getter`) or a callable taking the
            transform's input and returning the labels tensor.

    ``forward`` takes ``(images, labels)``, or one tuple/list/dict holding them, and returns the
    same structure with the images mixed and the labels replaced by float targets ``[B, K]``,
    ``ỹ_k = λ̄_k y_k + (1 − λ̄_k) y_{B−1−k}`` where ``λ̄_k`` is the mean of row ``k``'s mask. The
    images are a ``tv_tensors.Image`` ``[B, C, H, W]``, a ``tv_tensors.Video`` ``[B, T, C, H, W]``
    (one mask for all frames) or, when there is neither, the first plain tensor; only one is mixed.
    """

    def __init__(
        self,
        methods: Mixer | str | Sequence[str] | Mapping[str, float] = "mixup",
        *,
        alpha: float | Mapping[str, float] = 1.0,
        mode: str = "batch",
        num_classes: int | None = None,
        labels_getter: LabelsGetter = "default",
        generator: torch.Generator | None = None,
        **method_params: Any,
    ) -> None:
        super().__init__()
        if isinstance(methods, Mixer):
            if method_params or generator is not None or mode != "batch" or alpha != 1.0:
                raise TypeError(
                    "methods is already a Mixer: set alpha, mode, generator and method parameters "
                    "on the Mixer, not on MixTransform"
                )
            self.mixer = methods
        else:
            self.mixer = Mixer(
                methods, alpha=alpha, mode=mode, generator=generator, **method_params
            )  # type: ignore[arg-type]
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes if num_classes is not None else self.mixer.num_classes
        if labels_getter == "default":
            self._labels_getter: Callable[[Any], Any] = default_labels_getter
        elif callable(labels_getter):
            self._labels_getter = labels_getter
        else:
            raise ValueError(
                f"labels_getter must be 'default' or a callable, got {labels_getter!r}"
            )
        self.labels_getter = labels_getter
        self._streams = MixCollate(self.mixer)

    def extra_repr(self) -> str:
        return f"mixer={self.mixer!r}, num_classes={self.num_classes}"

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        flat, rebuild = _flatten(sample)
        refused = (_tv_tensors.BoundingBoxes, _tv_tensors.Mask, _tv_tensors.KeyPoints)
        if any(isinstance(v, refused) or type(v).__module__.startswith("PIL.") for v in flat):
            raise ValueError(
                f"{type(self).__name__} mixes batched image/video tensors; it does not support PIL "
                "images, bounding boxes, keypoints or masks"
            )
        labels = self._labels_getter(sample)
        targets = self._targets(labels)
        indices = self._image_indices(flat, labels)
        for index in indices:
            self._check_batch(flat[index], targets.shape[0])
        first = flat[indices[0]]
        batch, height, width = first.shape[0], first.shape[-2], first.shape[-1]
        for index in indices[1:]:
            if (flat[index].shape[0], *flat[index].shape[-2:]) != (batch, height, width):
                raise ValueError(
                    f"all images and videos of a sample are mixed with one plan and must share "
                    f"batch size and size: {tuple(first.shape)} and {tuple(flat[index].shape)}"
                )
        mixer = self._streams.local_mixer()  # per-worker streams, as MixCollate draws them
        assert isinstance(mixer, Mixer)
        plan = mixer.sample(batch, height, width, device=first.device)
        out = list(flat)
        measured = None
        for index in indices:  # several views / an image and a video: one plan for all
            images = flat[index]
            plain = images.as_subclass(Tensor)
            mixed, applied = mixer.apply(plain.reshape(batch, -1, height, width), plan)
            measured = applied if measured is None else measured
            mixed = mixed.reshape(plain.shape)
            if isinstance(images, _tv_tensors.TVTensor):
                mixed = _tv_tensors.wrap(mixed, like=images)
            out[index] = mixed
        mixed_targets = mixer.targets(targets, plan, measured)
        if labels.dim() == 2 and labels.is_floating_point():
            mixed_targets = mixed_targets.to(labels.dtype)  # probabilities keep their dtype
        where = [i for i, v in enumerate(flat) if v is labels]
        if not where:
            raise ValueError("labels_getter must return the labels tensor found in the input")
        out[where[0]] = mixed_targets
        return rebuild(out)

    def _targets(self, labels: Any) -> Tensor:
        """Float ``[B, K]`` targets from torchvision-style labels (:func:`unimix.targets.one_hot_targets`,
        the engine's own path: its messages keep torchvision's phrases)."""
        if not isinstance(labels, Tensor):
            raise ValueError(
                f"the labels must be a tensor, got {type(labels).__name__}; pass labels_getter="
                "callable to say where the labels are"
            )
        return one_hot_targets(labels, self.num_classes, None)

    def _check_batch(self, images: Tensor, labels: int) -> None:
        expected = 5 if isinstance(images, _tv_tensors.Video) else 4
        if images.dim() != expected:
            raise ValueError(
                f"Expected a batched input with {expected} dims: {type(self).__name__} mixes a "
                f"{'video [B, T, C, H, W]' if expected == 5 else 'image [B, C, H, W]'} tensor, "
                f"got shape {tuple(images.shape)}; batch the samples (e.g. with a DataLoader) first"
            )
        check_same_batch("the images", images.shape[0], "labels", labels)

    @staticmethod
    def _image_indices(flat: list[Any], labels: Tensor) -> list[int]:
        """Every image and video of the sample (or the first plain tensor besides the labels)."""
        visual = [
            i for i, v in enumerate(flat) if isinstance(v, (_tv_tensors.Image, _tv_tensors.Video))
        ]
        if not visual:
            visual = [i for i, v in enumerate(flat) if _is_pure_tensor(v) and v is not labels][:1]
        if not visual:
            raise ValueError("no image or video tensor found in the input to mix")
        return visual


class HMix(MixTransform):
    """HMix(r) (Park, Yun & Chun, NeurIPS 2022) as a v2 transform: a CutMix box of side ratio
    ``√(r(1−λ))`` with Mixup outside it; ``r = 0`` is Mixup, ``r = 1`` CutMix.
    See :class:`MixTransform` for the call."""

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        r: float = 0.5,
        num_classes: int | None = None,
        labels_getter: LabelsGetter = "default",
        mode: str = "batch",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            "hmix", alpha=alpha, mode=mode, num_classes=num_classes,
            labels_getter=labels_getter, generator=generator, r=r,
        )  # fmt: skip


class GMix(MixTransform):
    """GMix (Park, Yun & Chun, NeurIPS 2022) as a v2 transform: a Gaussian patch of area
    ``min(λ, 1−λ)·HW`` centred uniformly over the image. See :class:`MixTransform` for the call."""

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        num_classes: int | None = None,
        labels_getter: LabelsGetter = "default",
        mode: str = "batch",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            "gmix", alpha=alpha, mode=mode, num_classes=num_classes,
            labels_getter=labels_getter, generator=generator,
        )  # fmt: skip
