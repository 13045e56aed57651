"""The smallest study the study tests train: the digits' `low` regime at 8×8, a two-layer CNN,
six images a class, one PGD step (seconds a run). Shared by the study test files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unimix.study import StudyConfig


def tiny_overrides(epochs: int) -> list[str]:
    """``--set`` values of a tiny run of ``epochs`` epochs."""
    return [
        f"epochs={epochs}",
        "image_size=8",
        "model_kwargs.widths=[8, 16]",
        "tensorboard=false",
        "train_per_class=6",
        "batch_size=10",
    ]


def tiny_study(
    out: Path, *, epochs: int, seeds: int, attack_images: int = 16, **kwargs: Any
) -> StudyConfig:
    """A two-method (none, mixup) study of ``seeds`` replicates on the `low` regime."""
    return StudyConfig(
        out=out,
        methods=["none", "mixup"],
        seeds=seeds,
        regimes=["low"],
        overrides=tiny_overrides(epochs),
        eps_list=[8 / 255],
        pgd_steps=1,
        attack_images=attack_images,
        progress=False,
        **kwargs,
    )
