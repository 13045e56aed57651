"""Evaluate a training run directory (``unimix train``'s output): the shared step of
``unimix evaluate`` and ``unimix study``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from unimix.evaluate.evaluate import EvalResult, evaluate_model

__all__ = ["evaluate_run"]


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    seed: int = 0,
    **options: Any,
) -> EvalResult:
    """Load a run's model and test set and :func:`~unimix.evaluate.evaluate_model` them.

    ``device`` defaults to CUDA when available. ``options`` go to ``evaluate_model``
    (``eps_list``, ``pgd_steps``, ``occlusion_size`` …); the attacks' and occlusion's random
    draws come from a generator seeded with ``seed``. In-memory test sets (digits, CIFAR) are
    sliced into batches directly; others go through a loader with pinned memory on CUDA.
    """
    from unimix.data import make_loader
    from unimix.train import load_run

    run_dir = Path(run_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, spec, config = load_run(run_dir, device)
    tensors = spec.test_tensors()
    data: Any = tensors
    if tensors is None:
        data = make_loader(spec.test, batch_size, shuffle=False, device=device)
    result = evaluate_model(
        model,
        data,
        mean=spec.mean,
        std=spec.std,
        device=device,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
        **options,
    )
    result.meta.update(
        {
            "run_dir": str(run_dir),
            "seed": seed,
            **{k: config[k] for k in ("dataset", "model", "methods") if k in config},
        }
    )
    return result
