"""The theory of mixed sample data augmentation, made executable.

Park, Yun & Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
Perspective" (NeurIPS 2022): every MSDA method regularises the loss through a second-order term in
which the mask enters only via the pixel-level coefficients

    A(p, q) = E[(1 − M_p)(1 − M_q)] .

Mixup's ``A`` is the same for every pair of pixels (input gradients are regularised regardless of
distance), CutMix's falls with the distance between ``p`` and ``q``, HMix and GMix lie in between.
This package computes ``A`` for any mask sampler (:func:`pairwise_coefficients`,
:func:`distance_profile`), gives its closed forms (:func:`closed_form`), and checks the loss
expansion on a real model and batch (:func:`loss_decomposition`, :func:`first_layer_form`,
:func:`glm_second_order`). See ``docs/theory.md``.
"""

from unimix.theory.closed_forms import CLOSED_FORMS, closed_form
from unimix.theory.coefficients import (
    DistanceProfile,
    PairwiseCoefficients,
    distance_profile,
    offset_grid,
    pairwise_coefficients,
)
from unimix.theory.decomposition import (
    FirstLayerForm,
    LossDecomposition,
    first_layer_form,
    glm_second_order,
    loss_decomposition,
)
from unimix.theory.locality import border_clipping, locality_index, locality_profile

__all__ = [
    "CLOSED_FORMS",
    "DistanceProfile",
    "FirstLayerForm",
    "LossDecomposition",
    "border_clipping",
    "PairwiseCoefficients",
    "closed_form",
    "distance_profile",
    "first_layer_form",
    "glm_second_order",
    "locality_index",
    "locality_profile",
    "loss_decomposition",
    "offset_grid",
    "pairwise_coefficients",
]
