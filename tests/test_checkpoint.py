"""Every random state a checkpoint saves is restored, and a resume that needs them is exact
(issue 13).

The trainer's "exact resume" tests use a model and data path that never draw from the global
RNGs, so they pass even if the restore skips one. Here: a capture → draw → restore → draw round
trip for each generator the checkpoint holds (Python ``random``, NumPy's legacy global state,
torch CPU, CUDA when present, the mixer's generator), directly and through a checkpoint file;
and a resume whose model draws from all three global RNGs in training (a random flip from
Python's, a random gain from NumPy's, dropout from torch's), so that skipping the restore of any
of them changes the final weights.
"""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from unimix.mix import Mixer
from unimix.models import available_models, register_model
from unimix.train import (
    CheckpointError,
    TrainConfig,
    TrainingInterrupted,
    load_checkpoint,
    save_checkpoint,
    train,
)
from unimix.train.checkpoint import capture_rng_state, restore_rng_state

CUDA = torch.cuda.is_available()


def global_draws() -> dict[str, object]:
    """One draw from each global generator, including the cached second Gaussians of Python's
    ``random.gauss`` and NumPy's ``standard_normal`` (part of their states)."""
    draws: dict[str, object] = {
        "python": (random.random(), random.gauss(0.0, 1.0), random.getrandbits(64)),
        "numpy": (np.random.random_sample(3).tolist(), float(np.random.standard_normal())),  # noqa: NPY002
        "torch": torch.rand(4).tolist() + torch.randint(0, 2**40, (2,)).tolist(),
    }
    if CUDA:
        draws["cuda"] = torch.rand(4, device="cuda").tolist()
    return draws


def _advance() -> None:
    """Put each generator in a state with a cached Gaussian, so restoring must bring it back."""
    random.gauss(0.0, 1.0)
    np.random.standard_normal()  # noqa: NPY002
    torch.randn(1)
    if CUDA:
        torch.randn(1, device="cuda")


@pytest.fixture(autouse=True)
def _keep_global_rngs():
    """Leave the global generators as this test found them."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())  # noqa: NPY002
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])  # noqa: NPY002
    torch.set_rng_state(saved[2])


def test_capture_draw_restore_draw_repeats_every_global_generator():
    if CUDA:
        torch.cuda.init()
    _advance()
    state = capture_rng_state()
    assert {"python", "numpy", "torch"} <= set(state)
    if CUDA:
        assert "cuda" in state
    first = global_draws()
    restore_rng_state(state)
    assert global_draws() == first
    # and again from the same capture: restoring does not consume it
    restore_rng_state(state)
    assert global_draws() == first


@pytest.mark.parametrize("stream", ["python", "numpy", "torch"])
def test_restore_brings_back_each_generator_on_its_own(stream):
    """A restore sets every generator, not just the one drawn from last: draw from one stream
    only between capture and restore, and that stream must repeat."""
    _advance()
    state = capture_rng_state()
    first = global_draws()[stream]
    for _ in range(3):  # move every stream on
        global_draws()
    restore_rng_state(state)
    assert global_draws()[stream] == first


def test_round_trip_through_a_checkpoint_file(tmp_path):
    _advance()
    mixer = Mixer("hmix", num_classes=3, generator=torch.Generator().manual_seed(5))
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    mixer(images, labels)  # the mixer's generator is not at its seed any more
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(
        path,
        {
            "config": {},
            "model": {},
            "epoch": 0,
            "step": 0,
            "finished": False,
            "ranks": [{"rng": capture_rng_state(), "mixer": mixer.state_dict()}],
        },
    )
    first = global_draws()
    first_mix = mixer(images, labels)
    state = load_checkpoint(path)  # weights_only: the states survive the safe loader
    restore_rng_state(state["ranks"][0]["rng"])
    fresh = Mixer("hmix", num_classes=3, generator=torch.Generator().manual_seed(99))
    fresh.load_state_dict(state["ranks"][0]["mixer"])
    assert global_draws() == first
    second_mix = fresh(images, labels)
    assert torch.equal(first_mix[0], second_mix[0]) and torch.equal(first_mix[1], second_mix[1])


@pytest.mark.parametrize("method", ["mixup", "cutmix", "hmix", "gmix"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixer_generator_round_trip(method, mode):
    mixer = Mixer(method, mode=mode, num_classes=4, generator=torch.Generator().manual_seed(1))
    images, labels = torch.rand(6, 3, 12, 10), torch.tensor([0, 1, 2, 3, 0, 1])
    mixer(images, labels)
    saved = mixer.state_dict()
    first = [mixer(images, labels, return_info=True) for _ in range(3)]
    mixer.load_state_dict(saved)
    second = [mixer(images, labels, return_info=True) for _ in range(3)]
    for (x1, y1, i1), (x2, y2, i2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(i1.lam, i2.lam) and torch.equal(i1.partner, i2.partner)
    # the draws do change from call to call (the round trip is not vacuous)
    assert not torch.equal(first[0][0], first[1][0])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_generator_round_trip_on_every_device():
    torch.cuda.init()
    state = capture_rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = [torch.rand(3, device=f"cuda:{i}").tolist() for i in range(torch.cuda.device_count())]
    restore_rng_state(state)
    assert [
        torch.rand(3, device=f"cuda:{i}").tolist() for i in range(torch.cuda.device_count())
    ] == first


# -- a resume that depends on every global RNG ------------------------------------------------

MODEL = "issue13_global_rng_net"


class GlobalRngNet(nn.Module):
    """A linear classifier whose training forward draws from every global generator: a random
    horizontal flip (Python ``random``), a random gain (NumPy) and dropout (torch) — what a
    model with dropout and a data path with a third-party random augmentation do."""

    def __init__(self, num_classes: int, in_chans: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans * image_size[0] * image_size[1], num_classes)
        self.drop = nn.Dropout(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if random.random() < 0.5:
                x = x.flip(-1)
            x = x * float(np.random.uniform(0.5, 1.5))  # noqa: NPY002
        return self.fc(self.drop(x.flatten(1)))


if MODEL not in available_models():

    @register_model(MODEL)
    def _global_rng_net(num_classes: int, in_chans: int, image_size: tuple[int, int], **kw):
        return GlobalRngNet(num_classes, in_chans, image_size, **kw)


CONFIG = {
    "dataset": "digits",
    "image_size": 8,
    "model": MODEL,
    "batch_size": 64,
    "epochs": 2,
    "lr": 0.1,
    "warmup_epochs": 0.5,
    "methods": "hmix",
    "device": "cpu",
    "tensorboard": False,
    "channels_last": False,
}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_of_a_run_drawing_from_every_global_rng_is_exact(tmp_path):
    cfg = TrainConfig.from_dict(CONFIG)
    full = train(cfg, tmp_path / "full", progress=False)

    def press_ctrl_c(epoch: int, step: int) -> None:
        if step == 30:  # epoch 2, batch 8 of 22: a mid-epoch checkpoint
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted):
        train(cfg, run, progress=False, on_step=press_ctrl_c)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 30
    # the process's global generators move on before the resume, as in a new session
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    resumed = train(cfg, run, progress=False, resume=True)
    assert _same_weights(resumed.model, full.model)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]


# -- load_checkpoint and state_digest: what the mutation run found untested -------------------

MINIMAL = {
    "config": {},
    "model": {"w": torch.arange(3.0)},
    "epoch": 1,
    "step": 7,
    "finished": False,
}


def test_load_checkpoint_passes_the_location_to_torch_load(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, MINIMAL)
    seen = []

    def locate(storage, location):  # torch.load's callable form of map_location
        seen.append(location)
        return storage

    state = load_checkpoint(path, map_location=locate)
    assert seen and set(seen) == {"cpu"}
    assert torch.equal(state["model"]["w"], MINIMAL["model"]["w"])


class _Payload:
    """Unpickling this runs code (``__reduce__``): the safe loader must refuse it."""

    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True
        return "pwned"


def test_a_checkpoint_holding_python_objects_is_refused_unread(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {"format": "unimix-train-checkpoint", "version": 1, **MINIMAL, "x": _Payload()}, path
    )
    _Payload.ran = False
    with pytest.raises(CheckpointError, match="Python objects other than tensors"):
        load_checkpoint(path)
    assert not _Payload.ran


@pytest.mark.parametrize(
    "content, message",
    [
        ("truncated", "corrupt or truncated"),
        ({"state_dict": {}}, "is not a unimix training checkpoint"),
        ({"format": "unimix-train-checkpoint", "version": 99, **MINIMAL}, "format version 99"),
        ({"format": "unimix-train-checkpoint", "version": 1, "config": {}}, "lacks"),
    ],
    ids=["truncated", "foreign", "version", "incomplete"],
)
def test_checkpoint_errors_name_the_file_and_the_fault(tmp_path, content, message):
    path = tmp_path / "odd-name-1234.pt"
    if content == "truncated":  # as by a full disk
        save_checkpoint(path, MINIMAL)
        path.write_bytes(path.read_bytes()[:200])
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    if message == "lacks":
        assert "['epoch', 'finished', 'model', 'step']" in str(info.value)


def test_state_digest_is_equal_exactly_for_equal_state_dicts():
    from unimix.train.checkpoint import state_digest

    base = {"a": torch.arange(4.0), "b": 3, "c": torch.zeros(0), "d": torch.ones(2, 2)}
    same = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in base.items()}
    assert state_digest(base) == state_digest(same)
    changes = {
        "value": {**base, "a": torch.tensor([0.0, 1.0, 2.0, 3.5])},
        "after a number": {**base, "d": torch.ones(2, 2) * 2},  # a key sorted after "b"
        "number": {**base, "b": 4},
        "dtype": {**base, "a": torch.arange(4)},
        "shape": {**base, "d": torch.ones(4)},
        "empty dtype": {**base, "c": torch.zeros(0, dtype=torch.int64)},
        "name": {"z": base["a"], "b": 3, "c": base["c"], "d": base["d"]},
    }
    for what, other in changes.items():
        assert state_digest(other) != state_digest(base), what


def test_content_digest_sees_every_part_of_a_checkpoint():
    """The checksum a checkpoint is verified with changes with any value inside it, lists and
    tuples included (a damaged history row or RNG state must not pass)."""
    from unimix.train import checkpoint

    digest = getattr(checkpoint, "content_digest", None)
    if digest is None:
        pytest.skip("this unimix writes no checksum")
    base = {"history": [{"loss": 1.0}, {"loss": 0.5}], "rng": (3, [1, 2]), "w": torch.ones(2)}
    assert digest(base) == digest({**base, "w": torch.ones(2)})
    for changed in (
        {**base, "history": [{"loss": 1.0}, {"loss": 0.25}]},
        {**base, "rng": (3, [1, 5])},
        {**base, "w": torch.tensor([1.0, 2.0])},
        {**base, "extra": None},
    ):
        assert digest(changed) != digest(base)
