"""Dice of every scan a segmentation network labels, per foreground class (MONAI's ``DiceMetric``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from harmonize.errors import HarmonizeError
from harmonize.keys import Keys

__all__ = ["DicePerScan"]


class DicePerScan:
    """Dice of every scan a network segments while iterating :meth:`batches` (a forward hook on the network).

    Scores go to :attr:`scores`, one ``(batch, num_classes - 1)`` tensor per batch; an unlabelled scan's are NaN.
    """

    def __init__(self, num_classes: int) -> None:
        from monai.metrics import DiceMetric

        self.num_classes = num_classes
        self.metric = DiceMetric(include_background=False, reduction="none", num_classes=num_classes)
        self.scores: list[torch.Tensor] = []
        self._batch: Mapping[str, Any] | None = None

    def batches(self, loader: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        """Yield ``loader``'s batches, remembering the one being evaluated."""
        for batch in loader:
            self._batch = batch
            yield batch
        self._batch = None

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        batch = self._batch
        if batch is None:
            return
        if output.ndim < 3 or output.shape[1] != self.num_classes:
            raise HarmonizeError(
                f"The segmentation audit needs logits (batch, {self.num_classes}, *spatial); the network output "
                f"{tuple(output.shape)}."
            )
        label = torch.as_tensor(batch[Keys.LABEL]).to(output.device)
        stray = (label < 0) | (label >= self.num_classes)
        if stray.any():
            subjects = np.asarray(batch[Keys.SUBJECT_ID]).reshape(-1)[stray.flatten(1).any(1).cpu().numpy()]
            raise HarmonizeError(
                f"Label maps of {subjects.tolist()} hold values outside 0..{self.num_classes - 1}, the classes of "
                "the network: check the manifest's label column, or the network's out_channels."
            )
        prediction = torch.argmax(output.detach(), dim=1, keepdim=True)
        scores = self.metric(prediction, label).float().cpu()
        self.metric.reset()
        labelled = torch.as_tensor(batch.get(Keys.HAS_LABEL, torch.ones(len(scores), dtype=torch.bool)))
        scores[~labelled.bool().cpu()] = math.nan  # an unlabelled scan (a zero label map) is not scored
        self.scores.append(scores)
