"""The earlier state of the art, in the same engine: FMix, SmoothMix, GridMix, ResizeMix,
SaliencyMix, Puzzle Mix and Manifold Mixup.

Importing this package registers them by name, so ``Mixer("fmix")``, ``unimix study --methods
puzzlemix`` and (for the image-independent masks) :mod:`unimix.theory` find them:

=============== ============================================== =============
name            paper                                          kind
=============== ============================================== =============
``fmix``        Harris et al., arXiv 2020 (FMix)               mask sampler
``smoothmix``   Lee et al., CVPRW 2020 (SmoothMix)             mask sampler
``gridmix``     Baek et al., Pattern Recognition 2021          mask sampler
``resizemix``   Qin et al., arXiv 2020 (ResizeMix)             image method
``saliencymix`` Uddin et al., ICLR 2021 (SaliencyMix)          image method
``puzzlemix``   Kim et al., ICML 2020 (Puzzle Mix)             model method
``manifold``    Verma et al., ICML 2019 (Manifold Mixup)       model method
=============== ============================================== =============

Model methods need ``mixer(images, labels, model=model, batch_labels=labels)``; their classes carry
``requires_model = True``. :class:`ManifoldMixup` wraps a model for Manifold Mixup in one call.
"""

from unimix import registry
from unimix.methods.fmix import FMix
from unimix.methods.gridmix import GridMix
from unimix.methods.manifold import ManifoldMix, ManifoldMixup
from unimix.methods.puzzlemix import PuzzleMix
from unimix.methods.resizemix import ResizeMix
from unimix.methods.saliencymix import SaliencyMix
from unimix.methods.smoothmix import SmoothMix

__all__ = [
    "FMix",
    "GridMix",
    "ManifoldMix",
    "ManifoldMixup",
    "PuzzleMix",
    "ResizeMix",
    "SaliencyMix",
    "SmoothMix",
    "requires_model",
]


def requires_model(method: object) -> bool:
    """Whether a method (name, class or instance) needs ``model=`` in the Mixer call."""
    return registry.requires_model(method)
