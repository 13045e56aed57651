"""Evaluate a trained run as the study does: error, attacks and occlusion (``evaluation.json``),
the temperature fitted on the validation split and the scaled test NLL/ECE, the validation error
and the cost of mixing (``calibration.json``).

Called by :func:`unimix.study.execute.run_one` wherever the run executes (this process, a local
worker, a Ray task, a SLURM task).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from unimix.study.types import T_BOUNDS, StudyConfig, StudyRun
from unimix.train.fileio import atomic_write_text

__all__ = ["evaluate_run_of_study", "temperature_at_bound"]


def temperature_at_bound(t: float) -> bool:
    """Whether a fitted temperature sits on an end of :data:`T_BOUNDS` (within 0.1 %)."""
    return min(abs(math.log(t / b)) for b in T_BOUNDS) < 1e-3


def evaluate_run_of_study(run: StudyRun, cfg: StudyConfig, train_s: float) -> None:
    """Evaluate a trained run as the study does: ``evaluation.json`` (error, attacks, occlusion)
    and ``calibration.json`` (temperature fitted on the validation split, scaled test NLL/ECE)."""
    from unimix.evaluate import evaluate_run
    from unimix.evaluate.metrics import expected_calibration_error, fit_temperature, nll, topk_error
    from unimix.train import load_run

    t0 = time.perf_counter()
    device = None if cfg.device == "auto" else cfg.device
    size = run.config.image_size or 32
    subset = {"batch_size": cfg.attack_images, "max_batches": 1} if cfg.attack_images else {}
    result = evaluate_run(
        run.run_dir,
        device=device,
        seed=10_000 + run.seed,
        eps_list=cfg.eps_list,
        pgd_steps=cfg.pgd_steps,
        occlusion_size=cfg.occlusion_size or _default_occlusion(size),
        **subset,
    )
    atomic_write_text(run.eval_path, result.to_json() + "\n")

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, spec, _ = load_run(run.run_dir, dev)
    info: dict[str, Any] = {
        "train_size": len(spec.train),
        "val_size": 0 if spec.val is None else len(spec.val),
        "test_size": len(spec.test),
        "num_classes": spec.num_classes,
        "temperature": math.nan,
        "nll_ts": math.nan,
        "ece_ts": math.nan,
    }
    val, test = spec.val_tensors(), spec.test_tensors()
    if test is not None:  # error, NLL, ECE on the whole test set (attacks may use a subset)
        with torch.no_grad():
            zt = _logits(model, test[0], dev)
        yt = test[1].to(zt.device)
        info["test"] = {
            "top1_error": topk_error(zt, yt, 1),
            "top5_error": topk_error(zt, yt, 5),
            "nll": nll(zt, yt),
            "ece": expected_calibration_error(zt, yt),
        }
    if val is not None and test is not None:
        with torch.no_grad():
            zv = _logits(model, val[0], dev)
        t = fit_temperature(zv, val[1].to(zv.device), low=T_BOUNDS[0], high=T_BOUNDS[1])
        info.update(
            temperature=t,
            temperature_at_bound=temperature_at_bound(t),
            nll_ts=nll(zt / t, yt),
            ece_ts=expected_calibration_error(zt / t, yt),
            val_error=topk_error(zv, val[1].to(zv.device)),
            val_nll=nll(zv, val[1].to(zv.device)),
        )
    from unimix.study.cost import measure_mixing_cost
    from unimix.train.build import data_info

    info["cost"] = measure_mixing_cost(run.config, data_info(spec))
    info["study_s"] = train_s + time.perf_counter() - t0
    atomic_write_text(run.calibration_path, json.dumps(info) + "\n")


def _logits(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.cat([model(images[i : i + 512].to(device)) for i in range(0, len(images), 512)])


def _default_occlusion(image_size: int | Sequence[int]) -> int:
    """A quarter of the shorter side: 8 pixels at 32×32, 56 at 224×224."""
    sides = [image_size] if isinstance(image_size, int) else list(image_size)
    return max(1, min(sides) // 4)
