"""make_unlearning_handler: a bundle's unlearning dict -> the library's DomainUnlearningHandler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harmonize.bundle import make_unlearning_handler, unlearning_settings
from harmonize.data.dataset import make_dataset
from harmonize.errors import ConfigError
from harmonize.handlers import AlternatingConfusion, DomainUnlearningHandler
from harmonize.networks import BrainAgeRegressor, TissueSegmenter


@pytest.fixture(scope="module")
def dataset(tiny_cohort):
    return make_dataset(tiny_cohort, split="train")


def test_settings_from_a_dict_and_none():
    settings = unlearning_settings({"method": "dann", "reversal_weight": 2, "overlap_range": [30, 60]})
    assert settings.method == "dann" and settings.reversal_weight == 2 and settings.overlap_range == (30, 60)
    assert unlearning_settings(None).method == "none"


def test_unknown_setting_names_the_close_ones():
    with pytest.raises(ConfigError, match="Unknown unlearning setting") as err:
        unlearning_settings({"bta": 1.0, "confound": ["site"], "zzz": 1})
    assert err.value.problems == ["'bta': did you mean 'beta' or 'betas'?", "'confound': did you mean 'confounds'?", "'zzz'"]


def test_invalid_value_is_a_config_error():
    with pytest.raises(ConfigError, match="mode"):
        unlearning_settings({"mode": "fuse"})


@pytest.mark.parametrize(
    "network, taps, dim",
    [
        (BrainAgeRegressor(channels=(4, 8, 8), feature_dim=12), ["encoder"], 12),
        (TissueSegmenter(channels=(4, 8, 16)), ["bottleneck", "final"], 16 + 4),
    ],
    ids=["age", "seg-multipoint"],
)
def test_handler_reads_the_taps_with_their_size(network, taps, dim, dataset, tiny_cohort):
    handler = make_unlearning_handler(network, taps, {"method": "unlearning", "mode": "alternating"}, dataset,
                                      tiny_cohort)
    assert isinstance(handler, DomainUnlearningHandler) and isinstance(handler.objective, AlternatingConfusion)
    assert handler.taps.names == taps
    head = handler.heads["site"]
    assert next(head.parameters()).shape[1] == dim  # first layer of the head reads the pooled taps
    assert head(torch.zeros(2, dim)).shape == (2, 3)  # 3 sites in the tiny cohort


def test_method_none_gives_no_handler(dataset, tiny_cohort):
    assert make_unlearning_handler(BrainAgeRegressor(channels=(4, 8, 8)), "encoder", {"method": "none"}, dataset,
                                   tiny_cohort) is None


def test_wrapped_network_is_tapped_under_module(dataset, tiny_cohort):
    net = BrainAgeRegressor(channels=(4, 8, 8))
    wrapped = nn.DataParallel(net)
    handler = make_unlearning_handler(wrapped, ["encoder"], {"method": "dann"}, dataset, tiny_cohort)
    assert handler.taps.names == ["module.encoder"] and handler.network is wrapped


def test_unknown_tap_is_named(dataset, tiny_cohort):
    with pytest.raises(ConfigError, match="encodr"):
        make_unlearning_handler(BrainAgeRegressor(channels=(4, 8, 8)), ["encodr"], {}, dataset, tiny_cohort)
