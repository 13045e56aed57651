"""Issue 11, trainer side: an owned run directory (lock, foreign folders), checksummed checkpoints,
stale temporary files, and exact resume with mixing in the loader's workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from unimix.train import (
    CheckpointError,
    TrainConfig,
    TrainingInterrupted,
    load_checkpoint,
    load_run,
    save_checkpoint,
    train,
)

TINY = {
    "dataset": "digits",
    "image_size": 8,
    "model": "small_cnn",
    "model_kwargs": {"widths": [8, 16]},
    "batch_size": 64,
    "epochs": 1,
    "steps": 3,
    "lr": 0.1,
    "methods": "hmix",
    "device": "cpu",
    "tensorboard": False,
}


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- the run directory is owned ------------------------------------------------------------


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    from unimix.train.rundir import LOCK_FILE, RunLockedError

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from unimix.train.rundir import RunLock\n"
            f"with RunLock({str(out)!r}):\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as err:
            train(tiny(), out, progress=False)
        message = str(err.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message
        assert "started" in message
        assert isinstance(err.value, FileExistsError)  # the CLI turns it into one error line
        assert not (out / "checkpoint.pt").exists()
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    # released: the lock file is gone and the run goes ahead
    assert not (out / LOCK_FILE).exists()
    assert train(tiny(), out, progress=False).finished
    assert not (out / LOCK_FILE).exists()


def dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    from unimix.train.rundir import LOCK_FILE

    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (out / LOCK_FILE).write_text(json.dumps(stale))
    assert train(tiny(), out, progress=False).finished
    assert not (out / LOCK_FILE).exists()


def test_without_flock_the_lock_file_names_its_holder(tmp_path, monkeypatch):
    """The fallback of file systems without flock: an exclusive file naming pid and host."""
    from unimix.train import rundir

    monkeypatch.setattr(rundir, "fcntl", None)
    out = tmp_path / "run"
    with rundir.RunLock(out):
        info = json.loads((out / rundir.LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(rundir.RunLockedError, match=f"pid {os.getpid()} on"):
            rundir.RunLock(out).acquire()
    assert not (out / rundir.LOCK_FILE).exists()
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (out / rundir.LOCK_FILE).write_text(json.dumps(stale))
    with rundir.RunLock(out):
        assert json.loads((out / rundir.LOCK_FILE).read_text())["pid"] == os.getpid()
    # another host's lock cannot be checked: refused, with the way out
    (out / rundir.LOCK_FILE).write_text(json.dumps({**stale, "host": "elsewhere"}))
    with pytest.raises(rundir.RunLockedError, match="delete"):
        rundir.RunLock(out).acquire()


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path):
    from unimix.train.rundir import NotARunDirectoryError

    out = tmp_path / "thesis"
    out.mkdir()
    (out / "metrics.csv").write_text("my own numbers\n")
    (out / "notes.txt").write_text("precious")
    with pytest.raises(NotARunDirectoryError, match="not a unimix run"):
        train(tiny(), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "notes.txt"]
    assert (out / "metrics.csv").read_text() == "my own numbers\n"
    # an empty folder, or a run's own folder, is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(tiny(), empty, progress=False).finished
    assert train(tiny(), empty, progress=False).finished  # finished run returned as is


# ---- checkpoints carry a checksum ---------------------------------------------------------


def _flip_a_weight_byte(path, weight: torch.Tensor) -> None:
    """Damage one byte of ``weight``'s storage inside the (uncompressed) zip, as a bad disk
    sector would, leaving the archive readable."""
    data = bytearray(path.read_bytes())
    start = bytes(data).find(weight.contiguous().numpy().tobytes())
    assert start >= 0
    data[start + 17] ^= 0x40
    path.write_bytes(bytes(data))


def test_damaged_tensor_bytes_are_a_checkpoint_error_on_every_load(tmp_path):
    run = tmp_path / "run"
    cfg = tiny(epochs=2, steps=None)

    def crash(epoch, step):
        if epoch == 2:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, run, progress=False, on_step=crash)
    ckpt = run / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    assert isinstance(state["checksum"], str) and len(state["checksum"]) == 64
    name = max(state["model"], key=lambda k: state["model"][k].numel())
    _flip_a_weight_byte(ckpt, state["model"][name])
    # the damaged file still unpickles: only the checksum finds the damage
    raw = torch.load(ckpt, weights_only=True)
    assert not torch.equal(raw["model"][name], state["model"][name])
    for load in (
        lambda: load_checkpoint(ckpt),
        lambda: train(cfg, run, progress=False, resume=True),
        lambda: load_run(run),
    ):
        with pytest.raises(CheckpointError, match="checksum"):
            load()


def test_damaged_metadata_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = {"config": {}, "model": {"w": torch.ones(3)}, "epoch": 1, "step": 5, "finished": False}
    save_checkpoint(path, state)
    good = torch.load(path, weights_only=True)
    torch.save({**good, "step": 6}, path)  # rewritten by hand, checksum left as it was
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    # resaving a loaded state (its old checksum in it) writes a fresh, valid checksum
    save_checkpoint(path, {**good, "step": 6})
    assert load_checkpoint(path)["step"] == 6


def test_stale_temporary_files_are_removed_on_the_next_start(tmp_path):
    run = tmp_path / "run"
    train(tiny(), run, progress=False)
    pid = dead_pid()
    stale = [run / f".checkpoint.pt.{pid}.deadbeef.tmp", run / f".metrics.csv.{pid}.0badf00d.tmp"]
    alive = run / f".evaluation.json.{os.getpid()}.12345678.tmp"  # a live writer's: kept
    alive.write_text("{")
    for p in stale:
        p.write_bytes(b"PK\x03\x04 half a checkpoint")
    keep = run / "notes.tmp"
    keep.write_text("not ours")
    train(tiny(), run, progress=False)
    assert not any(p.exists() for p in stale) and keep.exists() and alive.exists()


# ---- exact resume with mixing in the collate function and loader workers ------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny ImageFolder tree of 8×8 digits (3 classes): the DataLoader-with-workers path."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 24), ("val", 6)):
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            idx = rng.choice(np.flatnonzero(digits.target == c), per_class, replace=False)
            for i in idx:
                pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
                Image.fromarray(pixels).convert("RGB").save(root / split / f"c{c}" / f"{i}.png")
    return root


def _folder_cfg(root, **changes) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            **TINY,
            "dataset": "imagefolder",
            "data_dir": str(root),
            "batch_size": 16,
            "epochs": 2,
            "steps": None,
            "methods": ["cutmix", "mixup"],
            "mode": "elem",
            "mix_where": "collate",
            **changes,
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("mix_where", ["collate", "device"])
def test_mixing_with_workers_resumes_exactly_with_any_worker_count(tmp_path, folder, mix_where):
    reference = train(
        _folder_cfg(folder, num_workers=2, mix_where=mix_where), tmp_path / "ref", progress=False
    )
    # the worker count changes where the batches are made, not what they are
    serial = train(
        _folder_cfg(folder, num_workers=0, mix_where=mix_where), tmp_path / "serial", progress=False
    )
    assert same_weights(serial.model, reference.model)

    def press_ctrl_c(epoch, step):
        if step == 6:  # epoch 2, batch 2 of 4
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    interrupted = _folder_cfg(folder, num_workers=2, mix_where=mix_where)
    with pytest.raises(TrainingInterrupted):
        train(interrupted, run, progress=False, on_step=press_ctrl_c)
    assert load_checkpoint(run / "checkpoint.pt")["batch"] == 2
    resumed = train(interrupted.replace(num_workers=1), run, progress=False, resume=True)
    assert same_weights(resumed.model, reference.model)
