"""What mixing costs, measured for what the paper claims: the mixing call on a mixed batch.

The trainer's ``mix_overhead_pct`` averages over every batch, including the ones a ``mix_prob``
below 1 leaves unmixed, so it dilutes the cost it claims to measure. Here, for one run's
configuration on its own device, with its batch and image size: the median time of

- the mixing call on a batch that is mixed (``mix_prob`` forced to 1, in place on a copy),
- a whole training step with that mixing (mix → forward → loss → backward → SGD step),
- timm's ``Mixup`` (Mixup, batch mode) on the same batch, in place, when timm is installed,

timed in interleaved rounds in one process, so that a loaded machine slows all three alike. The
study's cost claim compares ``100 · mix / step`` per run with a threshold the recipe declares
(``study: cost_threshold_pct``), over replicates.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any

import torch

__all__ = ["measure_mixing_cost"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_mixing_cost(config: Any, info: dict[str, Any], rounds: int = 25) -> dict[str, float]:
    """``mix_ms``, ``step_ms``, ``timm_mixup_ms`` per batch (medians over ``rounds``) and
    ``mix_share_pct = 100 · mix_ms / step_ms`` for the run configured by ``config``
    (a :class:`~unimix.train.TrainConfig`; ``info`` its data's ``num_classes``, ``in_chans`` and
    ``image_size``). NaN for a run without mixing."""
    from unimix import soft_target_cross_entropy
    from unimix.train import build

    nan = {"mix_ms": math.nan, "step_ms": math.nan, "timm_mixup_ms": math.nan}
    if list(config.methods) == ["none"]:
        return nan | {"mix_share_pct": math.nan}
    device = torch.device(
        "cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    cfg = dataclasses.replace(config, mix_prob=1.0)
    mixer = build.build_mixer(cfg, info["num_classes"], seed=0)
    model = build.create_model(cfg, info).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, info["in_chans"], *info["image_size"])
    x = torch.randn(shape, generator=gen).to(device)
    y = torch.randint(0, info["num_classes"], (cfg.batch_size,), generator=gen).to(device)
    extra = {"model": model} if mixer.requires_model else {}
    timm = _timm_mixup(cfg, info["num_classes"])

    def mix() -> None:
        mixer(x.clone(), y, inplace=True, **extra)

    def step() -> None:
        mixed, targets = mixer(x.clone(), y, inplace=True, **extra)
        loss = soft_target_cross_entropy(model(mixed), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timm_mix() -> None:
        timm(x.clone(), y)

    fns = {"mix_ms": mix, "step_ms": step, "timm_mixup_ms": timm_mix if timm else None}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        if fn is not None:
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            if fn is None:
                continue
            copy = x.clone()  # the copy that mix() and timm_mix() make, timed alone
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            elapsed = time.perf_counter() - t
            _sync(device)
            t = time.perf_counter()
            copy = x.clone()
            _sync(device)
            times[k].append(1e3 * max(0.0, elapsed - (time.perf_counter() - t)))
            del copy
    out = {k: statistics.median(v) if v else math.nan for k, v in times.items()}
    out["mix_share_pct"] = (
        100.0 * out["mix_ms"] / out["step_ms"] if out["step_ms"] > 0 else math.nan
    )
    return out


def _timm_mixup(cfg: Any, num_classes: int) -> Any:
    """timm's ``Mixup`` (Mixup only, batch mode, every batch), or ``None`` without timm or for an
    odd batch (timm needs an even one)."""
    if cfg.batch_size % 2:
        return None
    try:
        from timm.data import Mixup
    except ImportError:
        return None
    return Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, mode="batch", num_classes=num_classes)
