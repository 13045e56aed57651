"""Targets: class indices to (smoothed) one-hot rows, label mixing, and the soft-target loss.

A mixed row's target is ``ỹ_k = w_k y_k + (1 − w_k) y_{partner[k]}`` where the own-label weight
``w_k`` is the effective ratio ``λ̄_k = mean(M_k)`` of the mask applied (Park, Yun & Chun,
NeurIPS 2022, section 2) or, on request, the drawn λ (``label_weight="nominal"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimix.checks import (
    check_choice,
    check_class_indices,
    check_label_shape,
    check_same_batch,
    check_tensor,
)

__all__ = [
    "one_hot_targets",
    "mix_targets",
    "soft_target_cross_entropy",
    "SoftTargetCrossEntropy",
]


def one_hot_targets(
    labels: Tensor,
    num_classes: int | None,
    batch_size: int | None,
    smoothing: float = 0.0,
    device: torch.device | None = None,
    *,
    multi_label: bool = False,
    name: str = "labels",
) -> Tensor:
    """Soft targets ``[B, K]`` from class indices ``[B]`` or one-hot/soft targets ``[B, K]``: the
    one labels → targets path of the engine and of the timm, torchvision and HF adapters.

    Label smoothing as timm defines it: the true class of an index label gets ``1 − ε + ε/K`` and
    every other class ``ε/K`` (bit for bit timm's values); targets ``[B, K]`` become
    ``y (1 − ε) + ε/K``. With ``multi_label=True`` the targets are ``[B, K]`` independent
    probabilities (any sum) smoothed towards ½: ``y (1 − ε) + ε/2``. Soft targets otherwise must
    be finite, ≥ 0 and sum to 1 per row (a ``ValueError`` says which rows do not).
    ``batch_size`` (``None``: not checked) is the number of images the labels go with; ``name``
    is the argument the messages name.
    """
    check_tensor(name, labels)
    check_label_shape(name, labels, num_classes)
    if batch_size is not None:
        check_same_batch("images", batch_size, name, labels.shape[0])
    device = device or labels.device
    if labels.dim() == 1:
        if multi_label:
            raise ValueError(
                f"multi_label=True expects dense {name} [B, num_classes], got class indices of "
                f"shape {tuple(labels.shape)}; pass multi_label=False"
            )
        k = check_class_indices(name, labels, num_classes)
        off = smoothing / k
        targets = torch.full((labels.shape[0], k), off, device=device)
        return targets.scatter_(1, labels.to(device).long().view(-1, 1), 1.0 - smoothing + off)
    targets = labels.to(device=device, dtype=torch.float32)
    if not multi_label:
        _check_soft(targets, name)
    if smoothing:
        floor = 0.5 if multi_label else 1.0 / targets.shape[1]
        targets = targets * (1.0 - smoothing) + smoothing * floor
    return targets


def _check_soft(targets: Tensor, name: str) -> None:
    """Soft targets are probability rows: finite, ≥ 0, summing to 1 (to float32 precision)."""
    if torch.compiler.is_compiling() or targets.numel() == 0:
        return
    bad = ~torch.isfinite(targets).all(dim=1) | (targets < 0).any(dim=1)
    bad |= (targets.sum(dim=1) - 1).abs() > 1e-3
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(1)[:5].tolist()
        raise ValueError(
            f"soft-target {name} must be finite, ≥ 0 and sum to 1 per row; rows {rows} do not "
            f"(pass class indices [B] or probability rows [B, K])"
        )


def mix_targets(
    targets: Tensor, partner: Tensor, weight: Tensor | float, *, dtype: torch.dtype | None = None
) -> Tensor:
    """``w ⊙ y + (1 − w) ⊙ y[partner]``: row ``k``'s own targets weighted by ``weight`` (a number
    or ``[B]``), its partner's (``partner[k]``, the plan's, never assumed to be the flip) by the
    rest, in timm's order of operations.

    Without ``dtype`` a weight tensor is taken in the targets' dtype, and so is the result; with
    ``dtype`` the weight keeps its own dtype (timm's arithmetic) and the result has ``dtype``.
    """
    y = targets if dtype is None else targets.to(dtype)
    if isinstance(weight, Tensor):
        weight = weight.to(y.device).reshape(-1, 1)
        weight = weight.to(y.dtype) if dtype is None else weight
    mixed = y * weight + y.index_select(0, partner.to(y.device)) * (1.0 - weight)
    return mixed if dtype is None else mixed.to(dtype)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy with soft targets: ``−Σ_k ỹ_k log softmax(z)_k``, averaged over the batch."""
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape"
        )
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # a softmax in half precision loses the small probabilities
    loss = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class SoftTargetCrossEntropy(nn.Module):
    """Module form of :func:`soft_target_cross_entropy`, for the targets a ``Mixer`` returns."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, ("mean", "sum", "none"))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, targets, self.reduction)
