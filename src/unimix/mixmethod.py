"""The base class of image-dependent mixing methods (the ``"image"`` kind of :mod:`unimix.registry`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["MixMethod"]


class MixMethod:
    """Extension point for methods whose mix depends on the images or the model.

    Mask methods (Mixup, CutMix, HMix, GMix, …) are :class:`unimix.masks.MaskSampler`\\ s and need
    nothing else. A method that must look at the images (e.g. SaliencyMix) or transform the
    partner (e.g. ResizeMix) subclasses this, registers with :func:`unimix.registry.register`, and
    is then usable by name in :class:`unimix.Mixer` like any other. :meth:`mix` receives the rows
    it has to mix, their partners already gathered, and one λ per row; it returns the mixed rows
    (a new tensor, float32 or the input dtype) and the effective λ of each row: the weight of the
    row's *own* label. ``context`` holds ``model`` (the ``model=`` of the Mixer call, or ``None``),
    ``labels`` (the whole batch's, when the call has them), ``rows`` (the batch indices of the rows
    given) and ``partner_rows`` (their partners' indices).
    """

    kind: ClassVar[str] = "image"
    name: ClassVar[str] = ""
    #: True when the method needs ``model=`` in the Mixer call (e.g. PuzzleMix's saliency).
    requires_model: ClassVar[bool] = False

    def mix(
        self,
        images: Tensor,
        partners: Tensor,
        lam: Tensor,
        *,
        generator: torch.Generator | None,
        context: Mapping[str, Any],
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"
