"""Training: the trainer behind ``unimix train`` and the study.

    >>> from unimix.train import resolve_config, train
    >>> cfg = resolve_config("digits", ["methods=hmix", "seed=1"])
    >>> result = train(cfg, "runs/hmix-1")                    # doctest: +SKIP
    >>> result.test_error, result.time_per_epoch_s, result.mix_overhead_pct  # doctest: +SKIP

The parts, each small enough to read at once:

- :mod:`~unimix.train.trainer`: the epoch and run loops, :func:`train`, :func:`load_run`;
- :mod:`~unimix.train.step`: one step (mix → forward → loss → backward → optimiser step);
- :mod:`~unimix.train.state`: :class:`~unimix.train.state.RunState`, what a checkpoint saves;
- :mod:`~unimix.train.meters`: per-epoch timing and running sums;
- :mod:`~unimix.train.build`: dataset, model, mixer, loaders and their random streams;
- :mod:`~unimix.train.config`: keys, recipes, overrides; :mod:`~unimix.train.optim`: SGD and
  the learning-rate schedule;
- :mod:`~unimix.train.checkpoint`: atomic, checksummed, exactly resumable checkpoints;
- :mod:`~unimix.train.rundir`: one writer per run directory, never a foreign folder;
- :mod:`~unimix.train.distributed`: torchrun / DistributedDataParallel.

Pass ``on_epoch=`` to :func:`train` to receive every epoch's metrics (e.g. for your own logger).
"""

from typing import TYPE_CHECKING

from unimix._lazy import lazy_getattr

if TYPE_CHECKING:  # imported on first use: `--help` needs no extra (the parts need yaml, tqdm …)
    from unimix.train.checkpoint import (
        CheckpointError,
        load_checkpoint,
        save_checkpoint,
        state_digest,
    )
    from unimix.train.config import (
        RESUME_MUTABLE,
        TrainConfig,
        apply_overrides,
        available_recipes,
        load_recipe,
        resolve_config,
    )
    from unimix.train.logging import read_metrics
    from unimix.train.trainer import (
        TrainingInterrupted,
        TrainResult,
        build_optimizer,
        build_scheduler,
        load_result,
        load_run,
        lr_factor,
        start_fingerprint,
        train,
    )

_LAZY = {
    "CheckpointError": "unimix.train.checkpoint",
    "load_checkpoint": "unimix.train.checkpoint",
    "save_checkpoint": "unimix.train.checkpoint",
    "state_digest": "unimix.train.checkpoint",
    "RESUME_MUTABLE": "unimix.train.config",
    "TrainConfig": "unimix.train.config",
    "apply_overrides": "unimix.train.config",
    "available_recipes": "unimix.train.config",
    "load_recipe": "unimix.train.config",
    "resolve_config": "unimix.train.config",
    "read_metrics": "unimix.train.logging",
    "TrainingInterrupted": "unimix.train.trainer",
    "TrainResult": "unimix.train.trainer",
    "build_optimizer": "unimix.train.trainer",
    "build_scheduler": "unimix.train.trainer",
    "load_result": "unimix.train.trainer",
    "load_run": "unimix.train.trainer",
    "lr_factor": "unimix.train.trainer",
    "start_fingerprint": "unimix.train.trainer",
    "train": "unimix.train.trainer",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "CheckpointError",
    "RESUME_MUTABLE",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "apply_overrides",
    "available_recipes",
    "build_optimizer",
    "build_scheduler",
    "load_checkpoint",
    "load_recipe",
    "load_result",
    "load_run",
    "lr_factor",
    "read_metrics",
    "resolve_config",
    "save_checkpoint",
    "start_fingerprint",
    "state_digest",
    "train",
]
