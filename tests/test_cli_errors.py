"""Every expected error of every command is ONE stderr line ``unimix CMD: error: …`` and exit 2.

The cases of issue 11 ("CLI errors are tracebacks"): bad ``unimix evaluate`` directories, invalid
YAML on resume, read-only outputs, a misspelt method, bad study arguments, ``--device cuda``
without CUDA; plus: ``unimix evaluate`` checks that it can write before it computes, and a failed
command leaves no half-made output folder behind. ``--debug`` lets the traceback through.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unimix.cli import main
from unimix.errors import (
    MissingExtraError,
    UsageError,
    check_device,
    check_output_dir,
    check_output_file,
    missing_extra,
    one_line,
    removed_on_failure,
)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def cli(capsys, *argv) -> tuple[int, list[str], str]:
    """``(exit status, stderr lines, stdout)`` of ``unimix ARGV`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's own exits
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def one_error(capsys, command: str, *argv, match: str | None = None) -> str:
    """Run ``unimix COMMAND ARGV`` and check it fails with exactly one error line."""
    code, lines, _ = cli(capsys, command, *argv)
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"unimix {command}: error: "), lines[0]
    assert "Traceback" not in lines[0]
    if match is not None:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.fixture
def read_only(monkeypatch):
    """Every folder refuses new files (a root user ignores chmod, so stand in for the OS)."""
    import unimix.errors

    real = os.access

    def access(path, mode, *args, **kwargs):
        return False if mode & os.W_OK else real(path, mode, *args, **kwargs)

    monkeypatch.setattr(unimix.errors.os, "access", access)


# -- train --------------------------------------------------------------------------------------
def test_train_misspelt_method_lists_the_known_methods(tmp_path, capsys):
    line = one_error(capsys, "train", "--methods", "mixpu", "--out", tmp_path / "r")
    assert "'mixpu'" in line and "known methods:" in line
    for name in ("mixup", "cutmix", "hmix", "gmix", "none"):
        assert name in line
    assert entries(tmp_path) == []


def test_train_bad_values_and_arguments(tmp_path, capsys):
    one_error(capsys, "train", "--epochs", "0", "--out", tmp_path / "r", match="epochs")
    one_error(capsys, "train", "--set", "nonsense", "--out", tmp_path / "r", match="key=value")
    one_error(capsys, "train", "--set", "no_such_key=1", "--out", tmp_path / "r")
    one_error(capsys, "train", "--recipe", tmp_path / "absent.yaml", "--out", tmp_path / "r")
    one_error(capsys, "train", "--no-such-flag", match="unrecognized arguments")
    one_error(capsys, "train", match="--out DIR is required")
    assert entries(tmp_path) == []


def test_train_out_naming_a_file_or_below_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    one_error(capsys, "train", "--out", tmp_path / "f", match="is a file")
    one_error(capsys, "train", "--out", tmp_path / "f" / "run", match="is a file")
    assert (tmp_path / "f").read_text() == "mine"


def test_train_read_only_output(tmp_path, capsys, read_only):
    one_error(capsys, "train", "--out", tmp_path / "r", match="not writable")
    assert entries(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores chmod")
def test_train_read_only_output_for_real(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        one_error(capsys, "train", "--out", locked / "r", match="not writable")
    finally:
        locked.chmod(0o700)


def test_train_resume_with_invalid_yaml_or_nothing_to_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: [1, 2\nlr: {")
    line = one_error(capsys, "train", "--resume", run, match="not valid YAML")
    assert "config.yaml" in line and "line" in line
    (run / "config.yaml").write_text("- a list\n- not a mapping\n")
    one_error(capsys, "train", "--resume", run, match="mapping")
    (run / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    one_error(capsys, "train", "--resume", run, match="config.yaml")
    one_error(capsys, "train", "--resume", tmp_path / "absent", match="no run to resume")
    assert entries(run) == ["config.yaml"]  # nothing written into it


def test_train_resume_with_a_damaged_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    one_error(capsys, "train", "--resume", run)
    assert entries(run) == ["checkpoint.pt"]


@NO_CUDA
def test_train_device_cuda_without_cuda(tmp_path, capsys):
    one_error(capsys, "train", "--device", "cuda", "--out", tmp_path / "r", match="CUDA")
    one_error(capsys, "train", "--set", "device=cuda:3", "--out", tmp_path / "r", match="CUDA")
    one_error(capsys, "train", "--device", "gpu0", "--out", tmp_path / "r", match="device")
    assert entries(tmp_path) == []


def test_train_missing_data_leaves_no_half_made_run(tmp_path, capsys):
    args = ("--dataset", "cifar10", "--data-dir", tmp_path / "no-data", "--model", "small_cnn")
    one_error(capsys, "train", *args, "--out", tmp_path / "a" / "b" / "run", match="no-data")
    assert entries(tmp_path) == []  # the folders it made (a/b/run) are gone
    (tmp_path / "empty").mkdir()
    one_error(capsys, "train", *args, "--out", tmp_path / "empty", match="no-data")
    assert entries(tmp_path) == ["empty"] and entries(tmp_path / "empty") == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, lines, _ = cli(capsys, "train", *args, "--out", tmp_path / "mine")
    assert code == 2 and len(lines) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"  # never removed


def test_debug_lets_the_traceback_through(tmp_path, capsys):
    with pytest.raises(ValueError, match="mixpu"):  # the Mixer's own error, from TrainConfig
        main(["--debug", "train", "--methods", "mixpu", "--out", str(tmp_path / "r")])
    with pytest.raises(ValueError, match="epochs"):
        main(["train", "--epochs", "0", "--out", str(tmp_path / "r"), "--debug"])


# -- evaluate -----------------------------------------------------------------------------------
def test_evaluate_bad_run_directories(tmp_path, capsys):
    one_error(capsys, "evaluate", tmp_path / "absent", match="does not exist")
    (tmp_path / "file").write_text("x")
    one_error(capsys, "evaluate", tmp_path / "file", match="not a directory")
    (tmp_path / "empty").mkdir()
    one_error(capsys, "evaluate", tmp_path / "empty", match="empty folder")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    one_error(capsys, "evaluate", tmp_path / "other", match="without checkpoint.pt")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"\x00" * 64)
    one_error(capsys, "evaluate", bad, "--device", "cpu")
    (bad / "config.yaml").write_text("model: [")
    one_error(capsys, "evaluate", bad, "--device", "cpu")
    assert entries(bad) == ["checkpoint.pt", "config.yaml"]  # no evaluation.json left


def test_evaluate_bad_arguments(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    one_error(capsys, "evaluate", run, "--batch-size", "0", match="--batch-size")
    one_error(capsys, "evaluate", run, "--max-batches", "0", match="--max-batches")
    one_error(capsys, "evaluate", run, "--eps", "abc", match="ε")
    one_error(capsys, "evaluate", run, "--out", tmp_path, match="is a directory")
    one_error(capsys, "evaluate", run, "--out", run / "checkpoint.pt" / "e.json", match="file")


@pytest.fixture
def no_evaluation(monkeypatch):
    """Fail the test if an evaluation starts."""
    import unimix.evaluate

    def forbidden(*args, **kwargs):
        raise AssertionError("evaluation started before the output was checked")

    monkeypatch.setattr(unimix.evaluate, "evaluate_run", forbidden)


def test_evaluate_checks_it_can_write_before_it_computes(
    tmp_path, capsys, read_only, no_evaluation
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    one_error(capsys, "evaluate", run, "--device", "cpu", match="not writable")
    one_error(capsys, "evaluate", run, "--out", tmp_path / "new" / "e.json", match="not writable")
    assert entries(tmp_path) == ["run"]


@NO_CUDA
def test_evaluate_device_cuda_without_cuda(tmp_path, capsys, no_evaluation):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    one_error(capsys, "evaluate", run, "--device", "cuda", match="CUDA is not available")


def test_evaluate_failure_removes_the_folder_it_made(tmp_path, capsys, monkeypatch):
    import unimix.evaluate

    def broken(*args, **kwargs):
        raise ValueError("the run's data_dir does not exist")

    monkeypatch.setattr(unimix.evaluate, "evaluate_run", broken)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    one_error(capsys, "evaluate", run, "--out", tmp_path / "new" / "deep" / "e.json")
    assert entries(tmp_path) == ["run"]


# -- study --------------------------------------------------------------------------------------
def test_study_bad_arguments(tmp_path, capsys):
    out = tmp_path / "s"
    one_error(capsys, "study", "--epochs", "0", "--out", out, match="epochs")
    one_error(capsys, "study", "--methods", "mixpu", "--out", out, match="mixpu")
    one_error(capsys, "study", "--seeds", "0", "--out", out, match="seeds")
    (tmp_path / "f").write_text("x")
    one_error(capsys, "study", "--out", tmp_path / "f", match="is a file")
    assert entries(tmp_path) == ["f"]


def test_study_missing_data_directory_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "s"
    args = ("--dataset", "cifar10", "--data-dir", tmp_path / "none", "--methods", "none")
    one_error(capsys, "study", *args, "--seeds", "1", "--epochs", "1", "--out", out)
    assert entries(tmp_path) == []


@NO_CUDA
def test_study_device_cuda_without_cuda(tmp_path, capsys):
    one_error(capsys, "study", "--device", "cuda", "--out", tmp_path / "s", match="CUDA")
    assert entries(tmp_path) == []


# -- profile ------------------------------------------------------------------------------------
def test_profile_bad_arguments(tmp_path, capsys):
    one_error(capsys, "profile", "--samples", "1", "--out", tmp_path / "p", match="--samples")
    one_error(capsys, "profile", "--alpha", "0", "--out", tmp_path / "p", match="--alpha")
    one_error(capsys, "profile", "--methods", "nope", "--out", tmp_path / "p", match="nope")
    (tmp_path / "f").write_text("x")
    one_error(capsys, "profile", "--out", tmp_path / "f", match="is a file")
    assert entries(tmp_path) == ["f"]


@NO_CUDA
def test_profile_device_cuda_without_cuda(tmp_path, capsys):
    one_error(capsys, "profile", "--device", "cuda", "--out", tmp_path / "p", match="CUDA")
    assert entries(tmp_path) == []


def test_profile_failure_removes_the_folder_it_made(tmp_path, capsys, monkeypatch):
    import unimix.theory

    def broken(*args, **kwargs):
        raise ValueError("size too small for this method")

    monkeypatch.setattr(unimix.theory, "distance_profile", broken)
    one_error(capsys, "profile", "--methods", "mixup", "--out", tmp_path / "p" / "q")
    assert entries(tmp_path) == []


# -- the pieces ---------------------------------------------------------------------------------
def test_no_command_prints_the_help(capsys):
    code, _, out = cli(capsys)
    assert code == 2 and "COMMAND" in out


def test_one_line_reduces_worker_tracebacks_and_newlines():
    worker = (
        "Caught DatasetFormatError in DataLoader worker process 0.\nOriginal Traceback (most "
        'recent call last):\n  File "x.py", line 1, in f\nunimix.data.base.DatasetFormatError: '
        "cannot read image '/d/a.png': truncated\n"
    )
    assert one_line(worker) == "cannot read image '/d/a.png': truncated"
    assert one_line("a\n  b\tc") == "a b c" and one_line("") == "unknown error"


def test_missing_extra_names_the_extra():
    err = ModuleNotFoundError("No module named 'yaml'", name="yaml")
    found = missing_extra(err, "study")
    assert isinstance(found, MissingExtraError) and found.extra == "study"
    assert "pip install 'unimix[study]'" in str(found)
    assert missing_extra(ModuleNotFoundError("x", name="scipy.stats"), "study").extra == "study"
    assert missing_extra(ModuleNotFoundError("x", name="scipy"), "theory").extra == "theory"
    assert missing_extra(ModuleNotFoundError("x", name="timm"), "study").extra == "vision"
    assert missing_extra(ModuleNotFoundError("x", name="unimix.nope"), "study") is None
    try:  # an ImportError re-raised with a hint keeps its cause
        try:
            raise ModuleNotFoundError("x", name="torchvision")
        except ModuleNotFoundError as inner:
            raise ImportError("ImageFolder datasets need torchvision") from inner
    except ImportError as outer:
        assert missing_extra(outer).extra == "vision"


def test_check_device():
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    with pytest.raises(UsageError, match="--device 'gpu'"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            check_device("cuda:0")
    else:
        assert check_device("cuda") == "cuda"
        with pytest.raises(UsageError, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")


def test_check_outputs(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checks create nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(UsageError, match="is a directory"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "x" / "e.json") == tmp_path / "x" / "e.json"
    assert entries(tmp_path) == ["f"]


def test_removed_on_failure_only_undoes_what_it_made(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt), removed_on_failure(target):
        target.mkdir(parents=True)
        (target / "config.yaml").write_text("x")
        raise KeyboardInterrupt
    assert entries(tmp_path) == []
    with pytest.raises(RuntimeError), removed_on_failure(target):  # a real result is kept
        target.mkdir(parents=True)
        (target / "checkpoint.pt").write_text("x")
        raise RuntimeError
    assert (target / "checkpoint.pt").exists()
    with pytest.raises(RuntimeError), removed_on_failure(target):  # it existed: kept
        (target / "more.txt").write_text("x")
        raise RuntimeError
    assert entries(target) == ["checkpoint.pt", "more.txt"]
    with removed_on_failure(tmp_path / "ok") as path:  # success: untouched
        path.mkdir()
    assert (tmp_path / "ok").is_dir()


def test_as_the_user_runs_it(tmp_path):
    """The installed entry point and ``python -m unimix``: one line, exit 2, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv in (
        [sys.executable, "-m", "unimix", "train", "--methods", "mixpu", "--out", "r"],
        [sys.executable, "-m", "unimix", "evaluate", "absent"],
    ):
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"unimix {argv[3]}: error: ")
    proc = subprocess.run(
        [sys.executable, "-m", "unimix", "--version"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("unimix ")


def test_removed_on_failure_never_removes_another_runs_folder(tmp_path):
    """Two commands started together on one new folder both see it missing on entry; the one
    refused (the other holds the run lock) must not remove the other's run."""
    target = tmp_path / "run"
    with pytest.raises(FileExistsError), removed_on_failure(target):
        target.mkdir()  # the other process made it
        raise FileExistsError("run is locked by pid 123")
    assert target.is_dir()
    target.rmdir()
    with pytest.raises(RuntimeError), removed_on_failure(target):
        target.mkdir()
        (target / ".unimix.lock").write_text("pid 123")  # a live run's lock
        raise RuntimeError
    assert (target / ".unimix.lock").exists()


def test_gallery_bad_arguments_are_one_line_and_draw_nothing(tmp_path, capsys):
    one_error(capsys, "gallery", "--lam", "2", "--out", tmp_path / "g", match="--lam must lie in")
    one_error(capsys, "gallery", "--r", "-1", "--out", tmp_path / "g", match="--r must lie in")
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_error(capsys, "gallery", "--out", afile / "x.png", match="is a file, not a directory")
    assert entries(tmp_path) == ["afile"]
