"""Sizes checked against the device's memory before any allocation: ``unimix profile --size``,
``unimix train --image-size`` and a study's ``image_size`` are refused with one line saying how
much is needed, how much there is and what to lower (issue 20, item 13)."""

from __future__ import annotations

import pytest

from unimix.cli import main

MiB = 2**20


@pytest.fixture
def small_memory(monkeypatch):
    """The device has 64 MiB free; nothing may build a dataset or draw a mask."""
    import unimix.data
    import unimix.theory

    def allocated(*args, **kwargs):
        raise AssertionError("allocated before the memory check")

    monkeypatch.setattr("unimix.train.memory.available_memory", lambda device="cpu": 64 * MiB)
    monkeypatch.setattr(unimix.data, "build_dataset", allocated)
    monkeypatch.setattr(unimix.theory, "distance_profile", allocated)
    monkeypatch.setattr(unimix.theory, "pairwise_coefficients", allocated)


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"unimix {command}: error: "), err
    return lines[0]


def _status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def test_profile_size_beyond_memory_is_refused_before_any_mask(small_memory, tmp_path, capsys):
    out = tmp_path / "p"
    assert _status(["profile", "--methods", "mixup", "--samples", "16", "--size", "2048",
                    "--out", str(out)]) == 2  # fmt: skip
    line = _one_line(capsys, "profile")
    assert "--size 2048x2048" in line and "needs at least" in line and "64.0 MiB" not in line
    assert "0.1 GiB is available" in line and line.endswith("lower --size")
    assert not out.exists()


@pytest.mark.parametrize("size", ["1", "1x8", "0"])
def test_profile_size_1_is_refused_clearly(size, tmp_path, capsys):
    assert _status(["profile", "--size", size, "--out", str(tmp_path / "p")]) == 2
    assert "sides of at least 2 pixels" in _one_line(capsys, "profile")
    assert not (tmp_path / "p").exists()


def test_train_image_size_beyond_memory_is_refused_before_any_data(small_memory, tmp_path, capsys):
    out = tmp_path / "r"
    assert _status(["train", "--image-size", "256", "--steps", "1", "--out", str(out)]) == 2
    line = _one_line(capsys, "train")
    assert "image_size 256x256" in line and "batch_size 64" in line and "needs at least" in line
    assert "is available" in line and "lower image_size or batch_size" in line
    assert not out.exists()


def test_study_image_size_beyond_memory_is_refused_before_any_data(small_memory, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["study", "--out", str(out), "--regimes", "low", "--seeds", "1", "--workers", "1",
            "--set", "image_size=256"]  # fmt: skip
    assert _status(argv) == 2
    line = _one_line(capsys, "study")
    assert "image_size 256x256" in line and "needs at least" in line and "is available" in line
    assert not out.exists()


def test_terabytes_are_refused_on_any_machine(tmp_path, capsys):
    assert _status(["train", "--image-size", "100000", "--out", str(tmp_path / "r")]) == 2
    line = _one_line(capsys, "train")
    assert "needs at least" in line and "GiB" in line and not (tmp_path / "r").exists()
    assert _status(["profile", "--size", "100000", "--out", str(tmp_path / "p")]) == 2
    assert "needs at least" in _one_line(capsys, "profile")


def test_the_estimates_grow_with_the_sizes():
    from unimix.train import TrainConfig
    from unimix.train.memory import profile_bytes, run_bytes

    small = TrainConfig.from_dict({"image_size": 32, "batch_size": 64})
    assert run_bytes(small.replace(image_size=64)) == 4 * run_bytes(small)
    assert run_bytes(small.replace(batch_size=128)) > run_bytes(small)
    # the least a batch takes: images, mixed images, masks and input gradients, float32
    assert run_bytes(small) >= 4 * 64 * 1 * 32 * 32 * 4
    assert profile_bytes(64, 64) > 3.5 * profile_bytes(32, 32)
