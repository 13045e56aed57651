"""Weight files handed to a model builder (timm's ``checkpoint_path``): checked before use.

A weight file is read only as tensors (``torch.load(weights_only=True)``, or safetensors): a
pickle that needs code to load is refused, never run. Every problem is a :class:`ValueError`
naming the argument, the file and the fix, which the command line prints as one line.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["check_weights_file", "state_dict_mismatch"]

_FIX = "save the weights alone with torch.save(model.state_dict(), PATH) and give that PATH"


def _detail(err: BaseException) -> str:
    """The informative line of torch's long weights-only message (or the first line)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return lines[0] if lines else type(err).__name__


def check_weights_file(value: Any, name: str = "model_kwargs.checkpoint_path") -> Path:
    """Return ``value`` as a Path after checking it is a readable file of tensors.

    Raises:
        TypeError: ``value`` is not a path.
        ValueError: the file is missing, a directory, empty or damaged, or a pickle holding
            objects other than tensors, numbers and containers (loading it could run code).
    """
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TypeError(f"{name} must be the path of a weights file, got {value!r}")
    path = Path(value).expanduser()
    shown = repr(str(path))
    if not path.exists():
        raise ValueError(f"{name} {shown} does not exist; give an existing weights file or drop it")
    if not path.is_file():
        raise ValueError(f"{name} {shown} is a directory, not a file; give the weights file in it")
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except ImportError:
            raise ValueError(
                f"{name} {shown} is a safetensors file: pip install safetensors"
            ) from None
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(
                f"{name} {shown} is not a readable safetensors file ({_detail(err)}); {_FIX}"
            ) from None
        return path
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about the file's pickle before refusing it
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{name} {shown} is not a weights-only file: a pickle that needs code to load, or a "
            f"damaged file ({_detail(err)}); it was not loaded, since unpickling objects can run "
            f"code; {_FIX}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(
            f"{name} {shown} cannot be read as a torch weights file: it is empty, truncated or "
            f"damaged ({type(err).__name__}: {_detail(err) if str(err) else 'no detail'}); {_FIX}"
        ) from None
    return path


def state_dict_mismatch(err: BaseException) -> str:
    """The first problem of torch's "Error(s) in loading state_dict" message (one sentence, and
    how many more there are)."""
    text = " ".join(str(err).split())
    _, _, rest = text.partition("state_dict for ")
    rest = rest.partition(": ")[2] or text
    problems = [p.strip() for p in rest.split(". ") if p.strip()]
    if not problems:
        return text[:200]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0].rstrip(".") + more
