"""TrainConfig keeps one rule per key: the mixing keys obey the Mixer's own checks, and the
command-line coercion follows the dataclass field types (declared once)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unimix
from unimix.train import TrainConfig
from unimix.train.config import BOOL_KEYS, LIST_KEYS, apply_overrides

numbers = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, -0.0, -1e-9, 1 + 1e-9, math.nan, math.inf, -math.inf, 2.0]),
    st.floats(-2, 3, allow_nan=False),
)


def _outcome(build) -> type | None:
    try:
        build()
    except (ValueError, TypeError) as err:
        return type(err)
    return None


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(["label_smoothing", "mix_prob", "switch_prob", "alpha"]),
    value=numbers,
)
def test_config_accepts_a_mixing_value_iff_the_mixer_does(key, value):
    mixer_key = {"mix_prob": "prob"}.get(key, key)
    mixer = _outcome(lambda: unimix.Mixer(["mixup", "cutmix"], num_classes=10, **{mixer_key: value}))
    config = _outcome(lambda: TrainConfig(methods=["mixup", "cutmix"], **{key: value}))
    assert config is mixer, (key, value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("label_smoothing", 1.0), ("mode", "row"), ("partner", "shuffle"), ("label_weight", "drawn")],
)
def test_config_and_mixer_agree_on_edge_values(key, value):
    mixer = _outcome(lambda: unimix.Mixer("mixup", num_classes=10, **{key: value}))
    config = _outcome(lambda: TrainConfig(methods="mixup", **{key: value}))
    assert config is mixer
    if key == "label_smoothing":  # uniform targets: odd, but legal for both (as in PyTorch)
        assert config is None


def _types(key: str) -> set[type]:
    hint = typing.get_type_hints(TrainConfig)[key]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return {typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,))}


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(TrainConfig)])
def test_every_key_coerces_from_the_command_line_by_its_declared_type(key):
    types = _types(key)
    if key == "methods":
        assert TrainConfig.from_dict({key: "mixup,cutmix"}).methods == ["mixup", "cutmix"]
        return
    if bool in types:
        assert key in BOOL_KEYS
        for text, value in (("false", False), ("on", True)):
            assert getattr(TrainConfig.from_dict(apply_overrides({}, [f"{key}={text}"])), key) is value
        return
    assert key not in BOOL_KEYS
    assert (key in LIST_KEYS) == (list in types)
    if int in types and key != "image_size":
        value = getattr(TrainConfig.from_dict({key: "3"}), key)
        assert value == 3 and type(value) is int
    elif float in types:
        low = {"gamma": 0.5, "lr": 0.5}.get(key, 0.25)
        data = {key: str(low)}
        if key == "min_lr":
            data["lr"] = "1"
        value = getattr(TrainConfig.from_dict(data), key)
        assert value == low and type(value) is float
    elif dict in types:
        assert getattr(TrainConfig.from_dict({key: {}}), key) in ({}, ["none"])


def test_list_and_size_strings():
    cfg = TrainConfig.from_dict({"image_size": "32x48", "milestones": "30,60", "schedule": "step"})
    assert cfg.image_size == [32, 48] and cfg.milestones == [30.0, 60.0]
    assert TrainConfig.from_dict({"image_size": [32]}).image_size == 32
    assert TrainConfig.from_dict({"batch_size": 64.0}).batch_size == 64
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        TrainConfig.from_dict({"batch_size": "many"})
    with pytest.raises(ValueError, match="nesterov must be true or false"):
        TrainConfig.from_dict({"nesterov": "perhaps"})
