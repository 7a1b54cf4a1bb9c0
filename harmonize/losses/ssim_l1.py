"""SSIM + L1 loss for MRI reconstruction (Xue et al., "Erase to Enhance", after fastMRI's VarNet training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import SSIMLoss
from monai.metrics.regression import KernelType
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from harmonize import defaults
from harmonize.errors import ConfigError, check_option

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
        ConfigError: negative ``l1_weight``, an even or too small ``win_size``, or an unknown option.
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
        super().__init__(reduction=check_option("reduction", reduction, LossReduction))
        if l1_weight < 0:
            raise ConfigError(f"Argument 'l1_weight' must be >= 0, got {l1_weight}.")
        sizes = [win_size] * spatial_dims if isinstance(win_size, int) else list(win_size)
        if any(s < 3 or s % 2 == 0 for s in sizes):
            raise ConfigError(f"Argument 'win_size' must be odd and >= 3 (the paper uses 7), got {win_size}.")
        self.l1_weight = float(l1_weight)
        self.ssim = SSIMLoss(
            spatial_dims=spatial_dims,
            data_range=data_range,
            kernel_type=check_option("kernel_type", kernel_type, KernelType),
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
