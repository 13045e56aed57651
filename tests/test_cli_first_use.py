"""First use and argument rules shared by every command (issue 20, items 14, 17 and 18)."""

import sys
import warnings

import pytest

from unimix.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "run", "--seed", "-1"],
        ["profile", "--seed", "-1"],
        ["gallery", "--seed", "-1"],
        ["train", "--out", ""],
        ["study", "--out", ""],
        ["gallery", "--out", ""],
        ["profile", "--out", ""],
    ],
)
def test_item17_one_rule_for_seeds_and_output_paths(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("integer >= 0" in err or "empty" in err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("eps", ["nan", "-1", "inf", "1/0"])
def test_item14_study_eps_is_refused_before_any_work(eps, tmp_path, capsys):
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as stop:
        main(["study", "--out", str(out), "--regimes", "low", "--eps", eps])
    assert stop.value.code == 2 and "--eps" in capsys.readouterr().err
    assert not out.exists()


def test_item18_tensorboard_is_silent_by_default_and_warns_only_when_asked(tmp_path, monkeypatch):
    from unimix.train import TrainConfig, train
    from unimix.train.logging import TensorBoardMissingWarning

    assert TrainConfig().tensorboard is None  # "when installed"
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    tiny = {"image_size": 8, "batch_size": 64, "steps": 1, "model_kwargs": {"widths": [8, 16]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorBoardMissingWarning)
        train(tiny, tmp_path / "a", progress=False)
    with pytest.warns(TensorBoardMissingWarning):
        train({**tiny, "tensorboard": True}, tmp_path / "b", progress=False)


@pytest.mark.parametrize("argv", [["profile", "--size", "1"], ["profile", "--size", "100000"]])
def test_item13_profile_sizes_are_checked_up_front(argv, tmp_path, capsys):
    try:  # --size 1 by the parser; --size 100000 by the memory check (test_memory_up_front.py)
        status = main([*argv, "--out", str(tmp_path / "p")])
    except SystemExit as stop:
        status = stop.code
    assert status == 2 and "--size" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_item13_train_image_size_is_bounded(tmp_path, capsys):
    assert main(["train", "--image-size", "100000", "--out", str(tmp_path / "r")]) == 2
    assert "image_size" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_item15_evaluate_refuses_an_unwritable_out_before_evaluating(tmp_path, monkeypatch, capsys):
    import os

    from unimix.train import train

    run = tmp_path / "run"
    tiny = {"image_size": 8, "batch_size": 64, "steps": 1, "tensorboard": False,
            "model_kwargs": {"widths": [8, 16]}}  # fmt: skip
    train(tiny, run, progress=False)
    calls = []
    monkeypatch.setattr("unimix.evaluate.evaluate_run", lambda *a, **k: calls.append(a))
    blocked = tmp_path / "ro"
    blocked.mkdir()
    target = "/proc/x.json" if os.path.isdir("/proc/self") else str(blocked / "x.json")
    if not target.startswith("/proc"):
        blocked.chmod(0o500)
    assert main(["evaluate", str(run), "--out", target]) == 2
    assert "cannot write --out" in capsys.readouterr().err and calls == []
