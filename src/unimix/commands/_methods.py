"""The registered method names, for help texts: every command lists every method, from the
registry, so a newly registered method appears in ``--help`` without editing the command."""

from __future__ import annotations

__all__ = ["method_names", "methods_help"]


def method_names() -> list[str]:
    """Sorted names of every registered mixing method (``unimix.registry`` and ``Mixer``'s)."""
    names: set[str] = set()
    try:
        from unimix import registry
    except ImportError:
        pass
    else:
        names.update(registry.available())
    import unimix.mix

    legacy = getattr(unimix.mix, "available_methods", None)
    if legacy is not None:
        names.update(legacy())
    return sorted(names)


def methods_help() -> str:
    """``"methods: a, b, c"`` for an argparse help text (``%`` escaped)."""
    return ("methods: " + ", ".join(method_names())).replace("%", "%%")
