"""The optimiser and the per-step learning-rate schedule of a run."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from unimix.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum (optionally Nesterov) and weight decay; with ``decay_norm_bias: false``,
    biases and normalisation parameters (every parameter of dimension ≤ 1) are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.decay_norm_bias and cfg.weight_decay > 0:
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups: Any = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``lr`` for optimiser step ``step`` (0-based).

    Linear warm-up over ``W = round(warmup_epochs · steps_per_epoch)`` steps, ``(s + 1) / W``;
    then ``cosine``: ``m + (1 − m) · ½ (1 + cos(π (s − W) / (T − W)))`` with ``m = min_lr / lr``
    (Loshchilov & Hutter, SGDR, without restarts), ``step``: ``gamma`` to the number of
    ``milestones`` (epochs) passed, or ``constant``.
    """
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        floor = cfg.min_lr / cfg.lr
        span = max(1, total_steps - warm)
        progress = min(1.0, (step - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        passed = sum(step >= round(m * steps_per_epoch) for m in cfg.milestones)
        return cfg.gamma**passed
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch, total_steps)
    )
