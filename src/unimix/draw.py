"""The draws of :meth:`unimix.Mixer.sample`: partners, then per unit whether it is mixed, its
method and λ, and each mask method's masks — everything random of a :class:`~unimix.plan.MixPlan`.

A *unit* is what one draw covers: the batch (``mode="batch"``), a pair of rows (``"pair"``) or a
row (``"elem"``). ``λ ~ Beta(α_m, α_m)`` for the method ``m`` of each unit (Zhang et al., ICLR
2018; Park, Yun & Chun, NeurIPS 2022), the method by the Mixer's weights, mixed at all with
probability ``prob``. Every draw comes from the Mixer's generator (PyTorch's global RNG without
one), in an order the golden files (``tests/golden/plans.json``) pin: a ``batch``-mode Mixer of
mask methods draws its one unit as Python numbers (the cheapest stream: method before partner),
every other Mixer draws vectors over its units (partner first). Both give the same per-unit
tensors; the plan does not know which drew it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unimix import masks as _masks
from unimix.mixmethod import MixMethod
from unimix.plan import MixPlan, covering_sample

#: A :class:`unimix.Mixer` (its generator, methods, weights, mode, partner, prob, α); not
#: imported, as ``unimix.mix`` imports this module.
Mixer = Any

__all__ = ["draw_plan", "draw_for_graph", "graph_tensors"]

Samples = list[_masks.MaskSample | None]


def draw_plan(
    mixer: Mixer,
    batch: int,
    height: int,
    width: int,
    device: torch.device,
    fixed: float | None,
    all_masks: bool,
) -> MixPlan:
    """Everything random of one batch of ``batch`` images of ``height × width`` on ``device``
    (``fixed``: λ of every unit instead of a Beta draw; ``all_masks``: the Mixer has mask methods
    only). Call under the Mixer's draw lock."""
    n_units = {"batch": 1, "pair": batch // 2, "elem": batch}[mixer.mode]
    if mixer.mode == "batch" and all_masks:
        partner, units, samples = _draw_one(mixer, batch, height, width, device, fixed)
    else:
        partner = _draw_partner(mixer, batch, device)
        units, samples = _draw_units(mixer, n_units, batch, height, width, device, fixed)
    lam, method, applied = units
    seed = None
    if not all_masks:  # the image methods' random choices are drawn here too
        dev = _rand_device(mixer)
        seed = int(torch.randint(0, 2**62, (1,), generator=mixer.generator, device=dev))
    return MixPlan._trusted(
        batch_size=batch, height=height, width=width, mode=mixer.mode, partner=partner,
        unit_of_row=_unit_of_row(mixer, batch, partner), unit_lam=lam,
        unit_lam_effective=_unit_lam_effective(mixer.methods, lam, method, applied, samples),
        unit_method=method, unit_applied=applied, samples=tuple(samples),
        method_names=tuple(mixer.method_names), label_weight=mixer.label_weight, image_seed=seed,
    )  # fmt: skip


def _rand_device(mixer: Mixer) -> torch.device:
    g = mixer.generator
    return g.device if g is not None else torch.device("cpu")


@functools.lru_cache(maxsize=16)
def _flip(batch: int, device: torch.device) -> Tensor:
    """Row ``k``'s partner ``B − 1 − k`` (timm's rule); one shared tensor per size and device."""
    return torch.arange(batch - 1, -1, -1, device=device)


@functools.lru_cache(maxsize=64)
def _cumulative(weights: tuple[float, ...]) -> list[float]:
    w = torch.tensor(weights, dtype=torch.float64)
    return (w / w.sum()).cumsum(0).tolist()


def _draw_partner(mixer: Mixer, batch: int, device: torch.device) -> Tensor:
    if mixer.partner == "flip" or batch == 1:
        return _flip(batch, device)
    perm = torch.randperm(batch, generator=mixer.generator, device=_rand_device(mixer))
    if mixer.mode == "pair":  # a random pairing: consecutive entries of perm are partners
        partner = torch.empty_like(perm)
        partner[perm[0::2]] = perm[1::2]
        partner[perm[1::2]] = perm[0::2]
        perm = partner
    return perm.to(device)


def _unit_of_row(mixer: Mixer, batch: int, partner: Tensor) -> Tensor:
    if mixer.mode == "pair" and mixer.partner != "flip":
        # random pairing: a pair is numbered by its smaller row index among the pairs
        rows = torch.arange(batch, device=partner.device)
        return torch.unique(torch.minimum(rows, partner), return_inverse=True)[1]
    return _fixed_units(mixer.mode, batch, partner.device)


@functools.lru_cache(maxsize=16)
def _fixed_units(mode: str, batch: int, device: torch.device) -> Tensor:
    """``unit_of_row`` that depends on the batch size only: all 0 (``batch``), the row
    (``elem``), the pair of a flip (``pair``); one shared tensor per mode, size and device."""
    rows = torch.arange(batch, device=device)
    if mode == "pair":
        return torch.minimum(rows, batch - 1 - rows)
    return rows if mode == "elem" else torch.zeros_like(rows)


@functools.lru_cache(maxsize=64)
def _one_unit(method: int, applied: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """The method and applied flag of a single unit, as shared ``[1]`` tensors."""
    return torch.tensor([method], device=device), torch.tensor([applied], device=device)


def _draw_one(
    mixer: Mixer, batch: int, height: int, width: int, device: torch.device, fixed: float | None
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], Samples]:
    """``batch`` mode of mask methods: its one unit drawn as Python numbers."""
    g, methods = mixer.generator, mixer.methods
    applied, m = batch > 1, 0
    if applied and (mixer.prob < 1.0 or len(methods) > 1):
        u_apply, u_method = torch.rand(2, generator=g, device=_rand_device(mixer)).tolist()
        applied = u_apply < mixer.prob
        cumulative = _cumulative(tuple(mixer.weights.tolist()))
        m = next((i for i, c in enumerate(cumulative) if u_method < c), len(methods) - 1)
    partner = _draw_partner(mixer, batch, device)
    samples: Samples = [None] * len(methods)
    sampler = methods[m]
    if not (applied and isinstance(sampler, _masks.MaskSampler)):
        return partner, (torch.ones(1, device=device), *_one_unit(m, False, device)), samples
    lam_m = _masks.sample_lambda_one(mixer.alphas[m], g) if fixed is None else fixed
    samples[m] = sample = sampler.sample_one(lam_m, height, width, device, g)
    lam = sample.lam if sampler.ignores_lam else torch.full((1,), lam_m, device=device)
    return partner, (lam, *_one_unit(m, True, device)), samples


def _draw_units(
    mixer: Mixer,
    n: int,
    batch: int,
    height: int,
    width: int,
    device: torch.device,
    fixed: float | None,
) -> tuple[tuple[Tensor, Tensor, Tensor], Samples]:
    """λ, method index and applied flag per unit, and each mask method's samples (a batch of
    one has no partner: left unmixed, nothing drawn)."""
    g, dev, methods = mixer.generator, _rand_device(mixer), mixer.methods
    if batch == 1:
        lam_1 = torch.ones(1, device=device)
        return (lam_1, *_one_unit(0, False, device)), [None] * len(methods)
    applied = torch.ones(n, dtype=torch.bool, device=dev)
    if mixer.prob < 1.0:
        applied = torch.rand(n, generator=g, device=dev) < mixer.prob
    if len(methods) == 1:
        method = torch.zeros(n, dtype=torch.long, device=dev)
    else:
        method = torch.multinomial(mixer.weights.to(dev), n, replacement=True, generator=g)
    everyone = len(methods) == 1 and mixer.prob == 1.0  # no per-method selection
    lam = torch.ones(n, device=dev)
    samples: Samples = []
    for m, obj in enumerate(methods):
        sel = None if everyone else (method == m) & applied
        count = n if sel is None else int(sel.sum())
        sample = None
        if count:
            if fixed is not None:
                lam_m = torch.full((count,), fixed, device=dev)
            else:
                lam_m = _masks.sample_lambda(mixer.alphas[m], count, g, dev)
            if isinstance(obj, _masks.MaskSampler):
                sample = obj.sample(lam_m, height, width, device, g)
                lam_m = sample.lam.to(dev) if obj.ignores_lam else lam_m
            if sel is None:
                lam = lam_m
            else:
                lam[sel] = lam_m
        samples.append(sample)
    return (lam.to(device), method.to(device), applied.to(device)), samples


def _unit_lam_effective(
    methods: Sequence[object],
    lam: Tensor,
    method: Tensor,
    applied: Tensor,
    samples: Samples,
) -> Tensor:
    """λ̄ per unit from the samples: 1 where not mixed, NaN where an image method mixes (its λ̄
    depends on the images: ``Mixer.apply`` measures it)."""
    covering = covering_sample(samples, lam.shape[0])
    if covering is not None:
        return covering.lam if covering.lam.device == lam.device else covering.lam.to(lam.device)
    lam_eff = torch.ones_like(lam)
    for m, obj in enumerate(methods):
        sample = samples[m]
        if sample is not None:
            lam_eff[(method == m) & applied] = sample.lam.to(lam.device)
        elif isinstance(obj, MixMethod):
            lam_eff[(method == m) & applied] = float("nan")
    return lam_eff


@torch.compiler.disable
def draw_for_graph(
    mixer: Mixer, batch: int, height: int, width: int, device: torch.device
) -> tuple[MixPlan, Tensor, Tensor, Tensor]:
    """The draw of a call under ``torch.compile``, run eagerly (one graph break): the plan, its
    masks ``[B or 1, 1, H, W]``, λ̄ and the drawn λ per row ``[B]`` — tensors of fixed shapes,
    so new draws are new data for the graph, not a new graph."""
    plan = mixer.sample(batch, height, width, device=device)
    return (plan, *graph_tensors(plan))


def graph_tensors(plan: MixPlan) -> tuple[Tensor, Tensor, Tensor]:
    """A mask-only plan as the compiled kernel takes it: masks ``[B or 1, 1, H, W]``, λ̄ and λ
    per row ``[B]``."""
    masks = plan.masks
    assert masks is not None
    return masks.contiguous(), plan.lam_effective, plan.lam
