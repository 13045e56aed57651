"""Plumbing shared by the image- and model-dependent methods of :mod:`unimix.methods`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


def random_device(generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device (CPU without a generator)."""
    return generator.device if generator is not None else torch.device("cpu")


def as_float(images: Tensor) -> Tensor:
    """Floating-point view of a batch (uint8 images become float32 with the same 0–255 values)."""
    return images if images.is_floating_point() else images.float()


def check_pair(images: Tensor, partners: Tensor, lam: Tensor) -> None:
    if images.dim() != 4 or partners.shape != images.shape:
        raise ValueError(
            f"images and partners must be [N, C, H, W] of the same shape, got "
            f"{tuple(images.shape)} and {tuple(partners.shape)}"
        )
    if lam.dim() != 1 or lam.shape[0] != images.shape[0]:
        raise ValueError(
            f"lam must hold one λ per row ({images.shape[0]}), got shape {tuple(lam.shape)}"
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DataParallel`` / ``DistributedDataParallel`` wrappers."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def require_model(context: Mapping[str, Any], method: str) -> nn.Module:
    model = context.get("model")
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{method} needs the model being trained: call mixer(images, labels, model=model, "
            f"batch_labels=labels) (got model={type(model).__name__ if model is not None else None})"
        )
    return model


def match_rows(query: Tensor, pool: Tensor) -> Tensor | None:
    """For each row of ``query``, the index of a bit-identical row of ``pool``; ``None`` if any has none.

    Rows are compared through a fixed random projection (candidates), then verified exactly.
    """
    q = query.reshape(query.shape[0], -1)
    p = pool.reshape(pool.shape[0], -1)
    if q.shape[1] != p.shape[1] or p.shape[0] == 0:
        return None
    proj = torch.randn(
        q.shape[1], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    proj = proj.to(q.device)
    fq, fp = q.double() @ proj, p.double() @ proj
    idx = (fq[:, None, :] - fp[None, :, :]).abs().sum(-1).argmin(dim=1)
    wrong = (q != p.index_select(0, idx)).any(dim=1).nonzero().squeeze(1).tolist()
    for i in wrong:  # near-duplicate rows can fool the projection: compare those exactly
        equal = (p == q[i]).all(dim=1).nonzero()
        if equal.numel() == 0:
            return None
        idx[i] = equal[0, 0]
    return idx


def resolve_rows(
    images: Tensor, partners: Tensor, context: Mapping[str, Any], method: str
) -> tuple[Tensor, Tensor]:
    """Batch indices of the rows being mixed and of their partners.

    ``context["rows"]`` / ``context["partner_rows"]`` are used when the caller provides them.
    Otherwise the rows are taken to be the whole batch in order (what :class:`unimix.Mixer` passes
    when this method mixes every row: one method, ``prob=1``) and each partner is found among them
    by exact comparison.
    """
    n = images.shape[0]
    if "rows" in context and "partner_rows" in context:
        rows = torch.as_tensor(context["rows"], device=images.device).long()
        partner_rows = torch.as_tensor(context["partner_rows"], device=images.device).long()
        if rows.shape != (n,) or partner_rows.shape != (n,):
            raise ValueError(
                f"context rows/partner_rows must hold {n} indices each, got "
                f"{tuple(rows.shape)} and {tuple(partner_rows.shape)}"
            )
        return rows, partner_rows
    match = match_rows(partners, images)
    if match is None:
        raise ValueError(
            f"{method} could not locate the partner images in the batch: without "
            "context['rows'] and context['partner_rows'] it must mix every row of the batch "
            "(use it as the Mixer's only method with prob=1.0)"
        )
    return torch.arange(n, device=images.device), match


def gather_labels(context: Mapping[str, Any], index: Tensor, batch: int, method: str) -> Tensor:
    """The batch's labels (class indices ``[B]`` or soft targets ``[B, K]``) at ``index``.

    Read from ``context["labels"]`` when the caller provides it, else ``context["batch_labels"]``
    (``Mixer.__call__`` takes ``labels`` itself, so a user passes ``batch_labels=labels``).
    """
    labels = context.get("labels", context.get("batch_labels"))
    if not isinstance(labels, Tensor):
        raise ValueError(
            f"{method} needs the batch's labels for its saliency: call "
            "mixer(images, labels, model=model, batch_labels=labels)"
        )
    if "rows" not in context and labels.shape[0] != batch:
        raise ValueError(
            f"{method} got labels for {labels.shape[0]} rows but mixes {batch}: without "
            "context['rows'] it must mix every row of the batch (only method, prob=1.0)"
        )
    return labels.to(index.device).index_select(0, index)
