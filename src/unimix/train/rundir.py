"""Ownership of a run directory: one writer at a time, and never a folder that is not a run.

A run writes its directory only while it holds :data:`LOCK_FILE` there: an advisory lock
(``flock``) on that file, which the operating system releases when the process ends, however it
ends. A second writer is refused with :class:`RunLockedError`, naming the holder (pid, host,
start time) that the file records. A lock file left behind by a process that died is no lock: its
``flock`` went with the process, so the next run takes it over. On a platform without ``flock``
the file is created exclusively instead, and one naming a dead process on this host is taken
over. The lock file is never followed when it is a symbolic link (the run is refused), and only
the process that took the lock holds it: a forked child (a DataLoader worker) closes its copy, so a
killed run's workers do not keep its directory locked.

Before the lock is taken, :func:`check_run_directory` refuses a folder that exists, is not empty
and is not a unimix run (:class:`NotARunDirectoryError`), so a mistyped ``--out`` never
overwrites someone's files.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from unimix.train.fileio import _pid_alive

__all__ = [
    "LOCK_FILE",
    "RunDirectoryError",
    "RunLockedError",
    "NotARunDirectoryError",
    "RunLock",
    "check_run_directory",
    "is_run_directory",
]

#: The lock file of a run directory: one process at a time trains in it.
LOCK_FILE = ".unimix.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: The first line of every ``config.yaml`` a run writes: how a run directory is recognised.
CONFIG_HEADER = "# unimix train: resolved configuration"


class RunDirectoryError(FileExistsError):
    """A run directory that this run may not write into."""


class RunLockedError(RunDirectoryError):
    """Another live process is writing the run directory."""


class NotARunDirectoryError(RunDirectoryError):
    """The folder exists, holds files, and is not a unimix run."""


#: Descriptors of the locks this process holds; closed in forked children (see module docstring).
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def is_run_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a unimix run: its checkpoint, or the ``config.yaml`` a run writes
    (recognised by its first line). A lock file alone is no evidence: any process can leave one."""
    path = Path(path)
    if (path / "checkpoint.pt").is_file() and not (path / "checkpoint.pt").is_symlink():
        return True
    config = path / "config.yaml"
    if not config.is_file():
        return False
    try:
        with open(config, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() == CONFIG_HEADER
    except OSError:
        return False


def check_run_directory(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` when it is a file, or a non-empty folder that is not a unimix run.

    Raises:
        NotARunDirectoryError: with the fix (an empty or new folder, or the run's own folder).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotARunDirectoryError(f"{str(path)!r} is a file, not a run directory; choose a folder")
    if not path.is_dir() or is_run_directory(path):
        return
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE or p.is_symlink())
    if entries:
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise NotARunDirectoryError(
            f"{str(path)!r} is not empty ({shown}) and is not a unimix run; nothing was written. "
            "Choose a new or empty output directory"
        )


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class RunLock:
    """Hold the lock of run directory ``path`` (created if needed) while in the ``with`` block.

    Raises :class:`RunLockedError` when another live process holds it. Released (the lock file
    removed) on exit; a process that dies releases it too.
    """

    def __init__(self, path: str | os.PathLike[str], name: str = LOCK_FILE) -> None:
        self.dir = Path(path)
        self.path = self.dir / name
        self._fd: int | None = None

    def _refuse(self) -> RunLockedError:
        return RunLockedError(
            f"{str(self.dir)!r} is being written by another unimix run ({_holder(self.path)}); "
            "wait for it to finish, or choose another output directory. If no such process "
            f"exists any more, delete {str(self.path)!r}"
        )

    def _record(self) -> bytes:
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        return json.dumps(info).encode()

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"the lock of {str(self.dir)!r} is already held by this object")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise RunDirectoryError(
                f"{str(self.path)!r} is not a regular file (a symbolic link or a folder); unimix "
                "never writes through it. Remove it, or choose another output directory"
            )
        fd = self._acquire_flock() if fcntl is not None else self._acquire_exclusive()
        os.ftruncate(fd, 0)
        os.write(fd, self._record())
        os.fsync(fd)
        self._fd = fd
        _HELD.add(fd)
        return self

    def _acquire_flock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse() from None
            except OSError:  # a file system without flock (some network mounts)
                os.close(fd)
                return self._acquire_exclusive(take_unreadable=True)
            # The previous holder unlinks the file before unlocking it: if that happened between
            # our open and our flock, we hold a lock on a file nobody else will open; retry.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _stale(self, take_unreadable: bool) -> bool:
        """Whether the lock file names a process of this host that no longer exists."""
        try:
            info = json.loads(self.path.read_text())
            return info["host"] == socket.gethostname() and not _pid_alive(int(info["pid"]))
        except FileNotFoundError:
            return True
        except (OSError, ValueError, KeyError, TypeError):
            return take_unreadable

    def _acquire_exclusive(self, take_unreadable: bool = False) -> int:
        """Without ``flock``: create the file exclusively; take over one naming a dead process."""
        for _ in range(3):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
            except FileExistsError:
                if not self._stale(take_unreadable):
                    raise self._refuse() from None
                self.path.unlink(missing_ok=True)
        raise self._refuse()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking: see _acquire_flock
        finally:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
