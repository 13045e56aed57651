"""PreActResNet-18: the CIFAR benchmark network of the Mixup and CutMix papers.

He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks" (ECCV 2016): residual blocks
with the batch normalisation and ReLU moved *before* each convolution (``x + F(x)`` with
``F = conv ∘ relu ∘ bn ∘ conv ∘ relu ∘ bn``), so the identity path is left untouched. The CIFAR
variant used by the MSDA literature has a 3×3 stem without pooling, four stages of two basic
blocks (64, 128, 256, 512 channels; stride 2 at the start of stages 2–4), a final BN-ReLU,
global average pooling and a linear classifier: 11.17 M parameters for 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


class PreActBlock(nn.Module):
    """Pre-activation basic block; a 1×1 projection shortcut when the shape changes."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Conv2d(in_chans, out_chans, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images (CIFAR-style stem).

    Args:
        blocks: basic blocks per stage, ``(2, 2, 2, 2)`` for PreActResNet-18.
        num_classes: outputs of the classifier.
        in_chans: input channels.
        widths: channels per stage.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1:
            raise ValueError(
                f"blocks and widths must be equally long lists of positive ints, "
                f"got {blocks!r} and {widths!r}"
            )
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, padding=1, bias=False)
        stages = []
        chans = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths, strict=True)):
            layers = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(PreActBlock(chans, width, stride))
                chans = width
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(chans)
        self.fc = nn.Linear(chans, num_classes)
        self.num_features = chans
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``[N, widths[-1]]``."""
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def preact_resnet18(num_classes: int = 10, in_chans: int = 3, **kwargs: object) -> PreActResNet:
    """PreActResNet-18 (``blocks=(2, 2, 2, 2)``, widths 64–512)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_chans, **kwargs)
