"""The trainer's parts, each alone: one step, the saved run state, the epoch meter; and the hooks
a caller gets (on_epoch), the TensorBoard warning, and progress output in redirected logs."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import unimix
from unimix.train import TrainConfig, load_checkpoint, read_metrics, save_checkpoint, train
from unimix.train.meters import EpochMeter
from unimix.train.state import RunState, checkpoint_state, rank_state, restore_parts
from unimix.train.step import TrainParts, train_step

TINY = {
    "dataset": "digits",
    "image_size": 8,
    "model": "small_cnn",
    "model_kwargs": {"widths": [8, 16]},
    "batch_size": 64,
    "epochs": 2,
    "lr": 0.1,
    "methods": "cutmix",
    "device": "cpu",
    "tensorboard": False,
}


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def _mixer(seed: int = 3) -> unimix.Mixer:
    return unimix.Mixer("hmix", num_classes=5, mode="elem", generator=torch.Generator().manual_seed(seed))


# ---- one step ----------------------------------------------------------------------------------


def test_train_step_is_mix_forward_soft_loss_backward_sgd():
    images, labels = _batch()
    model = _linear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = TrainParts(model, torch.optim.SGD(model.parameters(), lr=0.5), mixer=_mixer())
    out = train_step(parts, images.clone(), labels)

    # by hand: the same mixer draws, the soft-target cross-entropy, one plain SGD step
    mixed, targets = _mixer()(images.clone(), labels)
    reference = _linear()
    reference.load_state_dict(before)
    logits = reference(mixed)
    loss = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss.backward()
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert out.n == 6 and out.lr == 0.5
    assert out.correct.item() == (logits.argmax(1) == targets.argmax(1)).sum().item()
    for (name, p), q in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(q, p.detach() - 0.5 * p.grad, msg=name)


def test_train_step_without_mixer_uses_cross_entropy_with_smoothing():
    images, labels = _batch()
    model = _linear()
    logits = model(images)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.2).item()
    parts = TrainParts(model, torch.optim.SGD(model.parameters(), lr=0.1), label_smoothing=0.2)
    out = train_step(parts, images, labels)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


# ---- the run state -----------------------------------------------------------------------------


def test_run_state_round_trips_through_a_checkpoint(tmp_path):
    images, labels = _batch()
    model = _linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mixer = _mixer()
    parts = TrainParts(model, optimizer, mixer=mixer)
    train_step(parts, images.clone(), labels)
    run = RunState(epoch=1, batch=3, step=9, history=[{"epoch": 1, "train_loss": 0.5}],
                   wall_s=2.5, partial={"loss_sum": 1.0, "count": 6.0})
    state = checkpoint_state(run, parts, config={"seed": 0}, ranks=[rank_state(mixer, run.partial)])
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert RunState.from_checkpoint(loaded) == run

    # a fresh set of parts restored from it takes the very same next step
    twin_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    twin_mixer = _mixer(seed=99)
    twin = TrainParts(
        twin_model, torch.optim.SGD(twin_model.parameters(), lr=0.1, momentum=0.9), mixer=twin_mixer
    )
    restore_parts(twin, twin_mixer, loaded, rank=0, path=tmp_path / "c.pt")
    a = train_step(parts, images.clone(), labels)
    b = train_step(twin, images.clone(), labels)
    assert torch.equal(a.loss, b.loss)
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(p, q)


# ---- the epoch meter ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 10), st.integers(0, 8), st.integers(1, 8)), min_size=1, max_size=8
    ),
    st.integers(0, 8),
)
def test_epoch_meter_continues_across_an_interruption(batches, cut):
    cut = min(cut, len(batches))
    whole = EpochMeter(torch.device("cpu"))
    first = EpochMeter(torch.device("cpu"))
    for i, (loss, correct, n) in enumerate(batches):
        whole.add(torch.tensor(loss), torch.tensor(min(correct, n)), n)
        if i < cut:
            first.add(torch.tensor(loss), torch.tensor(min(correct, n)), n)
    second = EpochMeter(torch.device("cpu"), first.partial(first.totals(None, False)))
    for loss, correct, n in batches[cut:]:
        second.add(torch.tensor(loss), torch.tensor(min(correct, n)), n)
    for x, y in zip(second.averages(), whole.averages(), strict=True):
        assert x == pytest.approx(y, rel=1e-12, abs=1e-12)
    n_total = sum(n for _, _, n in batches)
    assert whole.averages()[2] == n_total
    assert whole.averages()[0] == pytest.approx(sum(loss * n for loss, _, n in batches) / n_total)


# ---- what the caller gets ----------------------------------------------------------------------


def test_on_epoch_hands_each_row_after_its_checkpoint(tmp_path):
    seen = []

    def on_epoch(row):
        # the checkpoint of this epoch is already on disk when the caller hears of it
        seen.append((row, load_checkpoint(tmp_path / "checkpoint.pt")["epoch"]))
        row["mutated"] = True  # the caller's copy: the run's history is not affected

    result = train(TrainConfig.from_dict(TINY), tmp_path, progress=False, on_epoch=on_epoch)
    assert [epoch for _, epoch in seen] == [1, 2]
    assert [r["epoch"] for r, _ in seen] == [1, 2]
    for (row, _), hist in zip(seen, result.history, strict=True):
        assert {k: v for k, v in row.items() if k != "mutated"} == hist
        assert math.isfinite(row["train_loss"]) and "test_acc" in row
    assert read_metrics(tmp_path) == result.history
    with pytest.raises(TypeError, match="on_epoch must be callable"):
        train(TINY, tmp_path / "b", on_epoch="print")


def test_missing_tensorboard_is_a_warning_not_silence(tmp_path, monkeypatch):
    from unimix.train.logging import TensorBoardMissingWarning

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.warns(TensorBoardMissingWarning, match="pip install tensorboard") as caught:
        train({**TINY, "tensorboard": True, "steps": 1}, tmp_path / "a", progress=False)
    assert len(caught) == 1 and caught[0].filename == __file__  # at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorBoardMissingWarning)
        train({**TINY, "tensorboard": False, "steps": 1}, tmp_path / "b", progress=False)


def test_progress_in_a_redirected_log_is_one_line_per_epoch(tmp_path, capsys):
    # pytest captures stdout and stderr: not a terminal, so no bar, no carriage returns
    train(TrainConfig.from_dict(TINY), tmp_path, progress=True)
    out, err = capsys.readouterr()
    assert "\r" not in out and "\r" not in err
    lines = out.splitlines()
    assert [ln.split(" | ")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
