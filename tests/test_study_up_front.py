"""``unimix study`` checks every argument and recipe value before any work, and a study that
fails before its first run leaves nothing behind: no new folder, no marker in an empty one
(issue 20, item 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiny_study import tiny_overrides
from tiny_study import tiny_study as shared_tiny_study
from unimix.cli import main
from unimix.study import StudyConfig, run_study

TINY = tiny_overrides(1)
STUDY = [
    "--methods", "none,mixup", "--seeds", "1", "--regimes", "low", "--workers", "1",
    "--no-progress", *(arg for item in TINY for arg in ("--set", item)),
]  # fmt: skip


def _recipe(tmp_path: Path, **study) -> str:
    """The digits recipe with some ``study:`` values replaced."""
    from importlib import resources

    data = yaml.safe_load((resources.files("unimix") / "recipes" / "digits.yaml").read_text())
    data["study"].update(study)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


BAD = {
    "eps nan": ["--eps", "nan"],
    "eps negative": ["--eps", "-1"],
    "no seeds": ["--seeds", "0"],
    "no workers": ["--workers", "0"],
    "too many workers": ["--workers", "100000"],
    "unknown method": ["--methods", "none,nosuch"],
    "unknown key": ["--set", "nosuch=1"],
    "bad value": ["--set", "lr=abc"],
    "unknown regime": ["--regimes", "nosuch"],
    "negative base seed": ["--base-seed", "-1"],
    "no pgd steps": ["--pgd-steps", "0"],
    "grid key no method takes": ["--grid", "nosuch=1,2"],
    "bad grid value": ["--grid", "lr=abc,1"],
    "model kwarg": ["--set", "model_kwargs.nosuch=3"],
    "unknown model": ["--set", "model=nosuch"],
}
RECIPE_BAD = {
    "recipe pgd_steps 0": {"pgd_steps": 0},
    "recipe seeds 0": {"seeds": 0},
    "recipe eps nan": {"eps_list": [".nan"]},
    "recipe eps text": {"eps_list": ["eight"]},
    "recipe attack_images -5": {"attack_images": -5},
    "recipe threads 0": {"threads": 0},
    "recipe predicted hmix": {"predicted": {"mixup_vs_cutmix": "hmix"}},
    "recipe cost threshold": {"cost_threshold_pct": "lots"},
    "recipe regime not a mapping": {"regimes": {"low": [1, 2]}},
}


def _argv(case: str, tmp_path: Path) -> list[str]:
    if case in BAD:
        return [*STUDY, *BAD[case]]
    values = RECIPE_BAD[case]
    argv = [*STUDY, "--recipe", _recipe(tmp_path, **values)]
    if "seeds" in values:  # the recipe's value, not the command line's
        i = argv.index("--seeds")
        del argv[i : i + 2]
    return argv if "pgd_steps" in values else [*argv, "--pgd-steps", "1"]


@pytest.mark.parametrize("case", [*BAD, *RECIPE_BAD])
def test_a_bad_value_is_refused_before_any_work_and_leaves_nothing(case, tmp_path, capsys):
    argv = _argv(case, tmp_path)
    new, empty = tmp_path / "new" / "study", tmp_path / "empty"
    empty.mkdir()
    for out in (new, empty):
        try:
            status = main(["study", "--out", str(out), *argv])
        except SystemExit as stop:  # argparse's own refusals
            status = stop.code
        err = capsys.readouterr().err
        assert status == 2, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("unimix study: error: "), err
    assert not (tmp_path / "new").exists()
    assert list(empty.iterdir()) == []  # no marker, no lock, no config.yaml


def tiny_study(out: Path, **kwargs) -> StudyConfig:
    return shared_tiny_study(out, epochs=1, seeds=1, **kwargs)


def test_run_study_that_fails_before_its_first_run_leaves_nothing(tmp_path, monkeypatch):
    from unimix.study import execute

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(execute, "run_one", fail)  # after the folder was claimed
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with pytest.raises(OSError, match="No space"):
            run_study(tiny_study(out, workers=1), log=lambda _: None)
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").iterdir()) == []


def test_too_many_workers_are_refused_before_the_folder_is_claimed(tmp_path):
    with pytest.raises(ValueError, match=r"--workers 100000 needs about"):
        run_study(tiny_study(tmp_path / "study", workers=100_000), log=lambda _: None)
    assert not (tmp_path / "study").exists()
