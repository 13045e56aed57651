"""Argument types shared by every command: one rule for seeds and output paths."""

from __future__ import annotations

import argparse
from pathlib import Path


def seed(text: str) -> int:
    """A random seed: an integer >= 0 (torch.Generator.manual_seed takes no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def path(text: str) -> Path:
    """A file or folder path; an empty one is refused (it would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return Path(text)
