"""Meters of an epoch: device-side timing and running sums, reduced over ranks once per epoch.

The trainer reports per epoch ``mix_ms`` (time inside the mixer), ``step_ms`` (the whole
optimiser step), ``data_ms`` (waiting for the loader) and
``mix_overhead_pct = 100 · mix_ms / step_ms`` (the cost of mixing that Park, Yun & Chun,
NeurIPS 2022, call negligible), and ``train_loss = Σ loss·n / Σ n``, ``train_acc = Σ correct / Σ n``
over the epoch's images. Nothing here synchronises the device per step: CUDA intervals are
events read at the end of the epoch, and the sums are tensors on the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from unimix.train import distributed

__all__ = ["Clock", "TimedCollate", "EpochMeter"]

_TIMES = ("mix_ms", "step_ms", "data_ms")


class Clock:
    """Wall-clock intervals of work on a device: ``perf_counter`` on CPU, CUDA events on GPU
    (read once per epoch, so timing never synchronises the training loop)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pending: dict[str, list[tuple[Any, Any]]] = {}
        self.totals: dict[str, float] = {}

    def mark(self) -> Any:
        """A point in time (a recorded CUDA event on GPU)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def add(self, key: str, start: Any, end: Any) -> None:
        """Add the interval ``start → end`` (two :meth:`mark` values) to ``key``'s total."""
        if self.cuda:
            self._pending.setdefault(key, []).append((start, end))
        else:
            self.totals[key] = self.totals.get(key, 0.0) + (end - start) * 1000.0

    def add_ms(self, key: str, ms: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + ms

    def resolve(self) -> dict[str, float]:
        """Totals in milliseconds (synchronises the device when events are pending)."""
        if self._pending:
            torch.cuda.synchronize()
            for key, pairs in self._pending.items():
                self.totals[key] = self.totals.get(key, 0.0) + sum(
                    a.elapsed_time(b) for a, b in pairs
                )
            self._pending.clear()
        return dict(self.totals)


class TimedCollate:
    """Wraps a collate function and adds the time it takes to a running total ``ms`` (only in
    the main process: a worker's copy keeps its own)."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate
        self.ms = 0.0

    def __call__(self, batch: list) -> Any:
        start = time.perf_counter()
        out = self.collate(batch)
        self.ms += (time.perf_counter() - start) * 1000.0
        return out


class EpochMeter:
    """One epoch's running sums (loss·n, correct, n) on the device and its :class:`Clock`.

    ``partial`` (from :meth:`partial`) continues an epoch interrupted in its middle.
    """

    def __init__(self, device: torch.device, partial: Mapping[str, float] | None = None) -> None:
        partial = partial or {}
        self.device = device
        self.clock = Clock(device)
        for key in _TIMES:
            self.clock.add_ms(key, float(partial.get(key, 0.0)))
        self.sums = torch.tensor(
            [partial.get("loss_sum", 0.0), partial.get("correct", 0.0), partial.get("count", 0.0)],
            dtype=torch.float64,
            device=device,
        )
        self.train_s0 = float(partial.get("train_s", 0.0))
        self.t0 = time.perf_counter()

    @torch.no_grad()
    def add(self, loss: Tensor, correct: Tensor, n: int) -> None:
        """Add one batch: its mean loss, its number of correct top-1 predictions, its size."""
        self.sums += torch.stack(
            [
                loss.detach().double() * n,
                correct.double(),
                torch.tensor(float(n), dtype=torch.float64, device=self.device),
            ]
        )

    def averages(self) -> tuple[float, float, float]:
        """``(mean loss, accuracy, images)`` so far on this rank (synchronises the device)."""
        loss_sum, correct, count = self.sums.tolist()
        return loss_sum / max(count, 1.0), correct / max(count, 1.0), count

    @property
    def train_s(self) -> float:
        """Training time of the epoch so far, every session of it included."""
        return self.train_s0 + (time.perf_counter() - self.t0)

    def totals(self, collate: TimedCollate | None, in_workers: bool) -> dict[str, float]:
        """This rank's time totals, with the time of a mixing collate function counted as
        mixing and as part of the step (mixing in workers cannot be timed: ``mix_ms`` is NaN)."""
        totals = self.clock.resolve()
        if collate is not None:
            totals["mix_ms"] = math.nan if in_workers else totals.get("mix_ms", 0.0) + collate.ms
            totals["step_ms"] = totals.get("step_ms", 0.0) + collate.ms
        return totals

    def partial(self, totals: Mapping[str, float]) -> dict[str, float]:
        """What a mid-epoch checkpoint keeps of this rank's epoch."""
        loss_sum, correct, count = self.sums.tolist()
        return {"loss_sum": loss_sum, "correct": correct, "count": count, **totals,
                "train_s": self.train_s}

    def row(
        self, totals: Mapping[str, float], dist: distributed.DistInfo, mixing: bool
    ) -> dict[str, Any]:
        """The epoch's metrics over every rank: sums added, times averaged, ``train_s`` the
        slowest rank's."""
        train_s = self.train_s
        timing = distributed.all_reduce_sum(
            torch.tensor(
                [totals.get(k, 0.0) for k in _TIMES] + [train_s],
                dtype=torch.float64,
                device=self.device,
            ),
            dist,
        ).tolist()
        mix_ms, step_ms, data_ms = (v / dist.world_size for v in timing[:3])
        train_s = distributed.max_over_ranks(train_s, dist)
        loss_sum, correct, count = distributed.all_reduce_sum(self.sums, dist).tolist()
        return {
            "train_loss": loss_sum / count,
            "train_acc": correct / count,
            "train_images": int(count),
            "train_s": train_s,
            "images_per_s": count / train_s if train_s > 0 else math.nan,
            "data_ms": data_ms,
            "mix_ms": mix_ms if mixing else 0.0,
            "step_ms": step_ms,
            "mix_overhead_pct": 100.0 * mix_ms / step_ms if mixing and step_ms > 0 else 0.0,
        }
