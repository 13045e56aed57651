"""Errors a user can fix, and the checks the command line runs before it computes anything.

The ``unimix`` command prints an expected error as one line, ``unimix CMD: error: MESSAGE``, and
exits with status 2 (tracebacks only under ``unimix --debug``). Expected errors are
:class:`UsageError` (and its :class:`MissingExtraError`) raised by the commands, and the
ValueError/TypeError/OSError family raised while validating inputs (see :mod:`unimix.cli`).

Nothing here needs more than the core dependencies (torch, numpy).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "EXTRA_OF_MODULE",
    "MissingExtraError",
    "UsageError",
    "check_device",
    "check_output_dir",
    "check_output_file",
    "missing_extra",
    "one_line",
    "removed_on_failure",
    "storage_error",
    "storage_message",
]


class UsageError(Exception):
    """An error of the user's making (bad argument, directory, file or environment) that the
    command line reports as one line and exit status 2."""


class MissingExtraError(UsageError):
    """A command needs an optional dependency group (an *extra*) that is not installed.

    Attributes:
        extra: the extra to install, e.g. ``"study"`` (``pip install 'unimix[study]'``).
        module: the top-level module that was missing, e.g. ``"yaml"``.
    """

    def __init__(self, extra: str, module: str | None = None) -> None:
        self.extra = extra
        self.module = module
        missing = f" (module {module!r} is missing)" if module else ""
        super().__init__(
            f"this command needs the '{extra}' extra{missing}: pip install 'unimix[{extra}]'"
        )


#: The extra of ``pyproject.toml`` that provides each optional top-level module.
EXTRA_OF_MODULE: dict[str, str] = {
    "yaml": "study",
    "sklearn": "study",
    "PIL": "study",
    "pydantic": "study",
    "scipy": "theory",
    "matplotlib": "theory",
    "tqdm": "theory",
    "torchvision": "vision",
    "timm": "vision",
}

#: Extras that include others (``study`` pulls in ``theory``).
_INCLUDES: dict[str, set[str]] = {"study": {"theory"}, "all": {"study", "theory", "vision"}}


def missing_extra(err: BaseException, extra: str | None = None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` an import error stands for, or ``None`` when the missing
    module is not an optional dependency of unimix (then it is a bug, not a user error).

    ``extra`` is the command's own extra: named instead of a smaller extra it includes (a
    ``study`` command missing matplotlib asks for ``study``, which brings ``theory``).
    """
    seen: set[int] = set()
    while isinstance(err, BaseException) and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ModuleNotFoundError) and err.name:
            top = err.name.split(".")[0]
            needed = EXTRA_OF_MODULE.get(top)
            if needed is not None:
                if extra is not None and needed in _INCLUDES.get(extra, set()):
                    needed = extra
                return MissingExtraError(needed, top)
            return None
        err = err.__cause__ or err.__context__  # an ImportError re-raised with a hint
    return None


#: System errors of a write that room (or a higher limit) fixes, and the fix to name.
STORAGE_ERRORS: dict[int, str] = {
    code: fix
    for code, fix in (
        (
            errno.EFBIG,
            "the file size limit is reached (ulimit -f): raise it, e.g. ulimit -f unlimited",
        ),
        (errno.ENOSPC, "the disk is full: free space or choose an output folder on another disk"),
        (
            getattr(errno, "EDQUOT", None),
            "the disk quota is exceeded: free space or write elsewhere",
        ),
    )
    if code is not None
}


def storage_error(err: BaseException) -> OSError | None:
    """The file-size-limit, disk-full or quota :class:`OSError` behind ``err`` (``err`` itself
    or an error it was raised from, as torch wraps a refused write), else ``None``."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in STORAGE_ERRORS:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def storage_message(err: BaseException) -> str | None:
    """One line for a write refused for room (:func:`storage_error`): the file, the reason and
    the fix; ``None`` for any other error.

    unimix writes its files atomically (:mod:`unimix.train.fileio`), so a refused write leaves
    the previous version of the file whole, and the same command can be run again.
    """
    cause = storage_error(err)
    if cause is None:
        return None
    assert cause.errno is not None
    what = f"cannot write {cause.filename}" if cause.filename else "cannot write a file"
    reason = cause.strerror or os.strerror(cause.errno)
    return (
        f"{what}: {reason}; {STORAGE_ERRORS[cause.errno]}, then run the same command again "
        "(files written before are kept whole)"
    )


def one_line(message: object) -> str:
    """``message`` as one line: a worker's re-raised error is reduced to its original last line,
    whitespace runs (newlines included) to one space."""
    text = str(message)
    if "Original Traceback" in text:  # torch DataLoader workers re-raise with the traceback text
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = re.sub(r"^[A-Za-z_][\w.]*: ", "", lines[-1]) if lines else text  # drop "mod.Type: "
    return " ".join(text.split()) or "unknown error"


def check_device(device: object, name: str = "--device") -> str:
    """Return ``device`` after checking it names a device this machine has.

    ``"auto"`` (and ``None``) always pass; ``cuda``/``cuda:N`` need CUDA and an N below the
    device count, ``mps`` needs the MPS backend. Raises :class:`UsageError` naming ``name``.
    """
    import torch

    if device is None or device == "auto":
        return "auto" if device is None else str(device)
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(
            f"{name} {device!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{name} {device}: CUDA is not available on this machine "
                f"(torch {torch.__version__}, cuda build {torch.version.cuda or 'none'}); "
                "use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(
                f"{name} {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"{name} {device}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise UsageError(f"{name} {device!r}: unsupported device type; use auto, cpu or cuda")
    return str(device)


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists."""
    current = path
    while not os.path.lexists(current):
        parent = current.parent
        if parent == current:
            break
        current = parent
    return current


def _probe_writable(folder: Path, what: str) -> None:
    """Raise :class:`UsageError` naming ``what`` unless files can be created in ``folder``.

    Asks the operating system (``access``) rather than writing a probe file, so that nothing
    appears in a folder another process may be checking (torchrun ranks, a running study);
    a read-only file system is refused even for root.
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what}: {folder} is not writable (permission denied)")


def check_output_dir(path: str | os.PathLike[str], name: str = "--out") -> Path:
    """Check that ``path`` is, or can be made, a writable directory; return it as a Path.

    Refuses a path naming a file, a path below a file, and a read-only location (the nearest
    existing folder). Creates nothing.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{name} {path} is a file, not a directory; choose a folder")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise UsageError(f"{name} {path} cannot be created: {base} is a file, not a directory")
    _probe_writable(base, f"{name} {path}")
    return path


def check_output_file(path: str | os.PathLike[str], name: str = "--out") -> Path:
    """Check that the file ``path`` can be written (its folder exists or can be made, and is
    writable; ``path`` is not a directory); return it as a Path. Creates nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{name} {path} is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {name} {path}: the file is read-only")
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise UsageError(f"{name} {path} cannot be created: {base} is a file, not a directory")
    _probe_writable(base, f"{name} {path}")
    return path


_RUN_LOCK = ".unimix.lock"  # unimix.train.rundir.LOCK_FILE (not imported: it needs the extras)


@contextlib.contextmanager
def removed_on_failure(
    path: str | os.PathLike[str], keep: Iterable[str] = ("checkpoint.pt",)
) -> Iterator[Path]:
    """Undo a half-made output folder when the block fails.

    On any exception (Ctrl-C included), unless some file below the folder matches a pattern of
    ``keep`` (a real result, e.g. a checkpoint to resume): the topmost folder missing on entry
    (``path`` or one of its parents) is removed; a folder ``path`` that existed on entry is kept,
    and emptied again only if it was empty on entry. A file that existed before is never touched.

    Another process's run is never removed: nothing is when the error is a FileExistsError
    (the trainer's "locked by another run" / "not a run directory") or when a run lock file
    (``.unimix.lock``, see :mod:`unimix.train.rundir`) is in the folder, since two commands
    started together on one new folder both see it missing on entry.
    """
    path = Path(path).expanduser()
    base = _existing_ancestor(path)
    created: Path | None = None
    if base != path:
        created = path
        while created.parent != base:
            created = created.parent
    was_empty = created is None and path.is_dir() and next(path.iterdir(), None) is None
    try:
        yield path
    except BaseException as err:
        if isinstance(err, FileExistsError):
            raise
        keep = (*keep, _RUN_LOCK)
        folder = created if created is not None else (path if was_empty else None)
        if folder is not None and folder.is_dir() and not folder.is_symlink():
            if not any(next(folder.rglob(pattern), None) is not None for pattern in keep):
                if created is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    for entry in folder.iterdir():
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
        raise
