"""The one registry of mixing methods, by name.

unimix knows two kinds of method, and this module is the only place that knows both exist:

* ``"mask"`` — a :class:`unimix.masks.MaskSampler`: the method *is* a random mask ``M`` given λ
  (Mixup, CutMix, HMix, GMix, FMix, …; Park, Yun & Chun, NeurIPS 2022, section 2). The engine,
  the theory and the gallery can all use it.
* ``"image"`` — a :class:`unimix.mixmethod.MixMethod`: the mix depends on the images or the model
  (ResizeMix, SaliencyMix, PuzzleMix, Manifold Mixup). Only the engine can use it.

A class declares its kind with the class attribute ``kind``; :func:`register` files it under a
name that no other method may take::

    >>> from unimix import registry
    >>> sorted(registry.available("mask"))[:4]
    ['cutmix', 'cutmix_minmax', 'fmix', 'gmix']
    >>> registry.get("hmix", r=0.25)
    HMix(r=0.25, boundary='clip')
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from unimix.checks import check_choice

__all__ = [
    "KINDS",
    "register",
    "unregister",
    "get",
    "lookup",
    "available",
    "kind",
    "parameters",
    "requires_model",
]

Kind = Literal["mask", "image"]
#: The two kinds of registered method: a mask sampler, or a method that looks at the images.
KINDS: tuple[Kind, ...] = ("mask", "image")

C = TypeVar("C", bound=type)

#: name → class; ``Any`` because a registered class carries the ``name`` and ``kind`` attributes
#: that the two base classes (``MaskSampler``, ``MixMethod``) declare, which ``type`` does not.
_ENTRIES: dict[str, Any] = {}


def register(name: str, *, kind: Kind | None = None) -> Callable[[C], C]:
    """Class decorator: make a method usable by name in ``Mixer``, the CLI, the study and, for
    masks, the theory. ``kind`` (optional) asserts which kind the class must be.

    Raises ``ValueError`` when ``name`` is taken by another class (of either kind) and
    ``TypeError`` when the class is no method.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"a method name must be a non-empty string without spaces, got {name!r}")

    def wrap(cls: C) -> C:
        found = getattr(cls, "kind", None)
        if not isinstance(cls, type) or found not in KINDS:
            raise TypeError(
                f"register({name!r}) takes a MaskSampler or MixMethod subclass, got {cls!r}"
            )
        if kind is not None and found != kind:
            raise TypeError(f"register({name!r}) expected a {kind} method, got a {found} method")
        taken = _ENTRIES.get(name)
        if taken is not None and taken is not cls:  # any other class, even of the same name
            raise ValueError(
                f"a mixing method named {name!r} is already registered ({taken.__qualname__}); "
                f"choose another name or unregister({name!r}) first"
            )
        entry: Any = cls
        entry.name = name
        _ENTRIES[name] = entry
        return cls

    return wrap


def unregister(name: str) -> None:
    """Remove a method registered as ``name`` (a ``KeyError``-free no-op for unknown names is
    deliberately not offered: a misspelt name raises ``ValueError``)."""
    if name not in _ENTRIES:
        raise ValueError(f"no mixing method named {name!r} is registered")
    del _ENTRIES[name]


def available(kind: Kind | None = None) -> list[str]:
    """Sorted names of the registered methods, of one ``kind`` or of both."""
    if kind is not None:
        check_choice("kind", kind, KINDS)
    return sorted(n for n, cls in _ENTRIES.items() if kind is None or cls.kind == kind)


def lookup(name: str, kind: Kind | None = None) -> type:
    """The class registered as ``name`` (a ``ValueError`` listing the known names otherwise)."""
    cls = _ENTRIES.get(name) if isinstance(name, str) else None
    if cls is None or (kind is not None and cls.kind != kind):
        what = "mixing method" if kind is None else f"{kind} method"
        raise ValueError(f"unknown {what} {name!r}; known methods: {', '.join(available(kind))}")
    return cls


def get(name: Any, kind: Kind | None = None, **params: Any) -> Any:
    """Build the method registered as ``name`` with ``params`` (e.g. ``get("hmix", r=0.5)``).

    An instance of a method is returned as it is (no ``params`` then).
    """
    found = getattr(name, "kind", None)
    if not isinstance(name, (str, type)) and found in KINDS:
        if params:
            raise TypeError("parameters cannot be given with a method instance")
        if kind is not None and found != kind:
            raise ValueError(f"expected a {kind} method, got {name!r}")
        return name
    cls = lookup(name, kind)
    unknown = set(params) - parameters(name)
    if unknown:
        raise TypeError(
            f"method {name!r} takes no parameter {', '.join(sorted(map(repr, unknown)))}; "
            f"its parameters: {sorted(parameters(name)) or 'none'}"
        )
    return cls(**params)


def kind(name: str) -> Kind:
    """``"mask"`` or ``"image"``: the kind of the method registered as ``name``."""
    cls: Any = lookup(name)
    found: Kind = cls.kind
    return found


def parameters(name: Any) -> set[str]:
    """Names of the constructor parameters of the method ``name`` (e.g. ``{"r", "boundary"}`` for
    HMix); empty for unknown names and for instances."""
    cls = _ENTRIES.get(name) if isinstance(name, str) else None
    if cls is None:
        return set()
    return {
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def requires_model(method: Any) -> bool:
    """Whether a method (name, class or instance) needs ``model=`` in the Mixer call."""
    target = _ENTRIES.get(method) if isinstance(method, str) else method
    return bool(getattr(target, "requires_model", False))
