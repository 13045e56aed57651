"""Atomic file replacement: readers (and a resumed run) see the old file or the new one, never a
torn one, whatever moment the writer is killed at."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_save_figure",
    "atomic_write_text",
    "remove_stale_temporaries",
    "write_failure",
]

# .<name>.<pid>.<8 hex digits>.tmp, as atomic_open names its temporary files
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it is flushed to disk and
    renamed over ``path`` (``os.replace``, atomic on POSIX and Windows); on error it is removed.

    The temporary file lives in the same directory (a rename never crosses file systems) and is
    created with the process's umask, like any new file; text is UTF-8. A write refused by the system (file
    size limit, full disk, quota; also when a library such as torch wraps it in its own error)
    is raised as an :class:`OSError` naming ``path`` (:func:`write_failure`).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode.replace("w", "x"), encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        failure = write_failure(err, path)
        if failure is not None and failure is not err:
            raise failure from err
        raise


def write_failure(err: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """The :class:`OSError` behind a failed write of ``path``, with ``path`` as its file name.

    ``err`` itself, or the error a ``RuntimeError`` was raised from (torch reports a refused
    write so, raised while handling the ``OSError``); ``None`` when no system error caused it.
    The name of the temporary file written is replaced by ``path``.
    """
    if not isinstance(err, (OSError, RuntimeError)):
        return None
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno is not None:
            if cause is err and cause.filename == str(path):
                return cause
            strerror = cause.strerror or os.strerror(cause.errno)
            return OSError(cause.errno, strerror, str(path))
        cause = cause.__cause__ or cause.__context__
    return None


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` by ``text`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``fig.savefig(path, **kwargs)`` atomically (see :func:`atomic_open`): a failed write
    keeps the previous figure. The format comes from ``path``'s suffix unless given."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".").lower() or None)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, **kwargs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_open` writes left in
    ``directory`` (those whose writing process no longer exists); returns the paths removed.

    A kill at the wrong moment (``SIGKILL``, power loss) leaves ``.<name>.<pid>.<hex>.tmp``
    behind, since no ``except`` block runs; the next run in the directory calls this.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TMP.match(entry.name)
        if match is None or not entry.is_file() or _pid_alive(int(match["pid"])):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
