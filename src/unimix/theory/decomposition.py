"""The MSDA loss on a real model, decomposed into the standard loss and its regularisers.

Park, Yun & Chun (NeurIPS 2022, Theorem 1) write the mixed-sample loss as the standard loss plus
first- and second-order regularisers. The exact form used here (DESIGN.md section 2): for a row
``k`` mixed with its partner ``j`` under the mask ``M``, the label-mixed loss

    λ̄ ℓ(x̃_k, y_k) + (1 − λ̄) ℓ(x̃_k, y_j),       x̃_k = M ⊙ x_k + (1 − M) ⊙ x_j ,

is, term by term, ``Σ w ℓ(x_a + δ, y_a)`` over two *anchors* with their *own* labels:
``a = k`` with ``δ = (1 − M) ⊙ (x_j − x_k)`` and weight ``λ̄``, and ``a = j`` with
``δ = M ⊙ (x_k − x_j)`` and weight ``1 − λ̄`` (the mask symmetrised, re-weighted by its mean).
Expanding each anchor's loss in ``δ``,

    ℓ(x_a + δ, y_a) = ℓ(x_a, y_a) + ∇ℓᵀ δ + ½ δᵀ ∇²ℓ δ + R(δ) ,

gives the decomposition of :func:`loss_decomposition`; the Hessian enters through
Hessian-vector products by double backward only, never as a matrix. With ``δ`` scaled by ``ε``
the remainder falls like ``ε³`` (its fitted log-log slope is reported).

Averaged over the mask, the second-order term depends on the mask only through the
label-weighted coefficients ``A = A_label`` of :mod:`unimix.theory.coefficients`:

    E[½ δᵀ ∇²ℓ δ] = ½ tr(∇²ℓ (A ∘ Δx Δxᵀ)) ,      Δx = x_b − x_a  (A shared by the channels).

For a model whose first layer is linear, ``z = W x``, this is a quadratic form in ``W``
(:func:`first_layer_form`); for a generalised linear model ``ℓ = h(θᵀx) − y θᵀx`` it is exactly
``½ E_a[h''(θᵀx_a) θᵀ (A ∘ Σ_a) θ]`` with ``Σ_a = E_b[Δx Δxᵀ]`` (:func:`glm_second_order`; the
softmax version replaces ``h''`` by ``diag(p) − ppᵀ``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimix.theory.coefficients import DistanceProfile, PairwiseCoefficients

__all__ = [
    "LossDecomposition",
    "loss_decomposition",
    "FirstLayerForm",
    "first_layer_form",
    "glm_second_order",
]

LossName = Literal["cross_entropy", "logistic"]
LossLike = LossName | Callable[[Tensor, Tensor], Tensor]
PartnerLike = Literal["flip", "all"] | Tensor

DEFAULT_EPSILONS = (1 / 1024, 1 / 512, 1 / 256, 1 / 128)


# ---- shared helpers ------------------------------------------------------------------------


def _per_sample_loss(loss: LossLike) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-sample losses ``ℓ(logits, labels) → [N]``."""
    if loss == "cross_entropy":
        return lambda logits, labels: F.cross_entropy(logits, labels.long(), reduction="none")
    if loss == "logistic":

        def logistic(logits: Tensor, labels: Tensor) -> Tensor:
            if logits.dim() == 2 and logits.shape[1] != 1:
                raise ValueError(
                    f"loss='logistic' needs one logit per sample, got shape {tuple(logits.shape)}"
                )
            return F.binary_cross_entropy_with_logits(
                logits.reshape(-1), labels.to(logits.dtype), reduction="none"
            )

        return logistic
    if callable(loss):
        return loss
    raise ValueError(
        f"loss must be 'cross_entropy', 'logistic' or a callable (logits, labels) -> per-sample "
        f"losses, got {loss!r}"
    )


def _check_batch(images: Tensor, labels: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a floating-point tensor [B, C, H, W]")
    if not isinstance(labels, Tensor) or labels.shape[:1] != images.shape[:1]:
        raise ValueError("labels must be a tensor with one label per image")
    if images.shape[0] < 2:
        raise ValueError(
            "a batch of at least 2 images is needed: every image is mixed with another"
        )


def _frozen_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy in ``dtype`` with frozen parameters: per-sample outputs, input gradients only."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    net = copy.deepcopy(model).to(dtype).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


def _directional_derivatives(
    net: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``ℓ(x)``, ``∇ℓᵀδ`` and ``δᵀ∇²ℓ δ`` per sample, by one forward and a double backward.

    The model is in eval mode, so sample ``n``'s loss depends on input ``n`` only and the batch's
    summed loss has a block-diagonal Hessian: one Hessian-vector product serves every sample.
    """
    x = x.detach().requires_grad_(True)
    losses = loss_fn(net(x), y)
    (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
    first = (grad * delta).flatten(1).sum(1)
    if grad.requires_grad:
        (hvp,) = torch.autograd.grad(first.sum(), x, allow_unused=True)
        second = (hvp * delta).flatten(1).sum(1) if hvp is not None else torch.zeros_like(first)
    else:  # the loss is linear in the input: no second-order term
        second = torch.zeros_like(first)
    return losses.detach(), first.detach(), second.detach()


def _chunks(total: int, size: int) -> Sequence[slice]:
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


def _mean_se(values: Tensor) -> tuple[float, float]:
    n = values.numel()
    mean = float(values.mean())
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return mean, se


# ---- the decomposition -----------------------------------------------------------------------


@dataclass(frozen=True)
class LossDecomposition:
    """MSDA loss of a batch next to its expansion (means over ``draws`` mixer draws, with SEs).

    Attributes:
        msda_loss: the label-mixed loss ``λ̄ ℓ(x̃, y_a) + (1 − λ̄) ℓ(x̃, y_b)`` on the mixer's images.
        reweighted_loss: the same loss rewritten with standard labels only (the identity).
        identity_error: largest ``|msda − reweighted|`` over the draws (floating point only).
        standard_loss: ``ℓ(x, y)`` averaged over the clean batch.
        zeroth: ``Σ w ℓ(x_a, y_a)``: the standard loss with the draw's weights (its expectation is
            ``standard_loss``; it differs per draw only when the weights of a row do not sum to 1).
        first: ``Σ w ∇ℓᵀδ``.  second: ``Σ w ½ δᵀ∇²ℓ δ``.
        remainder: ``reweighted − zeroth − first − second``.
        epsilons, remainders: ``|E R(ε)|`` with ``δ`` scaled by ``ε``.
        remainder_slope: slope of ``log |E R(ε)|`` against ``log ε`` (3 for a smooth loss).
        draws: number of mixer calls averaged.
    """

    msda_loss: float
    msda_loss_stderr: float
    reweighted_loss: float
    identity_error: float
    standard_loss: float
    zeroth: float
    zeroth_stderr: float
    first: float
    first_stderr: float
    second: float
    second_stderr: float
    remainder: float
    remainder_stderr: float
    epsilons: tuple[float, ...]
    remainders: tuple[float, ...]
    remainder_slope: float
    draws: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_decomposition_args(draws: int, epsilons: Sequence[float], mixer: Any) -> list[float]:
    """Validate :func:`loss_decomposition`'s draws, epsilons and mixer; the scales as floats."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(
            f"draws must be an int >= 2 (standard errors need two draws), got {draws!r}"
        )
    eps = [float(e) for e in epsilons]
    if len(eps) < 2 or any(not 0 < e for e in eps):
        raise ValueError(f"epsilons must hold at least two positive scales, got {list(epsilons)}")
    if getattr(mixer, "label_smoothing", 0.0):
        raise ValueError(
            "the mixer smooths labels (label_smoothing > 0); the decomposition is of the "
            "label-mixed loss without smoothing: pass a Mixer with label_smoothing=0"
        )
    if not (callable(getattr(mixer, "sample", None)) and callable(getattr(mixer, "apply", None))):
        raise TypeError(f"mixer must be a unimix.Mixer, got {type(mixer).__name__}")
    return eps


@dataclass(frozen=True)
class _Perturbations:
    """The expansion's terms over all draws: anchor rows, their ``δ`` and weights, and L_MSDA."""

    anchor: Tensor  # [D·2B] anchor rows a_t
    delta: Tensor  # [D·2B, C, H, W] perturbations δ_t
    weight: Tensor  # [D, 2B] weights w_t (λ̄/B, then (1 − λ̄)/B)
    msda: Tensor  # [D] label-mixed loss of each draw


def _draw_perturbations(
    mixer: Any,
    net: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    draws: int,
) -> _Perturbations:
    """Call ``mixer`` ``draws`` times on ``x``; each row and its partner become an anchor.

    Checks that the mixer's images are ``M ⊙ x + (1 − M) ⊙ x[partner]`` for the masks and
    partners of its plan, and records the label-mixed loss of its images.
    """
    batch, device, dtype = x.shape[0], x.device, x.dtype
    rows = torch.arange(batch, device=device)
    anchor, delta, weight, msda = [], [], [], []
    for _ in range(draws):
        info = mixer.sample(batch, x.shape[2], x.shape[3], device=device)
        mixed, _ = mixer.apply(x, info)
        if info.masks is None:
            raise ValueError(
                "the mixer used an image-dependent method (no mask); the decomposition needs "
                "mask methods of unimix.masks"
            )
        m = info.masks.to(device=device, dtype=dtype).expand(batch, 1, *x.shape[2:])
        partner = info.partner.to(device)
        lam = info.label_weights.to(device=device, dtype=dtype)  # λ̄, or λ if "nominal"
        expected = m * x + (1 - m) * x[partner]
        if not torch.allclose(mixed.to(dtype), expected, rtol=1e-5, atol=1e-5):
            raise RuntimeError("the mixer's images do not match the masks and partners it reported")
        with torch.no_grad():
            logits = net(mixed.to(dtype))
            msda.append((lam * loss_fn(logits, y) + (1 - lam) * loss_fn(logits, y[partner])).mean())
        # row k as anchor: δ = (1 − M)(x_j − x_k), weight λ̄; its partner j: δ = M (x_k − x_j), 1 − λ̄
        anchor.append(torch.cat([rows, partner]))
        diff = x[partner] - x
        delta.append(torch.cat([(1 - m) * diff, -m * diff]))
        weight.append(torch.cat([lam, 1 - lam]) / batch)
    return _Perturbations(
        anchor=torch.stack(anchor).reshape(-1),
        delta=torch.stack(delta).flatten(0, 1),
        weight=torch.stack(weight),
        msda=torch.stack(msda),
    )


def _taylor_terms(
    net: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    terms: _Perturbations,
    chunk_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per term ``t``: ``ℓ(x_a)``, ``∇ℓᵀδ_t`` and ``½ δ_tᵀ∇²ℓ δ_t``, in chunks of ``chunk_size``."""
    n_terms = terms.anchor.numel()
    zeroth = torch.empty(n_terms, dtype=x.dtype, device=x.device)
    first = torch.empty_like(zeroth)
    second = torch.empty_like(zeroth)
    for sl in _chunks(n_terms, chunk_size):
        idx = terms.anchor[sl]
        zeroth[sl], first[sl], second[sl] = _directional_derivatives(
            net, loss_fn, x[idx], y[idx], terms.delta[sl]
        )
    return zeroth, first, 0.5 * second


def _shifted_losses(
    net: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    terms: _Perturbations,
    scale: float,
    chunk_size: int,
) -> Tensor:
    """``ℓ(x_a + scale·δ_t, y_a)`` per term ``t``."""
    out = torch.empty(terms.anchor.numel(), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for sl in _chunks(terms.anchor.numel(), chunk_size):
            idx = terms.anchor[sl]
            out[sl] = loss_fn(net(x[idx] + scale * terms.delta[sl]), y[idx])
    return out


def _per_draw(values: Tensor, weight: Tensor) -> Tensor:
    """``Σ_t w_t values_t`` for each draw: ``[D·2B] → [D]``."""
    return (values.reshape(weight.shape[0], -1) * weight).sum(1)


def _remainder_slope(epsilons: Sequence[float], remainders: Sequence[float]) -> float:
    """Slope of ``log |E R(ε)|`` against ``log ε`` (NaN if a remainder is zero)."""
    with np.errstate(divide="ignore"):
        logs = np.log(np.asarray(remainders))
    if not np.all(np.isfinite(logs)):
        return math.nan
    return float(np.polyfit(np.log(epsilons), logs, 1)[0])


def _summary(
    msda: Tensor,
    reweighted: Tensor,
    terms: tuple[Tensor, Tensor, Tensor],
    standard: float,
    epsilons: list[float],
    remainders: list[float],
) -> LossDecomposition:
    """Means and standard errors over the draws of the per-draw MSDA loss and its terms."""
    zeroth, first, second = terms
    z_mean, z_se = _mean_se(zeroth)
    f_mean, f_se = _mean_se(first)
    s_mean, s_se = _mean_se(second)
    r_mean, r_se = _mean_se(reweighted - zeroth - first - second)
    msda_mean, msda_se = _mean_se(msda)
    return LossDecomposition(
        msda_loss=msda_mean,
        msda_loss_stderr=msda_se,
        reweighted_loss=float(reweighted.mean()),
        identity_error=float((msda - reweighted).abs().max()),
        standard_loss=standard,
        zeroth=z_mean,
        zeroth_stderr=z_se,
        first=f_mean,
        first_stderr=f_se,
        second=s_mean,
        second_stderr=s_se,
        remainder=r_mean,
        remainder_stderr=r_se,
        epsilons=tuple(epsilons),
        remainders=tuple(remainders),
        remainder_slope=_remainder_slope(epsilons, remainders),
        draws=msda.numel(),
    )


def loss_decomposition(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    mixer: Any,
    *,
    draws: int = 16,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    loss: LossLike = "cross_entropy",
    dtype: torch.dtype = torch.float64,
    chunk_size: int = 1024,
) -> LossDecomposition:
    """Decompose the MSDA loss of ``model`` on a batch into standard loss, regularisers and remainder.

    Park, Yun & Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
    Perspective", NeurIPS 2022, Theorem 1, in the exact standard-label form of DESIGN.md
    section 2 (see the module docstring): per mixer draw,

        L_MSDA = Σ_t w_t ℓ(x_{a_t} + δ_t, y_{a_t})
               = Σ_t w_t [ℓ(x_a) + ∇ℓᵀδ_t + ½ δ_tᵀ ∇²ℓ δ_t] + remainder ,

    with two terms ``t`` per row (the row and its partner as anchors), weights ``λ̄/B`` and
    ``(1 − λ̄)/B``. Every term is averaged over ``draws`` calls of ``mixer``. Gradients and
    Hessian-vector products are taken with respect to the input by autograd (double backward).

    Args:
        model: the classifier; it is copied, put in eval mode (batch norm uses its running
            statistics: samples do not interact) and cast to ``dtype``.
        images: ``[B, C, H, W]`` float batch, ``B ≥ 2``.
        labels: ``[B]`` labels as ``loss`` takes them (class indices for cross-entropy).
        mixer: a :class:`unimix.Mixer` of mask methods with ``label_smoothing=0``; its draws
            (masks, partners, λ̄) define ``δ``.
        draws: number of mixer calls.
        epsilons: scales of ``δ`` for the remainder's slope (small enough for the cubic term to
            dominate, large enough to stay above rounding: float64 by default).
        loss: ``"cross_entropy"`` (softmax), ``"logistic"`` (one logit, labels in {0, 1}) or a
            callable ``(logits, labels) → per-sample losses``.
        dtype: working precision (float64 keeps the ``ε³`` remainder above rounding).
        chunk_size: samples per forward/backward pass.

    Returns:
        :class:`LossDecomposition`.
    """
    _check_batch(images, labels)
    eps = _check_decomposition_args(draws, epsilons, mixer)
    loss_fn = _per_sample_loss(loss)
    net = _frozen_copy(model, dtype)
    device = _model_device(net, images.device)
    x = images.detach().to(device=device, dtype=dtype)
    y = labels.detach().to(device)
    terms = _draw_perturbations(mixer, net, loss_fn, x, y, draws)
    zeroth, first, second = _taylor_terms(net, loss_fn, x, y, terms, chunk_size)

    def per_draw(values: Tensor) -> Tensor:
        return _per_draw(values, terms.weight)

    def shifted(scale: float) -> Tensor:
        return _shifted_losses(net, loss_fn, x, y, terms, scale, chunk_size)

    reweighted = per_draw(shifted(1.0))
    remainders = [
        abs(float(per_draw(shifted(e) - zeroth - e * first - e * e * second).mean())) for e in eps
    ]
    with torch.no_grad():
        standard = float(loss_fn(net(x), y).mean())
    parts = (per_draw(zeroth), per_draw(first), per_draw(second))
    return _summary(terms.msda, reweighted, parts, standard, eps, remainders)


# ---- the second-order term through A --------------------------------------------------------


def _coefficient_matrix(
    coefficients: Any, height: int, width: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``[HW, HW]`` A from a tensor, full :class:`PairwiseCoefficients` or :class:`DistanceProfile`."""
    if isinstance(coefficients, PairwiseCoefficients):
        if coefficients.values.shape[0] != coefficients.values.shape[1]:
            raise ValueError("coefficients has only some rows of A; estimate it with pixels=None")
        matrix = coefficients.values
    elif isinstance(coefficients, DistanceProfile):
        matrix = coefficients.to_matrix()
    elif isinstance(coefficients, Tensor):
        matrix = coefficients
    else:
        raise TypeError(
            "coefficients must be an [HW, HW] tensor, PairwiseCoefficients or a DistanceProfile, "
            f"got {type(coefficients).__name__}"
        )
    hw = height * width
    if matrix.shape != (hw, hw):
        raise ValueError(
            f"coefficients is {tuple(matrix.shape)} but the images have {height}×{width} pixels: "
            f"A must be [{hw}, {hw}]"
        )
    weighting = getattr(coefficients, "weighting", "label")
    if weighting != "label":
        raise ValueError(
            "the second-order term's coefficient is A under the label weighting; estimate it with "
            "weighting='label'"
        )
    return matrix.to(device=device, dtype=dtype)


def _pairs(partner: PartnerLike, batch: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Anchor and partner indices with the weight of each pair in the batch average."""
    rows = torch.arange(batch, device=device)
    if isinstance(partner, Tensor):
        if partner.shape != (batch,):
            raise ValueError(
                f"partner must be [B] = [{batch}] row indices, got shape {tuple(partner.shape)}"
            )
        return rows, partner.to(device).long(), torch.full((batch,), 1.0 / batch, device=device)
    if partner == "flip":
        return rows, rows.flip(0), torch.full((batch,), 1.0 / batch, device=device)
    if partner == "all":
        a, b = torch.meshgrid(rows, rows, indexing="ij")
        return (
            a.reshape(-1),
            b.reshape(-1),
            torch.full((batch * batch,), 1.0 / batch**2, device=device),
        )
    raise ValueError(
        f"partner must be 'flip' (the Mixer's default pairing), 'all' (every pair) or a [B] "
        f"tensor of partner rows, got {partner!r}"
    )


def _glm_parts(weight: Any, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if isinstance(weight, nn.Linear):
        if bias is not None:
            raise TypeError("give bias only with a weight tensor, not with an nn.Linear")
        return weight.weight.detach(), None if weight.bias is None else weight.bias.detach()
    if not isinstance(weight, Tensor) or weight.dim() not in (1, 2):
        raise TypeError("weight must be an nn.Linear or a [K, D] (or [D]) tensor θ")
    return (weight.detach() if weight.dim() == 2 else weight.detach()[None]), bias


def glm_second_order(
    weight: Tensor | nn.Linear,
    images: Tensor,
    coefficients: Tensor | PairwiseCoefficients | DistanceProfile,
    *,
    bias: Tensor | None = None,
    partner: PartnerLike = "flip",
    loss: Literal["cross_entropy", "logistic"] = "cross_entropy",
    chunk_size: int = 4096,
) -> float:
    """The exact second-order MSDA term of a generalised linear model: ``½ E_a[h''(θᵀx_a) θᵀ(A∘Σ_a)θ]``.

    Park, Yun & Chun (NeurIPS 2022): for ``ℓ = h(θᵀx) − y θᵀx`` the mask enters the second-order
    term only through ``A`` (label weighting), with ``Σ_a = E_b[(x_b − x_a)(x_b − x_a)ᵀ]`` over
    the partners ``b`` and ``A`` shared by the channels. ``loss="logistic"`` (one logit, ``h`` the
    softplus, ``h'' = σ(1 − σ)``) is that form; ``"cross_entropy"`` (``K`` logits ``z = Θx + b``)
    is its softmax version ``½ E_a tr[(diag(p) − ppᵀ) Θ (A∘Σ_a) Θᵀ]``.

    Args:
        weight: ``θ`` as ``[K, C·H·W]`` (``[D]`` or ``K = 1`` for logistic), or an ``nn.Linear``.
        images: ``[B, C, H, W]``, flattened as the linear model sees them.
        coefficients: ``A_label`` as ``[HW, HW]``, full :class:`PairwiseCoefficients` or a
            :class:`DistanceProfile` (``weighting="label"``).
        bias: the intercept, if ``weight`` is a tensor.
        partner: ``"flip"`` (row ``k`` with ``B−1−k``: the Mixer's default), ``"all"`` (every
            ordered pair, ``b`` uniform over the batch) or a ``[B]`` tensor of partner rows.
        loss: ``"cross_entropy"`` or ``"logistic"``.
        chunk_size: pairs per step.

    Returns:
        The value, comparable with :attr:`LossDecomposition.second` for a mixer of the same
        method and pairing.
    """
    theta, bias = _glm_parts(weight, bias)
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("images must be a [B, C, H, W] tensor")
    batch, channels, height, width = images.shape
    dtype = torch.float64
    device = theta.device
    x = images.detach().to(device=device, dtype=dtype)
    theta = theta.to(dtype)
    k = theta.shape[0]
    if theta.shape[1] != channels * height * width:
        raise ValueError(
            f"weight has {theta.shape[1]} inputs but the images have C·H·W = {channels * height * width}"
        )
    if loss == "logistic" and k != 1:
        raise ValueError(f"loss='logistic' needs a single θ (one logit), got {k} rows")
    if loss not in ("cross_entropy", "logistic"):
        raise ValueError(f"loss must be 'cross_entropy' or 'logistic', got {loss!r}")
    a_mat = _coefficient_matrix(coefficients, height, width, device, dtype)

    z = x.flatten(1) @ theta.T + (0.0 if bias is None else bias.to(device=device, dtype=dtype))
    if loss == "logistic":
        p = torch.sigmoid(z)
        hess = (p * (1 - p))[:, :, None]  # [B, 1, 1]
    else:
        p = torch.softmax(z, dim=1)
        hess = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    theta_c = theta.reshape(k, channels, height * width)
    anchors, partners, pair_w = _pairs(partner, batch, device)
    total = torch.zeros((), dtype=dtype, device=device)
    for sl in _chunks(anchors.numel(), chunk_size):
        a, b = anchors[sl], partners[sl]
        diff = (x[b] - x[a]).reshape(-1, channels, height * width)
        proj = torch.einsum("kcq,ncq->nkq", theta_c, diff)  # Θ diag(Δx), channels summed
        quad = torch.einsum("nkq,qr,nlr->nkl", proj, a_mat, proj)
        total += (pair_w[sl] * torch.einsum("nkl,nkl->n", hess[a], quad)).sum()
    return float(0.5 * total)


def _find_first_layer(
    net: nn.Module, x: Tensor, layer: nn.Module | None
) -> tuple[nn.Module, torch.Size]:
    """The first Linear/Conv layer the input reaches, checked to act on the raw input."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    candidates = (
        [layer] if layer is not None else [m for m in net.modules() if isinstance(m, kinds)]
    )
    if layer is not None and not isinstance(layer, kinds):
        raise TypeError(f"layer must be an nn.Linear or nn.Conv*d, got {type(layer).__name__}")
    seen: list[tuple[nn.Module, Tensor]] = []

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        if not seen:
            seen.append((module, args[0]))

    handles = [m.register_forward_pre_hook(record) for m in candidates]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("no Linear or Conv layer of the model was called; pass layer=")
    module, inp = seen[0]
    if inp.numel() != x[:1].numel() or not torch.equal(inp.reshape(-1), x[:1].reshape(-1)):
        raise ValueError(
            f"the first layer reached ({type(module).__name__}) does not receive the raw input "
            "(only reshaping is allowed before it): the first-layer form needs z = W x"
        )
    if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Conv3d) and module.padding_mode != "zeros":
        raise ValueError("the first convolution must use zero padding (a linear map of the input)")
    return module, inp.shape[1:]


def _linear_part(layer: nn.Module, v: Tensor, weight: Tensor) -> Tensor:
    """The first layer without its bias, with weight ``weight``, applied to ``v``."""
    if isinstance(layer, nn.Linear):
        return F.linear(v, weight)
    return layer._conv_forward(v, weight, None)  # type: ignore[operator]


class FirstLayerForm:
    """The second-order MSDA term as a quadratic form in the first layer's weight.

    For ``z = W x + b`` and the rest of the network ``g``, the mask-averaged second-order term is

        R(W) = ½ Σ_{(a,b)} w_ab Σ_k (W v_abk)ᵀ ∇²_z ℓ(g(z_a), y_a) (W v_abk) ,
        v_abk = (x_b − x_a) ⊙ L_k ,     A = L Lᵀ ,

    (``L_k`` the columns of a square root of ``A``, broadcast over channels), since
    ``Σ_k v_k v_kᵀ = A ∘ Δx Δxᵀ``. The Hessians ``∇²_z ℓ`` are held at the model's activations;
    call the object with another weight of the same shape to evaluate (and differentiate) ``R``
    there. ``value`` is ``R`` at the model's own weight.
    """

    def __init__(
        self,
        net: nn.Module,
        layer: nn.Module,
        in_shape: torch.Size,
        x: Tensor,
        y: Tensor,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        anchors: Tensor,
        diffs: Tensor,
        pair_w: Tensor,
        root: Tensor,
        chunk_size: int,
    ) -> None:
        self._net, self.layer, self._in_shape = net, layer, in_shape
        self._x, self._y, self._loss_fn = x, y, loss_fn
        self._anchors, self._diffs, self._pair_w, self._root = anchors, diffs, pair_w, root
        self._chunk = chunk_size
        with torch.no_grad():
            self._z = layer(x.reshape(-1, *in_shape))  # the first layer's outputs, held fixed
        self.rank = root.shape[1]
        self.value = float(self(layer.weight.detach()))

    def __call__(self, weight: Tensor) -> Tensor:
        if weight.shape != self.layer.weight.shape:
            raise ValueError(f"weight must have the layer's shape {tuple(self.layer.weight.shape)}")
        weight = weight.to(self._x.dtype)
        n_pairs, rank = self._anchors.numel(), self.rank
        total = weight.new_zeros(())
        override: list[Tensor] = []
        handle = self.layer.register_forward_hook(lambda module, args, out: override[0])
        try:
            for sl in _chunks(n_pairs * rank, self._chunk):
                item = torch.arange(sl.start, sl.stop, device=self._x.device)
                pair, k = item // rank, item % rank
                a = self._anchors[pair]
                # v = Δx ⊙ L_k, the pixel weights shared by the channels
                v = self._diffs[pair] * self._root[:, k].T.reshape(-1, 1, *self._x.shape[2:])
                v = v.reshape(-1, *self._in_shape)
                u = _linear_part(self.layer, v, weight)
                z = self._z[a].requires_grad_(True)
                override[:] = [z]
                losses = self._loss_fn(self._net(self._x[a]), self._y[a])
                (grad,) = torch.autograd.grad(losses.sum(), z, create_graph=True)
                if not grad.requires_grad:  # the head is linear in z
                    continue
                (hu,) = torch.autograd.grad((grad * u).sum(), z, create_graph=weight.requires_grad)
                quad = (hu * u).flatten(1).sum(1)
                total = total + (self._pair_w[pair] * quad).sum()
        finally:
            handle.remove()
        return 0.5 * total


def first_layer_form(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    coefficients: Tensor | PairwiseCoefficients | DistanceProfile,
    *,
    partner: PartnerLike = "flip",
    layer: nn.Module | None = None,
    loss: LossLike = "cross_entropy",
    dtype: torch.dtype = torch.float64,
    rank_tol: float = 1e-10,
    chunk_size: int = 2048,
) -> FirstLayerForm:
    """The quadratic form in the first-layer weight that the second-order MSDA term induces.

    Park, Yun & Chun (NeurIPS 2022, section 3.2): for a first layer ``z = W x + b`` (linear or
    convolutional, acting on the raw input), ``E_M[½ δᵀ∇²_x ℓ δ] = ½ tr(∇²_z ℓ · W (A∘ΔxΔxᵀ) Wᵀ)``
    — the pixel-level coefficients ``A`` become a data-dependent penalty on ``W`` (see
    :class:`FirstLayerForm`). Its value is the expectation of :attr:`LossDecomposition.second`
    for a mixer of the same method and pairing; for a linear model it equals
    :func:`glm_second_order`.

    Args:
        model: the network; copied, eval mode, cast to ``dtype``.
        images, labels: the batch.
        coefficients: ``A_label`` (``[HW, HW]``, full :class:`PairwiseCoefficients` or a
            :class:`DistanceProfile`, ``weighting="label"``).
        partner: ``"flip"``, ``"all"`` or ``[B]`` partner rows (see :func:`glm_second_order`).
        layer: the first layer (default: found by running the model).
        loss: as in :func:`loss_decomposition`.
        dtype: working precision.
        rank_tol: eigenvalues of ``A`` below ``rank_tol · max`` are dropped from its square root.
        chunk_size: directions per double backward.
    """
    _check_batch(images, labels)
    loss_fn = _per_sample_loss(loss)
    net = _frozen_copy(model, dtype)
    device = _model_device(net, images.device)
    x = images.detach().to(device=device, dtype=dtype)
    y = labels.detach().to(device)
    if layer is not None:
        # the copy's module at the same position as the given one
        names = {id(m): n for n, m in model.named_modules()}
        if id(layer) not in names:
            raise ValueError("layer must be a module of model")
        layer = net.get_submodule(names[id(layer)])
    first, in_shape = _find_first_layer(net, x, layer)
    batch, _, height, width = x.shape
    a_mat = _coefficient_matrix(coefficients, height, width, device, dtype)
    evals, evecs = torch.linalg.eigh(0.5 * (a_mat + a_mat.T))
    keep = evals > rank_tol * evals.abs().max().clamp_min(1e-300)
    root = evecs[:, keep] * evals[keep].sqrt()
    anchors, partners, pair_w = _pairs(partner, batch, device)
    diffs = x[partners] - x[anchors]
    return FirstLayerForm(
        net, first, in_shape, x, y, loss_fn, anchors, diffs, pair_w, root, chunk_size
    )
