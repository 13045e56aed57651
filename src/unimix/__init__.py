"""unimix: mixed sample data augmentation as random mixing masks.

Mixup, CutMix, HMix and GMix (Park, Yun & Chun, NeurIPS 2022) and more, in one vectorised engine
(:class:`Mixer`), with the theory of the pixel-level regularisation each induces
(:mod:`unimix.theory`) and a study that trains and compares them (``unimix study``).
"""

# importing methods registers fmix, smoothmix, gridmix, resizemix, saliencymix, puzzlemix, manifold
from unimix import masks, methods, registry
from unimix.mix import (
    Mixer,
    MixInfo,
    MixMethod,
    MixPlan,
    SoftTargetCrossEntropy,
    soft_target_cross_entropy,
)

__all__ = [
    "Mixer",
    "MixInfo",
    "MixPlan",
    "MixMethod",
    "registry",
    "SoftTargetCrossEntropy",
    "soft_target_cross_entropy",
    "masks",
    "methods",
]
__version__ = "0.1.0"  # the one source of the version (pyproject.toml reads it)

# Submodules reachable as attributes after ``import unimix`` without importing them up front
# (``unimix.compat.MixCollate``): loaded on first access, so ``import unimix`` stays light.
_LAZY_SUBMODULES = frozenset({"compat", "integrations", "theory", "registry", "checks"})


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"unimix.{name}")
    raise AttributeError(f"module 'unimix' has no attribute {name!r}")
