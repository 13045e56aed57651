"""Theory next to practice: the regularisation strengths :mod:`unimix.theory` computes for each
mixing method of a study, beside the gain over no mixing that the study measured.

This is a description, not a test: a default study has four methods per regime, too few for any
correlation to be significant (an exact two-sided Spearman p-value cannot fall below 0.083 with
n = 4). Whether the theory predicts the gain is what ``unimix study --recipe locality`` tests
(:mod:`unimix.study.locality`: ten mask settings on tasks whose cue is known, a prediction
written before the runs, the task × locality interaction as a confirmatory claim).

Computation (it loads the trained no-mixing model and runs :func:`unimix.theory.
loss_decomposition`), done by the runner; the report only renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unimix.study.claims import baseline_variant, paired_line

__all__ = ["TheoryNextToPractice", "theory_vs_practice"]


@dataclass
class TheoryNextToPractice:
    """Per regime and mixing method: theory's strengths beside the measured gain (``table``) and
    why anything was not computed (``errors``)."""

    table: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)


def theory_vs_practice(
    cfg: Any, runs: Sequence[Any], rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]]
) -> TheoryNextToPractice:
    """Per regime and mixing method (default setting), two regularisation strengths from
    :mod:`unimix.theory` beside the measured gain over no mixing (paired mean of none − method
    test error):

    - ``locality``: :func:`unimix.theory.locality_index` of the method's mask at the data's image
      size (1 for Mixup, lower as the regulariser concentrates on nearby pixel pairs; border
      clipping does not move it) and ``clipping``, what border clipping adds
      (:func:`unimix.theory.border_clipping`);
    - ``second``: the second-order term of :func:`unimix.theory.loss_decomposition`
      (½ E[δᵀ∇²ℓ δ]) on the regime's trained no-mixing model (seed 0) and 64 validation images.

    Returns the rows and the reasons for anything not computed. No correlation is drawn from
    them (see the module docstring).
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
    return TheoryNextToPractice(table, errors)


def _strengths(
    regime: str,
    entry: dict[str, Any],
    config: Any,
    image_size: tuple[int, int],
    model: Any,
    data: Any,
    errors: list[str],
) -> dict[str, float]:
    """``locality``, ``clipping``, ``second`` and ``second_se`` of one summary entry (NaN where not computed; the
    reason goes to ``errors``)."""
    method, variant = entry["method"], entry["variant"]
    params = {k: v for k, v in config.method_params.items() if k in _params(method)}
    alpha = config.alpha.get(method, 1.0) if isinstance(config.alpha, dict) else config.alpha
    where = f"{regime}/{variant}"
    out = _locality(method, image_size, alpha, params, where, errors)
    out["second"] = out["second_se"] = math.nan
    if data is not None:
        out["second"], out["second_se"] = _second_order(
            method, alpha, params, model, data, where, errors
        )
    return out


def _locality(
    method: str,
    image_size: tuple[int, int],
    alpha: Any,
    params: dict[str, Any],
    where: str,
    errors: list[str],
) -> dict[str, float]:
    """The locality index of ``method``'s mask and what border clipping adds (NaNs on failure)."""
    from unimix.theory import border_clipping, locality_index

    height, width = image_size
    try:
        scalar_alpha = float(alpha)
        return {
            "locality": locality_index(method, height, width, scalar_alpha, **params),
            "clipping": border_clipping(method, height, width, scalar_alpha, **params),
        }
    except (TypeError, ValueError, RuntimeError) as err:
        errors.append(f"locality index {where}: {err}")
        return {"locality": math.nan, "clipping": math.nan}


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


def _params(method: str) -> set[str]:
    try:
        from unimix.registry import parameters

        return set(parameters(method))
    except (ImportError, KeyError, ValueError):
        return set()
