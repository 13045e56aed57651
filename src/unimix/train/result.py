"""What a training run produced (:class:`TrainResult`) and how it stops early
(:class:`TrainingInterrupted`)."""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from unimix.train.config import TrainConfig

__all__ = ["TrainResult", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; ``signum`` says which."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        out_dir: the run directory.
        config: the resolved configuration.
        history: one mapping per epoch (the rows of ``metrics.csv``).
        finished: whether the run reached its budget.
        model: the trained model in eval mode on the run's device (``None`` when not loaded).
    """

    out_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    finished: bool
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's row."""
        return dict(self.history[-1]) if self.history else {}

    def _last(self, key: str) -> float:
        for row in reversed(self.history):
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                return float(value)
        return math.nan

    @property
    def train_loss(self) -> float:
        return self._last("train_loss")

    @property
    def train_acc(self) -> float:
        return self._last("train_acc")

    @property
    def test_loss(self) -> float:
        """Test cross-entropy (NLL) of the last evaluation."""
        return self._last("test_loss")

    @property
    def test_acc(self) -> float:
        """Top-1 test accuracy (a fraction) of the last evaluation."""
        return self._last("test_acc")

    @property
    def test_error(self) -> float:
        """Top-1 test error (a fraction) of the last evaluation."""
        return 1.0 - self.test_acc

    @property
    def wall_s(self) -> float:
        """Wall time of the whole run (training and evaluation, every session), seconds."""
        return self._last("wall_s")

    def _mean(self, key: str) -> float:
        values = [float(r[key]) for r in self.history if r.get(key) is not None]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    @property
    def time_per_epoch_s(self) -> float:
        """Mean training time of an epoch (evaluation excluded), seconds."""
        return self._mean("train_s")

    @property
    def images_per_s(self) -> float:
        """Mean training throughput over the epochs, images per second (all ranks)."""
        return self._mean("images_per_s")

    @property
    def mix_ms(self) -> float:
        """Total time spent inside the mixer over the run, milliseconds (mean over ranks)."""
        return sum(float(r.get("mix_ms") or 0.0) for r in self.history)

    @property
    def step_ms(self) -> float:
        """Total time of the training steps over the run, milliseconds (mean over ranks)."""
        return sum(float(r.get("step_ms") or 0.0) for r in self.history)

    @property
    def mix_overhead_pct(self) -> float:
        """Mixing as a percentage of the training step, ``100 · Σ mix_ms / Σ step_ms``."""
        step = self.step_ms
        return 100.0 * self.mix_ms / step if step > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a plain mapping (no model)."""
        return {
            "out_dir": str(self.out_dir),
            "methods": self.config.methods,
            "seed": self.config.seed,
            "epochs": len(self.history),
            "finished": self.finished,
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "test_loss": self.test_loss,
            "test_acc": self.test_acc,
            "test_error": self.test_error,
            "wall_s": self.wall_s,
            "time_per_epoch_s": self.time_per_epoch_s,
            "images_per_s": self.images_per_s,
            "mix_ms": self.mix_ms,
            "step_ms": self.step_ms,
            "mix_overhead_pct": self.mix_overhead_pct,
        }
