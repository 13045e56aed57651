"""Wide residual networks: WRN-28-10, the larger CIFAR benchmark of the MSDA literature.

Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016). WRN-``d``-``k`` has a 3×3 stem with
16 channels and three stages of ``n = (d − 4) / 6`` pre-activation basic blocks with
``16k, 32k, 64k`` channels (stride 2 at the start of stages 2 and 3), optional dropout between
the two convolutions of a block, a final BN-ReLU, global average pooling and a linear classifier.
WRN-28-10 (``n = 4``, widths 160, 320, 640) has 36.5 M parameters for 10 classes. As in the
authors' code, a block that changes the shape projects the pre-activated input with a 1×1
convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WideBlock", "WideResNet", "wide_resnet"]


class WideBlock(nn.Module):
    """``bn-relu-conv3×3-(dropout)-bn-relu-conv3×3`` plus identity or 1×1 projection."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Conv2d(in_chans, out_chans, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = F.relu(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, self.drop_rate, self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` for small images.

    Args:
        depth: total depth ``6n + 4`` (28 for WRN-28-10).
        widen: width multiplier ``k`` (10 for WRN-28-10).
        num_classes: outputs of the classifier.
        in_chans: input channels.
        drop_rate: dropout probability inside each block (0 in the MSDA benchmarks).
    """

    def __init__(
        self,
        depth: int = 28,
        widen: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, …), got {depth!r}")
        if isinstance(widen, bool) or not isinstance(widen, int) or widen < 1:
            raise ValueError(f"widen must be a positive int, got {widen!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate!r}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, padding=1, bias=False)
        stages = []
        chans = 16
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(WideBlock(chans, width, 2 if i > 0 and j == 0 else 1, drop_rate))
                chans = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(chans)
        self.fc = nn.Linear(chans, num_classes)
        self.num_features = chans
        self.depth, self.widen = depth, widen
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``[N, 64 · widen]``."""
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def wide_resnet(
    num_classes: int = 10, in_chans: int = 3, depth: int = 28, widen: int = 10, **kwargs: object
) -> WideResNet:
    """WRN-``depth``-``widen`` (WRN-28-10 by default)."""
    return WideResNet(depth, widen, num_classes, in_chans, **kwargs)
