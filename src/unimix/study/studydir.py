"""Ownership of a study directory: a folder is a study only if unimix marked it as one.

``unimix study`` writes :data:`MARKER_FILE` into ``--out`` before anything else, and only into a
folder that is new or empty. A folder without the marker (however much it looks like a study: a
``config.yaml``, a ``results.csv``, a ``runs/`` folder) is never written to, with or without
``--fresh``; ``--fresh`` deletes only the entries a study writes (:data:`STUDY_ENTRIES`), nothing
else the folder holds.

While a study works on ``--out`` it holds :data:`STUDY_LOCK` there (the same advisory lock as a
run's, :class:`unimix.train.rundir.RunLock`): a second study on the same folder — ``--fresh`` or
not — is refused before it touches anything.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from unimix.train.rundir import LOCK_FILE, RunDirectoryError, RunLock, RunLockedError

__all__ = [
    "MARKER_FILE",
    "STUDY_LOCK",
    "STUDY_ENTRIES",
    "NotAStudyDirectoryError",
    "StudyLockedError",
    "is_study_directory",
    "check_study_directory",
    "claim_study_directory",
    "clear_study",
]

#: The file unimix writes into a study folder first, and only into a new or empty one: a folder
#: without it is never treated as a study.
MARKER_FILE = ".unimix-study"
#: The advisory lock a study holds on its folder while it works there.
STUDY_LOCK = ".unimix-study.lock"
#: What a study writes in its folder (and all that ``--fresh`` may delete).
STUDY_ENTRIES = (
    "runs",
    "figures",
    "slurm",
    "results.csv",
    "summary.csv",
    "claims.csv",
    "report.md",
    "report.html",
    "config.yaml",
)
_OWN = {MARKER_FILE, STUDY_LOCK, LOCK_FILE}


class NotAStudyDirectoryError(RunDirectoryError, ValueError):
    """The folder exists, holds files, and was not marked as a study by unimix."""


class StudyLockedError(RunLockedError, ValueError):
    """Another live ``unimix study`` works on the folder."""


def is_study_directory(path: str | os.PathLike[str]) -> bool:
    """Whether unimix marked ``path`` as a study (a regular marker file, not a link)."""
    marker = Path(path) / MARKER_FILE
    return marker.is_file() and not marker.is_symlink()


def check_study_directory(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` when it is a file, or a non-empty folder that unimix did not mark as a
    study. Writes nothing.

    Raises:
        NotAStudyDirectoryError: naming the folder, what it holds and the fix.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotAStudyDirectoryError(
            f"--out {str(path)!r} is a file; give a directory for the study"
        )
    if not path.is_dir() or is_study_directory(path):
        return
    entries = sorted(p.name for p in path.iterdir() if p.name not in _OWN or p.is_symlink())
    if entries:
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise NotAStudyDirectoryError(
            f"{str(path)!r} is not empty ({shown}) and is not a unimix study directory; nothing "
            "was written or deleted. Choose a new or empty --out (a study never writes into a "
            "folder it did not make, and --fresh never deletes one)"
        )


def claim_study_directory(path: str | os.PathLike[str]) -> RunLock:
    """Check ``path`` (:func:`check_study_directory`), take the study lock and mark the folder.

    Returns the held lock; release it (or use it as a context manager) when the study ends.

    Raises:
        NotAStudyDirectoryError: the folder is not a study.
        StudyLockedError: another study holds the folder.
    """
    path = Path(path)
    check_study_directory(path)
    lock = RunLock(path, STUDY_LOCK)
    try:
        lock.acquire()
    except RunLockedError as err:
        raise StudyLockedError(
            str(err).replace("unimix run", "unimix study", 1).split(". If no such")[0]
        ) from None
    try:
        check_study_directory(path)  # another process may have written it meanwhile
        marker = path / MARKER_FILE
        if not is_study_directory(path):
            fd = os.open(
                marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
            )
            with os.fdopen(fd, "w") as fh:
                json.dump({"unimix": "study", "format": 1}, fh)
    except BaseException:
        lock.release()
        raise
    return lock


def clear_study(path: str | os.PathLike[str]) -> None:
    """Delete what a study wrote in ``path`` (:data:`STUDY_ENTRIES`) and nothing else; only in a
    folder unimix marked as a study."""
    path = Path(path)
    if not is_study_directory(path):
        raise NotAStudyDirectoryError(f"{str(path)!r} is not a unimix study directory")
    for name in STUDY_ENTRIES:
        entry = path / name
        if entry.is_symlink() or entry.is_file():
            entry.unlink(missing_ok=True)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
