"""The trainer: SGD on any dataset and model of the study, with any :class:`unimix.Mixer`.

One run writes, in its directory (which it owns while it runs, see :mod:`unimix.train.rundir`)::

    config.yaml     the resolved TrainConfig
    metrics.csv     one row per epoch (also metrics.jsonl; TensorBoard events when installed)
    checkpoint.pt   the latest state (see unimix.train.checkpoint), rewritten atomically

The parts: :mod:`~unimix.train.build` makes the dataset, model, mixer and loaders;
:func:`~unimix.train.step.train_step` is one step (mix → forward → soft-target cross-entropy
``−Σ_k ỹ_k log softmax(f(x̃))_k`` → backward → optimiser step); :mod:`~unimix.train.meters`
times and averages an epoch (``mix_overhead_pct = 100 · mix_ms / step_ms``: the cost of mixing
that Park, Yun & Chun, NeurIPS 2022, call negligible, measured); :mod:`~unimix.train.state` is
what a checkpoint saves. This module holds the two loops: the epoch and the run.

Reproducibility: every random stream is derived from ``seed`` with :func:`derive_seed`; the data
order and augmentation of an epoch are pure functions of (seed, epoch) (:mod:`unimix.data.loader`);
a checkpoint holds the Python, NumPy and torch RNG states and the mixer's generator of every
rank, and mixing in the loader's collate function draws per batch. So a run resumed from any
checkpoint (at an epoch boundary, or in the middle of an epoch after Ctrl-C), with any number of
loader workers, ends with bitwise the same weights as an uninterrupted run, on CPU with the same
settings (and on GPU with ``deterministic: true``, up to the determinism of the kernels).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unimix.train import build, distributed
from unimix.train.build import derive_seed
from unimix.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, state_digest
from unimix.train.config import RESUME_MUTABLE, TrainConfig, config_differences, write_yaml
from unimix.train.fileio import remove_stale_temporaries
from unimix.train.logging import (
    EpochProgress,
    MetricsLogger,
    format_epoch_line,
    summary_writer_class,
    warn_tensorboard_missing,
)
from unimix.train.memory import check_run_memory
from unimix.train.meters import EpochMeter, TimedCollate
from unimix.train.optim import build_optimizer, build_scheduler, lr_factor
from unimix.train.result import TrainingInterrupted, TrainResult
from unimix.train.rundir import CONFIG_HEADER, RunDirectoryError, RunLock, check_run_directory
from unimix.train.signals import StopFlag
from unimix.train.state import (
    RunState,
    checkpoint_state,
    load_model_state,
    rank_state,
    restore_parts,
)
from unimix.train.step import StepOutput, TrainParts, evaluate_loader, train_step

__all__ = [
    "TrainResult",
    "TrainingInterrupted",
    "train",
    "load_run",
    "load_result",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "derive_seed",
    "start_fingerprint",
    "CONFIG_FILE",
    "CHECKPOINT_FILE",
]

#: The resolved configuration a run writes into its directory.
CONFIG_FILE = "config.yaml"
#: The checkpoint a run writes into its directory (atomically) and resumes from.
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class _Context:
    """Everything built for a run (see :meth:`_Run._build`)."""

    parts: TrainParts
    mixer: Any  # the run's mixer (saved in checkpoints), also when the loader does the mixing
    data_info: dict[str, Any]
    train_loader: Any
    collate: TimedCollate | None
    test_loader: Any
    steps_per_epoch: int
    total_steps: int
    epochs: int


class _Run:
    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: Path,
        dist: distributed.DistInfo,
        progress: bool,
        on_step: Callable[[int, int], None] | None,
        on_epoch: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.cfg, self.out, self.dist, self.device = cfg, out_dir, dist, dist.device
        self.progress, self.on_step, self.on_epoch = progress, on_step, on_epoch
        self.ckpt_path = out_dir / CHECKPOINT_FILE
        self._session_start = time.perf_counter()
        self._wall0 = 0.0

    def log(self, message: str) -> None:
        if self.dist.is_main:
            from tqdm import tqdm

            tqdm.write(message)  # above any progress bar (the study's, the epoch's), not through it

    # -- the run directory ---------------------------------------------------------------------
    def _claim(self) -> RunLock | None:
        """Rank 0 checks the directory and takes its lock; every rank fails if it cannot."""
        lock, error = None, None
        if self.dist.is_main:
            try:
                check_run_directory(self.out)
                lock = RunLock(self.out).acquire()
                remove_stale_temporaries(self.out)
            except RunDirectoryError as err:
                error = err
        errors = distributed.all_gather_objects(None if error is None else str(error), self.dist)
        if error is not None:
            raise error
        if errors[0] is not None:
            raise RunDirectoryError(errors[0])
        return lock

    def _existing(self, resume: bool) -> dict[str, Any] | None:
        if not self.ckpt_path.exists():
            return None
        state = load_checkpoint(self.ckpt_path)
        try:
            saved = TrainConfig.from_dict(state["config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {str(self.ckpt_path)!r} holds an invalid configuration: {err}"
            ) from err
        diffs = config_differences(saved, self.cfg)
        if diffs:
            lines = "; ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in diffs.items())
            raise CheckpointError(
                f"the run in {str(self.out)!r} was made with another configuration ({lines}); "
                f"resume it with its own (`unimix train --resume {self.out}`) or train into a new directory"
            )
        if state["finished"]:
            return state
        if not resume:
            raise FileExistsError(
                f"{str(self.out)!r} holds an unfinished run (epoch {state['epoch']}, step "
                f"{state['step']}); resume it with resume=True (`unimix train --resume {self.out}`) "
                "or choose another output directory"
            )
        if int(state.get("world_size", 1)) != self.dist.world_size:
            raise CheckpointError(
                f"the checkpoint in {str(self.out)!r} was written by {state.get('world_size')} "
                f"process(es) and cannot be resumed by {self.dist.world_size}: each rank's random "
                "streams are part of it; resume with the same number of processes"
            )
        return state

    def _finished_result(self, state: Mapping[str, Any]) -> TrainResult:
        cfg = TrainConfig.from_dict(state["config"])
        model = build.create_model(cfg, state["data_info"])
        load_model_state(model, state, self.ckpt_path)
        model.to(self.device).eval()
        return TrainResult(self.out, cfg, list(state.get("history", [])), True, model)

    # -- main ----------------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        lock = self._claim()
        try:
            state = self._existing(resume)
            if state is not None and state["finished"]:
                self.log(f"{self.out}: run already finished; nothing to do")
                return self._finished_result(state)
            with build.determinism(self.cfg.deterministic, self.device):
                return self._train(state)
        finally:
            if lock is not None:
                lock.release()

    def _build(self, state: Mapping[str, Any] | None) -> tuple[_Context, RunState]:
        """Dataset, model, mixer, loaders, optimiser; restored from ``state`` when resuming."""
        cfg, dist, device = self.cfg, self.dist, self.device
        if cfg.batch_size % dist.world_size:
            raise ValueError(
                f"batch_size {cfg.batch_size} (the global batch) must be divisible by the number "
                f"of processes {dist.world_size}"
            )
        if dist.is_main:
            write_yaml(self.out / CONFIG_FILE, cfg.to_dict(), header=CONFIG_HEADER)
        distributed.barrier(dist)
        spec = build.build_dataset(cfg)
        info = build.data_info(spec)
        model, mixer = self._seeded_model_and_mixer(info)
        loader, collate = build.train_loader(cfg, spec, mixer, dist)
        steps_per_epoch = len(loader)
        if steps_per_epoch == 0:
            raise ValueError(
                f"the training set ({len(spec.train)} images) gives no batch of "
                f"{cfg.batch_size // dist.world_size} per process; lower batch_size or set "
                "drop_last=false"
            )
        total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        optimizer = build_optimizer(model, cfg)
        parts = TrainParts(
            model=model,
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, cfg, steps_per_epoch, total_steps),
            scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
            mixer=mixer if cfg.mix_where == "device" else None,
            amp=cfg.amp,
            channels_last=cfg.channels_last,
            grad_clip=cfg.grad_clip,
            label_smoothing=cfg.label_smoothing,
        )
        run = RunState()
        if state is not None:
            restore_parts(parts, mixer, state, dist.rank, self.ckpt_path)
            run = RunState.from_checkpoint(state, dist.rank)
            self._wall0 = run.wall_s
            self.log(f"{self.out}: resuming from {run.where()} (step {run.step}/{total_steps})")
        parts.train_model = model
        if dist.enabled:
            parts.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.compile:
            parts.train_model = torch.compile(parts.train_model)
        ctx = _Context(
            parts=parts,
            mixer=mixer,
            data_info=info,
            train_loader=loader,
            collate=collate,
            test_loader=build.test_loader(cfg, spec, dist),
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            epochs=math.ceil(total_steps / steps_per_epoch),
        )
        return ctx, run

    def _seeded_model_and_mixer(self, info: Mapping[str, Any]) -> tuple[nn.Module, Any]:
        """The initial model (the same on every rank), then this rank's own global RNG streams
        and mixer (``None`` without mixing)."""
        cfg, rank = self.cfg, self.dist.rank
        torch.manual_seed(derive_seed(cfg.seed, build.MODEL))
        model = build.create_model(cfg, info).to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        random.seed(derive_seed(cfg.seed, rank, build.PYTHON))
        np.random.seed(derive_seed(cfg.seed, rank, build.NUMPY) % 2**32)  # noqa: NPY002
        torch.manual_seed(derive_seed(cfg.seed, rank, build.TORCH))  # dropout etc.
        if not cfg.mixing:
            return model, None
        mixer_seed = derive_seed(cfg.seed, rank, build.MIXER)
        return model, build.build_mixer(cfg, info["num_classes"], mixer_seed)

    def _train(self, state: Mapping[str, Any] | None) -> TrainResult:
        ctx, run = self._build(state)
        logger = None
        if self.dist.is_main:  # train() has warned already if tensorboard is missing
            logger = MetricsLogger(self.out, self.cfg.tensorboard, warn_missing=False)
        if logger is not None:
            logger.write(run.history)  # drop rows of epochs after the checkpoint, if any
        self._session_start = time.perf_counter()
        stop = StopFlag()
        try:
            with stop.installed():
                while run.epoch < ctx.epochs and run.step < ctx.total_steps:
                    row = self._epoch(ctx, run, stop)
                    distributed.broadcast_buffers(ctx.parts.model, self.dist)
                    if row is None:  # stopped in the middle of the epoch
                        self._save(ctx, run)
                        self._interrupted(stop, run.where())
                    self._end_epoch(ctx, run, row, logger)
                    if not run.finished and distributed.any_rank(stop.signum is not None, self.dist):
                        self._interrupted(stop, run.where())
        finally:
            if logger is not None:
                logger.close()
        ctx.parts.model.eval()
        return TrainResult(self.out, self.cfg, run.history, True, ctx.parts.model)

    def _interrupted(self, stop: StopFlag, where: str) -> None:
        msg = f"interrupted at {where}; checkpoint saved. Resume with: unimix train --resume {self.out}"
        self.log(msg)
        raise TrainingInterrupted(msg, int(stop.signum or signal.SIGINT))

    # -- one epoch -----------------------------------------------------------------------------
    def _epoch(self, ctx: _Context, run: RunState, stop: StopFlag) -> dict[str, Any] | None:
        """Train ``run.epoch`` from batch ``run.batch``; its metrics row, or ``None`` when a
        signal stopped it in the middle (``run.partial`` then holds this rank's sums)."""
        meter = EpochMeter(self.device, run.partial)
        clock, loader = meter.clock, ctx.train_loader
        if ctx.collate is not None:
            ctx.collate.ms = 0.0
        ctx.parts.model.train()
        loader.set_epoch(run.epoch, start=run.batch)
        total = min(ctx.steps_per_epoch, ctx.total_steps - run.epoch * ctx.steps_per_epoch)
        bar = EpochProgress(
            total, run.epoch + 1, ctx.epochs, self.progress and self.dist.is_main, run.batch
        )
        start, lr, iterator, stopped = run.batch, math.nan, iter(loader), False
        try:
            while run.batch < total and not stopped:
                t_data = clock.mark()
                batch = next(iterator, None)
                if batch is None:
                    break
                t_step = clock.mark()
                clock.add("data_ms", t_data, t_step)
                images, labels = (t.to(self.device, non_blocking=True) for t in batch)
                out = train_step(ctx.parts, images, labels, clock)
                run.step, run.batch, lr = run.step + 1, run.batch + 1, out.lr
                meter.add(out.loss, out.correct, out.n)
                clock.add("step_ms", t_step, clock.mark())
                self._show_progress(bar, meter, out, run.batch - start)
                if self.on_step is not None:
                    self.on_step(run.epoch + 1, run.step)
                stopped = distributed.any_rank(stop.signum is not None, self.dist)
                stopped = stopped and run.batch < total
        finally:
            bar.close()
        in_workers = getattr(loader, "num_workers", 0) > 0
        totals = meter.totals(ctx.collate, in_workers)
        if stopped:
            stop.signum = stop.signum or signal.SIGINT
            run.partial = meter.partial(totals)
            return None
        row = meter.row(totals, self.dist, mixing=ctx.mixer is not None)
        return {"epoch": run.epoch + 1, "step": run.step, "lr": lr, **row}

    def _show_progress(self, bar: EpochProgress, meter: EpochMeter, out: StepOutput, done: int) -> None:
        if not bar.active:
            return
        if not bar.due():
            bar.update(1)
            return
        loss, acc, _ = meter.averages()
        elapsed = max(time.perf_counter() - meter.t0, 1e-9)
        bar.update(
            1,
            lr=f"{out.lr:.3g}",
            loss=f"{loss:.4f}",
            acc=f"{100 * acc:.1f}%",
            img_s=f"{done * out.n * self.dist.world_size / elapsed:.0f}",
        )

    def _end_epoch(
        self, ctx: _Context, run: RunState, row: dict[str, Any], logger: MetricsLogger | None
    ) -> None:
        """Evaluate when due, record the row, checkpoint, log, and hand the row to ``on_epoch``."""
        cfg = self.cfg
        run.epoch, run.batch, run.partial = run.epoch + 1, 0, {}
        test = dict(test_loss=math.nan, test_acc=math.nan, test_err=math.nan)
        eval_s = math.nan
        if run.epoch == ctx.epochs or (cfg.eval_every > 0 and run.epoch % cfg.eval_every == 0):
            t0 = time.perf_counter()
            test = evaluate_loader(
                ctx.parts.model, ctx.test_loader, self.dist, cfg.amp, cfg.channels_last
            )
            eval_s = time.perf_counter() - t0
        row.update(test, eval_s=eval_s)
        row["epoch_s"] = row["train_s"] + (0.0 if math.isnan(eval_s) else eval_s)
        row["wall_s"] = self._wall()
        run.history.append(row)
        run.finished = run.epoch >= ctx.epochs or run.step >= ctx.total_steps
        self._save(ctx, run, digests=_replica_digests(ctx.parts.model, self.dist) if run.finished else None)
        if logger is not None:
            logger.write(run.history)
        recent = run.history[-5:]
        eta = sum(r["epoch_s"] for r in recent) / len(recent) * (ctx.epochs - run.epoch)
        self.log(format_epoch_line(row, ctx.epochs, eta_s=eta))
        if self.on_epoch is not None and self.dist.is_main:
            self.on_epoch(dict(row))

    def _wall(self) -> float:
        return self._wall0 + time.perf_counter() - self._session_start

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, ctx: _Context, run: RunState, digests: list[str] | None = None) -> None:
        run.wall_s = self._wall()
        ranks = distributed.all_gather_objects(rank_state(ctx.mixer, run.partial), self.dist)
        if self.dist.is_main:
            extra: dict[str, Any] = {"data_info": ctx.data_info, "total_steps": ctx.total_steps}
            if digests is not None:
                extra["replica_digests"] = digests
            state = checkpoint_state(run, ctx.parts, config=self.cfg.to_dict(), ranks=ranks, **extra)
            save_checkpoint(self.ckpt_path, state)
        distributed.barrier(self.dist)


def _replica_digests(model: nn.Module, dist: distributed.DistInfo) -> list[str]:
    """Every rank's digest of its weights; under DDP they must all be equal."""
    digests = distributed.all_gather_objects(state_digest(model.state_dict()), dist)
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"the ranks ended with different weights (digests {digests}); DistributedDataParallel "
            "replicas diverged"
        )
    return digests


# ---- public entry points ---------------------------------------------------------------------


def train(
    config: TrainConfig | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train one model as ``config`` says and write the run to ``out_dir``.

    Args:
        config: a :class:`TrainConfig` or a mapping of its keys (e.g. a loaded recipe).
        out_dir: the run directory (``config.yaml``, ``metrics.csv``, ``checkpoint.pt``): a new
            or empty folder, or a run's own. It is locked while the run writes it.
        resume: continue the unfinished run in ``out_dir`` from its checkpoint. Without it, an
            unfinished run there is an error (never silently overwritten).
        progress: show a progress bar per epoch (only on a terminal, on rank 0; otherwise one
            line per epoch).
        on_step: called as ``on_step(epoch, step)`` after every optimiser step (1-based epoch).
        on_epoch: called after every epoch (on rank 0, once its checkpoint is saved) with a copy
            of the epoch's metrics row, the same mapping as a line of ``metrics.jsonl`` (``epoch``,
            ``train_loss``, ``test_acc``, ``mix_overhead_pct`` …): forward it to your own logger.

    A run in ``out_dir`` that is already finished is returned as it is, without training. Under
    ``torchrun`` (``WORLD_SIZE`` > 1) every rank calls this; only rank 0 writes files.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint (resume to continue).
        CheckpointError: the checkpoint in ``out_dir`` is corrupt (it fails its checksum) or from
            another configuration.
        unimix.train.rundir.RunLockedError: another process is writing ``out_dir``.
        unimix.train.rundir.NotARunDirectoryError: ``out_dir`` holds other files and no run.
        ValueError: the run's image and batch sizes cannot fit in its device's memory
            (:func:`unimix.train.memory.check_run_memory`).
    """
    cfg = TrainConfig.from_any(config)
    out = Path(out_dir)
    for name, hook in (("on_step", on_step), ("on_epoch", on_epoch)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable or None, got {type(hook).__name__}")
    check_run_memory(cfg)  # sizes that cannot fit are refused before anything is allocated
    dist = distributed.setup(cfg.device)
    if cfg.tensorboard is True and dist.is_main and summary_writer_class() is None:
        warn_tensorboard_missing(stacklevel=2)  # at the caller's line, not deep in the trainer
    try:
        return _Run(cfg, out, dist, progress, on_step, on_epoch).run(resume)
    finally:
        distributed.teardown(dist)


def start_fingerprint(config: TrainConfig | Mapping[str, Any]) -> str:
    """SHA-256 of what a run starts from: its initial weights and its first training batch
    (data order and augmentation of epoch 0, before any mixing).

    Two configurations with equal fingerprints train from the same start, which a study needs for
    paired comparisons between methods (same seed → same weights and data for every method).
    Nothing is trained and the global RNGs are left as they were.
    """
    import hashlib

    from unimix.data import make_loader

    cfg = TrainConfig.from_any(config)
    spec = build.build_dataset(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, build.MODEL))
        model = build.create_model(cfg, build.data_info(spec))
    loader = make_loader(
        spec.train,
        cfg.batch_size,
        shuffle=True,
        drop_last=cfg.drop_last,
        seed=derive_seed(cfg.seed, build.DATA),
    )
    images, labels = next(iter(loader))
    h = hashlib.sha256(state_digest(model.state_dict()).encode())
    h.update(state_digest({"images": images, "labels": labels}).encode())
    return h.hexdigest()


def _read_run_config(run_dir: Path, state: Mapping[str, Any]) -> TrainConfig:
    saved = TrainConfig.from_dict(state["config"])
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        return saved
    import yaml

    try:
        on_disk = TrainConfig.from_dict(yaml.safe_load(cfg_file.read_text()) or {})
    except (yaml.YAMLError, TypeError, ValueError) as err:
        raise ValueError(f"{str(cfg_file)!r} is not a valid configuration: {err}") from err
    diffs = config_differences(saved, on_disk)
    if diffs:
        raise CheckpointError(
            f"{str(cfg_file)!r} does not match the checkpoint's configuration ({sorted(diffs)}); "
            f"only {', '.join(sorted(RESUME_MUTABLE))} may be edited"
        )
    return on_disk


def load_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The model of a run with its latest checkpoint's weights (eval mode, on ``device``), the
    :class:`~unimix.data.DataSpec` its configuration describes, and the configuration dict.

    ``config.yaml`` may be edited to point ``data_dir`` elsewhere; other keys must match the
    checkpoint's. The checkpoint's checksum is verified (:class:`CheckpointError` if damaged).
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_FILE
    state = load_checkpoint(ckpt)
    cfg = _read_run_config(run_dir, state)
    spec = build.build_dataset(cfg)
    info = state.get("data_info") or build.data_info(spec)
    model = build.create_model(cfg, info)
    load_model_state(model, state, ckpt)
    model.to(torch.device(device)).eval()
    return model, spec, cfg.to_dict()


def load_result(
    run_dir: str | os.PathLike[str], device: str | torch.device | None = None
) -> TrainResult:
    """The :class:`TrainResult` of a run directory (finished or not); with ``device``, the model
    is loaded too."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    cfg = TrainConfig.from_dict(state["config"])
    model = None
    if device is not None:
        model = build.create_model(cfg, state["data_info"])
        load_model_state(model, state, run_dir / CHECKPOINT_FILE)
        model.to(torch.device(device)).eval()
    return TrainResult(run_dir, cfg, list(state.get("history", [])), bool(state["finished"]), model)
