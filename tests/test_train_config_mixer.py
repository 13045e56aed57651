"""A TrainConfig is valid exactly when the Mixer it trains with can be built (issue 22, item 7)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from unimix import Mixer, registry
from unimix.train import TrainConfig

NAMES = ["mixup", "cutmix", "hmix", "gmix", "nosuch", "none"]
PARAMS = {"r": 0.5, "nosuch_param": 1}


def _mixer_builds(kw):
    """The Mixer's verdict alone, written independently of TrainConfig: the run's Mixer takes the
    method parameters its methods accept; one that no registered method takes is an error."""
    if kw["methods"] == ["none"]:
        return True
    params = kw.get("method_params", {})
    known = {k for n in registry.available() for k in registry.parameters(n)}
    if set(params) - known:
        return False
    names = [n for n in kw["methods"] if n in registry.available()]
    taken = {k: v for k, v in params.items() if any(k in registry.parameters(n) for n in names)}
    try:
        Mixer(
            kw["methods"], alpha=kw["alpha"], mode=kw["mode"], switch_prob=kw["switch_prob"],
            partner=kw["partner"], **taken,
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return True


configs = st.fixed_dictionaries(
    {
        "methods": st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
        "alpha": st.one_of(
            st.sampled_from([1.0, 0.2]),
            st.dictionaries(st.sampled_from(NAMES[:4]), st.sampled_from([0.5, 1.0]), max_size=2),
        ),
        "switch_prob": st.sampled_from([None, 0.5]),
        "mode": st.sampled_from(["batch", "pair", "elem"]),
        "partner": st.sampled_from(["flip", "random"]),
        "method_params": st.dictionaries(st.sampled_from(list(PARAMS)), st.just(0.5), max_size=2),
    }
)


def _case(methods, alpha=1.0, switch_prob=None, method_params=None):
    return {"methods": methods, "alpha": alpha, "switch_prob": switch_prob, "mode": "batch",
            "partner": "flip", "method_params": method_params or {}}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(configs)
@example(_case(["nosuch"]))
@example(_case(["mixup"], method_params={"r": 0.3}))
@example(_case(["mixup", "cutmix", "hmix"], switch_prob=0.5))
@example(_case(["mixup"], alpha={"cutmix": 1.0}))
@example(_case(["mixup", "mixup"]))
def test_a_config_is_valid_exactly_when_its_mixer_builds(kw):
    try:
        TrainConfig(**kw)
        valid = True
    except (ValueError, TypeError):
        valid = False
    assert valid == _mixer_builds(kw), kw


@pytest.mark.parametrize(
    "kw, words",
    [
        (_case(["nosuch"]), "unknown mixing method 'nosuch'"),
        (_case(["mixup", "cutmix", "hmix"], switch_prob=0.5), "switch_prob"),
        (_case(["mixup"], alpha={"cutmix": 1.0}), "cutmix"),
        (_case(["mixup", "mixup"]), "twice"),
    ],
)
def test_the_four_unbuildable_cases_are_refused_naming_the_problem(kw, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**kw)


def test_a_recipes_hmix_parameter_is_ignored_by_mixup_as_the_run_builds_it():
    # recipes set method_params.r for HMix and are run with any method: the run's Mixer takes
    # only the parameters of its methods, so this configuration's Mixer builds
    cfg = TrainConfig(methods=["mixup"], method_params={"r": 0.3})
    Mixer(**cfg.mixer_kwargs())
    assert "r" not in cfg.mixer_kwargs()


def test_choice_keys_are_typed_by_their_literals_and_errors_name_key_value_and_choices():
    """Issue 20 item 23: the schema is pydantic's (lax coercion per declared type); mode and
    partner carry the Mixer's Literal types; an error names the key, the value, the choices."""
    import typing

    from unimix.mix import LabelWeight, Mode, Partner

    hints = typing.get_type_hints(TrainConfig)
    assert (hints["mode"], hints["partner"], hints["label_weight"]) == (Mode, Partner, LabelWeight)
    with pytest.raises(
        ValueError, match=r"^mode must be one of batch, pair, elem; got 'diagonal'$"
    ):
        TrainConfig.from_dict({"mode": "diagonal"})
    with pytest.raises(ValueError, match=r"^partner must be one of flip, random; got 'shuffle'$"):
        TrainConfig(partner="shuffle")
    with pytest.raises(ValueError, match=r"^lr must be a number, got True"):
        TrainConfig.from_dict({"lr": True})  # a boolean is not a number
    with pytest.raises(ValueError, match=r"^epochs must be an integer, got 2\.5"):
        TrainConfig.from_dict({"epochs": 2.5})
    cfg = TrainConfig.from_dict({"milestones": "30,60", "schedule": "step", "nesterov": "on"})
    assert cfg.milestones == [30.0, 60.0] and cfg.nesterov is True


def test_cli_type_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    from unimix.cli import main

    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--set", "mode=diagonal"]) == 2
    err = capsys.readouterr().err
    assert err == "unimix train: error: mode must be one of batch, pair, elem; got 'diagonal'\n"
    assert not out.exists()
