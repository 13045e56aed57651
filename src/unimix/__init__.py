"""unimix: mixed sample data augmentation as random mixing masks.

Mixup, CutMix, HMix and GMix (Park, Yun & Chun, NeurIPS 2022) and more, in one vectorised engine
(:class:`Mixer`), with the theory of the pixel-level regularisation each induces
(:mod:`unimix.theory`) and a study that trains and compares them (``unimix study``).
"""

# importing methods registers fmix, smoothmix, gridmix, resizemix, saliencymix, puzzlemix, manifold
from unimix import masks, methods
from unimix.mix import Mixer, MixInfo, SoftTargetCrossEntropy, soft_target_cross_entropy

__all__ = [
    "Mixer",
    "MixInfo",
    "SoftTargetCrossEntropy",
    "soft_target_cross_entropy",
    "masks",
    "methods",
]
__version__ = "0.1.0"
