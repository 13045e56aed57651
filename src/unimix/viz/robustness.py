"""Robustness curves: accuracy under FGSM and PGD against the L∞ radius ε, one line per method.

The study compares how fast accuracy falls as the attack budget grows (Park, Yun & Chun,
NeurIPS 2022, Sec. 5: MSDA improves robustness over vanilla training). ε is drawn in 8-bit levels
(``ε × 255``), the clean accuracy at ε = 0; PGD solid, FGSM dashed, one colour per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from unimix.train.fileio import atomic_save_figure
from unimix.viz.colors import method_color

__all__ = ["plot_robustness"]

_STYLES = {"pgd": "-", "fgsm": "--"}


def _curve(value: Any) -> dict[str, list[float]]:
    from unimix.evaluate.evaluate import as_result

    return as_result(value).robustness_curve()


def plot_robustness(
    results: Any,
    path: str | Path,
    *,
    attacks: Sequence[str] = ("fgsm", "pgd"),
    title: str | None = "Accuracy under L∞ attacks",
    dpi: int = 120,
) -> Path:
    """Plot accuracy against ε for each method and attack.

    Args:
        results: a ``{name: EvalResult}`` mapping (results or their ``to_dict()`` forms), or a
            single result.
        path: image file to write (format from the suffix).
        attacks: which of ``"fgsm"``, ``"pgd"`` to draw.
        title: figure title (``None`` for none).
        dpi: resolution of raster output.

    Returns:
        The path written.
    """
    unknown = set(attacks) - set(_STYLES)
    if unknown or not attacks:
        raise ValueError(
            f"attacks must be a non-empty subset of {sorted(_STYLES)}, got {list(attacks)}"
        )
    if isinstance(results, Mapping) and "top1_error" not in results:
        if not results:
            raise ValueError("results is empty: nothing to plot")
        curves = {str(name): _curve(value) for name, value in results.items()}
    else:
        curves = {"": _curve(results)}
    path = Path(path)
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    for name, curve in curves.items():
        levels = [255 * e for e in curve["eps"]]
        for attack in attacks:
            label = f"{name} {attack.upper()}".strip()
            ax.plot(
                levels,
                [100 * a for a in curve[attack]],
                _STYLES[attack],
                marker="o",
                markersize=3,
                color=method_color(name),
                label=label,
            )
    ax.set_xlabel("ε (× 1/255, L∞ in pixel units)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, dpi=dpi)
    return path
