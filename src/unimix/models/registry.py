"""Models by name: the built-in networks and any torchvision or timm model.

Built-in names: ``small_cnn`` (digits), ``preact_resnet18`` and ``wrn28_10`` (the CIFAR MSDA
benchmarks), ``wrn`` (any WideResNet, ``depth=``/``widen=`` keyword arguments). ``tv:<name>``
builds ``torchvision.models.get_model(name)`` and ``timm:<name>`` builds
``timm.create_model(name)``, e.g. ``tv:resnet50`` for ImageNet; both without pretrained weights,
which unimix never downloads (load a state dict yourself, or give timm a local weights file with
``model_kwargs.checkpoint_path``: it is read as tensors only, never as code). Every model takes ``in_chans`` input
channels (torchvision models get their first convolution rebuilt when it is not 3) and works in
``channels_last`` memory format.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from unimix.models.preact_resnet import preact_resnet18
from unimix.models.small_cnn import SmallCNN
from unimix.models.weights import check_weights_file, state_dict_mismatch
from unimix.models.wide_resnet import wide_resnet

__all__ = ["adapt_input_channels", "available_models", "create_model", "register_model"]

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(num_classes, in_chans, image_size, **kwargs) -> nn.Module`` as ``name``."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY or ":" in name:
            raise ValueError(f"model name {name!r} is taken or contains ':'")
        _REGISTRY[name] = builder
        return builder

    return wrap


@register_model("small_cnn")
def _small_cnn(num_classes: int, in_chans: int, image_size: tuple[int, int], **kw: Any):
    return SmallCNN(num_classes, in_chans, **kw)


@register_model("preact_resnet18")
def _preact_resnet18(num_classes: int, in_chans: int, image_size: tuple[int, int], **kw: Any):
    return preact_resnet18(num_classes, in_chans, **kw)


@register_model("wrn")
def _wrn(num_classes: int, in_chans: int, image_size: tuple[int, int], **kw: Any):
    return wide_resnet(num_classes, in_chans, **kw)


@register_model("wrn28_10")
def _wrn28_10(num_classes: int, in_chans: int, image_size: tuple[int, int], **kw: Any):
    fixed = sorted({"depth", "widen"} & set(kw))
    if fixed:
        raise TypeError(f"wrn28_10 fixes {fixed}; use create_model('wrn', depth=..., widen=...)")
    return wide_resnet(num_classes, in_chans, depth=28, widen=10, **kw)


def _external_names(prefix: str) -> list[str]:
    try:
        if prefix == "tv":
            import torchvision

            return sorted(torchvision.models.list_models())
        import timm

        return sorted(timm.list_models())
    except ImportError:
        return []


def available_models(external: bool = False) -> list[str]:
    """The built-in model names; with ``external``, also every ``tv:``/``timm:`` name installed."""
    names = sorted(_REGISTRY)
    if external:
        names += [f"tv:{n}" for n in _external_names("tv")]
        names += [f"timm:{n}" for n in _external_names("timm")]
    return names


def adapt_input_channels(model: nn.Module, in_chans: int) -> nn.Module:
    """Rebuild the model's first 3-channel ``Conv2d`` to take ``in_chans`` channels (in place).

    The new convolution has the same geometry and a fresh initialisation; nothing else changes.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            new = nn.Conv2d(
                in_chans,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, new)
            return model
    raise ValueError(
        f"cannot adapt {type(model).__name__} to in_chans={in_chans}: no 3-channel Conv2d found"
    )


def _refuse_weights(kwargs: dict[str, Any]) -> None:
    if kwargs.get("weights") is not None or kwargs.get("pretrained"):
        raise ValueError(
            "unimix never downloads pretrained weights: drop weights=/pretrained= and load a "
            "state dict with model.load_state_dict(...) instead"
        )
    kwargs.pop("weights", None)
    kwargs.pop("pretrained", None)


def _unknown_external(kind: str, name: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=5)
    hint = f"; did you mean {', '.join(f'{kind}:{c}' for c in close)}?" if close else ""
    return ValueError(f"unknown {kind} model {name!r}{hint}")


def _torchvision_model(
    name: str, num_classes: int, in_chans: int, image_size: tuple[int, int], kwargs: dict
) -> nn.Module:
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(f"'tv:{name}' needs torchvision: pip install 'unimix[vision]'") from err
    known = torchvision.models.list_models()
    if name not in known:
        raise _unknown_external("tv", name, known)
    builder = torchvision.models.get_model_builder(name)
    if name.startswith("vit_") and "image_size" not in kwargs:  # the only size-bound builders
        if image_size[0] != image_size[1]:
            raise ValueError(f"tv:{name} needs square images, got image_size={image_size}")
        kwargs["image_size"] = image_size[0]
    if name.startswith("maxvit") and "input_size" not in kwargs:
        kwargs["input_size"] = image_size
    model = builder(weights=None, num_classes=num_classes, **kwargs)
    if in_chans != 3:
        adapt_input_channels(model, in_chans)
    return model


def _timm_model(
    name: str, num_classes: int, in_chans: int, image_size: tuple[int, int], kwargs: dict
) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"'timm:{name}' needs timm: pip install 'unimix[vision]'") from err
    if not timm.is_model(name):
        raise _unknown_external("timm", name, timm.list_models())
    base = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    weights = kwargs.get("checkpoint_path")
    if weights is not None:  # read as tensors only, and every problem named before timm sees it
        kwargs["checkpoint_path"] = str(check_weights_file(weights))
        try:
            return _create_timm_model(timm, name, image_size, base, kwargs)
        except RuntimeError as err:  # the weights do not fit the model (names or shapes)
            raise ValueError(
                f"model_kwargs.checkpoint_path {str(weights)!r} does not fit timm:{name} with "
                f"{num_classes} classes and {in_chans} input channels ({state_dict_mismatch(err)})"
                "; give weights saved from this model (torch.save(model.state_dict(), PATH))"
            ) from None
    return _create_timm_model(timm, name, image_size, base, kwargs)


def _create_timm_model(
    timm: Any, name: str, image_size: tuple[int, int], base: dict, kwargs: dict
) -> nn.Module:
    if "img_size" not in kwargs:
        try:  # transformers need the input size; convolutional nets reject the argument
            return timm.create_model(name, img_size=image_size, **base, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, **base, **kwargs)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    image_size: int | tuple[int, int] = 32,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes and ``in_chans``-channel inputs.

    Args:
        name: a built-in name (:func:`available_models`), ``"tv:<torchvision name>"`` or
            ``"timm:<timm name>"``.
        num_classes: outputs of the classifier.
        in_chans: input channels (1 for digits).
        image_size: input size; the built-in networks are fully convolutional and ignore it,
            vision transformers need it.
        kwargs: passed to the model, e.g. ``widths=`` (small_cnn), ``depth=``/``widen=``/
            ``drop_rate=`` (wrn).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    from unimix.data.base import as_size

    size = as_size(image_size)
    prefix, sep, rest = name.partition(":")
    if sep:
        kwargs = dict(kwargs)
        _refuse_weights(kwargs)
        if prefix == "tv":
            return _torchvision_model(rest, num_classes, in_chans, size, kwargs)
        if prefix == "timm":
            return _timm_model(rest, num_classes, in_chans, size, kwargs)
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}; choose from {', '.join(available_models())}, "
            "or 'tv:<name>' (torchvision) / 'timm:<name>' (timm)"
        )
    return _REGISTRY[name](num_classes, in_chans, size, **kwargs)
