"""Checkpoint metadata is range-checked even when its checksum is right (issue 20, item 8)."""

import pytest
import torch

from unimix.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state(**changes):
    state = {"config": {"epochs": 3}, "model": {"w": torch.zeros(2)}, "epoch": 1, "step": 10,
             "batch": 2, "finished": False, "history": [{"epoch": 1, "loss": 0.5}]}  # fmt: skip
    return {**state, **changes}


def test_a_sound_checkpoint_loads(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _state())
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"epoch": 99}, "epoch 99 of a run of 3"),
        ({"epoch": -3}, "epoch must be an integer >= 0"),
        ({"step": -5}, "step must be"),
        ({"batch": 10**6}, "cannot cover"),
        ({"history": ["a", "b"]}, "history"),
        ({"finished": "yes"}, "finished"),
    ],
)
def test_nonsense_metadata_with_a_valid_checksum_is_refused(tmp_path, changes, words):
    save_checkpoint(tmp_path / "c.pt", _state(**changes))  # the checksum covers the nonsense
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(tmp_path / "c.pt")


def test_an_old_unchecksummed_format_loads_only_with_a_warning(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _state())
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    state = {**state, "version": 1}
    state.pop("checksum", None)
    torch.save(state, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        load_checkpoint(tmp_path / "old.pt")


def test_item10_a_write_over_the_file_size_limit_is_an_oserror_and_keeps_the_old(tmp_path):
    import subprocess
    import sys

    save_checkpoint(tmp_path / "c.pt", _state())
    before = (tmp_path / "c.pt").read_bytes()
    script = (
        "import resource, torch\n"
        "from unimix.train.checkpoint import save_checkpoint\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    save_checkpoint({str(tmp_path / 'c.pt')!r}, {{'model': {{'w': torch.zeros(10**5)}}}})\n"
        "except OSError as err:\n"
        "    print('OSError', err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    # the file size limit's EFBIG, naming the checkpoint (not torch's wrapping RuntimeError)
    assert proc.stdout.startswith("OSError [Errno 27] File too large"), proc.stderr
    assert str(tmp_path / "c.pt") in proc.stdout
    assert (tmp_path / "c.pt").read_bytes() == before
