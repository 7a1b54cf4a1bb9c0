"""Re-fit the age regressor's output layer in closed form on the final features of the training scans."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from harmonize import defaults
from harmonize.distributed import gather_rows
from harmonize.errors import ConfigError

__all__ = ["refit_output_layer"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def refit_output_layer(
    network: torch.nn.Module,
    batches: Iterable[Any],
    prepare: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
) -> float:
    """Replace the last linear layer of a :class:`~harmonize.networks.BrainAgeRegressor` by a ridge regression.

    Under unlearning the extractor is the last thing to move: each step changes the features against the domain
    heads, and the task head follows a step behind. Fitted once more on the final features of the training scans
    (closed form, penalty by leave-one-out cross-validation), the output layer reads them as they are
    (measurements: docs/unlearning.md). Call it after training and after
    :func:`~harmonize.networks.recalibrate_batchnorm`; only ``regressor.out`` changes. Under ``torch.distributed``
    the rows of every process are gathered, so every process fits the same layer.

    Args:
        network: a trained ``BrainAgeRegressor`` (its train/eval mode is restored).
        batches: the training batches.
        prepare: turns a batch into ``(images, ages)``; ages that are ``NaN`` (unlabelled) are left out.
        device: where to run the network.

    Returns:
        The ridge penalty chosen.

    Raises:
        ConfigError: fewer labelled training scans than two.
    """
    from sklearn.linear_model import RidgeCV

    was_training = network.training
    network.eval()
    hidden, targets = [], []
    try:
        for batch in batches:
            images, ages = prepare(batch)
            features = network.encoder(images.to(device))
            hidden.append(network.regressor.act(network.regressor.fc(features)).double())
            targets.append(torch.as_tensor(ages).reshape(-1).to(features.device).double())
    finally:
        network.train(was_training)
    # under torch.distributed every process fits the same layer on every process's scans
    x, y = gather_rows(torch.cat(hidden)).cpu().numpy(), gather_rows(torch.cat(targets)).cpu().numpy()
    labelled = np.isfinite(y)
    if labelled.sum() < 2:
        raise ConfigError(f"refit_output_layer needs at least 2 training scans with an age, got {int(labelled.sum())}.")
    scaled = (y[labelled] - float(network.age_offset)) / float(network.age_scale)
    ridge = RidgeCV(alphas=defaults.RIDGE_ALPHAS).fit(x[labelled], scaled)
    out = network.regressor.out
    out.weight.copy_(torch.as_tensor(ridge.coef_, dtype=out.weight.dtype).reshape(out.weight.shape))
    out.bias.copy_(torch.as_tensor(ridge.intercept_, dtype=out.bias.dtype).reshape(out.bias.shape))
    logger.info("Output layer re-fitted on %d training scans (ridge penalty %.3g).", int(labelled.sum()), ridge.alpha_)
    return float(ridge.alpha_)
