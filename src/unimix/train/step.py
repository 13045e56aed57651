"""One training step, testable alone: mix → forward → loss → backward → optimiser step.

Given a batch ``(x, y)`` and a :class:`unimix.Mixer`, the step trains on the mixed images
``x̃ = M ⊙ x_a + (1 − M) ⊙ x_b`` with the soft targets ``ỹ = λ̄ y_a + (1 − λ̄) y_b`` and the
soft-target cross-entropy ``−Σ_k ỹ_k log softmax(f(x̃))_k`` (Park, Yun & Chun, NeurIPS 2022).
Without a mixer (``methods: none``, or mixing already done by the loader's collate function)
hard labels get the plain cross-entropy, with label smoothing if set, and soft targets the
soft-target cross-entropy.

    >>> parts = TrainParts(model, torch.optim.SGD(model.parameters(), lr=0.1), mixer=mixer)
    >>> out = train_step(parts, images, labels)              # doctest: +SKIP
    >>> out.loss, out.correct, out.lr                        # doctest: +SKIP
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimix.train import distributed

__all__ = ["TrainParts", "StepOutput", "train_step", "evaluate_loader", "autocast"]


def autocast(amp: str, device: torch.device) -> Any:
    """The autocast context of ``amp`` (``none``, ``bf16`` or ``fp16``) on ``device``."""
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainParts:
    """What a step needs: the model, its optimiser, and how to run it.

    Attributes:
        model: the model itself (what a checkpoint saves; what PuzzleMix's saliency pass and
            Manifold Mixup's hook see).
        optimizer: updated once per step.
        scheduler: stepped once per step (``None``: none).
        scaler: a :class:`torch.amp.GradScaler` (``None``: plain backward).
        mixer: mixes each batch on the device (``None``: the batch is used as it comes).
        train_model: what the forward pass calls (DistributedDataParallel, ``torch.compile``);
            default ``model``.
        amp, channels_last, grad_clip, label_smoothing: as the :class:`TrainConfig` keys.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    scaler: Any = None
    mixer: Any = None
    train_model: nn.Module | None = None
    amp: str = "none"
    channels_last: bool = False
    grad_clip: float | None = None
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class StepOutput:
    """One step's results, on the device (nothing synchronised).

    Attributes:
        loss: the batch's mean training loss (detached).
        correct: the number of rows whose top-1 prediction is the (dominant) target.
        n: the batch size.
        lr: the learning rate the step used (before the scheduler moved on).
    """

    loss: Tensor
    correct: Tensor
    n: int
    lr: float


def _soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    from unimix import soft_target_cross_entropy

    return soft_target_cross_entropy(logits, targets)


def train_step(
    parts: TrainParts, images: Tensor, labels: Tensor, clock: Any = None
) -> StepOutput:
    """Mix ``images``/``labels`` (if ``parts.mixer``), forward, loss, backward, optimiser step.

    ``clock`` (a :class:`unimix.train.meters.Clock`) times the mixing under ``mix_ms``.
    """
    mixer, model = parts.mixer, parts.model
    targets = labels
    if mixer is not None:
        start = clock.mark() if clock is not None else None
        extra = {"model": model} if mixer.requires_model else {}
        images, targets = mixer(images, labels, **extra)
        if clock is not None:
            clock.add("mix_ms", start, clock.mark())
    if parts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(parts.amp, images.device):
        logits = (parts.train_model or model)(images)
    if targets.dim() == 2:
        loss, hard = _soft_ce(logits, targets), targets.argmax(dim=1)
    else:
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=parts.label_smoothing)
        hard = targets
    optimizer, scaler = parts.optimizer, parts.scaler
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if parts.grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), parts.grad_clip)
    lr = float(optimizer.param_groups[0]["lr"])
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if parts.scheduler is not None:
        parts.scheduler.step()
    with torch.no_grad():
        correct = (logits.detach().argmax(dim=1) == hard).sum()
    return StepOutput(loss.detach(), correct, int(images.shape[0]), lr)


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    loader: Any,
    dist: distributed.DistInfo,
    amp: str = "none",
    channels_last: bool = False,
) -> dict[str, float]:
    """Test cross-entropy (NLL) and top-1 accuracy of ``model`` over ``loader``, summed over
    every rank's share of the test set: ``test_loss``, ``test_acc``, ``test_err``."""
    was_training = model.training
    model.eval()
    device = dist.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(0)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(amp, device):
            logits = model(images).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += (logits.argmax(dim=1) == labels).sum().double()
        sums[2] += labels.shape[0]
    model.train(was_training)
    s = distributed.all_reduce_sum(sums, dist).tolist()
    if s[2] == 0:
        return {"test_loss": math.nan, "test_acc": math.nan, "test_err": math.nan}
    acc = s[1] / s[2]
    return {"test_loss": s[0] / s[2], "test_acc": acc, "test_err": 1.0 - acc}
