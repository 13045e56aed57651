"""Run and study folders: unimix writes only into folders it made, never through a link, and a
study or run lock protects a folder from a second writer (issue 20, items 1–4 and 11)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from unimix.cli import main
from unimix.study import StudyConfig, run_study
from unimix.study.studydir import (
    MARKER_FILE,
    NotAStudyDirectoryError,
    StudyLockedError,
    claim_study_directory,
)
from unimix.train.rundir import LOCK_FILE, RunDirectoryError, RunLock, check_run_directory

TINY = ["image_size=8", "epochs=1", "batch_size=64", "tensorboard=false"]


def _config(out, **kw):
    base = dict(
        out=out, methods=["none", "mixup"], seeds=1, regimes=["low"], overrides=list(TINY),
        device="cpu", pgd_steps=1, eps_list=[8 / 255], progress=False,
    )  # fmt: skip
    return StudyConfig(**{**base, **kw})


def _lookalike(folder):
    """A user's folder that looks like a study: config.yaml with a study key, results.csv, runs/."""
    folder.mkdir()
    (folder / "config.yaml").write_text("study: {quick: false}\nruns: {}\n")
    (folder / "results.csv").write_text("my,data\n1,2\n")
    (folder / "runs").mkdir()
    (folder / "runs" / "thesis.tex").write_text("precious")
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("fresh", [False, True])
def test_item1_a_folder_that_looks_like_a_study_is_refused_and_kept(tmp_path, fresh):
    out = tmp_path / "s"
    before = _lookalike(out)
    with pytest.raises(NotAStudyDirectoryError, match="not a unimix study directory"):
        run_study(_config(out, fresh=fresh), log=lambda s: None)
    assert _snapshot(out) == before and not (out / MARKER_FILE).exists()


def test_item1_the_cli_refuses_it_in_one_line_without_suggesting_fresh(tmp_path, capsys):
    out = tmp_path / "s"
    before = _lookalike(out)
    assert main(["study", "--out", str(out), "--regimes", "low", "--fresh"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a unimix study directory" in err
    assert "older study" not in err and "rerun with --fresh" not in err
    assert _snapshot(out) == before


def test_item1_fresh_deletes_only_what_a_study_wrote(tmp_path):
    out = tmp_path / "s"
    claim_study_directory(out).release()
    (out / "runs").mkdir()
    (out / "runs" / "old").mkdir()
    (out / "config.yaml").write_text("study: {}\n")
    (out / "results.csv").write_text("a\n")
    (out / "notes.txt").write_text("mine")  # the user's, beside a study
    from unimix.study.studydir import clear_study

    clear_study(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "notes.txt"]


def test_item2_a_symlinked_lock_is_never_followed(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("my work")
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(precious)
    with pytest.raises(RunDirectoryError, match="symbolic link"):
        RunLock(out).acquire()
    assert precious.read_text() == "my work"
    assert main(["train", "--out", str(out), "--set", "epochs=1"]) == 2
    assert precious.read_text() == "my work"


def test_item3_a_stray_lock_is_not_evidence_of_a_run(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK_FILE).write_text("{}")
    (out / "config.yaml").write_text("lr: 5  # my own\n")
    (out / "metrics.csv").write_text("mine\n")
    before = _snapshot(out)
    with pytest.raises(RunDirectoryError, match="not a unimix run"):
        check_run_directory(out)
    assert main(["train", "--out", str(out), "--set", "epochs=1"]) == 2
    assert _snapshot(out) == before
    # a lock left alone in a folder (a run killed before it wrote anything) is no obstacle
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / LOCK_FILE).write_text("{}")
    check_run_directory(lone)


def test_item4_fresh_respects_a_running_study(tmp_path):
    out = tmp_path / "s"
    lock = claim_study_directory(out)  # a study at work on out (same flock semantics as a process)
    try:
        (out / "runs").mkdir()
        (out / "runs" / "r1").mkdir()
        (out / "config.yaml").write_text("study: {quick: false}\n")
        before = _snapshot(out)
        with pytest.raises(StudyLockedError, match="another unimix study"):
            run_study(_config(out, fresh=True), log=lambda s: None)
        assert _snapshot(out) == before and (out / "runs" / "r1").is_dir()
    finally:
        lock.release()


def test_item11_forked_children_do_not_keep_a_killed_runs_lock(tmp_path):
    out = tmp_path / "r"
    script = (
        "import os, sys, time, signal\n"
        "from unimix.train.rundir import RunLock\n"
        f"RunLock({str(out)!r}).acquire()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(30); os._exit(0)\n"
        "print(pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    child = int(proc.stdout.split()[0])
    try:
        with RunLock(out):  # the child (a DataLoader worker, say) is still alive
            assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        os.kill(child, signal.SIGKILL)
        time.sleep(0.05)
