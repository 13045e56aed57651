"""Theory next to practice: the regularisation strengths :mod:`unimix.theory` computes for each
mixing method of a study, beside the gain over no mixing that the study measured.

Computation (it loads the trained no-mixing model and runs :func:`unimix.theory.
loss_decomposition`), done by the runner; the report only renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unimix.study.claims import baseline_variant, paired_line
from unimix.study.stats import spearman

__all__ = ["TheoryNextToPractice", "theory_vs_practice"]


@dataclass
class TheoryNextToPractice:
    """Per regime and mixing method: theory's strengths beside the measured gain (``table``),
    Spearman's ρ per measure (``rhos``) and why anything was not computed (``errors``)."""

    table: list[dict[str, Any]]
    rhos: dict[str, dict[str, tuple[float, float, float]]]
    errors: list[str] = field(default_factory=list)


def theory_vs_practice(
    cfg: Any, runs: Sequence[Any], rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]]
) -> TheoryNextToPractice:
    """Per regime and mixing method (default setting), two regularisation strengths from
    :mod:`unimix.theory` beside the measured gain over no mixing (paired mean of none − method
    test error):

    - ``far``: the distance profile's long-range coefficient, the pair-weighted mean of
      ``A(p, q) = E[(1 − M_p)(1 − M_q)]`` over pixel pairs at least a quarter of the image side
      apart (how strongly the method ties distant pixels' gradients; Mixup's is the largest);
    - ``second``: the second-order term of :func:`unimix.theory.loss_decomposition`
      (½ E[δᵀ∇²ℓ δ]) on the regime's trained no-mixing model (seed 0) and 64 validation images.

    Returns the rows and, per measure, Spearman's ρ per regime and pooled (``"all"``) with its
    95 % interval, and the reasons for anything not computed.
    """
    from unimix.train import load_run

    table: list[dict[str, Any]] = []
    errors: list[str] = []
    for regime in dict.fromkeys(r.regime for r in runs):
        none_runs = [r for r in runs if r.regime == regime and r.method == "none" and not r.setting]
        mixing = [
            s
            for s in summary
            if s["regime"] == regime and s["method"] != "none" and not s["setting"]
        ]
        if not none_runs or not mixing:
            continue
        model, spec, _ = load_run(none_runs[0].run_dir, "cpu")
        data = spec.val_tensors() or spec.test_tensors()
        for s in mixing:
            run = next(r for r in runs if r.regime == regime and r.variant == s["variant"])
            entry: dict[str, Any] = {"regime": regime, "method": s["variant"]}
            entry.update(_strengths(regime, s, run.config, spec.image_size, model, data, errors))
            none_variant = baseline_variant(summary, regime, run.base_setting) or "none"
            line = paired_line(rows, "gain", regime, "top1_error", none_variant, s["variant"])
            entry["gain"] = line.paired.mean if line else math.nan  # none − method: + is a gain
            entry["gain_low"] = line.paired.ci_low if line else math.nan
            entry["gain_high"] = line.paired.ci_high if line else math.nan
            table.append(entry)
    return TheoryNextToPractice(table, _theory_correlations(table), errors)


def _strengths(
    regime: str,
    entry: dict[str, Any],
    config: Any,
    image_size: tuple[int, int],
    model: Any,
    data: Any,
    errors: list[str],
) -> dict[str, float]:
    """``far``, ``second`` and ``second_se`` of one summary entry (NaN where not computed; the
    reason goes to ``errors``)."""
    method, variant = entry["method"], entry["variant"]
    params = {k: v for k, v in config.method_params.items() if k in _params(method)}
    alpha = config.alpha.get(method, 1.0) if isinstance(config.alpha, dict) else config.alpha
    where = f"{regime}/{variant}"
    out = {"far": _long_range(method, image_size, alpha, params, where, errors)}
    out["second"] = out["second_se"] = math.nan
    if data is not None:
        out["second"], out["second_se"] = _second_order(
            method, alpha, params, model, data, where, errors
        )
    return out


def _long_range(
    method: str,
    image_size: tuple[int, int],
    alpha: Any,
    params: dict[str, Any],
    where: str,
    errors: list[str],
) -> float:
    """The long-range coefficient of ``method``'s distance profile (512 masks), or NaN."""
    import torch

    from unimix.theory import distance_profile

    height, width = image_size
    try:
        prof = distance_profile(
            method,
            height,
            width,
            alpha,
            samples=512,
            generator=torch.Generator().manual_seed(0),
            **params,
        )
        return _far(prof, min(height, width) / 4)
    except (TypeError, ValueError, RuntimeError) as err:
        errors.append(f"profile {where}: {err}")
        return math.nan


def _second_order(
    method: str,
    alpha: Any,
    params: dict[str, Any],
    model: Any,
    data: Any,
    where: str,
    errors: list[str],
) -> tuple[float, float]:
    """The second-order term and its standard error on 64 images and 8 draws, or NaNs."""
    import torch

    from unimix import Mixer
    from unimix.theory import loss_decomposition

    mixer = Mixer(
        method,
        alpha=alpha,
        mode="elem",
        generator=torch.Generator().manual_seed(0),
        **params,
    )
    try:
        # the study reads the second-order term, not the remainder's ε³ slope (which is what
        # needs float64 and many scales): float32 and two scales, several times faster
        dec = loss_decomposition(
            model, data[0][:64], data[1][:64], mixer, draws=8,
            epsilons=(1 / 512, 1 / 128), dtype=torch.float32,
        )  # fmt: skip
        return dec.second, dec.second_stderr
    except (TypeError, ValueError, RuntimeError) as err:
        errors.append(f"second-order term {where}: {err}")
        return math.nan, math.nan


def _theory_correlations(
    table: Sequence[dict[str, Any]],
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per measure, Spearman's ρ of strength against gain per regime, and pooled (``"all"``)
    for the long-range coefficient, which is the same in every regime."""
    rhos: dict[str, dict[str, tuple[float, float, float]]] = {}
    for measure in ("far", "second"):
        groups: dict[str, list[dict[str, Any]]] = {}
        for t in table:
            if not (math.isnan(t[measure]) or math.isnan(t["gain"])):
                groups.setdefault(t["regime"], []).append(t)
        result = {
            reg: spearman([t[measure] for t in ts], [t["gain"] for t in ts])
            for reg, ts in groups.items()
        }
        if len(groups) > 1 and measure == "far":  # the same masks in every regime
            pooled = [t for ts in groups.values() for t in ts]
            result["all"] = spearman([t[measure] for t in pooled], [t["gain"] for t in pooled])
        if result:
            rhos[measure] = result
    return rhos


def _far(profile: Any, distance: float) -> float:
    """Pair-weighted mean of ``a(Δ)`` over offsets with ``|Δ| ≥ distance``."""
    import torch

    h, w = profile.height, profile.width
    dy = torch.arange(-(h - 1), h, dtype=torch.float64)[:, None]
    dx = torch.arange(-(w - 1), w, dtype=torch.float64)[None, :]
    far = (dy**2 + dx**2).sqrt() >= distance
    pairs = profile.pairs.to(torch.float64) * far
    return float((profile.offsets.to(torch.float64) * pairs).sum() / pairs.sum())


def _params(method: str) -> set[str]:
    try:
        from unimix.registry import parameters

        return set(parameters(method))
    except (ImportError, KeyError, ValueError):
        return set()
