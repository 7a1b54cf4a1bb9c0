"""check_overrides: an override naming an id the configs lack is an error with the close ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harmonize.bundle import check_overrides, config_ids
from harmonize.errors import ConfigError

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TRAIN = BUNDLES / "brain_age_unlearning" / "configs" / "train.json"
DANN = BUNDLES / "brain_age_unlearning" / "configs" / "dann.json"


def test_config_ids_are_nested_with_double_colons():
    ids = config_ids({"a": {"b": [1, {"c": 2}]}})
    assert ids == {"a": {"b": [1, {"c": 2}]}, "a::b": [1, {"c": 2}], "a::b::0": 1, "a::b::1": {"c": 2},
                   "a::b::1::c": 2}


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_epochs": 2, "manifest": "m.csv", "unlearning#beta": 3, "unlearning::mode": "alternating"},
        {"network_def#dropout": 0.1, "train#trainer#amp": True},  # new arguments of components
        {"_meta_#version": "9.9.9"},
    ],
    ids=["existing", "component-arguments", "metadata"],
)
def test_known_ids_pass(overrides):
    check_overrides([TRAIN, DANN], overrides)


def test_unknown_ids_are_listed_with_close_matches():
    with pytest.raises(ConfigError) as err:
        check_overrides([str(TRAIN), str(DANN)], {"max_epoch": 2, "unlearning#bta": 1, "network_def#chanels": [4],
                                                  "zzzzzz": 1, "max_epochs": 3})
    message = str(err.value)
    assert message.startswith("4 override(s) name ids that ") and "train.json" in message and "dann.json" in message
    assert "MONAI would add them silently" in message
    assert err.value.problems == [
        "'max_epoch': did you mean 'max_epochs'?",
        "'unlearning#bta': did you mean 'unlearning#beta' or 'unlearning#alpha' or 'unlearning'?",
        ("'network_def#chanels': did you mean 'network_def#channels' or 'network_def#in_channels' or "
         "'network_def#act'?"),
        "'zzzzzz': no id of the configs is close",
    ]


def test_suggestions_follow_the_separator_used():
    with pytest.raises(ConfigError) as err:
        check_overrides(TRAIN, {"unlearning::bta": 1})
    assert err.value.problems == [
        "'unlearning::bta': did you mean 'unlearning::beta' or 'unlearning::alpha' or 'unlearning'?"
    ]


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file") as err:
        check_overrides(tmp_path / "nope.json", {})
    assert err.value.problems == [str(tmp_path / "nope.json")]


def test_component_accepting_any_keyword(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"t": {"_target_": "builtins.dict"}}))
    check_overrides(config, {"t#anything": 1})  # dict(**kwargs) takes any name


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"max_epochs": "two"}, "'max_epochs': expected an integer (the config's value is 15), got 'two' (str)"),
        ({"max_epochs": 2.5}, "'max_epochs': expected an integer (the config's value is 15), got 2.5 (float)"),
        ({"unlearning#beta": "high"}, "'unlearning#beta': expected a number (the config's value is 10.0), got 'high' (str)"),
        ({"progress": 3}, "'progress': expected true or false (the config's value is True), got 3 (int)"),
    ],
    ids=["text-for-int", "float-for-int", "text-for-float", "int-for-bool"],
)
def test_an_override_of_the_wrong_type_names_the_id_and_the_type(overrides, problem):
    with pytest.raises(ConfigError) as err:
        check_overrides(TRAIN, overrides)
    assert err.value.problems == [problem]


def test_expressions_references_and_numbers_for_numbers_pass():
    check_overrides(TRAIN, {"max_epochs": "$1 + 1", "unlearning#beta": 3, "learning_rate": "@max_epochs",
                            "manifest": None})
