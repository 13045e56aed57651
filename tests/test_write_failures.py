"""A write refused by the system (``ulimit -f``, a full disk, a quota) during ``unimix train
--resume`` or ``unimix study``: one line on stderr naming the file and the fix, exit status 2,
and every file written before kept whole (issue 20, item 10).

The commands run in a subprocess under ``RLIMIT_FSIZE`` (Python ignores ``SIGXFSZ``, so the
write fails with ``EFBIG``)."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_study import tiny_overrides
from unimix.cli import error_message
from unimix.train.fileio import atomic_open, atomic_write_text

TINY = tiny_overrides(2)
STUDY = [
    "--methods", "none,mixup", "--seeds", "2", "--regimes", "low", "--pgd-steps", "1",
    "--workers", "1", "--no-progress",
    *(arg for item in TINY for arg in ("--set", item)),
]  # fmt: skip


def unimix_limited(limit: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m unimix ARGV`` with files limited to ``limit`` bytes."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "unimix", *argv],
        preexec_fn=limit_files,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        timeout=600,
    )


def the_error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"unimix {command}: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


# ---- the one place: the CLI's message, and the file named by the atomic writer -----------------


@pytest.mark.parametrize("code", [errno.EFBIG, errno.ENOSPC, errno.EDQUOT])
def test_a_refused_write_is_one_line_naming_the_file_and_the_fix(code):
    err = OSError(code, os.strerror(code), "/runs/r/checkpoint.pt")
    message = error_message(err, "train")
    assert message is not None and "\n" not in message
    assert message.startswith("cannot write /runs/r/checkpoint.pt: ")
    assert ("ulimit -f" in message) == (code == errno.EFBIG)
    # torch wraps the refused write in a RuntimeError: still one line, not a bug's traceback
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    wrapped.__context__ = err
    assert error_message(wrapped, "train") == message


def test_the_atomic_writer_names_the_target_not_its_temporary(tmp_path):
    from unimix.train.fileio import write_failure

    path = tmp_path / "results.csv"
    atomic_write_text(path, "old\n")
    with pytest.raises(OSError) as raised, atomic_open(path) as fh:
        fh.write("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_text() == "old\n" and no_temporaries(tmp_path)
    assert write_failure(ValueError("no system error"), path) is None


# ---- the commands, under a real file size limit -------------------------------------------------


@pytest.fixture
def interrupted_run(tmp_path) -> Path:
    """A run stopped in its second epoch (a checkpoint of epoch 1 to resume)."""
    from unimix.train import TrainConfig, apply_overrides, load_recipe, train

    cfg = TrainConfig.from_dict(apply_overrides(load_recipe("digits"), [*TINY, "epochs=3"]))

    def crash(epoch: int, step: int) -> None:
        if epoch == 2:
            raise RuntimeError("crash")

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, run, progress=False, on_step=crash)
    return run


@pytest.mark.parametrize("limit", [4096, 300])
def test_train_resume_over_the_file_size_limit(interrupted_run, limit):
    before = snapshot(interrupted_run)
    assert len(before["checkpoint.pt"]) > 4096
    line = the_error_line(
        unimix_limited(limit, "train", "--resume", str(interrupted_run), "--no-progress"),
        "train",
    )
    assert f"cannot write {interrupted_run}{os.sep}" in line and "ulimit -f" in line
    assert snapshot(interrupted_run) == before and no_temporaries(interrupted_run)


@pytest.mark.slow
def test_study_over_the_file_size_limit_keeps_every_file_whole(tmp_path):
    out = tmp_path / "study"
    done = unimix_limited(resource.RLIM_INFINITY, "study", "--out", str(out), *STUDY)
    assert done.returncode == 0, done.stderr
    before = snapshot(out)
    limit = 100_000
    big = {name for name, data in before.items() if len(data) > limit}
    assert big, "the tiny study has no file over the limit"
    # the rerun skips the finished runs and rewrites the results, figures and report
    line = the_error_line(unimix_limited(limit, "study", "--out", str(out), *STUDY), "study")
    assert f"cannot write {out}{os.sep}" in line and "ulimit -f" in line
    after = snapshot(out)
    assert set(after) == set(before) and no_temporaries(out)
    assert all(after[name] == before[name] for name in big)  # none of them half-written


@pytest.mark.slow
def test_a_new_study_over_the_file_size_limit_leaves_nothing(tmp_path):
    out = tmp_path / "study"
    line = the_error_line(unimix_limited(20_000, "study", "--out", str(out), *STUDY), "study")
    assert "checkpoint.pt" in line and "ulimit -f" in line
    assert not out.exists()
