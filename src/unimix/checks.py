"""Argument checks: the one home of every range and type rule of unimix's public API.

Each check returns the value (converted to its canonical type) or raises a ``TypeError`` (wrong
kind of value) or ``ValueError`` (right kind, wrong range) whose message names the argument and
says what would be accepted. The engine, the samplers, the compat facades and the training
configuration all call these, so one rule is written once and reads the same everywhere.

    >>> check_unit("prob", 0.5)
    0.5
    >>> check_unit("prob", 1.5)
    Traceback (most recent call last):
    ...
    ValueError: prob must lie in [0, 1], got 1.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "check_unit",
    "check_alpha",
    "check_positive",
    "check_positive_int",
    "check_nonneg_int",
    "check_choice",
    "check_probability_weights",
    "check_bool",
    "check_interval",
    "check_tensor",
    "check_label_shape",
    "check_same_batch",
    "check_class_indices",
    "check_mixer",
]

T = TypeVar("T")


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_unit(name: str, value: float, *, high: float = 1.0) -> float:
    """``value`` as a float in ``[0, high]`` (probabilities, ratios, label smoothing; ``high``
    below 1 for a narrower range such as FMix's ``max_soft`` ≤ 0.5)."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number in [0, {high:g}], got {type(value).__name__}")
    if not (0.0 <= float(value) <= high):  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, {high:g}], got {value}")
    return float(value)


def check_alpha(name: str, value: float) -> float:
    """``value`` as a finite float > 0: the parameter α of ``λ ~ Beta(α, α)``."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number > 0, got {type(value).__name__}")
    if not 0.0 < float(value) < math.inf:  # also rejects NaN
        raise ValueError(
            f"{name} must be a finite number > 0 (the Beta(α, α) parameter), got {value}"
        )
    return float(value)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (``>= 0`` with ``allow_zero``)."""
    bound = "≥ 0" if allow_zero else "> 0"
    if not _is_number(value):
        raise TypeError(f"{name} must be a number {bound}, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return v


def check_positive_int(name: str, value: int) -> int:
    """``value`` as an int ≥ 1 (sizes, counts, class numbers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def check_nonneg_int(name: str, value: int) -> int:
    """``value`` as an int ≥ 0 (seeds, epochs already done, worker counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ≥ 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an int ≥ 0, got {value}")
    return int(value)


def check_bool(name: str, value: bool) -> bool:
    """``value`` as a bool (no truthy strings or numbers)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_probability_weights(name: str, weights: Mapping[Any, float]) -> dict[Any, float]:
    """A mapping key → weight with finite weights ≥ 0 and a positive sum (normalised later)."""
    out: dict[Any, float] = {}
    for key, weight in weights.items():
        if not _is_number(weight):
            raise TypeError(
                f"{name}[{key!r}] must be a number ≥ 0, got {type(weight).__name__} {weight!r}"
            )
        if not (0.0 <= float(weight) < math.inf):  # rejects NaN and ±inf
            raise ValueError(f"{name}[{key!r}] must be a finite number ≥ 0, got {weight}")
        out[key] = float(weight)
    if not out or sum(out.values()) <= 0:
        raise ValueError(f"{name} must have weights ≥ 0 with a positive sum, got {dict(weights)}")
    return out


def check_interval(
    name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False
) -> tuple[float, float]:
    """``value`` as a pair ``(min, max)`` of floats with ``low ≤ min ≤ max ≤ high`` (``low < min``
    with ``open_low``): ranges such as CutMix-minmax's side ratios or ResizeMix's scale."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a pair of numbers (min, max), got {value!r}") from None
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {len(items)} values: {value!r}")
    if any(isinstance(v, (bool, str)) or not hasattr(v, "__float__") for v in items):
        raise TypeError(f"{name} must be a pair of numbers (min, max), got {value!r}")
    lo, hi = float(items[0]), float(items[1])
    low_ok = low < lo if open_low else low <= lo
    if not (low_ok and lo <= hi <= high):  # also rejects NaN
        bound = f"{low} {'<' if open_low else '<='} min <= max" + (
            f" <= {high}" if high != math.inf else ""
        )
        raise ValueError(f"{name} must be a pair (min, max) with {bound}, got {value!r}")
    return lo, hi


# ---- labels: the rules of every labels → targets path (unimix.targets) ------------------------


def check_tensor(name: str, value: Any) -> Tensor:
    """``value`` if it is a ``torch.Tensor`` (a ``TypeError`` naming ``name`` otherwise)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_label_shape(name: str, labels: Tensor, num_classes: int | None) -> Tensor:
    """``labels`` if it is ``[B]`` class indices or ``[B, num_classes]`` targets.

    The messages keep torchvision's phrases (``v2.MixUp``/``v2.CutMix``, old and new wording), so
    ported tests and handlers of its errors keep matching them.
    """
    if labels.dim() not in (1, 2):
        raise ValueError(
            f"{name} should be index based with shape (batch_size,) or probability based with "
            f"shape (batch_size, num_classes), but got a tensor of shape {tuple(labels.shape)}: "
            f"the {name} tensor should be of shape [B] (class indices) or [B, K] (targets); pass "
            "one label or one row of targets per image"
        )
    if labels.dim() == 2 and num_classes is not None and labels.shape[1] != num_classes:
        raise ValueError(
            f"When passing 2D {name}, the number of elements in last dimension must match "
            f"num_classes: {labels.shape[1]} != {num_classes} (the {name} tensor should be of "
            f"shape [B, num_classes={num_classes}]); pass num_classes={labels.shape[1]} or fix "
            "the targets"
        )
    return labels


def check_same_batch(images_name: str, images_rows: int, labels_name: str, labels_rows: int) -> int:
    """``images_rows`` if ``labels_rows`` equals it: one label (or row of targets) per image."""
    if images_rows != labels_rows:
        raise ValueError(
            f"The batch size of {images_name} ({images_rows}) does not match the batch size of "
            f"the {labels_name} ({labels_rows}); pass as many rows of {labels_name} as images"
        )
    return images_rows


def check_class_indices(name: str, labels: Tensor, num_classes: int | None) -> int:
    """``num_classes`` if ``labels`` are integer class indices in ``[0, num_classes)``."""
    if labels.is_floating_point() or labels.is_complex() or str(labels.dtype) == "torch.bool":
        raise TypeError(
            f"{name} of shape [B] must be integer class indices, got {labels.dtype}; "
            "pass soft targets as [B, K]"
        )
    if num_classes is None:
        raise ValueError(
            f"num_classes must be passed if the {name} are index-based (class indices [B]); "
            "pass num_classes=K"
        )
    import torch

    if torch.compiler.is_compiling() or not labels.numel():  # no host sync inside a graph
        return num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, num_classes={num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]; check num_classes"
        )
    return num_classes


def check_mixer(**mixer_args: Any) -> None:
    """Raise exactly the ``ValueError``/``TypeError`` that ``unimix.Mixer(**mixer_args)`` raises:
    the one test of whether a Mixer can be built from a configuration (e.g. ``TrainConfig``), so
    a config is valid exactly when its Mixer is (unknown or repeated methods, parameters no
    method takes, ``switch_prob`` with other than two methods, ``alpha`` for absent methods)."""
    from unimix.mix import Mixer  # the one import upwards: the rule is "Mixer can be built"

    Mixer(**mixer_args)
