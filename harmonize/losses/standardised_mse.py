"""Mean squared error in units of a scale, so a regression loss has the same size whatever its units."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch import nn

from harmonize.errors import number_problem, option_value, raise_problems

__all__ = ["StandardisedMSELoss"]


class StandardisedMSELoss(nn.Module):
    """``((pred - target) / scale)^2``: the MSE of a target measured in units of ``scale``.

    Brain age is predicted in years, but the confusion loss's weight ``beta`` should not depend on whether the
    task loss is in years² (hundreds) or in standard deviations (about one). With ``scale`` set to the training
    cohort's age standard deviation, an uninformed prediction (the mean age) costs about 1.

    Args:
        scale: the unit, > 0 (e.g. the standard deviation of the training ages).
        reduction: ``none`` (per element), ``mean`` or ``sum``.
    """

    def __init__(self, scale: float = 1.0, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__()
        reduction, problem = option_value("reduction", reduction, LossReduction)
        raise_problems(type(self).__name__, [number_problem("scale", scale), problem])
        self.scale = float(scale)
        self.reduction = LossReduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"StandardisedMSELoss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}.")
        loss = ((pred - target) / self.scale) ** 2
        if self.reduction == LossReduction.MEAN:
            return loss.mean()
        if self.reduction == LossReduction.SUM:
            return loss.sum()
        return loss
