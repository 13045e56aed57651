"""Training curves: test error and loss per epoch, one line per method (mean over seeds)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unimix.train.fileio import atomic_save_figure
from unimix.viz.colors import method_color

__all__ = ["plot_training_curves"]


def _mean_sd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd over runs, NaN (no warning) where no run has a value."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, 0)
        sd = np.nanstd(values, 0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    return mean, sd


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
        err_mean, err_sd = _mean_sd(100 * (1 - _stack(runs, "test_acc")))
        tested = np.isfinite(err_mean)  # epochs with a test evaluation (eval_every)
        color = method_color(name)
        marker = "o" if tested.sum() <= 30 else None
        ax_err.plot(epochs[tested], err_mean[tested], marker=marker, ms=3, label=name, color=color)
        if len(runs) > 1:
            ax_err.fill_between(
                epochs[tested],
                np.clip(err_mean[tested] - err_sd[tested], 0, None),
                err_mean[tested] + err_sd[tested],
                color=color,
                alpha=0.15,
            )
        test_loss = _mean_sd(_stack(runs, "test_loss"))[0]
        ax_loss.plot(
            epochs[tested],
            test_loss[tested],
            color=color,
            marker=marker,
            ms=3,
            label=f"{name} test",
        )
        ax_loss.plot(
            epochs,
            _mean_sd(_stack(runs, "train_loss"))[0],
            color=color,
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
    atomic_save_figure(fig, path, dpi=dpi)
    plt.close(fig)
    return path
