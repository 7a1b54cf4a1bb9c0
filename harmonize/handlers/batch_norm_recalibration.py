"""A trainer handler that recomputes BatchNorm statistics on the training scans when training completes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from harmonize.distributed import average_buffers
from harmonize.networks.batch_norm import recalibrate_batchnorm
from harmonize.networks.unwrap_network import unwrap_network

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["BatchNormRecalibrationHandler"]

logger = logging.getLogger(__name__)


class BatchNormRecalibrationHandler:
    """Call :func:`~harmonize.networks.recalibrate_batchnorm` on the trainer's network at ``COMPLETED``.

    Adversarial training keeps moving the features, so BatchNorm's running averages lag behind the weights;
    ``train_brain_age`` recomputes them after training, and this handler does the same inside a bundle's trainer.
    Attach it *before* the ``CheckpointSaver`` that writes the final model (ignite runs handlers in the order they
    were attached), so the saved model carries the recalibrated statistics. A network wrapped in
    ``DistributedDataParallel`` is unwrapped first (:func:`~harmonize.networks.unwrap_network`); networks without
    BatchNorm are left alone. Under ``torch.distributed`` each process reads its own share of the batches, then the
    statistics are averaged over the processes, so every process (and the model rank 0 saves) holds those of all
    the training batches.

    Args:
        batches: the training batches (e.g. the training loader).
        device: where to run the network; default: the device of its parameters.
    """

    def __init__(self, batches: Iterable[dict], device: str | torch.device | None = None) -> None:
        self.batches = batches
        self.device = device

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ``COMPLETED`` event."""
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        network, _ = unwrap_network(engine.network)
        device = self.device or next(network.parameters()).device
        count = recalibrate_batchnorm(network, self.batches, device)
        if count:
            average_buffers(network)
            logger.info("Recalibrated the running statistics of %d BatchNorm layer(s) on the training scans", count)
