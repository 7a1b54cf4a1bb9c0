"""Recompute BatchNorm statistics of a trained network on its training data."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from harmonize.keys import Keys

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, batches: Iterable[dict], device: str | torch.device = "cpu") -> int:
    """Replace every BatchNorm layer's running statistics by their average over ``batches``.

    Adversarial training (unlearning, DANN) keeps moving the features, so the exponential running means of
    BatchNorm lag behind the weights and evaluation-mode predictions drift from training-mode ones (measured in
    docs/unlearning.md). Call it after training, before evaluation.

    Args:
        network: the trained network (its weights are not changed; its train/eval mode is restored).
        batches: dictionary batches of training scans (``image`` key), e.g. the training loader.
        device: where to run the network.

    Returns:
        The number of BatchNorm layers recalibrated (0: nothing to do, ``batches`` is not read).
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = network.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
        network.train()
        for batch in batches:
            network(torch.as_tensor(batch[Keys.IMAGE]).to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        network.train(was_training)
    return len(norms)
