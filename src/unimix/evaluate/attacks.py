"""L∞ adversarial attacks (FGSM, PGD) in pixel space for models that take normalised inputs.

The threat model is the usual one of the robustness literature: an image ``x ∈ [0, 1]^{C×H×W}``
may be changed by ``δ`` with ``‖δ‖_∞ ≤ ε`` and ``x + δ ∈ [0, 1]``, ``ε`` in pixel units (e.g.
``8/255``). Models in the study take normalised inputs ``(x − μ) / σ`` (per-channel mean and
standard deviation), so the attacks here take and return *normalised* images and do all their
geometry in pixel space:

    x = x_n · σ + μ ,            model input  = x_n + δ / σ ,
    F = { δ : |δ| ≤ ε,  0 ≤ x + δ ≤ 1 }   (element-wise),   Π_F = clamp to F.

At ``δ = 0`` the model sees exactly the clean input, so ``ε = 0`` reproduces clean accuracy
bit for bit.

- FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015):
  ``δ = Π_F(ε · sign ∇_δ ℓ(f(x + δ), y)|_{δ=0})``.
- PGD (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018): optional uniform random start ``δ_0 ~ U[−ε, ε]`` (projected),
  then ``δ_{t+1} = Π_F(δ_t + α · sign ∇_δ ℓ)``; the default step ``α = 2.5 ε / T`` is Madry et
  al.'s choice.

Both ascend the summed cross-entropy by default, or the Carlini–Wagner margin
``max_{j≠y} z_j − z_y`` with ``loss="margin"``, which does not saturate on confident predictions.

With ``early_stop=True`` (the default) PGD freezes an example at the first iterate that the
model misclassifies. The model being in eval mode, examples do not interact, so the run with
``T + 1`` steps repeats the run with ``T`` steps and adds one; hence accuracy under PGD never
rises with the number of steps for a fixed start. (Returning only the last iterate would let an
example that was fooled at step 3 be "repaired" at step 10, which makes a model look more robust
than it is.)

Both attacks run the model in eval mode with its parameters' ``requires_grad`` switched off —
gradients are taken with :func:`torch.autograd.grad` with respect to ``δ`` only, so nothing
leaks into ``param.grad`` — and restore the training flag and every ``requires_grad`` on exit.
A maintained attack library (e.g. torchattacks) was not used: none takes a
:class:`torch.Generator` for the random start or per-channel pixel-space bounds with a
normalised model input, and the two attacks are a few lines each.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fgsm", "pgd", "attack_loss", "channel_stats", "frozen_eval", "default_step_size"]

LossName = Literal["ce", "margin"]


def channel_stats(
    value: float | Sequence[float] | Tensor, name: str, channels: int, like: Tensor
) -> Tensor:
    """Per-channel statistic (``mean`` or ``std``) as a ``[1, C, 1, 1]`` tensor like ``like``."""
    if isinstance(value, Tensor):
        t = value.detach().to(device=like.device, dtype=like.dtype).flatten()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor([float(value)], device=like.device, dtype=like.dtype)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        t = torch.tensor([float(v) for v in value], device=like.device, dtype=like.dtype)
    else:
        raise TypeError(
            f"{name} must be a number, a sequence of numbers or a tensor, got {value!r}"
        )
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"{name} has {t.numel()} values but the images have {channels} channels")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    if name == "std" and (t <= 0).any():
        raise ValueError(f"std must be > 0 in every channel, got {t.tolist()}")
    return t.reshape(1, channels, 1, 1)


def default_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s PGD step ``α = 2.5 ε / T`` (enough to cross the ball from any start)."""
    return 2.5 * eps / max(steps, 1)


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with no parameter requiring grad; restore both on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a number (pixel units, e.g. 8/255), got {type(eps).__name__}")
    if not (0.0 <= eps <= 1.0) or math.isnan(eps):
        raise ValueError(f"eps must lie in [0, 1] (pixel units, e.g. 8/255), got {eps}")
    return float(eps)


def _check_loss(loss: str) -> None:
    if loss not in ("ce", "margin"):
        raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")


def _setup(
    images: Tensor, labels: Tensor, mean: object, std: object
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check inputs; return (clean normalised images, std, lower, upper) for ``δ``."""
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("images and labels must be torch.Tensor")
    if images.dim() != 4 or not images.dtype.is_floating_point:
        raise ValueError(
            f"images must be normalised float [B, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must be class indices of shape [{images.shape[0]}], got {tuple(labels.shape)}"
        )
    x_n = images.detach().clone()  # a normal tensor even if images came from inference mode
    mean_t = channel_stats(mean, "mean", x_n.shape[1], x_n)
    std_t = channel_stats(std, "std", x_n.shape[1], x_n)
    pixels = x_n * std_t + mean_t
    tol = 1e-3
    if pixels.numel() and (pixels.min() < -tol or pixels.max() > 1 + tol):
        raise ValueError(
            f"un-normalised images span [{pixels.min():.4g}, {pixels.max():.4g}], not [0, 1]: "
            "pass the mean and std the images were normalised with (pixels in [0, 1])"
        )
    return x_n, std_t, -pixels, 1 - pixels


def _project(delta: Tensor, eps: float, lower: Tensor, upper: Tensor) -> Tensor:
    # |δ| ≤ ε, then keep x + δ in [0, 1]: bounds max(−ε, −x) and min(ε, 1 − x).
    return torch.minimum(torch.maximum(delta.clamp(-eps, eps), lower), upper)


def attack_loss(logits: Tensor, labels: Tensor, loss: LossName = "ce") -> Tensor:
    """Summed loss the attacks ascend: cross-entropy, or the margin ``max_{j≠y} z_j − z_y``.

    The margin loss (Carlini & Wagner, IEEE S&P 2017) does not saturate for confident
    predictions, where the cross-entropy gradient ``softmax(z) − e_y`` can vanish in float32;
    multiplying the logits by ``c > 0`` scales it by ``c`` and so leaves sign-gradient attacks
    unchanged. Summed, not averaged: each example's gradient is its own, whatever the batch.
    """
    z = logits.float()
    if loss == "ce":
        return F.cross_entropy(z, labels, reduction="sum")
    if loss == "margin":
        true = z.gather(1, labels[:, None])[:, 0]
        other = z.masked_fill(F.one_hot(labels, z.shape[1]).bool(), float("-inf")).amax(dim=1)
        return (other - true).sum()
    raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")


def _loss_grad(
    model: nn.Module, x_n: Tensor, std: Tensor, delta: Tensor, labels: Tensor, loss: LossName
) -> tuple[Tensor, Tensor]:
    delta = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_n + delta / std)
        (grad,) = torch.autograd.grad(attack_loss(logits, labels, loss), delta)
    return logits.detach(), grad


def fgsm(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    mean: float | Sequence[float] | Tensor,
    std: float | Sequence[float] | Tensor,
    loss: LossName = "ce",
) -> Tensor:
    """Fast gradient sign method: one L∞ step of size ``ε`` (pixel units) up the loss.

    ``x_adv = Π_F(x + ε · sign ∇_x ℓ(f(x), y))`` with ``F`` the ε-ball intersected with
    ``[0, 1]`` (Goodfellow et al., ICLR 2015).

    Args:
        model: classifier taking normalised ``[B, C, H, W]`` images and returning logits.
        images: normalised images ``(x − mean) / std`` whose pixels ``x`` lie in ``[0, 1]``.
        labels: ``[B]`` class indices (the attack is untargeted and raises their loss).
        eps: L∞ radius in pixel units, e.g. ``8/255``.
        mean, std: per-channel statistics the images were normalised with.
        loss: ``"ce"`` (cross-entropy, the usual choice) or ``"margin"`` (see
            :func:`attack_loss`).

    Returns:
        Adversarial images, normalised like ``images`` (``images`` itself is not modified).
    """
    eps = _check_eps(eps)
    _check_loss(loss)
    x_n, std_t, lower, upper = _setup(images, labels, mean, std)
    if eps == 0 or x_n.shape[0] == 0:
        return x_n
    with frozen_eval(model):
        _, grad = _loss_grad(model, x_n, std_t, torch.zeros_like(x_n), labels, loss)
    delta = _project(eps * grad.sign(), eps, lower, upper)
    return x_n + delta / std_t


def pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    mean: float | Sequence[float] | Tensor,
    std: float | Sequence[float] | Tensor,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    loss: LossName = "ce",
) -> Tensor:
    """Projected gradient descent (ascent on the loss) in the L∞ ball of radius ``ε`` (pixels).

    ``δ_0 = Π_F(U[−ε, ε])`` (or 0 without random start), ``δ_{t+1} = Π_F(δ_t + α sign ∇_δ ℓ)``
    for ``t < T`` (Madry et al., ICLR 2018), ``F`` the ε-ball intersected with ``[0, 1]``.

    Args:
        model, images, labels, eps, mean, std, loss: as in :func:`fgsm`.
        steps: number of gradient steps ``T`` (0 returns the start point).
        step_size: ``α`` in pixel units; ``None`` for ``2.5 ε / T``.
        random_start: start from a uniform point of the ε-ball instead of the clean image.
        early_stop: keep, for each example, the first iterate the model misclassifies (see the
            module docstring); with ``False`` the last iterate is returned.
        generator: random source for the start (drawn on the generator's device).

    Returns:
        Adversarial images, normalised like ``images``.
    """
    eps = _check_eps(eps)
    _check_loss(loss)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if step_size is None:
        step_size = default_step_size(eps, steps)
    elif isinstance(step_size, bool) or not isinstance(step_size, (int, float)):
        raise TypeError(f"step_size must be a number (pixel units) or None, got {step_size!r}")
    elif not step_size >= 0 or math.isinf(step_size):
        raise ValueError(f"step_size must be a finite number >= 0 (pixel units), got {step_size}")
    x_n, std_t, lower, upper = _setup(images, labels, mean, std)
    if eps == 0 or x_n.shape[0] == 0:
        return x_n
    if random_start:
        rand_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.rand(x_n.shape, generator=generator, device=rand_device, dtype=x_n.dtype)
        delta = _project((2 * noise - 1).to(x_n.device) * eps, eps, lower, upper)
    else:
        delta = torch.zeros_like(x_n)
    active = torch.ones(x_n.shape[0], dtype=torch.bool, device=x_n.device)
    with frozen_eval(model):
        for _ in range(steps):
            logits, grad = _loss_grad(model, x_n, std_t, delta, labels, loss)
            if early_stop:
                # An example fooled at the current iterate keeps it from now on.
                active &= logits.argmax(dim=1) == labels
                if not active.any():
                    break
            step_delta = _project(delta + step_size * grad.sign(), eps, lower, upper)
            delta = torch.where(active.view(-1, 1, 1, 1), step_delta, delta)
    return x_n + delta / std_t
