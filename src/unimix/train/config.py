"""The training configuration: one flat dataclass, recipes in YAML, command-line overrides.

A run is described by a :class:`TrainConfig`. Its keys are *flat* (``lr``, ``methods``,
``warmup_epochs`` …, no nested sections) so that every one of them can be overridden the same way
on the command line (``--lr 0.05`` or ``--set lr=0.05``) and written back as a plain YAML mapping.
Two keys hold mappings and accept dotted overrides: ``model_kwargs`` (extra arguments of
:func:`unimix.models.create_model`) and ``method_params`` (parameters of the mixing methods, e.g.
``--set method_params.r=0.3`` for HMix's ``r``).

A *recipe* is a YAML file of such keys (any subset; the rest take their defaults). The packaged
recipes live in ``unimix/recipes/`` and are found by name (``digits``,
``cifar100_preactresnet18`` …); any other path to a YAML file works too. Resolution order:
defaults < recipe < overrides. The fully resolved configuration is what a run saves as
``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from unimix.train.fileio import atomic_write_text

__all__ = [
    "TrainConfig",
    "RESUME_MUTABLE",
    "available_recipes",
    "load_recipe",
    "resolve_config",
    "parse_override",
    "apply_overrides",
    "config_differences",
    "write_yaml",
]

#: Keys that may change when a run is resumed: they change where or how fast it runs, not what
#: it computes (on the same device type).
RESUME_MUTABLE = frozenset(
    {"data_dir", "num_workers", "device", "compile", "eval_batch_size", "tensorboard"}
)

_SCHEDULES = ("cosine", "step", "constant")
_MODES = ("batch", "pair", "elem")
_PARTNERS = ("flip", "random")
_MIX_WHERE = ("device", "collate")
_AMP = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a training run (flat keys; see the module docstring).

    ``batch_size`` is the *global* batch: under DistributedDataParallel each of the ``W`` ranks
    takes ``batch_size / W`` rows, so a recipe means the same optimisation at any scale.
    ``epochs`` is the budget unless ``steps`` (optimiser steps) is given, in which case training
    stops after ``steps`` steps and the schedule spans them. ``milestones`` and
    ``warmup_epochs`` are in epochs (fractions allowed) and are applied per step.
    """

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | list[int] | None = None
    split_seed: int = 0
    train_per_class: int | None = None  # digits: k training images per class, the rest is test
    train_fraction: float | None = None  # digits: a stratified fraction for training instead
    val_fraction: float = 0.0  # digits: share of the training images held out for validation
    train_augment: bool = True
    num_workers: int = 0
    drop_last: bool = True
    # model
    model: str = "small_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # optimisation: SGD with momentum, warm-up then cosine or step decay, per step
    batch_size: int = 64
    eval_batch_size: int | None = None
    epochs: int = 10
    steps: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_bias: bool = True
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    grad_clip: float | None = None
    # mixing (unimix.Mixer); methods "none" trains without mixing and with plain cross-entropy
    methods: str | list[str] | dict[str, float] = "none"
    alpha: float | dict[str, float] = 1.0
    mode: str = "batch"
    mix_prob: float = 1.0
    switch_prob: float | None = None
    label_smoothing: float = 0.0
    partner: str = "flip"
    label_weight: str = "effective"  # "nominal": labels weighted by the drawn λ (issue 12)
    method_params: dict[str, Any] = field(default_factory=dict)
    mix_where: str = "device"
    # performance and reproducibility
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0
    # logging
    eval_every: int = 1
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.methods = _normalise_methods(self.methods)
        self.validate()

    # ---- conversion ---------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        """The configuration keys, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping of keys (a recipe, a saved ``config.yaml``); unknown keys fail."""
        if not isinstance(data, Mapping):
            raise TypeError(
                f"a training configuration must be a mapping, got {type(data).__name__}"
            )
        _check_keys(data.keys())
        return cls(**{k: _coerce(k, v) for k, v in data.items()})

    @classmethod
    def from_any(cls, config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
        """A :class:`TrainConfig` from itself (validated copy) or from a mapping."""
        if isinstance(config, TrainConfig):
            return cls.from_dict(config.to_dict())
        return cls.from_dict(config)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe mapping of every key (lists, dicts, numbers, strings, None)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some keys changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ---- derived ------------------------------------------------------------------------------
    @property
    def mixing(self) -> bool:
        """False when the run trains without mixing (``methods: none``)."""
        return self.methods != ["none"]

    def validate(self) -> None:
        """Check every key; raise ValueError/TypeError naming the key and the fix."""
        for key in ("dataset", "model"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key} must be a non-empty name, got {getattr(self, key)!r}")
        _positive_int("batch_size", self.batch_size)
        _positive_int("epochs", self.epochs)
        for key in ("steps", "eval_batch_size", "train_per_class"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        if self.train_per_class is not None and self.train_fraction is not None:
            raise ValueError(
                "train_per_class and train_fraction both set; keep one (e.g. train_fraction=null)"
            )
        if self.train_fraction is not None:
            _number(
                "train_fraction", self.train_fraction, 0.0, 1.0, low_open=True, high_open=True
            )
        _number("val_fraction", self.val_fraction, low=0.0, high=1.0, high_open=True)
        for key in ("split_seed", "seed", "num_workers", "eval_every"):
            _int_at_least(key, getattr(self, key), 0)
        if self.image_size is not None:
            size = self.image_size if isinstance(self.image_size, list) else [self.image_size]
            if len(size) not in (1, 2) or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size
            ):
                raise ValueError(
                    f"image_size must be a positive int or [H, W], got {self.image_size!r}"
                )
        _number("lr", self.lr, low=0.0, low_open=True)
        _number("momentum", self.momentum, low=0.0, high=1.0)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("gamma", self.gamma, low=0.0, high=1.0, low_open=True)
        _number("warmup_epochs", self.warmup_epochs, low=0.0)
        _number("min_lr", self.min_lr, low=0.0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.grad_clip is not None:
            _number("grad_clip", self.grad_clip, low=0.0, low_open=True)
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "nesterov=True needs momentum > 0; set momentum (e.g. 0.9) or nesterov=false"
            )
        _choice("schedule", self.schedule, _SCHEDULES)
        if not isinstance(self.milestones, list) or any(
            isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0 for m in self.milestones
        ):
            raise ValueError(f"milestones must be a list of epochs >= 0, got {self.milestones!r}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError(
                "schedule 'step' needs milestones (epochs at which lr is multiplied by gamma)"
            )
        if sorted(self.milestones) != list(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        if isinstance(self.alpha, dict):
            for name, a in self.alpha.items():
                _number(f"alpha[{name!r}]", a, low=0.0, low_open=True)
        else:
            _number("alpha", self.alpha, low=0.0, low_open=True)
        _choice("mode", self.mode, _MODES)
        _number("mix_prob", self.mix_prob, low=0.0, high=1.0)
        if self.switch_prob is not None:
            _number("switch_prob", self.switch_prob, low=0.0, high=1.0)
        _number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        _choice("partner", self.partner, _PARTNERS)
        _choice("label_weight", self.label_weight, ("effective", "nominal"))
        _choice("mix_where", self.mix_where, _MIX_WHERE)
        _choice("amp", self.amp, _AMP)
        for key in ("model_kwargs", "method_params"):
            value = getattr(self, key)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{key} must be a mapping of names to values, got {value!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        for key in BOOL_KEYS:
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"{key} must be true or false, got {getattr(self, key)!r}")


# ---- coercion and checks ---------------------------------------------------------------------

#: The keys that hold true/false.
BOOL_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.type in ("bool",))
_INT_KEYS = {
    "split_seed",
    "train_per_class",
    "num_workers",
    "batch_size",
    "eval_batch_size",
    "epochs",
    "steps",
    "seed",
    "eval_every",
}
_FLOAT_KEYS = {
    "train_fraction",
    "val_fraction",
    "lr",
    "momentum",
    "weight_decay",
    "gamma",
    "warmup_epochs",
    "min_lr",
    "grad_clip",
    "mix_prob",
    "switch_prob",
    "label_smoothing",
}
_STR_KEYS = {
    "dataset",
    "data_dir",
    "model",
    "schedule",
    "mode",
    "partner",
    "label_weight",
    "mix_where",
    "amp",
    "device",
}


def _check_keys(keys: Iterable[str]) -> None:
    valid = TrainConfig.keys()
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
            raise ValueError(f"unknown configuration key {key!r}{hint}")


def _coerce(key: str, value: Any) -> Any:
    """Light coercion of values from YAML or the command line to the key's type."""
    if value is None or (isinstance(value, str) and value.lower() in ("null", "~")):
        return None
    if key in BOOL_KEYS and isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if key in _INT_KEYS and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if key in _FLOAT_KEYS and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number, got {value!r}") from None
    if key in _STR_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if key == "milestones":
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if isinstance(value, (int, float)):
            value = [value]
        if isinstance(value, (list, tuple)):
            try:
                return [float(v) for v in value]
            except (TypeError, ValueError):
                raise ValueError(f"milestones must be a list of epochs, got {value!r}") from None
    if key == "image_size":
        if isinstance(value, str):
            parts = [p for p in value.replace("x", " ").replace(",", " ").split() if p]
            try:
                value = [int(p) for p in parts]
            except ValueError:
                raise ValueError(f"image_size must be an int or 'HxW', got {value!r}") from None
        if isinstance(value, (list, tuple)):
            value = list(value)
            return value[0] if len(value) == 1 else value
    if key in ("alpha",) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(
                f"alpha must be a number or a mapping method → α, got {value!r}"
            ) from None
    if key == "alpha" and isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if key in ("model_kwargs", "method_params") and isinstance(value, Mapping):
        return dict(value)
    return value


def _normalise_methods(methods: Any) -> list[str] | dict[str, float]:
    """``"none"``/``None``/``[]`` → ``["none"]``; ``"a,b"`` → ``["a", "b"]``; mappings kept."""
    if methods is None:
        return ["none"]
    if isinstance(methods, str):
        methods = [m for m in methods.replace(",", " ").split() if m]
    if isinstance(methods, Mapping):
        if not methods:
            return ["none"]
        try:
            return {str(k): float(v) for k, v in methods.items()}
        except (TypeError, ValueError):
            raise ValueError(
                f"methods as a mapping must give a weight per method, got {methods!r}"
            ) from None
    if isinstance(methods, (list, tuple)):
        if not all(isinstance(m, str) for m in methods):
            raise TypeError(f"methods must be method names, got {methods!r}")
        names = [m.lower() for m in methods]
        return names or ["none"]
    raise TypeError(
        f"methods must be a name, a list of names or a mapping name → weight, got {methods!r}"
    )


def _positive_int(key: str, value: Any) -> None:
    _int_at_least(key, value, 1)


def _int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{key} must be >= {low}, got {value}")


def _number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{key} must be a number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{key} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{key} must be {'<' if high_open else '<='} {high}, got {value}")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# ---- recipes and overrides -------------------------------------------------------------------


def _recipe_dir() -> Any:
    return resources.files("unimix") / "recipes"


def available_recipes() -> list[str]:
    """Names of the packaged recipes (``unimix/recipes/*.yaml``)."""
    try:
        entries = list(_recipe_dir().iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name[: -len(".yaml")] for e in entries if e.name.endswith(".yaml"))


def load_recipe(recipe: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a recipe, given a packaged recipe's name or a path to a YAML file."""
    path = Path(recipe)
    text: str
    if path.suffix in (".yaml", ".yml") or path.exists() or os.sep in str(recipe):
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {str(path)!r} does not exist")
        text = path.read_text()
        where = str(path)
    else:
        entry = _recipe_dir() / f"{recipe}.yaml"
        if not entry.is_file():
            known = ", ".join(available_recipes()) or "none"
            raise ValueError(
                f"unknown recipe {str(recipe)!r}; packaged recipes: {known} (or give a YAML path)"
            )
        text = entry.read_text()
        where = f"recipe {recipe!r}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{where} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{where} must be a YAML mapping of configuration keys, got {type(data).__name__}"
        )
    data.pop("study", None)  # the study's own section (regimes, seeds): not a training key
    _check_keys(data)
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` → ``(key, value)`` with the value read as YAML (``lr=0.1``, ``methods=[a,b]``)."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"an override must look like key=value, got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not key:
        raise ValueError(f"an override must look like key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(
    data: Mapping[str, Any], overrides: Mapping[str, Any] | Iterable[str]
) -> dict[str, Any]:
    """``data`` with overrides applied: a mapping, or ``key=value`` strings.

    Dotted keys set one entry of a mapping key: ``method_params.r=0.3``, ``model_kwargs.width=2``.
    """
    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in items:
        top, _, sub = key.partition(".")
        _check_keys([top])
        if sub:
            if top not in ("model_kwargs", "method_params", "alpha"):
                raise ValueError(f"{top} is not a mapping; override it as {top}=VALUE")
            current = result.get(top) or {}
            if not isinstance(current, dict):
                current = {}
            result[top] = {**current, sub: value}
        else:
            result[top] = value
    return result


def resolve_config(
    recipe: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> TrainConfig:
    """Defaults < recipe < overrides, validated."""
    data = load_recipe(recipe) if recipe is not None else {}
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def config_differences(
    a: TrainConfig | Mapping[str, Any],
    b: TrainConfig | Mapping[str, Any],
    ignore: Iterable[str] = RESUME_MUTABLE,
) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configurations: ``{key: (a, b)}``."""
    da = TrainConfig.from_any(a).to_dict()
    db = TrainConfig.from_any(b).to_dict()
    skip = set(ignore)
    return {k: (da[k], db[k]) for k in da if k not in skip and da[k] != db[k]}


def write_yaml(path: str | os.PathLike[str], data: Mapping[str, Any], header: str = "") -> None:
    """Write a mapping as YAML atomically (temporary file in the same directory, then rename)."""
    text = (header + "\n" if header else "") + yaml.safe_dump(dict(data), sort_keys=False)
    atomic_write_text(path, text)
