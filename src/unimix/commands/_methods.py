"""The registered method names, for help texts: every command lists every method, from the
registry, so a newly registered method appears in ``--help`` without editing the command."""

from __future__ import annotations

__all__ = ["method_names", "methods_help"]


def method_names() -> list[str]:
    """Sorted names of every registered mixing method (:func:`unimix.registry.available`)."""
    from unimix import registry

    return list(registry.available())


def methods_help() -> str:
    """``"methods: a, b, c"`` for an argparse help text (``%`` escaped)."""
    return ("methods: " + ", ".join(method_names())).replace("%", "%%")
