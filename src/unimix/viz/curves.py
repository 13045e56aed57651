"""Training curves: test error and loss per epoch, one line per method (mean over seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_training_curves"]


def _stack(histories: Sequence[Sequence[Mapping[str, Any]]], key: str) -> np.ndarray:
    length = min(len(h) for h in histories)
    values = [
        [float(row.get(key) if row.get(key) is not None else np.nan) for row in h[:length]]
        for h in histories
    ]
    return np.asarray(values, dtype=float)


def plot_training_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: str | Path,
    *,
    dpi: int = 120,
) -> Path:
    """Write a PNG with test error (%) and train/test loss against the epoch.

    ``histories`` maps a method name to its runs' per-epoch rows (``metrics.csv`` rows with
    ``epoch``, ``test_acc``, ``test_loss`` and ``train_loss``); the line is the mean over runs
    and the band ± one standard deviation.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in histories.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        epochs = _stack(runs, "epoch")[0]
        err = 100 * (1 - _stack(runs, "test_acc"))
        marker = "o" if len(epochs) <= 30 else None
        line = ax_err.plot(epochs, np.nanmean(err, 0), marker=marker, ms=3, label=name)[0]
        if len(runs) > 1:
            sd = np.nanstd(err, 0, ddof=1)
            ax_err.fill_between(
                epochs,
                np.clip(np.nanmean(err, 0) - sd, 0, None),
                np.nanmean(err, 0) + sd,
                color=line.get_color(),
                alpha=0.15,
            )
        ax_loss.plot(
            epochs,
            np.nanmean(_stack(runs, "test_loss"), 0),
            color=line.get_color(),
            label=f"{name} test",
        )
        ax_loss.plot(
            epochs,
            np.nanmean(_stack(runs, "train_loss"), 0),
            color=line.get_color(),
            ls=":",
            label=f"{name} train",
        )
    ax_err.set(xlabel="epoch", ylabel="test top-1 error (%)", title="Test error")
    ax_err.set_yscale("symlog", linthresh=1.0)  # logarithmic above 1 %, linear down to 0
    ax_err.set_ylim(bottom=0)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss (train: mixed targets)")
    ax_err.legend(fontsize=8)
    ax_loss.legend(fontsize=7, ncol=2)
    for ax in (ax_err, ax_loss):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
