"""Targets: class indices to (smoothed) one-hot rows, label mixing, and the soft-target loss.

A mixed row's target is ``ỹ_k = w_k y_k + (1 − w_k) y_{partner[k]}`` where the own-label weight
``w_k`` is the effective ratio ``λ̄_k = mean(M_k)`` of the mask applied (Park, Yun & Chun,
NeurIPS 2022, section 2) or, on request, the drawn λ (``label_weight="nominal"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "one_hot_targets",
    "mix_targets",
    "soft_target_cross_entropy",
    "SoftTargetCrossEntropy",
]


def one_hot_targets(
    labels: Tensor,
    num_classes: int | None,
    batch_size: int,
    smoothing: float = 0.0,
    device: torch.device | None = None,
) -> Tensor:
    """Soft targets ``[B, K]`` from class indices ``[B]`` or one-hot/soft targets ``[B, K]``.

    Label smoothing as timm defines it: ``y (1 − ε) + ε / K`` (for one-hot ``y``: the true class
    gets ``1 − ε + ε/K``, every other ``ε/K``). Soft targets must be finite, ≥ 0 and sum to 1 per
    row (a ``ValueError`` says which rows do not).
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    device = device or labels.device
    if labels.shape[:1] != (batch_size,):
        raise ValueError(
            f"labels has batch size {labels.shape[0] if labels.dim() else 'none'} but images has "
            f"{batch_size}; pass one label (or one row of targets) per image"
        )
    if labels.dim() == 1:
        targets = _indices_to_one_hot(labels, num_classes, device)
    elif labels.dim() == 2:
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"labels has {labels.shape[1]} columns but num_classes={num_classes}")
        targets = labels.to(device=device, dtype=torch.float32)
        _check_soft(targets)
    else:
        raise ValueError(
            f"labels must be [B] class indices or [B, K] targets, got shape {tuple(labels.shape)}"
        )
    if smoothing:
        targets = targets * (1.0 - smoothing) + smoothing / targets.shape[1]
    return targets


def _indices_to_one_hot(labels: Tensor, num_classes: int | None, device: torch.device) -> Tensor:
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError("class-index labels must be an integer tensor; soft targets must be [B, K]")
    if num_classes is None:
        raise ValueError(
            "num_classes is required when labels are class indices; pass num_classes=K"
        )
    try:  # one_hot checks the range itself; re-raise its error as ours
        return F.one_hot(labels.to(device).long(), num_classes).float()
    except RuntimeError:
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]; check num_classes"
        ) from None


def _check_soft(targets: Tensor) -> None:
    """Soft targets are probability rows: finite, ≥ 0, summing to 1 (to float32 precision)."""
    if torch.compiler.is_compiling() or targets.numel() == 0:
        return
    bad = ~torch.isfinite(targets).all(dim=1) | (targets < 0).any(dim=1)
    bad |= (targets.sum(dim=1) - 1).abs() > 1e-3
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(1)[:5].tolist()
        raise ValueError(
            f"soft-target labels must be finite, ≥ 0 and sum to 1 per row; rows {rows} do not "
            "(pass class indices [B] or probability rows [B, K])"
        )


def mix_targets(targets: Tensor, partner: Tensor, weight: Tensor | float) -> Tensor:
    """``w ⊙ y + (1 − w) ⊙ y[partner]``: the own label weighted by ``weight`` (a number or
    ``[B]``), the partner's by the rest."""
    if isinstance(weight, Tensor):
        w = weight.to(device=targets.device, dtype=targets.dtype).reshape(-1, 1)
        return targets.index_select(0, partner).mul_(1.0 - w).addcmul_(targets, w)
    return targets.index_select(0, partner).mul_(1.0 - weight).add_(targets, alpha=weight)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy with soft targets: ``−Σ_k ỹ_k log softmax(z)_k``, averaged over the batch."""
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
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
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, targets, self.reduction)
