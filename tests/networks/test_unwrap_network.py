"""unwrap_network: the module inside a DataParallel/DistributedDataParallel wrapper, and its name prefix."""

from __future__ import annotations

import torch
from torch import nn

from harmonize.networks import BrainAgeRegressor, FeatureTaps, unwrap_network


def test_a_plain_network_is_itself_with_no_prefix():
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    inner, prefix = unwrap_network(net)
    assert inner is net and prefix == ""


def test_a_data_parallel_network_is_unwrapped_with_the_module_prefix():
    net = BrainAgeRegressor(channels=(4, 8, 8))
    wrapped = nn.DataParallel(net)
    inner, prefix = unwrap_network(wrapped)
    assert inner is net and prefix == "module."
    # the prefix names, in the wrapper, the same layer as the bare name in the inner module
    assert dict(wrapped.named_modules())[prefix + "encoder"] is net.encoder


def test_the_prefixed_tap_reads_the_same_features_as_the_unwrapped_one():
    torch.manual_seed(0)
    net = BrainAgeRegressor(channels=(4, 8, 8))
    wrapped = nn.DataParallel(net)
    inner, prefix = unwrap_network(wrapped)
    image = torch.randn(2, 1, 16, 16, 16)
    outer_taps, inner_taps = FeatureTaps(wrapped, [prefix + "encoder"]), FeatureTaps(inner, ["encoder"])
    try:
        wrapped.eval()(image)
        torch.testing.assert_close(outer_taps.features(), inner_taps.features())
    finally:
        outer_taps.remove()
        inner_taps.remove()
