"""Adapters for the training libraries around unimix, one optional extra each.

Each submodule imports its library when it is itself imported, never before: ``import unimix``
loads none of them. A missing library stops the import with one line naming the extra to install.

* :mod:`unimix.integrations.timm` — :class:`~unimix.integrations.timm.FastCollateMixup`, the
  collate function timm's prefetching loader recognises (also ``unimix.compat.FastCollateMixup``);
  extra ``vision``.
* :mod:`unimix.integrations.torchvision` — :class:`~unimix.integrations.torchvision.MixTransform`
  (and the ``HMix``/``GMix`` shorthands), a ``torchvision.transforms.v2`` batch transform; extra
  ``vision``.
* :mod:`unimix.integrations.lightning` — :class:`~unimix.integrations.lightning.MixMixin`, which
  mixes images *and* targets in ``on_after_batch_transfer``; extra ``lightning``.
* :mod:`unimix.integrations.hf` — :class:`~unimix.integrations.hf.MixCollator` and
  :class:`~unimix.integrations.hf.MixTrainer` (soft-target cross-entropy, never multi-label BCE);
  extra ``hf``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`ImportError` naming the unimix extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"this part of unimix needs {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'unimix[{extra}]'"
        ) from error
