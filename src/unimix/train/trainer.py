"""The trainer: SGD on any dataset and model of the study, with any :class:`unimix.Mixer`.

One run writes, in its directory::

    config.yaml     the resolved TrainConfig
    metrics.csv     one row per epoch (also metrics.jsonl; TensorBoard events when installed)
    checkpoint.pt   the latest state (see unimix.train.checkpoint), rewritten atomically

Each step: the batch arrives on the device (or already mixed by the loader's collate function),
the mixer mixes images and labels (``x̃ = M ⊙ x_a + (1 − M) ⊙ x_b``, ``ỹ = λ̄ y_a + (1 − λ̄) y_b``),
and the model is trained on the soft-target cross-entropy ``−Σ_k ỹ_k log softmax(f(x̃))_k``
(plain cross-entropy, with label smoothing if set, when ``methods`` is ``none``). The time spent
inside the mixer and in the whole step are accumulated per epoch (``mix_ms``, ``step_ms``,
``mix_overhead_pct = 100 · mix_ms / step_ms``): the cost of mixing that the paper calls
negligible (Park, Yun & Chun, NeurIPS 2022), measured.

Reproducibility: every random stream is derived from ``seed`` with :func:`derive_seed`; the data
order and augmentation of an epoch are pure functions of (seed, epoch) (:mod:`unimix.data.loader`);
a checkpoint holds the Python, NumPy and torch RNG states and the mixer's generator of every
rank. So a run resumed from any checkpoint (at an epoch boundary, or in the middle of an epoch
after Ctrl-C) ends with bitwise the same weights as an uninterrupted run, on CPU with the same
settings (and on GPU with ``deterministic: true``, up to the determinism of the kernels).
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimix.data.loader import derive_seed
from unimix.train import distributed
from unimix.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    state_digest,
)
from unimix.train.config import TrainConfig, config_differences, write_yaml
from unimix.train.logging import EpochProgress, MetricsLogger, format_epoch_line

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
    "CONFIG_FILE",
    "CHECKPOINT_FILE",
]

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"

# Stream tags of derive_seed: every random source of a run gets its own independent seed.
_MODEL, _TORCH, _PYTHON, _NUMPY, _MIXER, _DATA, _ORDER = range(1, 8)


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


# ---- optimisation ----------------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum (optionally Nesterov) and weight decay; with ``decay_norm_bias: false``,
    biases and normalisation parameters (every parameter of dimension ≤ 1) are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.decay_norm_bias and cfg.weight_decay > 0:
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups: Any = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``lr`` for optimiser step ``step`` (0-based).

    Linear warm-up over ``W = round(warmup_epochs · steps_per_epoch)`` steps, ``(s + 1) / W``;
    then ``cosine``: ``m + (1 − m) · ½ (1 + cos(π (s − W) / (T − W)))`` with ``m = min_lr / lr``
    (Loshchilov & Hutter, SGDR, without restarts), ``step``: ``gamma`` to the number of
    ``milestones`` (epochs) passed, or ``constant``.
    """
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        floor = cfg.min_lr / cfg.lr
        span = max(1, total_steps - warm)
        progress = min(1.0, (step - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        passed = sum(step >= round(m * steps_per_epoch) for m in cfg.milestones)
        return cfg.gamma**passed
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch, total_steps)
    )


# ---- timing ----------------------------------------------------------------------------------


class _Clock:
    """Wall-clock intervals of work on a device: ``perf_counter`` on CPU, CUDA events on GPU
    (read once per epoch, so timing never synchronises the training loop)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pending: dict[str, list[tuple[Any, Any]]] = {}
        self.totals: dict[str, float] = {}

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def add(self, key: str, start: Any, end: Any) -> None:
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


class _TimedCollate:
    """Wraps a mixing collate function and adds the time it takes to a running total."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate
        self.ms = 0.0

    def __call__(self, batch: list) -> Any:
        start = time.perf_counter()
        out = self.collate(batch)
        self.ms += (time.perf_counter() - start) * 1000.0
        return out


# ---- signals ---------------------------------------------------------------------------------


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks after each step, so a checkpoint is only
    ever taken between steps; a second signal interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


# ---- the run ---------------------------------------------------------------------------------


def _model_size(image_size: Any) -> int | tuple[int, int]:
    size = tuple(image_size)
    return size[0] if size[0] == size[1] else size  # type: ignore[return-value]


def _data_info(spec: Any) -> dict[str, Any]:
    return {
        "num_classes": int(spec.num_classes),
        "in_chans": int(spec.in_chans),
        "image_size": [int(v) for v in spec.image_size],
    }


def _create_model(cfg: TrainConfig, info: Mapping[str, Any]) -> nn.Module:
    from unimix.models import create_model

    return create_model(
        cfg.model,
        num_classes=info["num_classes"],
        in_chans=info["in_chans"],
        image_size=_model_size(info["image_size"]),
        **cfg.model_kwargs,
    )


def _build_dataset(cfg: TrainConfig) -> Any:
    from unimix.data import build_dataset

    return build_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        image_size=cfg.image_size,
        split_seed=cfg.split_seed,
        train_augment=cfg.train_augment,
        train_per_class=cfg.train_per_class,
        train_fraction=cfg.train_fraction,
        val_fraction=cfg.val_fraction,
    )


def _method_params(cfg: TrainConfig) -> dict[str, Any]:
    """The ``method_params`` that the chosen methods take (a recipe may set ``r`` for HMix and be
    run with Mixup); a name no registered method takes at all is an error."""
    from unimix import mix

    accepted = mix.method_parameters
    names = list(cfg.methods)
    taken = {k for n in names for k in accepted(n)}
    known = {k for n in mix.available_methods() for k in accepted(n)}
    unknown = sorted(set(cfg.method_params) - known)
    if unknown:
        raise ValueError(
            f"method_params {unknown} are taken by no mixing method; known parameters: {sorted(known)}"
        )
    return {k: v for k, v in cfg.method_params.items() if k in taken}


def _build_mixer(cfg: TrainConfig, num_classes: int, seed: int) -> Any:
    from unimix import Mixer

    return Mixer(
        cfg.methods,
        alpha=cfg.alpha,
        mode=cfg.mode,
        prob=cfg.mix_prob,
        switch_prob=cfg.switch_prob,
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
        partner=cfg.partner,
        generator=torch.Generator().manual_seed(seed),
        **_method_params(cfg),
    )


@contextmanager
def _determinism(enabled: bool, device: torch.device) -> Any:
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.backends.cudnn.deterministic = previous[3]


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    if cfg.amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Run:
    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: Path,
        dist: distributed.DistInfo,
        progress: bool,
        on_step: Callable[[int, int], None] | None,
    ) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.dist = dist
        self.device = dist.device
        self.progress = progress
        self.on_step = on_step
        self.ckpt_path = out_dir / CHECKPOINT_FILE

    def log(self, message: str) -> None:
        if self.dist.is_main:
            from tqdm import tqdm

            tqdm.write(message)  # above any progress bar (the study's, the epoch's), not through it

    # -- existing run --------------------------------------------------------------------------
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
        model = _create_model(cfg, state["data_info"])
        _load_model_state(model, state, self.ckpt_path)
        model.to(self.device).eval()
        return TrainResult(self.out, cfg, list(state.get("history", [])), True, model)

    # -- main ----------------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        state = self._existing(resume)
        if state is not None and state["finished"]:
            self.log(f"{self.out}: run already finished; nothing to do")
            return self._finished_result(state)
        with _determinism(self.cfg.deterministic, self.device):
            return self._train(state)

    def _train(self, state: dict[str, Any] | None) -> TrainResult:
        cfg, dist, device = self.cfg, self.dist, self.device
        rank, world = dist.rank, dist.world_size
        if cfg.batch_size % world:
            raise ValueError(
                f"batch_size {cfg.batch_size} (the global batch) must be divisible by the number "
                f"of processes {world}"
            )
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_yaml(
                self.out / CONFIG_FILE,
                cfg.to_dict(),
                header="# unimix train: resolved configuration",
            )
        distributed.barrier(dist)

        spec = _build_dataset(cfg)
        data_info = _data_info(spec)
        torch.manual_seed(derive_seed(cfg.seed, _MODEL))  # the same initial weights on every rank
        model = _create_model(cfg, data_info).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        random.seed(derive_seed(cfg.seed, rank, _PYTHON))
        np.random.seed(derive_seed(cfg.seed, rank, _NUMPY) % 2**32)  # noqa: NPY002
        torch.manual_seed(derive_seed(cfg.seed, rank, _TORCH))  # dropout etc., one stream per rank

        mixer = (
            _build_mixer(cfg, spec.num_classes, derive_seed(cfg.seed, rank, _MIXER))
            if cfg.mixing
            else None
        )
        train_loader, timed_collate = self._train_loader(spec, mixer)
        test_loader = self._test_loader(spec)
        steps_per_epoch = len(train_loader)
        if steps_per_epoch == 0:
            raise ValueError(
                f"the training set ({len(spec.train)} images) gives no batch of {cfg.batch_size // world} "
                "per process; lower batch_size or set drop_last=false"
            )
        total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        epochs = math.ceil(total_steps / steps_per_epoch)

        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, total_steps)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

        history: list[dict[str, Any]] = []
        epoch, batch, step, wall0 = 0, 0, 0, 0.0
        partial: dict[str, float] = {}
        if state is not None:
            _load_model_state(model, state, self.ckpt_path)
            try:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                scaler.load_state_dict(state["scaler"])
                rank_state = state["ranks"][rank]
                if mixer is not None:
                    mixer.load_state_dict(rank_state["mixer"])
                restore_rng_state(rank_state["rng"])
            except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as err:
                raise CheckpointError(
                    f"checkpoint {str(self.ckpt_path)!r} does not match this run's optimiser, "
                    f"scheduler or mixer: {err}"
                ) from err
            history = list(state["history"])
            epoch, batch, step = int(state["epoch"]), int(state["batch"]), int(state["step"])
            wall0 = float(state.get("wall_s", 0.0))
            partial = dict(rank_state.get("partial") or {})
            where = f"epoch {epoch + 1}, batch {batch}" if batch else f"the end of epoch {epoch}"
            self.log(f"{self.out}: resuming from {where} (step {step}/{total_steps})")

        train_model: nn.Module = model
        if dist.enabled:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.compile:
            train_model = torch.compile(train_model)

        logger = MetricsLogger(self.out, cfg.tensorboard) if dist.is_main else None
        if logger is not None:
            logger.write(history)  # drop rows of epochs after the checkpoint, if any were written
        session_start = time.perf_counter()
        stop = _StopFlag()
        ctx = _Context(
            cfg=cfg,
            dist=dist,
            model=model,
            train_model=train_model,
            mixer=mixer,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            data_info=data_info,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            epochs=epochs,
        )
        try:
            with stop.installed():
                while epoch < epochs and step < total_steps:
                    row, step, interrupted = self._epoch(
                        ctx,
                        train_loader,
                        timed_collate,
                        epoch,
                        batch,
                        step,
                        partial,
                        stop,
                    )
                    _sync_buffers(model, dist)
                    if interrupted is not None:
                        wall = wall0 + time.perf_counter() - session_start
                        self._save(
                            ctx,
                            history,
                            epoch,
                            interrupted["batch"],
                            step,
                            False,
                            wall,
                            interrupted,
                        )
                        self._interrupted(stop, f"epoch {epoch + 1}, batch {interrupted['batch']}")
                    epoch, batch, partial = epoch + 1, 0, {}
                    evaluate = epoch == epochs or (
                        cfg.eval_every > 0 and epoch % cfg.eval_every == 0
                    )
                    eval_s = math.nan
                    if evaluate:
                        t0 = time.perf_counter()
                        test = _evaluate(model, test_loader, cfg, dist)
                        eval_s = time.perf_counter() - t0
                        row.update(test)
                    else:
                        row.update(test_loss=math.nan, test_acc=math.nan, test_err=math.nan)
                    row["eval_s"] = eval_s
                    row["epoch_s"] = row["train_s"] + (0.0 if math.isnan(eval_s) else eval_s)
                    wall = wall0 + time.perf_counter() - session_start
                    row["wall_s"] = wall
                    history.append(row)
                    finished = epoch >= epochs or step >= total_steps
                    digests = _replica_digests(model, dist) if finished else None
                    self._save(ctx, history, epoch, 0, step, finished, wall, None, digests)
                    if logger is not None:
                        logger.write(history)
                    done_s = sum(r["epoch_s"] for r in history[-5:]) / len(history[-5:])
                    self.log(format_epoch_line(row, epochs, eta_s=done_s * (epochs - epoch)))
                    if not finished and distributed.any_rank(stop.signum is not None, dist):
                        self._interrupted(stop, f"the end of epoch {epoch}")
        finally:
            if logger is not None:
                logger.close()
        model.eval()
        return TrainResult(self.out, cfg, history, True, model)

    def _interrupted(self, stop: _StopFlag, where: str) -> None:
        msg = f"interrupted at {where}; checkpoint saved. Resume with: unimix train --resume {self.out}"
        self.log(msg)
        raise TrainingInterrupted(msg, int(stop.signum or signal.SIGINT))

    # -- data ----------------------------------------------------------------------------------
    def _train_loader(self, spec: Any, mixer: Any) -> tuple[Any, _TimedCollate | None]:
        from unimix.data import make_loader

        cfg, dist = self.cfg, self.dist
        collate = None
        if mixer is not None and cfg.mix_where == "collate":
            from unimix.compat import MixCollate

            if mixer.requires_model:
                raise ValueError(
                    f"methods {cfg.methods} need the model, which the collate function does not "
                    "have; use mix_where='device'"
                )
            collate = _TimedCollate(MixCollate(mixer))
        sampler = None
        if dist.enabled:
            sampler = torch.utils.data.DistributedSampler(
                spec.train,
                num_replicas=dist.world_size,
                rank=dist.rank,
                shuffle=True,
                seed=derive_seed(cfg.seed, _ORDER) % 2**31,
                drop_last=cfg.drop_last,
            )
        loader = make_loader(
            spec.train,
            cfg.batch_size // dist.world_size,
            shuffle=sampler is None,
            num_workers=cfg.num_workers,
            device=self.device,
            drop_last=cfg.drop_last,
            collate_fn=collate,
            sampler=sampler,
            seed=derive_seed(cfg.seed, _DATA),
        )
        return loader, collate

    def _test_loader(self, spec: Any) -> Any:
        from unimix.data import make_loader

        cfg, dist = self.cfg, self.dist
        # Each rank evaluates every world_size-th image, none twice: sums over ranks are exact.
        sampler = range(dist.rank, len(spec.test), dist.world_size) if dist.enabled else None
        return make_loader(
            spec.test,
            cfg.eval_batch_size or cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            device=self.device,
            sampler=sampler,  # type: ignore[arg-type]
            seed=0,
        )

    # -- one epoch -----------------------------------------------------------------------------
    def _epoch(
        self,
        ctx: _Context,
        loader: Any,
        timed_collate: _TimedCollate | None,
        epoch: int,
        start: int,
        step: int,
        partial: Mapping[str, float],
        stop: _StopFlag,
    ) -> tuple[dict[str, Any], int, dict[str, Any] | None]:
        cfg, dist, device = self.cfg, self.dist, self.device
        model, train_model, mixer = ctx.model, ctx.train_model, ctx.mixer
        optimizer, scheduler, scaler = ctx.optimizer, ctx.scheduler, ctx.scaler
        clock = _Clock(device)
        for key in ("mix_ms", "step_ms", "data_ms"):
            clock.add_ms(key, float(partial.get(key, 0.0)))
        sums = torch.tensor(
            [partial.get("loss_sum", 0.0), partial.get("correct", 0.0), partial.get("count", 0.0)],
            dtype=torch.float64,
            device=device,
        )
        train_s0 = float(partial.get("train_s", 0.0))
        if timed_collate is not None:
            timed_collate.ms = 0.0
        model.train()
        loader.set_epoch(epoch, start=start)
        steps_this_epoch = min(ctx.steps_per_epoch, ctx.total_steps - epoch * ctx.steps_per_epoch)
        bar = EpochProgress(
            steps_this_epoch, epoch + 1, ctx.epochs, self.progress and dist.is_main, start
        )
        lr = optimizer.param_groups[0]["lr"]
        batch = start
        t_epoch = time.perf_counter()
        interrupted: dict[str, Any] | None = None
        iterator = iter(loader)
        try:
            while batch < steps_this_epoch:
                t_data = clock.mark()
                try:
                    images, labels = next(iterator)
                except StopIteration:
                    break
                t_start = clock.mark()
                clock.add("data_ms", t_data, t_start)
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                if mixer is not None and cfg.mix_where == "device":
                    t_mix = clock.mark()
                    # PuzzleMix's saliency pass and Manifold Mixup's hook need the (unwrapped)
                    # model; Manifold Mixup mixes in the forward pass right below.
                    extra = {"model": model} if mixer.requires_model else {}
                    images, targets = mixer(images, labels, **extra)
                    clock.add("mix_ms", t_mix, clock.mark())
                else:
                    targets = labels
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with _autocast(cfg, device):
                    logits = train_model(images)
                if targets.dim() == 2:
                    loss = _soft_ce(logits, targets)
                    hard = targets.argmax(dim=1)
                else:
                    loss = F.cross_entropy(
                        logits.float(), targets, label_smoothing=cfg.label_smoothing
                    )
                    hard = targets
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                batch += 1
                with torch.no_grad():
                    n = images.shape[0]
                    sums += torch.stack(
                        [
                            loss.detach().double() * n,
                            (logits.detach().argmax(dim=1) == hard).sum().double(),
                            torch.tensor(float(n), dtype=torch.float64, device=device),
                        ]
                    )
                clock.add("step_ms", t_start, clock.mark())
                if bar.active:
                    postfix = {"lr": f"{lr:.3g}"}
                    if bar.due():
                        s = sums.tolist()
                        elapsed = time.perf_counter() - t_epoch
                        postfix.update(
                            loss=f"{s[0] / max(s[2], 1):.4f}",
                            acc=f"{100 * s[1] / max(s[2], 1):.1f}%",
                            img_s=f"{(batch - start) * n * dist.world_size / max(elapsed, 1e-9):.0f}",
                        )
                        bar.update(1, **postfix)
                    else:
                        bar.update(1)
                if self.on_step is not None:
                    self.on_step(epoch + 1, step)
                if distributed.any_rank(stop.signum is not None, dist) and batch < steps_this_epoch:
                    stop.signum = stop.signum or signal.SIGINT
                    interrupted = {"batch": batch}
                    break
        finally:
            bar.close()
        totals = clock.resolve()
        if timed_collate is not None:
            # mixing in the loader is part of the step's cost, though not inside the step
            in_workers = getattr(loader, "num_workers", 0) > 0
            totals["mix_ms"] = (
                math.nan if in_workers else totals.get("mix_ms", 0.0) + timed_collate.ms
            )
            totals["step_ms"] = totals.get("step_ms", 0.0) + timed_collate.ms
        train_s = train_s0 + (time.perf_counter() - t_epoch)
        local = {**totals, "train_s": train_s}
        if interrupted is not None:
            s = sums.tolist()
            interrupted.update(loss_sum=s[0], correct=s[1], count=s[2], **local)
            return {}, step, interrupted
        timing = distributed.all_reduce_sum(
            torch.tensor(
                [
                    local.get("mix_ms", 0.0),
                    local.get("step_ms", 0.0),
                    local.get("data_ms", 0.0),
                    train_s,
                ],
                dtype=torch.float64,
                device=device,
            ),
            dist,
        ).tolist()
        world = dist.world_size
        mix_ms, step_ms, data_ms = (v / world for v in timing[:3])
        train_s_max = train_s if not dist.enabled else _max_over_ranks(train_s, dist)
        s = distributed.all_reduce_sum(sums, dist).tolist()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "train_loss": s[0] / s[2],
            "train_acc": s[1] / s[2],
            "train_images": int(s[2]),
            "train_s": train_s_max,
            "images_per_s": s[2] / train_s_max if train_s_max > 0 else math.nan,
            "data_ms": data_ms,
            "mix_ms": mix_ms if mixer is not None else 0.0,
            "step_ms": step_ms,
            "mix_overhead_pct": 100.0 * mix_ms / step_ms
            if mixer is not None and step_ms > 0
            else 0.0,
        }
        return row, step, None

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(
        self,
        ctx: _Context,
        history: list[dict[str, Any]],
        epoch: int,
        batch: int,
        step: int,
        finished: bool,
        wall_s: float,
        partial: Mapping[str, Any] | None,
        digests: list[str] | None = None,
    ) -> None:
        rank_state = {
            "rng": capture_rng_state(),
            "mixer": ctx.mixer.state_dict() if ctx.mixer is not None else None,
            "partial": dict(partial) if partial else None,
        }
        ranks = distributed.all_gather_objects(rank_state, self.dist)
        if self.dist.is_main:
            state = {
                "config": self.cfg.to_dict(),
                "data_info": ctx.data_info,
                "world_size": self.dist.world_size,
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "total_steps": ctx.total_steps,
                "finished": finished,
                "model": ctx.model.state_dict(),
                "optimizer": ctx.optimizer.state_dict(),
                "scheduler": ctx.scheduler.state_dict(),
                "scaler": ctx.scaler.state_dict(),
                "ranks": ranks,
                "history": history,
                "wall_s": wall_s,
                "torch_version": str(torch.__version__),
            }
            if digests is not None:
                state["replica_digests"] = digests
            save_checkpoint(self.ckpt_path, state)
        distributed.barrier(self.dist)


@dataclass
class _Context:
    cfg: TrainConfig
    dist: distributed.DistInfo
    model: nn.Module
    train_model: nn.Module
    mixer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    data_info: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    epochs: int


def _soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    from unimix import soft_target_cross_entropy

    return soft_target_cross_entropy(logits, targets)


def _max_over_ranks(value: float, dist: distributed.DistInfo) -> float:
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())


def _sync_buffers(model: nn.Module, dist: distributed.DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics): DDP broadcasts them before each
    forward, so after the last step of an epoch the ranks' copies differ by that step alone."""
    if not dist.enabled:
        return
    import torch.distributed as tdist

    for buffer in model.buffers():
        tdist.broadcast(buffer, src=0)


def _replica_digests(model: nn.Module, dist: distributed.DistInfo) -> list[str]:
    """Every rank's digest of its weights; under DDP they must all be equal."""
    digests = distributed.all_gather_objects(state_digest(model.state_dict()), dist)
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"the ranks ended with different weights (digests {digests}); DistributedDataParallel "
            "replicas diverged"
        )
    return digests


@torch.no_grad()
def _evaluate(
    model: nn.Module, loader: Any, cfg: TrainConfig, dist: distributed.DistInfo
) -> dict[str, float]:
    """Test cross-entropy and top-1 accuracy, summed over every rank's share of the test set."""
    was_training = model.training
    model.eval()
    device = dist.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    loader.set_epoch(0)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(cfg, device):
            logits = model(images)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += (logits.argmax(dim=1) == labels).sum().double()
        sums[2] += labels.shape[0]
    model.train(was_training)
    s = distributed.all_reduce_sum(sums, dist).tolist()
    if s[2] == 0:
        return {"test_loss": math.nan, "test_acc": math.nan, "test_err": math.nan}
    acc = s[1] / s[2]
    return {"test_loss": s[0] / s[2], "test_acc": acc, "test_err": 1.0 - acc}


def _load_model_state(model: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"the weights in {str(path)!r} do not fit the model {state.get('config', {}).get('model')!r}: "
            f"{str(err).splitlines()[0]}"
        ) from err


# ---- public entry points ---------------------------------------------------------------------


def train(
    config: TrainConfig | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train one model as ``config`` says and write the run to ``out_dir``.

    Args:
        config: a :class:`TrainConfig` or a mapping of its keys (e.g. a loaded recipe).
        out_dir: the run directory (``config.yaml``, ``metrics.csv``, ``checkpoint.pt``).
        resume: continue the unfinished run in ``out_dir`` from its checkpoint. Without it, an
            unfinished run there is an error (never silently overwritten).
        progress: show a progress bar per epoch (on a terminal, on rank 0).
        on_step: called as ``on_step(epoch, step)`` after every optimiser step (1-based epoch).

    A run in ``out_dir`` that is already finished is returned as it is, without training. Under
    ``torchrun`` (``WORLD_SIZE`` > 1) every rank calls this; only rank 0 writes files.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint (resume to continue).
        CheckpointError: the checkpoint in ``out_dir`` is corrupt or from another configuration.
    """
    cfg = TrainConfig.from_any(config)
    out = Path(out_dir)
    dist = distributed.setup(cfg.device)
    try:
        return _Run(cfg, out, dist, progress, on_step).run(resume)
    finally:
        distributed.teardown(dist)


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
            "only data_dir, device, num_workers, compile, eval_batch_size and tensorboard may be edited"
        )
    return on_disk


def load_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The model of a run with its latest checkpoint's weights (eval mode, on ``device``), the
    :class:`~unimix.data.DataSpec` its configuration describes, and the configuration dict.

    ``config.yaml`` may be edited to point ``data_dir`` elsewhere; other keys must match the
    checkpoint's.
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_FILE
    state = load_checkpoint(ckpt)
    cfg = _read_run_config(run_dir, state)
    spec = _build_dataset(cfg)
    info = state.get("data_info") or _data_info(spec)
    model = _create_model(cfg, info)
    _load_model_state(model, state, ckpt)
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
        model = _create_model(cfg, state["data_info"])
        _load_model_state(model, state, run_dir / CHECKPOINT_FILE)
        model.to(torch.device(device)).eval()
    return TrainResult(run_dir, cfg, list(state.get("history", [])), bool(state["finished"]), model)
