"""What a run is built from: dataset, model, mixer, loaders, and the process-wide settings.

Random streams: every source of a run gets its own seed from :func:`derive_seed` and a stream
tag below, so that e.g. the initial weights do not depend on the number of processes and the
mixer's draws do not depend on the data order.

Mixing in the loader (``mix_where: collate``) uses :class:`SeededMixCollate`: each batch is mixed
with the mixer's generator reseeded from the batch's own seed, so the masks are a function of
(seed, epoch, position of the batch) only — the same with 0, 1 or 8 loader workers, and the same
after a resume in the middle of an epoch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from unimix.data.loader import derive_seed
from unimix.train import distributed
from unimix.train.config import TrainConfig
from unimix.train.meters import TimedCollate

__all__ = [
    "SeededMixCollate",
    "build_dataset",
    "build_mixer",
    "create_model",
    "data_info",
    "derive_seed",
    "determinism",
    "method_params",
    "test_loader",
    "train_loader",
]

# Stream tags of derive_seed: every random source of a run gets its own independent seed.
MODEL, TORCH, PYTHON, NUMPY, MIXER, DATA, ORDER = range(1, 8)
_SEED_BOUND = 2**62


def model_size(image_size: Any) -> int | tuple[int, int]:
    size = tuple(image_size)
    return size[0] if size[0] == size[1] else size  # type: ignore[return-value]


def data_info(spec: Any) -> dict[str, Any]:
    """The shape of a data set a model is built for: ``num_classes``, ``in_chans``, ``image_size``."""
    return {
        "num_classes": int(spec.num_classes),
        "in_chans": int(spec.in_chans),
        "image_size": [int(v) for v in spec.image_size],
    }


def create_model(cfg: TrainConfig, info: Mapping[str, Any]) -> nn.Module:
    """The model ``cfg.model`` names, built for the data set described by ``info`` (:func:`data_info`)."""
    from unimix import models

    return models.create_model(
        cfg.model,
        num_classes=info["num_classes"],
        in_chans=info["in_chans"],
        image_size=model_size(info["image_size"]),
        **cfg.model_kwargs,
    )


def build_dataset(cfg: TrainConfig) -> Any:
    """The data set of ``cfg`` (its train, validation and test splits), through :func:`unimix.data.build_dataset`."""
    from unimix import data

    return data.build_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        image_size=cfg.image_size,
        split_seed=cfg.split_seed,
        train_augment=cfg.train_augment,
        train_per_class=cfg.train_per_class,
        train_fraction=cfg.train_fraction,
        val_fraction=cfg.val_fraction,
    )


def method_params(cfg: TrainConfig) -> dict[str, Any]:
    """The ``method_params`` that the chosen methods take (:meth:`TrainConfig.mixer_kwargs`)."""
    kwargs = cfg.mixer_kwargs()
    return {k: v for k, v in kwargs.items() if k in cfg.method_params}


def build_mixer(cfg: TrainConfig, num_classes: int, seed: int) -> Any:
    """The :class:`~unimix.mix.Mixer` of ``cfg``, its generator seeded with ``seed``."""
    from unimix import Mixer

    return Mixer(
        **cfg.mixer_kwargs(),
        num_classes=num_classes,
        generator=torch.Generator().manual_seed(seed),
    )


@contextmanager
def determinism(enabled: bool, device: torch.device) -> Any:
    """A context in which torch uses deterministic algorithms (when ``enabled``); the previous
    settings are restored on exit."""
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


class SeededMixCollate:
    """A collate function that stacks ``(image, label)`` items and mixes the batch with ``mixer``,
    its generator reseeded per batch.

    :func:`unimix.data.make_loader` runs a collate function under the global RNGs seeded from the
    batch's own seed — a pure function of (loader seed, epoch, batch position) — in the main
    process and in every worker alike. This draws one number from that stream and reseeds the
    mixer's generator with ``derive_seed(seed, number)`` before mixing. So a batch's masks do not
    depend on how many workers there are, which worker made it, or whether the run was resumed:
    resuming with another ``num_workers`` ends with bitwise the same weights.
    """

    def __init__(self, mixer: Any, seed: int) -> None:
        if getattr(mixer, "generator", None) is None:
            raise ValueError("SeededMixCollate needs a Mixer with a generator to reseed")
        self.mixer = mixer
        self.seed = int(seed)

    def __call__(self, items: list[Any]) -> Any:
        from torch.utils.data import default_collate

        images, labels = default_collate(items)
        batch_seed = int(torch.randint(0, _SEED_BOUND, (1,)).item())  # the loader's batch stream
        self.mixer.generator.manual_seed(derive_seed(self.seed, batch_seed))
        return self.mixer(images, labels, inplace=True)


def train_loader(
    cfg: TrainConfig, spec: Any, mixer: Any, dist: distributed.DistInfo
) -> tuple[Any, TimedCollate | None]:
    """The training loader of this rank, and the timed mixing collate function it uses (when
    ``mix_where`` is ``collate``)."""
    from unimix.data import make_loader

    collate = None
    if mixer is not None and cfg.mix_where == "collate":
        if mixer.requires_model:
            raise ValueError(
                f"methods {cfg.methods} need the model, which the collate function does not "
                "have; use mix_where='device'"
            )
        collate = TimedCollate(SeededMixCollate(mixer, derive_seed(cfg.seed, dist.rank, MIXER)))
    sampler = None
    if dist.enabled:
        sampler = torch.utils.data.DistributedSampler(
            spec.train,
            num_replicas=dist.world_size,
            rank=dist.rank,
            shuffle=True,
            seed=derive_seed(cfg.seed, ORDER) % 2**31,
            drop_last=cfg.drop_last,
        )
    loader = make_loader(
        spec.train,
        cfg.batch_size // dist.world_size,
        shuffle=sampler is None,
        num_workers=cfg.num_workers,
        device=dist.device,
        drop_last=cfg.drop_last,
        collate_fn=collate,
        sampler=sampler,
        seed=derive_seed(cfg.seed, DATA),
    )
    return loader, collate


def test_loader(cfg: TrainConfig, spec: Any, dist: distributed.DistInfo) -> Any:
    """The test loader of this rank: every ``world_size``-th image, none twice, so sums over
    ranks are exact."""
    from unimix.data import make_loader

    sampler = range(dist.rank, len(spec.test), dist.world_size) if dist.enabled else None
    return make_loader(
        spec.test,
        cfg.eval_batch_size or cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        device=dist.device,
        sampler=sampler,  # type: ignore[arg-type]
        seed=0,
    )
