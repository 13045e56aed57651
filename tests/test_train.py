"""The trainer end to end on tiny digits runs (8×8, a few epochs): run directory, metrics,
exact resume after Ctrl-C or a crash, clear errors, mixed precision, collate mixing."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
import yaml

import unimix
from unimix.train import (
    CheckpointError,
    TrainConfig,
    TrainingInterrupted,
    load_checkpoint,
    load_result,
    load_run,
    read_metrics,
    save_checkpoint,
    train,
)

TINY = {
    "dataset": "digits",
    "image_size": 8,
    "model": "small_cnn",
    "model_kwargs": {"widths": [16, 32]},
    "batch_size": 64,
    "epochs": 2,
    "lr": 0.3,
    "warmup_epochs": 0.5,
    "methods": "hmix",
    "device": "cpu",
    "tensorboard": False,
}


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run that mixes two methods per image, with label smoothing."""
    cfg = tiny(epochs=3, methods=["mixup", "cutmix"], mode="elem", label_smoothing=0.1)
    out = tmp_path_factory.mktemp("reference")
    return cfg, train(cfg, out, progress=False)


def test_run_directory(tmp_path):
    cfg = tiny()
    result = train(cfg, tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.yaml",
        "metrics.csv",
        "metrics.jsonl",
        "checkpoint.pt",
    }
    assert TrainConfig.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, hist in zip(rows, result.history, strict=True):
        for key in (
            "train_loss",
            "test_acc",
            "mix_ms",
            "step_ms",
            "mix_overhead_pct",
            "images_per_s",
        ):
            assert float(row[key]) == pytest.approx(hist[key], rel=1e-12)
        assert 0 < hist["mix_ms"] < hist["step_ms"]
        assert hist["mix_overhead_pct"] == pytest.approx(100 * hist["mix_ms"] / hist["step_ms"])
        assert hist["train_images"] == 22 * 64  # 1437 training digits, drop_last
    assert read_metrics(tmp_path) == result.history
    assert result.mix_overhead_pct == pytest.approx(100 * result.mix_ms / result.step_ms)
    assert result.finished and len(result.history) == 2 and result.time_per_epoch_s > 0

    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["finished"] and state["epoch"] == 2 and state["step"] == 44
    assert state["model"].keys() == result.model.state_dict().keys()

    # load_run: the checkpoint's weights in eval mode, and the test metrics it logged
    model, spec, config = load_run(tmp_path)
    assert not model.training and config == cfg.to_dict()
    assert_same_weights(model, result.model)
    images, labels = spec.test_tensors()
    with torch.no_grad():
        logits = model(images)
    assert (logits.argmax(1) == labels).double().mean().item() == pytest.approx(result.test_acc)
    assert F.cross_entropy(logits, labels).item() == pytest.approx(result.test_loss, rel=1e-5)


def test_resume_after_ctrl_c_in_mid_epoch_is_exact(tmp_path, reference):
    cfg, full = reference

    def press_ctrl_c(epoch, step):
        if step == 30:  # epoch 2, batch 8 of 22
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="Resume with"):
        train(cfg, tmp_path, progress=False, on_step=press_ctrl_c)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["batch"], state["step"], state["finished"]) == (1, 8, 30, False)
    assert len(read_metrics(tmp_path)) == 1
    with pytest.raises(FileExistsError, match="unfinished run.*resume"):
        train(cfg, tmp_path, progress=False)

    resumed = train(cfg, tmp_path, progress=False, resume=True)
    assert_same_weights(resumed.model, full.model)
    for a, b in zip(resumed.history, full.history, strict=True):
        for key in (
            "step",
            "lr",
            "train_loss",
            "train_acc",
            "train_images",
            "test_loss",
            "test_acc",
        ):
            assert a[key] == b[key], key


def test_resume_after_a_crash_restarts_the_epoch_exactly(tmp_path, reference):
    cfg, full = reference

    def crash(epoch, step):
        if epoch == 3 and step == 50:
            raise RuntimeError("simulated power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, tmp_path, progress=False, on_step=crash)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["batch"], state["finished"]) == (2, 0, False)
    # metrics.csv still holds exactly the checkpoint's epochs
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    resumed = train(cfg, tmp_path, progress=False, resume=True)
    assert_same_weights(resumed.model, full.model)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_finished_run_is_returned_without_training(tmp_path):
    cfg = tiny(epochs=1, methods="none")
    first = train(cfg, tmp_path, progress=False)
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    steps = []
    again = train(cfg, tmp_path, progress=False, on_step=lambda e, s: steps.append(s))
    assert steps == [] and (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert again.history == first.history and again.finished
    assert_same_weights(again.model, first.model)
    assert load_result(tmp_path).history == first.history


def test_mismatched_configuration_is_an_error(tmp_path):
    cfg = tiny(epochs=1)
    train(cfg, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"another configuration \(lr: saved 0.3, given 0.2"):
        train(cfg.replace(lr=0.2), tmp_path, progress=False, resume=True)
    # where it runs may change
    assert train(cfg.replace(num_workers=2), tmp_path, progress=False).finished


def test_corrupt_or_foreign_checkpoint_is_an_error(tmp_path):
    cfg = tiny(epochs=1)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(cfg, run, progress=False, resume=True)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(run)
    ckpt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    torch.save({"state_dict": {}}, ckpt)
    with pytest.raises(CheckpointError, match="not a unimix training checkpoint"):
        load_checkpoint(ckpt)


def test_checkpoint_from_other_world_size_or_model_is_an_error(tmp_path):
    cfg = tiny(epochs=2)

    def crash(epoch, step):
        if epoch == 2:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, tmp_path, progress=False, on_step=crash)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "world_size": 2})
    with pytest.raises(CheckpointError, match="written by 2 process"):
        train(cfg, tmp_path, progress=False, resume=True)
    state["model"] = {k: v for k, v in state["model"].items() if "fc" not in k}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        train(cfg, tmp_path, progress=False, resume=True)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(
        path,
        {"config": {}, "model": {"w": torch.ones(3)}, "epoch": 1, "step": 1, "finished": False},
    )

    def torn_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"config": {}, "model": {}, "epoch": 2, "step": 2, "finished": False})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_no_mixing_uses_plain_cross_entropy(tmp_path, monkeypatch):
    calls = {"soft": 0}

    def no_mixer(*args, **kwargs):
        raise AssertionError("a Mixer was built for methods: none")

    def soft(logits, targets):
        calls["soft"] += 1
        return unimix.mix.soft_target_cross_entropy(logits, targets)

    monkeypatch.setattr(unimix, "Mixer", no_mixer)
    monkeypatch.setattr(unimix, "soft_target_cross_entropy", soft)
    result = train(
        tiny(epochs=1, methods="none", label_smoothing=0.1), tmp_path / "a", progress=False
    )
    assert calls["soft"] == 0 and result.final["mix_ms"] == 0 and result.mix_overhead_pct == 0
    monkeypatch.undo()
    monkeypatch.setattr(unimix, "soft_target_cross_entropy", soft)
    train(tiny(epochs=1, methods="gmix"), tmp_path / "b", progress=False)
    assert calls["soft"] == 22


def test_steps_budget_and_schedule(tmp_path):
    result = train(
        tiny(epochs=1, steps=30, schedule="cosine", warmup_epochs=0), tmp_path, progress=False
    )
    assert [r["step"] for r in result.history] == [22, 30]
    # the cosine spans the 30 steps: the last step's lr is the schedule's last value
    assert result.history[-1]["lr"] == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * 29 / 30)))


def test_mixed_precision_channels_last_follow_full_precision(tmp_path):
    cfg = tiny(epochs=2, methods="none", grad_clip=5.0)
    full = train(cfg, tmp_path / "fp32", progress=False)
    assert full.test_acc > 0.5
    for amp in ("bf16", "fp16"):
        low = train(cfg.replace(amp=amp, channels_last=True), tmp_path / amp, progress=False)
        assert all(math.isfinite(r["train_loss"]) for r in low.history)
        assert low.train_loss == pytest.approx(full.train_loss, rel=0.15), amp
        assert abs(low.test_acc - full.test_acc) < 0.1, amp


def test_collate_mixing(tmp_path):
    cfg = tiny(epochs=1, mix_where="collate", methods="cutmix")
    result = train(cfg, tmp_path / "collate", progress=False)
    row = result.final
    assert 0 < row["mix_ms"] < row["step_ms"] and math.isfinite(row["train_loss"])
    # the same mixer on the same batches; the collate function draws a stream per batch (so that
    # loader workers and resumes are exact, tests/test_train_reliability.py), the device one
    # stream per run: the same training objective, other draws
    device = train(cfg.replace(mix_where="device"), tmp_path / "device", progress=False)
    assert row["train_loss"] == pytest.approx(device.final["train_loss"], rel=0.05)


def test_method_params_routed_to_the_methods_that_take_them(tmp_path):
    # r is HMix's; a mixup run with the recipe's r must not fail, a misspelt parameter must
    train(
        tiny(epochs=1, steps=2, methods="mixup", method_params={"r": 0.3}),
        tmp_path / "a",
        progress=False,
    )
    with pytest.raises(ValueError, match="taken by no mixing method"):
        train(
            tiny(epochs=1, methods="hmix", method_params={"ratio": 0.3}),
            tmp_path / "b",
            progress=False,
        )


@pytest.mark.slow
def test_ctrl_c_of_the_command_saves_and_exits_130(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "unimix.cli",
        "train",
        "--recipe",
        "digits",
        "--image-size",
        "8",
        "--set",
        "model_kwargs.widths=[16, 32]",
        "--epochs",
        "200",
        "--methods",
        "cutmix",
        "--no-tensorboard",
        "--no-progress",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert f"Resume with: unimix train --resume {out}" in output
    state = load_checkpoint(out / "checkpoint.pt")
    assert not state["finished"] and state["step"] > 0
    assert len(read_metrics(out)) == state["epoch"]


def test_metrics_logger_tensorboard_and_epoch_line(tmp_path, monkeypatch):
    import types

    from unimix.train.logging import EpochProgress, MetricsLogger, format_epoch_line

    scalars = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, step):
            scalars.append((key, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer)
    )
    row = {
        "epoch": 1,
        "train_loss": 0.5,
        "train_acc": 0.9,
        "test_loss": math.nan,
        "test_acc": math.nan,
        "images_per_s": 1000.0,
        "epoch_s": 2.0,
        "mix_overhead_pct": 1.5,
    }
    logger = MetricsLogger(tmp_path, tensorboard=True)
    logger.write([row])
    logger.write([row, {**row, "epoch": 2, "test_loss": 0.1, "test_acc": 0.97}])
    logger.close()
    # each epoch logged once, NaN (not evaluated) left out
    assert [s for s in scalars if s[0] == "train_loss"] == [
        ("train_loss", 0.5, 1),
        ("train_loss", 0.5, 2),
    ]
    assert [s[2] for s in scalars if s[0] == "test_acc"] == [2]
    assert read_metrics(tmp_path)[0]["test_acc"] is None
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1].split(",")[3] == ""

    line = format_epoch_line({**row, "epoch": 2, "test_loss": 0.1, "test_acc": 0.97}, 10, eta_s=75)
    assert "epoch 2/10" in line and "acc 97.00%" in line and "1000 img/s" in line
    assert "mix 1.50% of step" in line and "ETA 1:15" in line

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = EpochProgress(total=4, epoch=1, epochs=2, enabled=True)
    assert bar.active
    bar.update(1, loss="0.1")
    bar.close()
    assert not EpochProgress(total=4, epoch=1, epochs=2, enabled=False).active


def test_command_resume(tmp_path, capsys, reference):
    from unimix.cli import main

    cfg, full = reference

    def crash(epoch, step):
        if epoch == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path, progress=False, on_step=crash)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.5"]) == 2
    assert "['lr'] cannot change" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--num-workers", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming from the end of epoch 1" in out and "done:" in out
    model, _, _ = load_run(tmp_path)
    assert_same_weights(model, full.model)
    # a finished run is left as it is
    assert main(["train", "--resume", str(tmp_path)]) == 0
    assert "already finished" in capsys.readouterr().out
