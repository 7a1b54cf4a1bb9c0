"""BatchNormRecalibrationHandler: recompute BatchNorm statistics on the training batches at COMPLETED."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from torch import nn

from harmonize.handlers import BatchNormRecalibrationHandler


def test_statistics_are_the_training_batches_average():
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(2, 1, 4, 4, 4, generator=gen) * 3 + 5} for _ in range(3)]
    engine = Engine(lambda e, b: None)
    engine.network = nn.DataParallel(net)  # the handler unwraps a DDP/DataParallel network
    BatchNormRecalibrationHandler(batches).attach(engine)
    engine.run([0], max_epochs=1)
    with torch.no_grad():
        expected = torch.stack([net[0](b["image"]).mean(dim=(0, 2, 3, 4)) for b in batches]).mean(0)
    torch.testing.assert_close(net[1].running_mean, expected, rtol=1e-5, atol=1e-5)
    assert net[1].num_batches_tracked == 3 and net[1].momentum == 0.1  # momentum restored after the average


def test_network_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.InstanceNorm3d(2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    engine = Engine(lambda e, b: None)
    engine.network = net
    BatchNormRecalibrationHandler([]).attach(engine)
    engine.run([0], max_epochs=1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
