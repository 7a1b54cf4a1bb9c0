"""A task loss that ignores the samples without a task label (semi-supervised training)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from harmonize.errors import ConfigError
from harmonize.losses._sample_mask import as_plain_tensor, zero_with_graph

__all__ = ["MaskedLoss"]


class MaskedLoss(nn.Module):
    """Wrap a task loss so that unlabelled samples of a batch contribute nothing.

    A sample is *unlabelled* when its target holds a non-finite value (e.g. a NaN age) or when every element
    of its target equals ``ignore_value`` (e.g. a label map filled with -1). The wrapped loss is computed on the
    labelled samples only and its mean is returned, so a batch may mix labelled and unlabelled scans: the
    unlabelled ones still go through the network (and can serve the domain-unlearning step) but never the task
    loss. This is how the semi-supervised experiment of Dinsdale et al. (NeuroImage 2021; MIUA 2020) runs
    inside MONAI's ``SupervisedTrainer``, which calls ``loss_function(pred, target).mean()``.

    A batch without any labelled sample gives ``0`` connected to ``pred``'s graph (a zero gradient), never NaN,
    so ``loss.backward()`` works and the optimiser step changes nothing.

    Not to be confused with :class:`monai.losses.MaskedLoss`, which masks voxels, not samples.

    Args:
        loss: the task loss, an instance (e.g. ``nn.MSELoss(reduction="none")`` or
            ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``), called as ``loss(pred, target)`` on
            the labelled samples; a non-scalar result is averaged.
        ignore_value: a target value that marks a sample as unlabelled when *all* its elements hold it, or
            ``None`` (default) to rely on non-finite targets only.

    Raises:
        TypeError: ``loss`` is a class or not callable.
        ConfigError: (a ``ValueError``) ``ignore_value`` is not a finite number.

    Example:
        >>> loss = MaskedLoss(nn.MSELoss(reduction="none"))
        >>> pred = torch.tensor([[1.0], [5.0]])
        >>> float(loss(pred, torch.tensor([[0.0], [float("nan")]])))
        1.0
    """

    def __init__(
        self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ignore_value: float | None = None
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if inspect.isclass(loss) or not callable(loss):
            raise TypeError(
                f"{name}: loss must be a loss instance such as nn.MSELoss(reduction='none'), got {loss!r}."
            )
        if ignore_value is not None:
            if isinstance(ignore_value, bool) or not isinstance(ignore_value, (int, float)):
                raise ConfigError(f"{name}: ignore_value must be a number or None, got {ignore_value!r}.")
            if not math.isfinite(ignore_value):
                raise ConfigError(
                    f"{name}: ignore_value must be finite, got {ignore_value!r} (non-finite targets are "
                    "always treated as unlabelled)."
                )
        self.loss = loss
        self.ignore_value = ignore_value

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        """Which samples of a batch carry a task label.

        Args:
            target: batched targets, first dimension the batch.

        Returns:
            A bool tensor ``(batch,)``: ``False`` where any target element is non-finite or all equal
            ``ignore_value``.
        """
        target = as_plain_tensor(target)
        if target.ndim == 0:
            raise ValueError(f"{type(self).__name__}: target must be batched (batch first), got a scalar.")
        flat = target.reshape(target.shape[0], -1)
        keep = torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
        if flat.dtype.is_floating_point or flat.dtype.is_complex:
            keep &= torch.isfinite(flat).all(dim=1)
        if self.ignore_value is not None and flat.shape[1] > 0:
            keep &= ~(flat == self.ignore_value).all(dim=1)
        return keep

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The wrapped loss on the labelled samples, as a scalar.

        Args:
            pred: batched predictions (batch first).
            target: batched targets with the same batch size.

        Returns:
            A scalar: the mean of the wrapped loss over the labelled samples, or ``0`` with a graph when
            there are none.

        Raises:
            ValueError: ``pred`` and ``target`` have different batch sizes (both shapes are named).
        """
        pred = as_plain_tensor(pred)
        target = as_plain_tensor(target)
        if pred.ndim == 0 or target.ndim == 0 or pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: pred and target must share the batch (first) dimension, "
                f"got pred {tuple(pred.shape)} and target {tuple(target.shape)}."
            )
        keep = self.labelled(target).to(pred.device)
        n_labelled = int(keep.sum())
        if n_labelled == 0:
            return zero_with_graph(pred)
        if n_labelled < pred.shape[0]:
            index = torch.nonzero(keep).squeeze(1)
            pred = pred.index_select(0, index)
            target = target.index_select(0, index.to(target.device))
        return torch.as_tensor(self.loss(pred, target)).mean()

    def extra_repr(self) -> str:
        return f"ignore_value={self.ignore_value}"
