"""Training: the trainer behind ``unimix train`` and the study.

    >>> from unimix.train import resolve_config, train
    >>> cfg = resolve_config("digits", ["methods=hmix", "seed=1"])
    >>> result = train(cfg, "runs/hmix-1")                    # doctest: +SKIP
    >>> result.test_error, result.time_per_epoch_s, result.mix_overhead_pct  # doctest: +SKIP

See :mod:`unimix.train.trainer` (the loop, the run directory), :mod:`unimix.train.config`
(keys, recipes, overrides), :mod:`unimix.train.checkpoint` (atomic, exactly resumable
checkpoints) and :mod:`unimix.train.distributed` (torchrun / DistributedDataParallel).
"""

from unimix.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, state_digest
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
