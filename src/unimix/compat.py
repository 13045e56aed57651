"""Drop-in facades over :class:`unimix.Mixer` for code written against timm or torchvision.

Two ways existing training code mixes batches, each served by one object here:

* **timm** — ``mixup_fn = timm.data.Mixup(...)`` then ``x, y = mixup_fn(x, y)`` in the training
  loop. :class:`TimmMixup` takes the same arguments and returns the same targets, and adds the
  reference implementation's ``cutmix_mode="hmix"|"gmix"`` (Park, Yun & Chun, "A Unified Analysis of
  Mixed Sample Data Augmentation: A Loss Function Perspective", NeurIPS 2022). Switching is one
  import::

      from unimix.compat import TimmMixup as Mixup
      mixup_fn = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_mode="hmix", num_classes=1000)

* **torchvision** — ``v2.MixUp``/``v2.CutMix`` applied to each batch in the ``DataLoader``'s
  ``collate_fn``. :class:`MixCollate` wraps any :class:`~unimix.Mixer` as that ``collate_fn``.

Both only translate arguments and target formats: every mask and every mix is
:class:`unimix.Mixer`'s, so labels always weigh the mask actually applied (``λ̄ = mean(M)``).
"""

from __future__ import annotations

from typing import Any

from unimix.collate import MixCollate
from unimix.timm_mixup import TimmMixup, mixup_target

__all__ = ["TimmMixup", "MixCollate", "mixup_target"]


def __getattr__(name: str) -> Any:
    # FastCollateMixup subclasses timm's class, so it is built on first use (timm stays optional).
    if name == "FastCollateMixup":
        from unimix.integrations.timm import FastCollateMixup

        return FastCollateMixup
    raise AttributeError(f"module 'unimix.compat' has no attribute {name!r}")
