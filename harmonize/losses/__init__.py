"""Losses of scanner unlearning and semi-supervised training (plain PyTorch + MONAI; no engines, no files).

- :class:`ConfusionLoss`: pushes the domain head's softmax to uniform (Dinsdale et al. 2021); minimum log N.
- :class:`DomainLoss`: cross-entropy of the domain head, with class weights and a per-sample mask.
- :class:`GradientReversal`: the DANN layer (Ganin & Lempitsky 2015), with :func:`dann_lambda` for its schedule.
- :class:`StandardisedMSELoss`: MSE in units of a scale (e.g. the age SD), so ``beta`` means the same for any unit.
- :class:`SiteAgreementLoss`: brain age's squared error with site fixed effects and agreement between sites at the
  same age, so reading the scanner earns nothing (for sites whose age ranges only partly overlap).
- :class:`MaskedLoss`: any task loss, skipping the samples without a label (NaN target or ``ignore_value``).
- :class:`SSIML1Loss`: SSIM (7 x 7) + L1 reconstruction loss of Xue et al. (machine unlearning in MRI).
"""

from harmonize.losses.confusion import ConfusionLoss
from harmonize.losses.domain import DomainLoss
from harmonize.losses.gradient_reversal import (
    GradientReversal,
    GradientReversalFunction,
    dann_lambda,
    grad_reverse,
)
from harmonize.losses.masked import MaskedLoss
from harmonize.losses.site_agreement import SiteAgreementLoss
from harmonize.losses.ssim_l1 import SSIML1Loss
from harmonize.losses.standardised_mse import StandardisedMSELoss

__all__ = [
    "ConfusionLoss",
    "DomainLoss",
    "GradientReversal",
    "GradientReversalFunction",
    "MaskedLoss",
    "SSIML1Loss",
    "SiteAgreementLoss",
    "StandardisedMSELoss",
    "dann_lambda",
    "grad_reverse",
]
