"""Training checkpoints: atomic writes, clear errors, and every random state of a run.

A checkpoint is one ``torch.save`` file holding a mapping::

    format      "unimix-train-checkpoint"      version   CHECKPOINT_VERSION
    config      the resolved TrainConfig dict   world_size number of ranks that wrote it
    epoch       epochs completed                batch     batches done in the current epoch
                                                          (0 at an epoch boundary)
    step        optimiser steps done            finished  whether the run is complete
    model       the model's state dict          optimizer / scheduler / scaler  state dicts
    ranks       one entry per rank: RNG states (Python, NumPy, torch CPU and CUDA) and the
                mixer's generator state
    partial     the current epoch's running sums (mid-epoch checkpoints only)
    history     every epoch's metrics row so far (metrics.csv is rebuilt from it on resume)
    wall_s      training wall time so far, over every session
    checksum    SHA-256 of everything above (:func:`content_digest`), verified on every load

Everything in it is tensors, numbers, strings and containers, so it loads with
``torch.load(weights_only=True)``: a checkpoint cannot execute code when read.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimix.train.fileio import atomic_open

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "state_digest",
    "content_digest",
]

#: The format tag every checkpoint carries: a file without it is not a unimix checkpoint.
CHECKPOINT_FORMAT = "unimix-train-checkpoint"
#: The version this unimix writes.
CHECKPOINT_VERSION = 2
#: Versions this unimix reads; version 1 predates the checksum (read without verification).
_READABLE = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, foreign or from another run."""


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same directory, flushed to
    disk, then renamed over ``path`` (``os.replace``), so a kill at any moment leaves either the
    previous checkpoint or the new one, never a torn file."""
    payload = {
        **{k: v for k, v in state.items() if k != "checksum"},
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
    }
    payload["checksum"] = content_digest(payload)
    try:
        with atomic_open(path, "wb") as fh:
            torch.save(payload, fh)
    except RuntimeError as err:  # torch's writer reports a failed write (disk full, ulimit -f)
        raise OSError(
            f"cannot write checkpoint {str(path)!r}: {str(err).splitlines()[0]} (disk full or a "
            "file size limit?); the previous checkpoint is kept"
        ) from err


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated or corrupt (including bytes changed inside a tensor:
            the stored checksum no longer matches), or is not a unimix training checkpoint, or was
            written by an incompatible version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupt and cannot be read ({err})"
            ) from err
        raise CheckpointError(
            f"{str(path)!r} holds Python objects other than tensors, numbers and containers, so it is "
            "not a unimix training checkpoint (or comes from an incompatible version); it was not "
            "loaded, since unpickling arbitrary objects can run code"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated and cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); restore a good copy, or delete "
            "the run directory to start the run again"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a unimix training checkpoint")
    if state.get("version") not in _READABLE:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {state.get('version')!r}, this unimix "
            f"reads versions {', '.join(map(str, _READABLE))}"
        )
    if state["version"] >= 2:
        stored = state.get("checksum")
        actual = content_digest({k: v for k, v in state.items() if k != "checksum"})
        if stored != actual:
            raise CheckpointError(
                f"checkpoint {str(path)!r} fails its checksum (stored {str(stored)[:12]}…, contents "
                f"{actual[:12]}…): its bytes were damaged after it was written. Restore a good "
                "copy, or delete the run directory to start the run again"
            )
    else:
        import warnings

        warnings.warn(
            f"checkpoint {str(path)!r} has format version {state['version']}, which has no "
            "checksum: it is read UNVERIFIED (damage would go unnoticed)",
            UserWarning,
            stacklevel=2,
        )
    missing = {"config", "model", "epoch", "step", "finished"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {sorted(missing)}; it is incomplete")
    _check_fields(state, str(path))
    return state


def _check_fields(state: dict[str, Any], path: str) -> None:
    """Range-check the metadata (a checksum proves the bytes, not that they make sense)."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path!r} is inconsistent: {what}; it was not resumed")

    counts = {k: state.get(k, 0) for k in ("epoch", "step", "batch")}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"{key} must be an integer >= 0, got {value!r}")
    if not isinstance(state["finished"], bool):
        raise bad(f"finished must be true or false, got {state['finished']!r}")
    if not isinstance(state["config"], dict):
        raise bad("its config is not a mapping")
    epochs = state["config"].get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and counts["epoch"] > epochs:
        raise bad(f"epoch {counts['epoch']} of a run of {epochs} epochs")
    if counts["batch"] > counts["step"] or counts["epoch"] > counts["step"]:
        raise bad(
            f"{counts['step']} steps cannot cover epoch {counts['epoch']} and batch "
            f"{counts['batch']} of the current epoch"
        )
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise bad("its history must be a list of metric rows (mappings)")


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CPU and every CUDA device),
    in a form :func:`torch.load` reads with ``weights_only=True``."""
    # the legacy global NumPy generator is the one third-party code draws from: capture it
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and exact bytes (equal iff bitwise equal)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        h.update(name.encode())
        if not isinstance(tensor, torch.Tensor):
            h.update(repr(tensor).encode())
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` into ``h`` by structure: type tags, sorted mapping keys, tensor bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)};".encode())
        for key in sorted(obj, key=repr):
            h.update(f"{key!r}:".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):  # a tuple may come back as a list: one tag for both
        h.update(f"L{len(obj)};".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and exact bytes, and every
    number, string and container around them (mapping keys in sorted order). Equal digests mean
    equal contents, so a changed byte anywhere, inside a tensor or in the metadata, is found."""
    import hashlib

    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()
