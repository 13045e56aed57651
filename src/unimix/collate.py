"""``MixCollate``: a DataLoader ``collate_fn`` that collates and mixes, with a private random stream
per worker. Re-exported by :mod:`unimix.compat`, where users import it from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info

from unimix.checks import check_callable, check_instance
from unimix.mix import Mixer
from unimix.timm_mixup import TimmMixup

__all__ = ["MixCollate"]


class MixCollate:
    """A ``collate_fn`` that collates a list of ``(image, label)`` samples and mixes the batch.

    Use it where torchvision's documentation applies ``v2.MixUp``/``v2.CutMix`` after
    ``default_collate`` — CutMix, Mixup, HMix or GMix without re-implementing any of them::

        from torch.utils.data import DataLoader
        from unimix import Mixer
        from unimix.compat import MixCollate

        mixer = Mixer(["mixup", "cutmix"], alpha=1.0, num_classes=NUM_CLASSES)
        loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=4,
                            collate_fn=MixCollate(mixer))
        for images, targets in loader:            # targets: [B, NUM_CLASSES] soft labels
            loss = unimix.soft_target_cross_entropy(model(images), targets)

    Images may be ``uint8`` (mixed and rounded, e.g. before ``v2.ToDtype`` on the GPU) or float.
    ``collate_fn`` must return ``(images [B, C, H, W], labels)``; the collated batch is a fresh
    tensor, so it is mixed in place (``inplace=False`` if your ``collate_fn`` returns storage it
    keeps).

    Random streams: with ``mixer.generator=None`` the masks come from PyTorch's global RNG, which
    the ``DataLoader`` seeds differently in every worker and epoch. With an explicit generator
    each worker mixes with a private copy of the mixer whose generator is seeded from the
    generator's initial seed combined with the worker's seed (``get_worker_info().seed``, new
    every epoch): workers and epochs draw different masks, the run is reproducible given the
    ``DataLoader``'s ``generator``, and the mixer passed in is never modified. In the main process
    (``num_workers=0``) the mixer and its generator are used directly.
    """

    def __init__(
        self,
        mixer: Mixer | TimmMixup,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
        *,
        inplace: bool = True,
    ) -> None:
        check_instance("mixer", mixer, (Mixer, TimmMixup), "a unimix Mixer or TimmMixup")
        check_callable("collate_fn", collate_fn)
        self.mixer = mixer
        self.collate_fn = collate_fn
        self.inplace = inplace
        self._worker: tuple[int, Mixer | TimmMixup] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_worker"] = None
        return state

    def __call__(self, samples: list[Any]) -> tuple[Tensor, Tensor]:
        batch = self.collate_fn(samples)
        if not isinstance(batch, Sequence) or len(batch) != 2:
            raise TypeError(
                "collate_fn must return (images, labels); got "
                f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, Sequence) else ''}"
            )
        images, labels = batch
        mixer = self.local_mixer()
        if isinstance(mixer, TimmMixup):
            if not self.inplace:
                images = images.clone()
            return mixer(images, labels)
        return mixer(images, labels, inplace=self.inplace)  # type: ignore[return-value]

    def local_mixer(self) -> Mixer | TimmMixup:
        """The mixer this process mixes with: :attr:`mixer` itself in the main process or without
        a generator; in a ``DataLoader`` worker, a copy whose generator is seeded from the
        mixer's and the worker's seeds (made once per worker and epoch, see the class docstring).
        Collate functions built on ``MixCollate`` draw their plans from it."""
        info = get_worker_info()
        engine = self.mixer.mixer if isinstance(self.mixer, TimmMixup) else self.mixer
        if info is None or engine.generator is None:
            return self.mixer
        if self._worker is None or self._worker[0] != info.seed:
            parent = engine.generator
            # SeedSequence mixes the two seeds into well-separated streams (no seed + id overlap).
            seed = int(
                np.random.SeedSequence([parent.initial_seed(), info.seed]).generate_state(
                    1, np.uint64
                )[0]
            )
            local = copy.copy(engine)
            local.generator = torch.Generator(device=parent.device).manual_seed(seed)
            if isinstance(self.mixer, TimmMixup):
                wrapper = copy.copy(self.mixer)
                object.__setattr__(wrapper, "mixer", local)
                self._worker = (info.seed, wrapper)
            else:
                self._worker = (info.seed, local)
        return self._worker[1]

    def __repr__(self) -> str:
        return f"MixCollate({self.mixer!r}, collate_fn={getattr(self.collate_fn, '__name__', self.collate_fn)!r})"
