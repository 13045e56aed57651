"""DistributedDataParallel for real: two CPU processes under torchrun with the gloo backend."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from unimix.train import (
    CheckpointError,
    load_checkpoint,
    load_run,
    read_metrics,
    save_checkpoint,
    state_digest,
    train,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed without gloo",
    ),
]


def test_two_processes_with_gloo(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
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
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.3",
        "--methods",
        "hmix",
        "--mode",
        "elem",
        "--device",
        "cpu",
        "--no-tensorboard",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done:") == 1  # only rank 0 reports
    assert proc.stdout.count("epoch 2/2") == 1

    # only rank 0 wrote, and nothing half-written is left behind
    assert {p.name for p in out.iterdir()} == {
        "config.yaml",
        "metrics.csv",
        "metrics.jsonl",
        "checkpoint.pt",
    }
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["world_size"] == 2 and state["finished"]

    # both ranks ended with bitwise identical weights (BatchNorm buffers included)
    digests = state["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] == state_digest(state["model"])

    # each rank had its own mixer stream
    mixers = [r["mixer"]["generator"] for r in state["ranks"]]
    assert not torch.equal(mixers[0], mixers[1])

    # logged metrics are global: every training image of both ranks counted once ...
    rows = read_metrics(out)
    spe = (1437 // 2) // 32  # DistributedSampler(drop_last) shares, 32 rows per rank
    assert [r["train_images"] for r in rows] == [spe * 64, spe * 64]
    assert [r["step"] for r in rows] == [spe, 2 * spe]
    # ... and the test metrics are those of the whole test set, not of one rank's half
    model, spec, _ = load_run(out)
    images, labels = spec.test_tensors()
    with torch.no_grad():
        logits = model(images)
    assert rows[-1]["test_acc"] == pytest.approx(
        (logits.argmax(1) == labels).double().mean().item()
    )
    assert rows[-1]["test_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)

    # the run's random streams belong to two ranks: one process cannot resume it
    save_checkpoint(out / "checkpoint.pt", {**state, "finished": False})
    with pytest.raises(CheckpointError, match="written by 2 process"):
        train(state["config"], out, resume=True, progress=False)
