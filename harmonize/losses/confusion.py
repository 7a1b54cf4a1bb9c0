"""Confusion loss of scanner unlearning (Dinsdale, Jenkinson & Namburete, NeuroImage 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch import nn

from harmonize.losses._sample_mask import (
    as_plain_tensor,
    parse_reduction,
    reduce_per_sample,
    sample_weights,
)

__all__ = ["ConfusionLoss"]

#: Fewest classes a domain head can have (one class carries no domain information to unlearn).
MIN_CLASSES = 2


class ConfusionLoss(nn.Module):
    """Cross-entropy between the domain head's softmax and the uniform distribution over its ``N`` classes.

    With a ``target`` distribution per sample (e.g. how likely each site is given the subject's age, when sites
    differ in age), the loss is the cross-entropy against it instead, ``-sum_k t_k log softmax(z)_k``, whose minimum
    ``H(t)`` is reached at ``softmax(z) = t``: the head then reads no more of the domain than ``t`` already tells.

    For logits ``z`` of one sample,

    .. math::

        L(z) = -\\frac{1}{N} \\sum_{k=1}^{N} \\log \\operatorname{softmax}(z)_k
             = \\log N + \\mathrm{KL}(u \\,\\|\\, \\operatorname{softmax}(z)),

    so its minimum, ``log N``, is reached exactly when the softmax is uniform (the head cannot tell the
    domains apart), and its gradient with respect to ``z`` is ``softmax(z) - 1/N``. Minimising it with respect
    to the feature extractor, with the domain head fixed, is the "unlearning" step of Dinsdale et al.,
    "Deep learning-based unlearning of dataset bias for MRI harmonisation and confound removal", NeuroImage
    228 (2021) 117689, doi:10.1016/j.neuroimage.2020.117689.

    The loss is computed from logits with ``log_softmax`` (the original code took the log of a softmax,
    which gives ``-inf`` and NaN gradients once a probability underflows). Half-precision logits are upcast
    to float32, so logits as extreme as ``+-65504`` give a finite loss.

    Args:
        reduction: ``"mean"`` (default: the weighted mean over the samples that count), ``"sum"`` (the
            original code summed over the batch, 8-16x stronger than a mean at the same weight beta) or
            ``"none"`` (one value per sample, zero for masked samples).

    Raises:
        ConfigError: (a ``ValueError``) for an unknown ``reduction``.

    Example:
        >>> loss = ConfusionLoss()
        >>> round(float(loss(torch.zeros(3, 4))), 4)  # log 4
        1.3863
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__()
        self.reduction = parse_reduction(reduction, type(self).__name__)

    def forward(
        self, logits: torch.Tensor, mask: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Confusion loss of a batch of domain logits.

        Args:
            logits: raw domain-head outputs, shape ``(batch, N)`` with ``N >= 2`` (no softmax applied).
            mask: optional per-sample mask ``(batch,)`` or ``(batch, 1)``: ``True``/``1`` counts, ``False``/``0``
                contributes nothing (its logits are not even read); a float mask weights each sample.
            target: optional ``(batch, N)`` distribution per sample (rows sum to 1); default uniform.

        Returns:
            A scalar for ``mean``/``sum``, else a ``(batch,)`` tensor. A mean over a batch in which nothing
            counts is ``0`` with a (zero) gradient path.

        Raises:
            ValueError: ``logits`` is not ``(batch, N >= 2)``, or ``mask`` or ``target`` does not match the batch
                (both shapes are named).
        """
        logits = as_plain_tensor(logits)
        if logits.ndim != 2 or logits.shape[1] < MIN_CLASSES:
            raise ValueError(
                f"{type(self).__name__}: logits must have shape (batch, num_classes >= {MIN_CLASSES}), "
                f"got {tuple(logits.shape)}."
            )
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        weights = sample_weights(mask, logits, type(self).__name__)
        if weights is not None:
            # Masked samples never reach log_softmax, so non-finite logits there cannot poison the gradient.
            logits = torch.where((weights > 0).unsqueeze(1), logits, torch.zeros_like(logits))
        log_p = F.log_softmax(logits, dim=1)
        if target is None:
            per_sample = -log_p.mean(dim=1)
        else:
            target = as_plain_tensor(target)
            if target.shape != logits.shape:
                raise ValueError(
                    f"{type(self).__name__}: target must have the logits' shape {tuple(logits.shape)}, "
                    f"got {tuple(target.shape)}."
                )
            per_sample = -(target.to(log_p) * log_p).sum(dim=1)
        return reduce_per_sample(per_sample, weights, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction.value!r}"
