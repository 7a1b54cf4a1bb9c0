"""SSIM + L1 loss for MRI reconstruction (Xue et al., "Erase to Enhance", after fastMRI's VarNet training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import SSIMLoss
from monai.metrics.regression import KernelType
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from harmonize import defaults
from harmonize.errors import is_integer, number_problem, option_value, raise_problems

__all__ = ["SSIML1Loss"]

#: Side of the SSIM window (fastMRI and Xue et al. use 7 x 7).
SSIM_WINDOW = defaults.RECON_SSIM_WINDOW
#: Weight of the L1 term (Xue et al.: 1e-5).
L1_WEIGHT = defaults.RECON_L1_WEIGHT


class SSIML1Loss(_Loss):
    """``(1 - SSIM) + l1_weight * |input - target|``, per sample, then reduced like MONAI losses.

    The SSIM term is MONAI's :class:`~monai.losses.SSIMLoss` with a 7 x 7 uniform window (k1 = 0.01, k2 = 0.03),
    as in fastMRI's SSIM loss that Xue et al. train and unlearn with; its minimum is 0 (identical images) and its
    maximum 2. The L1 term is the mean absolute error of each sample.

    Args:
        spatial_dims: 2 for slices, 3 for volumes.
        data_range: value range of the images (1 when targets are scaled to [0, 1]).
        win_size: SSIM window side.
        kernel_type: ``uniform`` (fastMRI) or ``gaussian``.
        l1_weight: weight of the L1 term (>= 0).
        reduction: ``mean`` (default), ``sum`` or ``none`` (a ``(B, 1)`` tensor).

    Raises:
        ConfigError: negative ``l1_weight``, a ``data_range`` <= 0, an even or too small ``win_size``, or an unknown
            option (every problem listed at once).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        data_range: float = 1.0,
        win_size: int | Sequence[int] = SSIM_WINDOW,
        kernel_type: KernelType | str = KernelType.UNIFORM,
        l1_weight: float = L1_WEIGHT,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        problems = [p for p in (number_problem("l1_weight", l1_weight, strict=False),
                                number_problem("data_range", data_range)) if p]
        sizes = [win_size] * spatial_dims if is_integer(win_size) else list(win_size)
        if not all(is_integer(s) and s >= 3 and s % 2 == 1 for s in sizes):
            problems.append(f"'win_size' must be an odd integer >= 3 (or one per axis; the paper uses 7), "
                            f"got {win_size!r}")
        reduction, reduction_problem = option_value("reduction", reduction, LossReduction)
        kernel_type, kernel_problem = option_value("kernel_type", kernel_type, KernelType)
        raise_problems(type(self).__name__, [*problems, reduction_problem, kernel_problem])
        super().__init__(reduction=reduction)
        self.l1_weight = float(l1_weight)
        self.ssim = SSIMLoss(
            spatial_dims=spatial_dims,
            data_range=data_range,
            kernel_type=kernel_type,
            win_size=win_size,
            reduction=LossReduction.NONE,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: reconstructions ``(B, C, *spatial)``.
            target: ground truth of the same shape.

        Raises:
            ValueError: if the shapes differ.
        """
        if input.shape != target.shape:
            raise ValueError(
                f"input and target must have the same shape, got {tuple(input.shape)} and {tuple(target.shape)}."
            )
        loss = self.ssim(input, target)  # (B, 1)
        if self.l1_weight:
            loss = loss + self.l1_weight * (input - target).abs().flatten(1).mean(dim=1, keepdim=True)
        if self.reduction == LossReduction.MEAN:
            return loss.mean()
        if self.reduction == LossReduction.SUM:
            return loss.sum()
        return loss
