"""recalibrate_batchnorm: running statistics become the plain average over the given batches."""

from __future__ import annotations

import torch
from torch import nn

from harmonize.keys import Keys
from harmonize.networks import recalibrate_batchnorm


def test_statistics_are_the_average_over_the_batches():
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    net[1].running_mean.fill_(100.0)  # stale statistics
    g = torch.Generator().manual_seed(0)
    batches = [{Keys.IMAGE: torch.randn(4, 1, 3, 3, 3, generator=g) + i} for i in range(3)]
    net.eval()
    assert recalibrate_batchnorm(net, batches) == 1
    with torch.no_grad():
        expected = torch.stack([net[0](b[Keys.IMAGE]).mean(dim=(0, 2, 3, 4)) for b in batches]).mean(0)
    assert torch.allclose(net[1].running_mean, expected, atol=1e-5)
    assert not net.training  # mode restored
    assert net[1].momentum == 0.1  # momentum restored


def test_network_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.GroupNorm(1, 2))
    before = [p.clone() for p in net.parameters()]
    assert recalibrate_batchnorm(net, iter(())) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
