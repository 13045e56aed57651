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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch
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
    "check_generator",
    "check_images",
    "check_inplace",
    "check_plan_fits",
    "check_label_maps",
    "check_generator_state",
    "check_method_list",
    "check_alpha_names",
    "check_switch_prob",
    "check_method_params",
    "check_batch_size",
    "check_image_size",
    "check_measured",
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


def check_instance(name: str, value: T, types: type | tuple[type, ...], expected: str) -> T:
    """``value`` if it is an instance of ``types``, else a TypeError saying what was ``expected``
    (e.g. ``"a unimix.Mixer"``)."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    return value


def check_int_range(name: str, value: object) -> tuple[int, int]:
    """An int ``N`` or a pair ``(N_min, N_max)`` of ints with ``1 <= N_min <= N_max``, as
    ``(N_min, N_max)`` (GridMix's cells per side)."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair: tuple[object, ...] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        pair = tuple(value)
    else:
        raise TypeError(f"{name} must be an int N or a pair (N_min, N_max), got {value!r}")
    lo, hi = pair
    if (
        not (isinstance(lo, int) and isinstance(hi, int))
        or isinstance(lo, bool)
        or isinstance(hi, bool)
    ):
        raise TypeError(f"{name} must hold ints, got {value!r}")
    if not 1 <= lo <= hi:
        raise ValueError(f"{name} must satisfy 1 <= N_min <= N_max, got {value!r}")
    return lo, hi


def check_callable(name: str, value: T) -> T:
    """``value`` if it can be called (collate functions, label getters)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_lam(lam: object) -> Tensor:
    """One λ per mask: a 1-D float tensor with values in ``[0, 1]`` (no NaN)."""
    if not isinstance(lam, Tensor):
        lam = torch.as_tensor(lam, dtype=torch.float32)
    if lam.dim() != 1:
        raise ValueError(
            f"lam must be a 1-D tensor with one λ per mask, got shape {tuple(lam.shape)}"
        )
    if torch.isnan(lam).any():
        raise ValueError("lam contains NaN; check the Beta parameters that produced it")
    if lam.numel() and (lam.min() < 0 or lam.max() > 1):
        raise ValueError(f"lam must lie in [0, 1], got range [{lam.min():.4g}, {lam.max():.4g}]")
    return lam


# ---- the engine's rules (unimix.mix.Mixer calls these) -------------------------------------------
def check_generator(generator: object) -> torch.Generator | None:
    """``None`` or a :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_images(images: object) -> Tensor:
    """A non-empty 4-D ``[B, C, H, W]`` floating-point or uint8 tensor."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be 4-D [B, C, H, W], got shape {tuple(images.shape)}")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"images must be a floating-point or uint8 tensor, got {images.dtype}")
    return images


def check_inplace(x: Tensor, inplace: bool) -> None:
    """``inplace=True`` cannot write into a tensor autograd tracks."""
    if inplace and x.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "inplace=True cannot mix a tensor that requires grad; pass inplace=False "
            "(or mix before the tensor enters the graph)"
        )


class PlanFields(Protocol):
    """What the plan checks read of a :class:`unimix.plan.MixPlan` (named structurally, so that
    this module imports nothing of unimix)."""

    batch_size: int
    height: int
    width: int
    partner: Tensor
    method_names: tuple[str, ...]


def check_plan_fits(x: Tensor, plan: PlanFields, method_names: list[str]) -> None:
    """``x`` ``[B, C, H, W]`` has the plan's batch size, height, width and device, and the plan was
    drawn for the methods ``method_names`` (those of the Mixer applying it)."""
    if (x.shape[0], *x.shape[2:]) != (plan.batch_size, plan.height, plan.width):
        raise ValueError(
            f"images has shape {tuple(x.shape)} but the plan was drawn for batch_size="
            f"{plan.batch_size}, height={plan.height}, width={plan.width}"
        )
    if plan.partner.device != x.device:
        raise ValueError(
            f"images are on {x.device} but the plan was drawn on {plan.partner.device}; "
            f"sample with device=images.device"
        )
    if plan.method_names != tuple(method_names):
        raise ValueError(
            f"the plan was drawn for methods {list(plan.method_names)} but this Mixer has "
            f"{method_names}; apply a plan with the Mixer that sampled it"
        )


def check_label_maps(maps: object, plan: PlanFields, num_classes: int) -> Tensor:
    """Integer class-id maps ``[B, H, W]`` or ``[B, 1, H, W]`` of the plan's size with ids in
    ``[0, num_classes)``; returned as ``[B, H, W]``."""
    if not isinstance(maps, Tensor) or maps.is_floating_point() or maps.dtype == torch.bool:
        raise TypeError("maps must be an integer tensor of class ids [B, H, W] or [B, 1, H, W]")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if tuple(maps.shape) != (plan.batch_size, plan.height, plan.width):
        raise ValueError(
            f"maps has shape {tuple(maps.shape)} but the plan was drawn for "
            f"[{plan.batch_size}, {plan.height}, {plan.width}]"
        )
    if maps.numel() and (int(maps.min()) < 0 or int(maps.max()) >= num_classes):
        raise ValueError(
            f"maps must hold class ids in [0, num_classes={num_classes}), got "
            f"[{int(maps.min())}, {int(maps.max())}]"
        )
    return maps


def check_generator_state(state: object, has_generator: bool) -> Tensor | None:
    """A ``Mixer.state_dict()`` mapping: exactly the key ``"generator"``, holding ``None`` or the
    uint8 tensor of ``Generator.get_state()`` (which needs a Mixer with a generator)."""
    if not isinstance(state, Mapping) or set(state) != {"generator"}:
        keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"state must be a Mixer.state_dict() mapping with the key 'generator', got {keys}"
        )
    value = state["generator"]
    if value is None:
        return None
    if not isinstance(value, Tensor) or value.dtype != torch.uint8:
        raise TypeError("state['generator'] must be a uint8 tensor from Generator.get_state()")
    if not has_generator:
        raise ValueError("the state has a generator state but this Mixer has no generator")
    return value


def check_method_list(methods: object, known: list[str]) -> list[Any]:
    """A Mixer's ``methods`` given as a sequence: non-empty, each method once; as a list."""
    if isinstance(methods, str) or not isinstance(methods, Sequence) or len(methods) == 0:
        raise ValueError(
            f"methods must be a name, a non-empty list of names or a name→weight mapping; "
            f"known methods: {', '.join(known)}"
        )
    if len(set(map(str, methods))) != len(methods):
        raise ValueError(f"methods lists a method twice: {list(methods)}")
    return list(methods)


def check_switch_prob(switch_prob: float, methods: object) -> float:
    """timm's ``switch_prob``: a probability, for exactly two methods given as a list."""
    switch_prob = check_unit("switch_prob", switch_prob)
    pair = isinstance(methods, Sequence) and not isinstance(methods, str) and len(methods) == 2
    if not pair:
        raise ValueError(
            "switch_prob needs exactly two methods given as a list; use weights otherwise"
        )
    return switch_prob


def check_alpha_names(alpha: Mapping[str, float], names: list[str]) -> None:
    """A per-method ``alpha`` mapping names only methods of the Mixer."""
    unknown = set(alpha) - set(names)
    if unknown:
        raise ValueError(f"alpha names methods not in methods: {sorted(unknown)}")


def check_method_params(params: Mapping[str, Any], taken: Mapping[str, set[str]]) -> None:
    """Every keyword parameter of a Mixer is taken by one of its methods (``taken``: method →
    the parameters it takes)."""
    for key in params:
        if not any(key in names for names in taken.values()):
            raise TypeError(
                f"unknown method parameter {key!r}: none of the methods {list(taken)} takes it"
            )


def check_batch_size(batch_size: int, mode: str) -> int:
    """A positive batch size; even in ``pair`` mode."""
    batch_size = check_positive_int("batch_size", batch_size)
    if mode == "pair" and batch_size % 2:
        raise ValueError(
            f"mode='pair' needs an even batch, got {batch_size}; use mode='elem' or drop_last=True"
        )
    return batch_size


def check_image_size(batch: int, height: int, width: int) -> None:
    """A batch of images has rows and pixels."""
    if batch == 0:
        raise ValueError("images is an empty batch")
    if height == 0 or width == 0:
        raise ValueError(f"images has an empty image size {height}×{width}")


def check_measured(measured: T | None, record: type[T]) -> T | None:
    """``None`` or the ``record`` (:class:`~unimix.plan.Measured`) that ``Mixer.apply`` returned."""
    if measured is not None and not isinstance(measured, record):
        raise TypeError(
            f"measured must be what Mixer.apply returned, got {type(measured).__name__}"
        )
    return measured
