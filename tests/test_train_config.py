"""TrainConfig, recipes, overrides, the learning-rate schedule and the ``unimix train`` flags."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from unimix.train import (
    TrainConfig,
    apply_overrides,
    available_recipes,
    build_optimizer,
    build_scheduler,
    load_recipe,
    lr_factor,
    resolve_config,
)
from unimix.train.config import config_differences, parse_override

STANDARD_RECIPES = {
    "digits",
    "cifar100_preactresnet18",
    "cifar100_wrn28_10",
    "imagenet_resnet50_100ep",
    "imagenet_resnet50_300ep",
}


def test_packaged_recipes_exist_and_resolve():
    assert STANDARD_RECIPES <= set(available_recipes())
    for name in available_recipes():
        cfg = resolve_config(name)
        # every key of the file is in the resolved configuration with the file's value
        for key, value in load_recipe(name).items():
            expected = [value] if key == "methods" and isinstance(value, str) else value
            assert cfg.to_dict()[key] == expected, (name, key)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # YAML dict round trip


def test_paper_settings_in_recipes():
    r300 = resolve_config("imagenet_resnet50_300ep")
    assert (r300.epochs, r300.batch_size, r300.lr, r300.milestones) == (
        300,
        256,
        0.1,
        [75, 150, 225],
    )
    assert r300.weight_decay == 1e-4 and r300.schedule == "step" and r300.model == "tv:resnet50"
    assert resolve_config("imagenet_resnet50_100ep").epochs == 100
    assert resolve_config("cifar100_preactresnet18").model == "preact_resnet18"
    assert resolve_config("cifar100_wrn28_10").model == "wrn28_10"


def test_recipe_by_path_and_unknown(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 3\nmethods: [mixup, cutmix]\n")
    cfg = resolve_config(path)
    assert cfg.epochs == 3 and cfg.methods == ["mixup", "cutmix"]
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*digits"):
        load_recipe("nope")
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(
        ValueError, match="unknown configuration key 'epoch'; did you mean 'epochs'"
    ):
        load_recipe(bad)


def test_overrides_types_and_dotted_keys():
    cfg = resolve_config(
        "digits",
        [
            "lr=0.05",
            "methods=mixup,cutmix",
            "milestones=[2, 4]",
            "schedule=step",
            "nesterov=false",
            "method_params.r=0.25",
            "image_size=16x24",
            "steps=7",
            "alpha.mixup=0.4",
        ],
    )
    assert cfg.lr == 0.05 and cfg.methods == ["mixup", "cutmix"] and cfg.milestones == [2.0, 4.0]
    assert cfg.nesterov is False and cfg.method_params["r"] == 0.25 and cfg.image_size == [16, 24]
    assert cfg.steps == 7 and cfg.alpha == {"mixup": 0.4}
    assert parse_override("methods=[a, b]") == ("methods", ["a", "b"])
    assert parse_override("data-dir=/x") == ("data_dir", "/x")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("lr")
    with pytest.raises(ValueError, match="did you mean 'weight_decay'"):
        apply_overrides({}, ["weight_decy=1"])
    with pytest.raises(ValueError, match="not a mapping"):
        apply_overrides({}, ["lr.x=1"])


def test_methods_normalisation():
    assert (
        TrainConfig(methods="none").methods == ["none"] and not TrainConfig(methods="none").mixing
    )
    assert TrainConfig(methods=None).methods == ["none"]
    assert TrainConfig(methods="HMix").methods == ["hmix"]
    assert TrainConfig(methods={"mixup": 1, "cutmix": 3}).methods == {"mixup": 1.0, "cutmix": 3.0}
    assert TrainConfig(methods=["mixup"]).mixing


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
        ({"lr": "fast"}, ValueError, "lr must be a number"),
        ({"schedule": "poly"}, ValueError, "schedule must be one of cosine, step, constant"),
        ({"schedule": "step"}, ValueError, "needs milestones"),
        ({"milestones": [5, 2], "schedule": "step"}, ValueError, "increasing"),
        ({"amp": "fp8"}, ValueError, "amp must be one of"),
        ({"mode": "row"}, ValueError, "mode must be one of batch, pair, elem"),
        ({"mix_prob": 1.5}, ValueError, r"mix_prob must lie in \[0, 1\]"),
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must lie in \[0, 1\]"),
        ({"nesterov": True, "momentum": 0.0}, ValueError, "nesterov=True needs momentum"),
        ({"min_lr": 1.0, "lr": 0.1}, ValueError, "min_lr"),
        ({"channels_last": "maybe"}, ValueError, "channels_last must be true or false"),
        ({"image_size": [0, 3]}, ValueError, "image_size"),
        ({"methods": 3}, TypeError, "methods must be"),
    ],
)
def test_bad_values_name_the_key(changes, error, match):
    with pytest.raises(error, match=match):
        TrainConfig.from_dict(changes)


def test_config_differences_ignores_mutable_keys():
    a = TrainConfig(epochs=3)
    assert config_differences(a, a.replace(device="cpu", num_workers=4, data_dir="/d")) == {}
    assert config_differences(a, a.replace(lr=0.2)) == {"lr": (0.1, 0.2)}


# ---- learning-rate schedule ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    spe=st.integers(1, 20),
    epochs=st.integers(1, 8),
    warm=st.floats(0, 3),
    min_frac=st.floats(0, 0.5),
)
def test_cosine_with_warmup_shape(spe, epochs, warm, min_frac):
    cfg = TrainConfig(epochs=epochs, lr=0.1, min_lr=0.1 * min_frac, warmup_epochs=warm)
    total = epochs * spe
    factors = [lr_factor(s, cfg, spe, total) for s in range(total)]
    w = int(round(warm * spe))
    ramp, decay = factors[: min(w, total)], factors[min(w, total) :]
    assert all(b > a for a, b in pairwise(ramp))  # warm-up rises
    assert all(b <= a + 1e-12 for a, b in pairwise(decay))  # cosine never rises
    if decay:
        assert decay[0] == pytest.approx(1.0)
    assert all(0 < f <= 1.0 for f in ramp)
    assert all(min_frac - 1e-12 <= f <= 1.0 + 1e-12 for f in decay)


def test_step_schedule_and_scheduler_follow_lr_factor():
    cfg = TrainConfig(
        schedule="step", milestones=[1, 2.5], gamma=0.1, lr=0.2, epochs=4, warmup_epochs=0
    )
    spe = 4
    assert [lr_factor(s, cfg, spe, 16) for s in (0, 3, 4, 9, 10, 15)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, spe, 16)
    seen = []
    for _ in range(16):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.2 * lr_factor(s, cfg, spe, 16) for s in range(16)])


def test_no_decay_on_norm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = build_optimizer(model, TrainConfig(decay_norm_bias=False, weight_decay=1e-3))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    assert math.isclose(opt.param_groups[0]["weight_decay"], 1e-3)


# ---- the command line ------------------------------------------------------------------------


def _parse(argv):
    from unimix.cli import build_parser

    return build_parser().parse_args(["train", *argv])


def test_every_key_is_a_flag_and_print_config(capsys):
    from unimix.cli import main

    rc = main(
        [
            "train",
            "--recipe",
            "digits",
            "--methods",
            "mixup",
            "cutmix",
            "--epochs",
            "4",
            "--seed",
            "3",
            "--device",
            "cpu",
            "--no-nesterov",
            "--milestones",
            "1",
            "2",
            "--schedule",
            "step",
            "--set",
            "method_params.r=0.3",
            "--data-dir",
            "/tmp/d",
            "--print-config",
        ]
    )
    assert rc == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = TrainConfig.from_dict(printed)
    assert cfg.methods == ["mixup", "cutmix"] and cfg.epochs == 4 and cfg.seed == 3
    assert (
        cfg.nesterov is False and cfg.milestones == [1.0, 2.0] and cfg.method_params == {"r": 0.3}
    )
    assert cfg.data_dir == "/tmp/d" and cfg.device == "cpu"
    args = _parse(["--out", "x"])
    for key in TrainConfig.keys():
        assert hasattr(args, f"cfg_{key}"), key


def test_cli_errors_are_clean(capsys, tmp_path):
    from unimix.cli import main

    assert main(["train", "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
    assert "epochs must be a positive int" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no run to resume" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
