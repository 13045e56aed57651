"""Reliability diagrams: accuracy against confidence per bin, one or several models overlaid.

A reliability diagram (DeGroot & Fienberg, 1983; Niculescu-Mizil & Caruana, ICML 2005; Guo et al.,
ICML 2017) bins predictions by confidence and plots each bin's accuracy against its mean
confidence; a calibrated model lies on the diagonal and the expected calibration error is the
count-weighted mean distance to it. The lower panel shows how many predictions fall in each bin.

One result is drawn as bars (with the gap to the diagonal shaded); several as lines with markers,
one colour per method, so they can be compared on one figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from unimix.train.fileio import atomic_save_figure
from unimix.viz.colors import method_color

__all__ = ["plot_reliability"]


def _diagram(value: Any) -> tuple[Any, float]:
    """The :class:`ReliabilityDiagram` of an EvalResult-like value (result, its dict, or a diagram)."""
    from unimix.evaluate.metrics import ReliabilityDiagram

    if isinstance(value, ReliabilityDiagram):
        return value, value.ece
    rel = getattr(value, "reliability", None)
    if rel is None and isinstance(value, Mapping):
        rel = value.get("reliability", value if "bin_edges" in value else None)
    if isinstance(rel, Mapping):
        rel = ReliabilityDiagram.from_dict(rel)
    if not isinstance(rel, ReliabilityDiagram):
        raise TypeError(
            "expected an EvalResult, its to_dict() form or a ReliabilityDiagram, "
            f"got {type(value).__name__}"
        )
    return rel, rel.ece


def _normalise(results: Any) -> dict[str, Any]:
    if isinstance(results, Mapping) and not ("reliability" in results or "bin_edges" in results):
        if not results:
            raise ValueError("results is empty: nothing to plot")
        return {str(name): _diagram(value) for name, value in results.items()}
    return {"": _diagram(results)}


def plot_reliability(
    results: Any,
    path: str | Path,
    *,
    title: str | None = "Reliability diagram",
    dpi: int = 120,
) -> Path:
    """Draw the reliability diagram of one result or of several (a ``{name: result}`` dict).

    Args:
        results: an ``EvalResult``, its ``to_dict()`` form (e.g. loaded from JSON), a
            ``ReliabilityDiagram``, or a mapping from method name to any of these.
        path: image file to write (format from the suffix: ``.png``, ``.pdf``, ``.svg``…).
        title: figure title (``None`` for none).
        dpi: resolution of raster output.

    Returns:
        The path written.
    """
    diagrams = _normalise(results)
    path = Path(path)
    fig = Figure(figsize=(5.0, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration")
    single = len(diagrams) == 1
    for name, (rel, ece) in diagrams.items():
        color = method_color(name) if name else "C0"
        label = f"{name + ' ' if name else ''}(ECE {100 * ece:.2f}%)"
        if single:
            _draw_bars(top, rel, color, label)
        else:
            _draw_line(top, rel, color, label)
        _draw_counts(bottom, rel, color, single)
    _style_axes(top, bottom, title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, dpi=dpi)
    return path


def _bins(rel: Any) -> tuple[list[float], list[float]]:
    """Left edges and widths of the diagram's bins."""
    edges = rel.bin_edges
    width = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return edges[:-1], width


def _draw_bars(ax: Any, rel: Any, color: Any, label: str) -> None:
    """One model: accuracy as bars, and the gap to each bin's confidence hatched in red."""
    left, width = _bins(rel)
    acc = [0.0 if math.isnan(a) else a for a in rel.accuracy]
    conf = [0.0 if math.isnan(c) else c for c in rel.confidence]
    ax.bar(
        left,
        acc,
        width=width,
        align="edge",
        color=color,
        edgecolor="black",
        linewidth=0.5,
        label=f"accuracy {label}",
    )
    gap_bottom = [min(a, c) for a, c in zip(acc, conf, strict=True)]
    gap_height = [
        abs(a - c) if rel.count[i] else 0.0 for i, (a, c) in enumerate(zip(acc, conf, strict=True))
    ]
    ax.bar(
        left,
        gap_height,
        bottom=gap_bottom,
        width=width,
        align="edge",
        facecolor=(0.84, 0.15, 0.16, 0.25),
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.8,
        label="gap |accuracy − confidence|",
    )


def _draw_line(ax: Any, rel: Any, color: Any, label: str) -> None:
    """One of several models: accuracy against confidence of the non-empty bins, as a line."""
    filled = [i for i, c in enumerate(rel.count) if c > 0]
    ax.plot(
        [rel.confidence[i] for i in filled],
        [rel.accuracy[i] for i in filled],
        marker="o",
        markersize=4,
        color=color,
        label=label,
    )


def _draw_counts(ax: Any, rel: Any, color: Any, single: bool) -> None:
    """The fraction of predictions in each bin (translucent when several models overlap)."""
    left, width = _bins(rel)
    total = max(sum(rel.count), 1)
    ax.bar(
        left,
        [c / total for c in rel.count],
        width=width,
        align="edge",
        color=color,
        alpha=0.8 if single else 0.35,
        edgecolor=color,
        linewidth=0.8,
    )


def _style_axes(top: Any, bottom: Any, title: str | None) -> None:
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    if title:
        top.set_title(title)
    bottom.set_xlabel("confidence (max softmax probability)")
    bottom.set_ylabel("fraction")
    bottom.grid(alpha=0.3)
