"""Classifiers of the study, by name (:func:`create_model`).

- ``small_cnn``: four conv-BN-ReLU stages, fast on CPU, sized for the digits set;
- ``preact_resnet18``: PreActResNet-18 (11.2 M parameters), the CIFAR benchmark of Mixup/CutMix;
- ``wrn28_10`` / ``wrn``: WideResNet-28-10 (36.5 M) and any WRN-``depth``-``widen``;
- ``tv:<name>`` / ``timm:<name>``: any torchvision / timm model, e.g. ``tv:resnet50`` for ImageNet.

    >>> from unimix.models import create_model
    >>> model = create_model("small_cnn", num_classes=10, in_chans=1)
"""

from unimix.models.preact_resnet import PreActResNet, preact_resnet18
from unimix.models.registry import (
    adapt_input_channels,
    available_models,
    create_model,
    register_model,
)
from unimix.models.small_cnn import SmallCNN
from unimix.models.wide_resnet import WideResNet, wide_resnet

__all__ = [
    "PreActResNet",
    "SmallCNN",
    "WideResNet",
    "adapt_input_channels",
    "available_models",
    "create_model",
    "preact_resnet18",
    "register_model",
    "wide_resnet",
]
