"""Per-epoch metrics (CSV, JSON lines, TensorBoard) and the per-epoch progress bar.

The metrics files are rewritten whole and atomically after every epoch from the run's history,
which the checkpoint also holds: after a kill and ``--resume`` they show exactly the epochs of the
checkpoint, never a row twice or a torn line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unimix.train.fileio import atomic_write_text

__all__ = [
    "MetricsLogger",
    "EpochProgress",
    "TensorBoardMissingWarning",
    "read_metrics",
    "format_epoch_line",
]


class TensorBoardMissingWarning(UserWarning):
    """TensorBoard logging was asked for, but the ``tensorboard`` package is not installed."""


METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_writer_class() -> Any:
    """TensorBoard's ``SummaryWriter`` class, or ``None`` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter


def warn_tensorboard_missing(stacklevel: int = 2) -> None:
    """Say that TensorBoard logging was asked for but cannot happen (a
    :class:`TensorBoardMissingWarning` pointing ``stacklevel`` frames up)."""
    warnings.warn(
        "TensorBoard logging was asked for (tensorboard: true) but the tensorboard package is "
        "not installed; metrics go to metrics.csv and metrics.jsonl only. pip install "
        "tensorboard, or set tensorboard: false (--no-tensorboard)",
        TensorBoardMissingWarning,
        stacklevel=stacklevel + 1,
    )


class MetricsLogger:
    """Writes the history of per-epoch rows to ``metrics.csv`` and ``metrics.jsonl`` in a run
    directory, and each new row to TensorBoard when ``tensorboard`` is installed and wanted."""

    def __init__(
        self, out_dir: str | Path, tensorboard: bool | None = None, *, warn_missing: bool = True
    ) -> None:
        self.out_dir = Path(out_dir)
        self._tb = None
        self._tb_last = 0
        writer = summary_writer_class() if tensorboard is not False else None
        if tensorboard is True and writer is None and warn_missing:  # None: when installed
            warn_tensorboard_missing(stacklevel=3)
        if writer is not None:
            self._tb = writer(log_dir=str(self.out_dir / "tensorboard"))

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        cols = _columns(history)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _cell(row.get(k)) for k in cols})
        atomic_write_text(self.out_dir / METRICS_CSV, buf.getvalue())
        lines = [json.dumps({k: _json_value(v) for k, v in row.items()}) for row in history]
        atomic_write_text(self.out_dir / METRICS_JSONL, "".join(line + "\n" for line in lines))
        if self._tb is not None:
            for row in history:
                epoch = int(row.get("epoch", 0))
                if epoch <= self._tb_last:
                    continue
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                        self._tb.add_scalar(key, value, epoch)
                self._tb_last = epoch
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (numbers as numbers, missing values as None)."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_epoch_line(row: Mapping[str, Any], epochs: int, eta_s: float | None = None) -> str:
    """One human line per epoch: loss, accuracies, speed, mixing overhead and ETA."""
    parts = [
        f"epoch {int(row['epoch'])}/{epochs}",
        f"loss {row['train_loss']:.4f}",
        f"acc {100 * row['train_acc']:.2f}%",
    ]
    if row.get("test_acc") is not None and not math.isnan(row["test_acc"]):
        parts.append(f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:.2f}%")
    parts.append(f"{row['images_per_s']:.0f} img/s")
    parts.append(f"{row['epoch_s']:.2f}s")
    if row.get("mix_overhead_pct") is not None and not math.isnan(row["mix_overhead_pct"]):
        parts.append(f"mix {row['mix_overhead_pct']:.2f}% of step")
    if eta_s is not None:
        parts.append(f"ETA {_hms(eta_s)}")
    return " | ".join(parts)


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EpochProgress:
    """A tqdm bar over one epoch's batches showing loss, accuracy, images/s and the ETA.

    Shown only when ``enabled`` and standard error is a terminal; otherwise a no-op (the trainer
    still prints one line per epoch).
    """

    def __init__(
        self, total: int, epoch: int, epochs: int, enabled: bool, initial: int = 0
    ) -> None:
        self._bar = None
        self._last = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=f"epoch {epoch}/{epochs}",
                unit="batch",
                leave=False,
                dynamic_ncols=True,
            )

    @property
    def active(self) -> bool:
        return self._bar is not None

    def due(self, interval: float = 0.5) -> bool:
        """Whether the postfix should be refreshed now (limits device synchronisations)."""
        if self._bar is None:
            return False
        now = time.perf_counter()
        if now - self._last >= interval:
            self._last = now
            return True
        return False

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
