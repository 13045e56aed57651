"""Pictures of the pixel-level regularisation ``A(p, q) = E[(1 − M_p)(1 − M_q)]`` of each method.

Two views (Park, Yun & Chun, NeurIPS 2022, section 3): the **radial profile** — the mean of
``A(p, q)`` over pixel pairs at each distance ``|p − q|``, one line per method with a band of
±2 standard errors (flat for Mixup, falling for CutMix, in between for HMix and GMix) — and the
**heat map** ``A(p, ·)`` for one pixel ``p``: which pixels are regularised together with it.
Everything is computed by :mod:`unimix.theory`; these functions only draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from unimix.theory import DistanceProfile, PairwiseCoefficients, distance_profile
from unimix.train.fileio import atomic_save_figure
from unimix.viz.colors import method_color

__all__ = ["plot_radial_profiles", "plot_heatmaps", "write_profile_plot"]

_WEIGHTING_LABEL = {
    "mask": "A(p, q) = E[(1−M_p)(1−M_q)]",
    "label": "A(p, q) = E[λ̄(1−M_p)(1−M_q) + (1−λ̄)M_p M_q]",
}


def plot_radial_profiles(
    profiles: Mapping[str, DistanceProfile],
    path: str | Path | None = None,
    *,
    closed_forms: Mapping[str, DistanceProfile] | None = None,
    band: float = 2.0,
    title: str | None = "Pixel-level regularisation by distance",
    dpi: int = 120,
) -> Figure:
    """One line per method: the mean of ``A(p, q)`` over pixel pairs at distance ``|p − q|``.

    Args:
        profiles: method label → :class:`~unimix.theory.DistanceProfile` (Monte Carlo or exact).
        path: image file to write (``.png``, ``.pdf``, ``.svg``…), or ``None`` to only return.
        closed_forms: optional label → exact profile, drawn dashed in the same colour.
        band: half-width of the shaded band in standard errors (0: none).
        title: figure title (``None`` for none).
        dpi: resolution of raster output.

    Returns:
        The figure (also written to ``path`` when given).
    """
    if not profiles:
        raise ValueError("profiles is empty: nothing to plot")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    weightings = set()
    for name, prof in profiles.items():
        color = method_color(name)
        r, a = prof.radius.cpu().numpy(), prof.radial.cpu().numpy()
        ax.plot(r, a, color=color, marker="o", markersize=2.5, linewidth=1.4, label=name)
        if band > 0 and prof.samples > 0:
            se = prof.radial_stderr.cpu().numpy()
            ax.fill_between(r, a - band * se, a + band * se, color=color, alpha=0.2, linewidth=0)
        if closed_forms and name in closed_forms:
            exact = closed_forms[name]
            ax.plot(
                exact.radius.cpu().numpy(),
                exact.radial.cpu().numpy(),
                color=color,
                linestyle="--",
                linewidth=1.0,
                label=f"{name} (closed form)",
            )
        weightings.add(prof.weighting)
    first = next(iter(profiles.values()))
    ax.set_xlabel(f"distance |p − q| (pixels, {first.height}×{first.width} image)")
    ax.set_ylabel(
        _WEIGHTING_LABEL.get(next(iter(weightings)), "A(p, q)")
        if len(weightings) == 1
        else "A(p, q)"
    )
    ax.set_xlim(0, float(first.radius[-1]))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_figure(fig, path, dpi=dpi)
    return fig


def plot_heatmaps(
    maps: Mapping[str, PairwiseCoefficients],
    pixel: tuple[int, int],
    path: str | Path | None = None,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """One panel per method: ``A(p, ·)`` over the image for the pixel ``p`` (marked), one colour scale.

    ``maps`` holds :class:`~unimix.theory.PairwiseCoefficients` with ``pixel`` among their rows
    (``pairwise_coefficients(..., pixels=[pixel])``).
    """
    if not maps:
        raise ValueError("maps is empty: nothing to plot")
    images = {name: coef.map(pixel)[0].cpu().numpy() for name, coef in maps.items()}
    vmax = max(float(img.max()) for img in images.values()) or 1.0
    n = len(images)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.0 * cols + 0.8, 3.0 * rows + (0.4 if title else 0.0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    shown = None
    for ax, (name, img) in zip(list(axes.flat)[:n], images.items(), strict=True):
        shown = ax.imshow(img, vmin=0.0, vmax=vmax, cmap="viridis", interpolation="nearest")
        ax.plot(pixel[1], pixel[0], marker="+", color="red", markersize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.85, label=f"A(p, ·), p = {pixel}")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_figure(fig, path, dpi=dpi)
    return fig


def write_profile_plot(
    methods: Sequence[str],
    path: str | Path,
    *,
    height: int = 32,
    width: int | None = None,
    alpha: float = 1.0,
    samples: int = 4096,
    weighting: str = "mask",
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, DistanceProfile]:
    """Estimate the radial profile of each method and write them on one plot.

    Args:
        methods: mask method names of :mod:`unimix.masks` (e.g. ``["mixup", "cutmix", "hmix",
            "gmix"]``).
        path: image file to write.
        height, width: image size (``width`` defaults to ``height``).
        alpha: ``α`` of ``λ ~ Beta(α, α)``.
        samples: masks per method.
        weighting: ``"mask"`` or ``"label"`` (see :func:`unimix.theory.pairwise_coefficients`).
        seed: seed of a :class:`torch.Generator`; every method starts from the same seed.
        device: where masks are built.
        progress: show progress bars.
        method_params: method name → sampler parameters (e.g. ``{"hmix": {"r": 0.5}}``).

    Returns:
        method name → its :class:`~unimix.theory.DistanceProfile`, in the order given.
    """
    if isinstance(methods, str):
        raise TypeError("methods must be a sequence of names, e.g. ['mixup', 'cutmix']")
    if not methods:
        raise ValueError("methods is empty; give at least one method name")
    width = height if width is None else width
    params = dict(method_params or {})
    profiles: dict[str, DistanceProfile] = {}
    for name in methods:
        g = torch.Generator().manual_seed(seed)
        profiles[name] = distance_profile(
            name,
            height,
            width,
            alpha,
            samples,
            g,
            weighting=weighting,
            device=device,  # type: ignore[arg-type]
            progress=progress,
            **dict(params.get(name, {})),
        )
    plot_radial_profiles(
        profiles,
        path,
        title=f"Pixel-level regularisation by distance (α = {alpha:g}, {weighting} weighting)",
    )
    return profiles
