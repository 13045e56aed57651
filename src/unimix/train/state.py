"""The state of a run that a checkpoint saves and a resumed run restores.

:class:`RunState` is the run's position (epoch, batch, step), its history and wall time, and —
in the middle of an epoch — this rank's running sums. :func:`checkpoint_state` assembles it
with the model, optimiser, scheduler, scaler and every rank's random streams into the mapping
:func:`unimix.train.checkpoint.save_checkpoint` writes; :func:`restore_parts` and
:meth:`RunState.from_checkpoint` read it back. See :mod:`unimix.train.checkpoint` for the keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unimix.train.checkpoint import CheckpointError, capture_rng_state, restore_rng_state
from unimix.train.step import TrainParts

__all__ = ["RunState", "rank_state", "checkpoint_state", "restore_parts", "load_model_state"]


@dataclass
class RunState:
    """Where a run stands.

    Attributes:
        epoch: epochs completed.
        batch: batches done in the current epoch (0 at an epoch boundary).
        step: optimiser steps done.
        history: one metrics row per completed epoch.
        wall_s: wall time of the run so far, over every session.
        partial: this rank's running sums of the current epoch (mid-epoch checkpoints only).
        finished: whether the run reached its budget.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    partial: dict[str, float] = field(default_factory=dict)
    finished: bool = False

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], rank: int = 0) -> RunState:
        """The run state of a loaded checkpoint, with rank ``rank``'s partial sums."""
        ranks = state.get("ranks") or [{}]
        partial = ranks[rank].get("partial") if rank < len(ranks) else None
        return cls(
            epoch=int(state["epoch"]),
            batch=int(state.get("batch", 0)),
            step=int(state["step"]),
            history=list(state.get("history", [])),
            wall_s=float(state.get("wall_s", 0.0)),
            partial=dict(partial or {}),
            finished=bool(state["finished"]),
        )

    def where(self) -> str:
        """``"epoch E, batch B"`` in the middle of an epoch, else ``"the end of epoch E"``."""
        if self.batch:
            return f"epoch {self.epoch + 1}, batch {self.batch}"
        return f"the end of epoch {self.epoch}"


def rank_state(mixer: Any, partial: Mapping[str, float] | None) -> dict[str, Any]:
    """What one rank adds to a checkpoint: its RNG states, its mixer's generator, its sums."""
    return {
        "rng": capture_rng_state(),
        "mixer": mixer.state_dict() if mixer is not None else None,
        "partial": dict(partial) if partial else None,
    }


def checkpoint_state(
    run: RunState,
    parts: TrainParts,
    *,
    config: Mapping[str, Any],
    ranks: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """The mapping a checkpoint holds (``extra``: ``data_info``, ``total_steps`` …)."""
    return {
        "config": dict(config),
        "world_size": len(ranks),
        "epoch": run.epoch,
        "batch": run.batch,
        "step": run.step,
        "finished": run.finished,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "ranks": ranks,
        "history": run.history,
        "wall_s": run.wall_s,
        "torch_version": str(torch.__version__),
        **extra,
    }


def load_model_state(model: nn.Module, state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Load a checkpoint's weights into ``model``; a mismatch is a :class:`CheckpointError`."""
    try:
        _check_shapes(model, state["model"], path)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"the weights in {str(Path(path))!r} do not fit the model "
            f"{state.get('config', {}).get('model')!r}: {str(err).splitlines()[0]}"
        ) from err


def restore_parts(
    parts: TrainParts, mixer: Any, state: Mapping[str, Any], rank: int, path: str | os.PathLike
) -> None:
    """Restore the model, optimiser, scheduler, scaler, ``mixer`` and this rank's global RNG
    states from a loaded checkpoint."""
    load_model_state(parts.model, state, path)
    try:
        parts.optimizer.load_state_dict(state["optimizer"])
        if parts.scheduler is not None:
            parts.scheduler.load_state_dict(state["scheduler"])
        if parts.scaler is not None:
            parts.scaler.load_state_dict(state["scaler"])
        ranks = state["ranks"][rank]
        if mixer is not None:
            mixer.load_state_dict(ranks["mixer"])
        restore_rng_state(ranks["rng"])
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {str(Path(path))!r} does not match this run's optimiser, scheduler or "
            f"mixer: {err}"
        ) from err


def _check_shapes(model: nn.Module, weights: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Name every tensor whose shape differs between the checkpoint and the model (both shapes),
    and the missing and unexpected names, in one line."""
    own = model.state_dict()
    wrong = [
        f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(own[name].shape)}"
        for name, value in weights.items()
        if name in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[name].shape)
    ]
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    parts = wrong[:5] + ([f"… {len(wrong) - 5} more"] if len(wrong) > 5 else [])
    if missing:
        parts.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    if parts:
        raise CheckpointError(
            f"the weights in {str(Path(path))!r} do not fit the model "
            f"{type(model).__name__}: {'; '.join(parts)}"
        )
