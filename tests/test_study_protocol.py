"""The study directory: regimes in results.csv, a recorded configuration, refusal and --fresh,
temperature scaling on the validation split (tiny budgets)."""

import math

import pytest
import torch

from unimix.cli import main
from unimix.evaluate.metrics import fit_temperature, nll
from unimix.study import StudyConfig, read_results, run_study

TINY = [
    "image_size=8",
    "epochs=1",
    "batch_size=64",
    "tensorboard=false",
    "model_kwargs.widths=[8, 16]",
]


def _config(out, **kw):
    base = dict(
        out=out,
        methods=["none", "mixup"],
        seeds=2,
        regimes=["low"],
        overrides=list(TINY),
        device="cpu",
        pgd_steps=1,
        eps_list=[8 / 255],
        progress=False,
    )
    return StudyConfig(**{**base, **kw})


def test_results_name_the_regime_and_sizes_and_a_rerun_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "s"
    run_study(_config(out), log=lambda s: None)
    rows = read_results(out / "results.csv")
    assert {r["regime"] for r in rows} == {"low"}
    for r in rows:
        assert r["train_size"] + r["val_size"] + r["test_size"] == 1797
        assert r["test_size"] >= 1000 and r["val_size"] > 0
        assert r["temperature"] > 0 and not math.isnan(r["nll_ts"])
        assert r["nll_ts"] <= r["nll"] + 0.05  # fitted on validation, not on test: roughly
    claims = (out / "claims.csv").read_text().splitlines()
    assert (
        claims[0] == "claim,regime,metric,method_a,method_b,mean_diff,ci_low,ci_high,seeds,verdict,"
        "p_value,p_adjusted,family"
    )
    assert any(",low,top1_error,mixup,none," in line for line in claims)

    # other epochs: refused before anything is trained, naming the key and the flag
    with pytest.raises(ValueError, match=r"epochs \(1 → 2\).*--fresh"):
        run_study(_config(out, overrides=[*TINY, "epochs=2"]), log=lambda s: None)
    with pytest.raises(ValueError, match="pgd_steps"):
        run_study(_config(out, pgd_steps=2), log=lambda s: None)
    # more seeds is no conflict: the old runs are kept, one more seed trained
    logs = []
    run_study(_config(out, seeds=3), log=logs.append)
    assert "4 already done" in logs[0]
    # --fresh starts afresh with the new settings; the report has one configuration only
    run_study(_config(out, overrides=[*TINY, "epochs=2"], fresh=True), log=lambda s: None)
    rows = read_results(out / "results.csv")
    assert {r["epochs"] for r in rows} == {2} and len(rows) == 4


def test_a_folder_that_is_not_a_study_is_not_written_into(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a unimix study directory"):
        run_study(_config(tmp_path), log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["study", "--out", str(tmp_path / "f"), "--regimes", "low"]) == 2
    assert main(["study", "--out", str(tmp_path / "o"), "--regimes", "nope"]) == 2
    assert main(["study", "--out", str(tmp_path / "o"), "--grid", "alpha"]) == 2
    err = capsys.readouterr().err
    assert "unknown regime" in err and "--grid" in err


def test_fit_temperature_recovers_a_known_scale():
    gen = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 5, generator=gen) * 3
    labels = torch.multinomial(true.softmax(1), 1, generator=gen)[:, 0]
    t = fit_temperature(true * 2.5, labels)  # over-confident by 2.5×
    assert t == pytest.approx(2.5, rel=0.1)
    assert nll(true * 2.5 / t, labels) <= nll(true * 2.5, labels)


def test_every_method_of_a_seed_starts_from_the_same_weights_and_data(tmp_path):
    from unimix.study import check_same_start, plan_runs

    cfg = _config(tmp_path, methods=["none", "mixup", "cutmix", "hmix", "gmix"], seeds=2)
    check = check_same_start(plan_runs(cfg))
    assert check == {"ok": True, "groups": 2, "mismatches": []}


def test_imagefolder_without_a_recipe_picks_a_small_one_on_cpu(tmp_path, monkeypatch):
    from unimix.commands.study import pick_recipe
    from unimix.train import load_recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.png").write_bytes(b"")
    name, why = pick_recipe("imagefolder", str(tmp_path), "auto")
    assert name == "imagefolder_small" and "no GPU" in why
    recipe = load_recipe(name)
    assert recipe["model"] == "small_cnn" and recipe["image_size"] <= 64
    assert pick_recipe("digits", None, "auto") == ("digits", "")
