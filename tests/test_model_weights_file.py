"""timm's ``model_kwargs.checkpoint_path``: a pickle is never run, and every bad file is one line
naming the argument and the fix, exit status 2, before anything is written (issue 20, item 12)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from unimix.cli import main

pytest.importorskip("timm")

TRAIN = ["train", "--model", "timm:resnet18", "--epochs", "1", "--image-size", "8",
         "--train-per-class", "6", "--batch-size", "10", "--no-progress"]  # fmt: skip


class _RunsCode:
    """Unpickling this runs ``touch`` on the file named: evidence that code was executed."""

    def __init__(self, evidence: str) -> None:
        self.evidence = evidence

    def __reduce__(self):
        return (os.system, (f"touch {self.evidence}",))


def _files(tmp_path):
    tmp_path.mkdir()
    evidence = tmp_path / "code-was-run"
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(_RunsCode(str(evidence))))
    torch_pickle = tmp_path / "model.pth"
    torch.save({"state_dict": _RunsCode(str(evidence))}, torch_pickle)
    corrupt = tmp_path / "corrupt.pth"
    good = tmp_path / "good.pth"
    torch.save({"fc.weight": torch.zeros(3)}, good)
    corrupt.write_bytes(good.read_bytes()[:200])  # a truncated zip archive
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    wrong = tmp_path / "wrong.pth"  # weights of another shape of model
    import timm

    torch.save(timm.create_model("resnet18", num_classes=5, in_chans=1).state_dict(), wrong)
    return evidence, {
        "pickle": (pickled, "needs code to load"),
        "torch pickle": (torch_pickle, "needs code to load"),
        "missing": (tmp_path / "absent.pth", "does not exist"),
        "directory": (tmp_path, "is a directory"),
        "corrupt": (corrupt, "cannot be read"),
        "empty": (empty, "cannot be read"),
        "wrong shapes": (wrong, "does not fit timm:resnet18"),
    }


@pytest.mark.parametrize(
    "case", ["pickle", "torch pickle", "missing", "directory", "corrupt", "empty", "wrong shapes"]
)
def test_a_bad_checkpoint_path_is_one_line_and_nothing_runs(case, tmp_path, capsys):
    evidence, files = _files(tmp_path / "files")
    path, expected = files[case]
    out = tmp_path / "run"
    status = main([*TRAIN, "--out", str(out), "--set", f"model_kwargs.checkpoint_path={path}"])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unimix train: error: "), err
    assert "model_kwargs.checkpoint_path" in lines[0] and expected in lines[0]
    if case not in ("missing", "directory"):
        assert "torch.save(model.state_dict(), PATH)" in lines[0]  # the fix
    assert not evidence.exists() and not out.exists()


def test_a_weights_only_file_is_loaded(tmp_path):
    import timm

    from unimix.models import create_model

    source = timm.create_model("resnet18", num_classes=4, in_chans=1)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    model = create_model("timm:resnet18", 4, 1, 8, checkpoint_path=str(path))
    assert torch.equal(model.fc.weight, source.fc.weight)
