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
import functools
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from unimix import checks
from unimix.mix import LabelWeight, Mode, Partner
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
    "BOOL_KEYS",
    "LIST_KEYS",
]

#: Keys that may change when a run is resumed: they change where or how fast it runs, not what
#: it computes. ``data_dir`` and ``num_workers`` leave the final weights bitwise identical (data
#: order, augmentation and collate mixing are functions of (seed, epoch, batch), tested with
#: workers); ``device`` and ``compile`` may change floating-point rounding (other kernels).
RESUME_MUTABLE = frozenset(
    {"data_dir", "num_workers", "device", "compile", "eval_batch_size", "tensorboard"}
)


Schedule = Literal["cosine", "step", "constant"]
MixWhere = Literal["device", "collate"]
Amp = Literal["none", "bf16", "fp16"]


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
    schedule: Schedule = "cosine"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    grad_clip: float | None = None
    # mixing (unimix.Mixer); methods "none" trains without mixing and with plain cross-entropy
    methods: str | list[str] | dict[str, float] = "none"
    alpha: float | dict[str, float] = 1.0
    mode: Mode = "batch"
    mix_prob: float = 1.0
    switch_prob: float | None = None
    label_smoothing: float = 0.0
    partner: Partner = "flip"
    label_weight: LabelWeight = "effective"  # "nominal": labels weighted by the drawn λ (issue 12)
    method_params: dict[str, Any] = field(default_factory=dict)
    mix_where: MixWhere = "device"
    # performance and reproducibility
    amp: Amp = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0
    # logging
    eval_every: int = 1
    tensorboard: bool | None = None  # None: log to TensorBoard when it is installed, silently

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
        return cls(**data)

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
        """Check every key; raise ValueError/TypeError naming the key and the fix.

        The mixing keys are checked by building the :class:`unimix.Mixer` they describe
        (:meth:`mixer_kwargs`), so a configuration is valid exactly when its Mixer can be built.
        """
        for key in self.keys():
            if key not in _CUSTOM:
                setattr(self, key, _coerce(key, getattr(self, key)))
        self._validate_data()
        self._validate_optimisation()
        self._validate_mixing()
        for key in ("model_kwargs", "method_params"):
            value = getattr(self, key)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{key} must be a mapping of names to values, got {value!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        for key in BOOL_KEYS - {"tensorboard"}:
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"{key} must be true or false, got {getattr(self, key)!r}")

    def _validate_data(self) -> None:
        for key in ("dataset", "model"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key} must be a non-empty name, got {getattr(self, key)!r}")
        for key in ("batch_size", "epochs"):
            checks.check_positive_int(key, getattr(self, key))
        for key in ("steps", "eval_batch_size", "train_per_class"):
            if getattr(self, key, None) is not None:
                checks.check_positive_int(key, getattr(self, key))
        for key in ("split_seed", "seed", "num_workers", "eval_every"):
            checks.check_nonneg_int(key, getattr(self, key))
        if self.train_per_class is not None and self.train_fraction is not None:
            raise ValueError(
                "train_per_class and train_fraction both set; keep one (e.g. train_fraction=null)"
            )
        if self.train_fraction is not None:
            _open_unit("train_fraction", self.train_fraction)
        if checks.check_unit("val_fraction", self.val_fraction) == 1.0:
            raise ValueError("val_fraction must be < 1: some training images must remain")
        if self.image_size is not None:
            size = self.image_size if isinstance(self.image_size, list) else [self.image_size]
            if len(size) not in (1, 2) or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size
            ):  # whether a size fits in memory is checked before the run (train.memory)
                raise ValueError(
                    f"image_size must be an int or [H, W] with sides >= 1, got {self.image_size!r}"
                )

    def _validate_optimisation(self) -> None:
        checks.check_positive("lr", self.lr)
        checks.check_unit("momentum", self.momentum)
        for key in ("weight_decay", "warmup_epochs", "min_lr"):
            checks.check_positive(key, getattr(self, key), allow_zero=True)
        if checks.check_unit("gamma", self.gamma) == 0.0:
            raise ValueError("gamma must lie in (0, 1]: the factor of the step schedule, got 0")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.grad_clip is not None:
            checks.check_positive("grad_clip", self.grad_clip)
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "nesterov=True needs momentum > 0; set momentum (e.g. 0.9) or nesterov=false"
            )
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

    def _validate_mixing(self) -> None:
        """The Mixer's own rules (:mod:`unimix.checks`), named by the configuration's keys."""
        if isinstance(self.alpha, dict):
            for name, a in self.alpha.items():
                checks.check_alpha(f"alpha[{name!r}]", a)
        else:
            checks.check_alpha("alpha", self.alpha)
        if isinstance(self.methods, dict):
            checks.check_probability_weights("methods", self.methods)
        checks.check_unit("mix_prob", self.mix_prob)
        if self.switch_prob is not None:
            checks.check_unit("switch_prob", self.switch_prob)
        checks.check_unit("label_smoothing", self.label_smoothing)
        if self.mixing:
            self._check_mixer()

    def mixer_kwargs(self) -> dict[str, Any]:
        """The arguments of the :class:`unimix.Mixer` this configuration trains with (less
        ``num_classes`` and ``generator``): ``method_params`` narrowed to what the chosen methods
        take (a recipe may set HMix's ``r`` and be run with Mixup); a parameter that no registered
        method takes is an error."""
        from unimix import registry

        names = list(self.methods)
        taken = {k for n in names if n in registry.available() for k in registry.parameters(n)}
        known = {k for n in registry.available() for k in registry.parameters(n)}
        unknown = sorted(set(self.method_params) - known)
        if unknown:
            raise ValueError(
                f"method_params {unknown} are taken by no mixing method; known parameters: "
                f"{sorted(known)}"
            )
        params = {k: v for k, v in self.method_params.items() if k in taken}
        return dict(
            methods=self.methods, alpha=self.alpha, mode=self.mode, prob=self.mix_prob,
            switch_prob=self.switch_prob, label_smoothing=self.label_smoothing,
            partner=self.partner, label_weight=self.label_weight, **params,
        )  # fmt: skip

    def _check_mixer(self) -> None:
        """Build the Mixer itself: the configuration is valid exactly when its Mixer can be
        built, with no second copy of the Mixer's rules here."""
        from unimix.mix import check_mixer

        check_mixer(**self.mixer_kwargs())  # its errors name the key (methods, alpha …)


# ---- coercion and checks ---------------------------------------------------------------------


def _kinds(hint: Any) -> tuple[set[type], type | None, Any]:
    """``(scalar types, container type or None, element/value type)`` of a field's type hint,
    ``None`` left out: ``int | list[int] | None`` → ``({int}, list, int)``."""
    scalars: set[type] = set()
    container, element = None, None
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for arg in typing.get_args(hint) if union else (hint,):
        origin = typing.get_origin(arg)
        if origin in (list, dict):
            container = origin
            element = typing.get_args(arg)[-1]
        elif arg is not type(None):
            scalars.add(arg)
    return scalars, container, element


#: Each key's type, from the dataclass annotations: the one declaration coercion follows.
_HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)
_KINDS = {key: _kinds(hint) for key, hint in _HINTS.items()}
#: The keys that hold true/false.
BOOL_KEYS = frozenset(k for k, (sc, _, _) in _KINDS.items() if bool in sc)
#: The keys that take a list (``--milestones 30 60``, ``--image-size 32 48``, ``--methods a b``).
LIST_KEYS = frozenset(k for k, (_, c, _) in _KINDS.items() if c is list)
#: Keys with their own normalisation instead of the generic coercion.
_CUSTOM = {"methods"}


def _check_keys(keys: Iterable[str]) -> None:
    valid = TrainConfig.keys()
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
            raise ValueError(f"unknown configuration key {key!r}{hint}")


def _coerce(key: str, value: Any) -> Any:
    """A value from YAML, the command line or Python as the key's declared type (pydantic, lax).

    Strings become the declared type (``"0.1"`` → 0.1, ``"on"`` → True); for list keys ``"30,60"``
    → [30.0, 60.0] and ``"32x48"`` → [32, 48]; integral floats become ints for int keys; ``null``/
    ``~`` is None; a one-element ``image_size`` list is its int. An error names the key, the value
    and what the key takes (for a choice, the allowed values).
    """
    if isinstance(value, str) and value.lower() in ("null", "~"):
        value = None
    import pydantic

    try:
        value = _adapter(key).validate_python(value)
    except pydantic.ValidationError as err:
        raise ValueError(_type_error(key, value, err)) from None
    if key == "image_size" and isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


@functools.cache
def _adapter(key: str) -> Any:
    """The pydantic adapter of one key: its declared type, with bools kept out of numbers and
    list keys also taking a separated string or a single number."""
    import pydantic

    hint = _HINTS[key]
    scalars, container, _ = _KINDS[key]
    before = functools.partial(_before, key, bool in scalars, container is list, scalars)
    annotated = typing.Annotated[hint, pydantic.BeforeValidator(before)]
    config = pydantic.ConfigDict(coerce_numbers_to_str=True)
    return pydantic.TypeAdapter(annotated, config=config)


def _before(key: str, takes_bool: bool, takes_list: bool, scalars: set[Any], value: Any) -> Any:
    if isinstance(value, bool) and not takes_bool and _HINTS[key] is not Any:
        if scalars & {int, float} or takes_list:
            raise ValueError("a boolean is not a number")
    if takes_list and isinstance(value, str):
        for kind in (int, float):
            if kind in scalars:
                try:
                    return kind(value)
                except ValueError:
                    pass
        return [p for p in value.replace("x", " ").replace(",", " ").split() if p]
    if takes_list and isinstance(value, (int, float)) and not scalars & {int, float}:
        return [value]
    if takes_list and isinstance(value, tuple):
        return list(value)
    return value


def _type_error(key: str, value: Any, err: Any) -> str:
    """One line: the key, the value, and what the key takes."""
    scalars, container, element = _KINDS[key]
    literals = [a for s in scalars if typing.get_origin(s) is Literal for a in typing.get_args(s)]
    if literals:
        return f"{key} must be one of {', '.join(map(str, literals))}; got {value!r}"
    if bool in scalars:
        return f"{key} must be true or false, got {value!r}"
    words = []
    if int in scalars:
        words.append("an integer")
    elif float in scalars:
        words.append("a number")
    elif str in scalars:
        words.append("a string")
    if container is list:
        words.append(f"a list of {'integers' if element is int else 'numbers'}")
    if container is dict:
        words.append("a mapping of names to " + ("numbers" if element is float else "values"))
    if type(None) in typing.get_args(_HINTS[key]):
        words.append("null")
    detail = err.errors()[0].get("msg", "") if err.errors() else ""
    return f"{key} must be {' or '.join(words)}, got {value!r} ({detail.lower()})"


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


def _open_unit(key: str, value: Any) -> float:
    """A number strictly between 0 and 1."""
    if checks.check_unit(key, value) in (0.0, 1.0):
        raise ValueError(f"{key} must lie strictly between 0 and 1, got {value}")
    return float(value)


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
    import yaml

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
    import yaml

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
    import yaml

    text = (header + "\n" if header else "") + yaml.safe_dump(dict(data), sort_keys=False)
    atomic_write_text(path, text)
