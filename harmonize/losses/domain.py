"""Domain (scanner) classification loss of the domain head, with class weights and a per-sample mask."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch import nn

from harmonize.errors import ConfigError
from harmonize.losses._sample_mask import (
    as_plain_tensor,
    parse_reduction,
    reduce_per_sample,
    sample_weights,
)

__all__ = ["DomainLoss"]

logger = logging.getLogger(__name__)

#: Fewest classes a domain head can have.
MIN_CLASSES = 2


class DomainLoss(nn.Module):
    """Cross-entropy of the domain head's logits against the domain (site) index of each sample.

    This is the loss that trains the domain head on fixed features in the second step of scanner unlearning
    (Dinsdale, Jenkinson & Namburete, NeuroImage 2021). It equals
    ``torch.nn.functional.cross_entropy(logits, target, weight=weight, reduction=...)`` and adds:

    - a per-sample ``mask`` (only the samples that count enter the loss; e.g. the overlapping ages of the
      paper's biased experiment, or the samples whose site is known);
    - class ``weight`` for unbalanced sites (:meth:`from_counts` gives inverse-frequency weights);
    - float32 computation for half-precision logits and a mean that is ``0``, not NaN, when nothing counts.

    With class weights, the mean is ``sum_i m_i w_{y_i} l_i / sum_i m_i w_{y_i}`` (PyTorch's weighted mean,
    restricted to the samples with mask ``m_i > 0``).

    Args:
        weight: optional class weights, one non-negative finite number per domain, not all zero.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Raises:
        ConfigError: (a ``ValueError``) for an unknown ``reduction`` or bad ``weight``.
    """

    def __init__(
        self,
        weight: Sequence[float] | torch.Tensor | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.reduction = parse_reduction(reduction, name)
        class_weight: torch.Tensor | None = None
        if weight is not None:
            class_weight = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
            if (
                class_weight.ndim != 1
                or class_weight.numel() < MIN_CLASSES
                or not bool(torch.isfinite(class_weight).all())
                or bool((class_weight < 0).any())
                or not bool((class_weight > 0).any())
            ):
                raise ConfigError(
                    f"{name}: weight must be one non-negative finite number per domain ({MIN_CLASSES} or more), "
                    f"not all zero; got {weight!r}."
                )
        self.register_buffer("weight", class_weight)

    @classmethod
    def from_counts(
        cls, counts: Sequence[int] | torch.Tensor, reduction: LossReduction | str = LossReduction.MEAN
    ) -> DomainLoss:
        """A loss with inverse-frequency class weights ``total / (N * count_k)`` (balanced sites weigh 1).

        Args:
            counts: number of training samples of each domain, all positive.
            reduction: as in the constructor.

        Returns:
            A :class:`DomainLoss` whose weighted mean treats every domain as equally frequent.

        Raises:
            ConfigError: a count is not a positive number (a domain without samples should not be a class).
        """
        counts_t = torch.as_tensor(counts, dtype=torch.float64)
        if counts_t.ndim != 1 or counts_t.numel() < MIN_CLASSES or not bool((counts_t > 0).all()):
            raise ConfigError(
                f"{cls.__name__}.from_counts: counts must be one positive count per domain ({MIN_CLASSES} or "
                f"more), got {counts!r}. Drop domains without training samples from the head's classes."
            )
        weight = counts_t.sum() / (counts_t.numel() * counts_t)
        logger.debug("Domain class weights from counts %s: %s", counts_t.tolist(), weight.tolist())
        return cls(weight=weight.float(), reduction=reduction)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy of a batch.

        Args:
            logits: raw domain-head outputs ``(batch, N)``.
            target: domain indices in ``[0, N)``, shape ``(batch,)`` or ``(batch, 1)``, integer (or float holding
                whole numbers). Masked samples' targets are never read, so they may hold anything (e.g. -1).
            mask: optional per-sample mask ``(batch,)`` or ``(batch, 1)``: ``True``/``1`` counts; a float mask
                weights each sample.

        Returns:
            A scalar for ``mean``/``sum``, else ``(batch,)`` (zero for masked samples).

        Raises:
            ValueError: a shape mismatch (both shapes named), a target that is not a whole number, or a target
                of a counted sample outside ``[0, N)``.
        """
        name = type(self).__name__
        logits = as_plain_tensor(logits)
        target = as_plain_tensor(target)
        if logits.ndim != 2 or logits.shape[1] < MIN_CLASSES:
            raise ValueError(
                f"{name}: logits must have shape (batch, num_classes >= {MIN_CLASSES}), got {tuple(logits.shape)}."
            )
        batch, num_classes = logits.shape
        if not (target.ndim == 1 or (target.ndim == 2 and target.shape[1] == 1)) or target.shape[0] != batch:
            raise ValueError(
                f"{name}: target must hold one domain index per sample, shape ({batch},) or ({batch}, 1), "
                f"but target has shape {tuple(target.shape)} and logits have shape {tuple(logits.shape)}."
            )
        if self.weight is not None and self.weight.numel() != num_classes:
            raise ValueError(
                f"{name}: {self.weight.numel()} class weights but logits have {num_classes} classes "
                f"(shape {tuple(logits.shape)})."
            )
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        target = target.reshape(batch).to(logits.device)
        weights = sample_weights(mask, logits, name)
        counted = torch.ones(batch, dtype=torch.bool, device=logits.device) if weights is None else weights > 0

        if target.dtype.is_floating_point:
            whole = torch.isfinite(target) & (target == torch.round(target))
            if not bool(whole[counted].all()):
                raise ValueError(f"{name}: target must hold whole domain indices, got {target[counted].tolist()}.")
            target = torch.where(counted, target, torch.zeros_like(target))
        target = torch.where(counted, target.long(), torch.zeros_like(target, dtype=torch.long))
        bad = counted & ((target < 0) | (target >= num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"{name}: domain indices must lie in [0, {num_classes}) for a head with {num_classes} classes, "
                f"got {sorted(set(target[bad].tolist()))}. Check the site mapping and the head's num_classes."
            )

        if weights is not None:
            logits = torch.where(counted.unsqueeze(1), logits, torch.zeros_like(logits))
        per_sample = F.cross_entropy(logits, target, reduction="none")
        if self.weight is not None:
            class_w = self.weight.to(device=logits.device, dtype=logits.dtype)[target]
            weights = class_w if weights is None else weights * class_w
        return reduce_per_sample(per_sample, weights, self.reduction)

    def extra_repr(self) -> str:
        weight = None if self.weight is None else [round(w, 4) for w in self.weight.tolist()]
        return f"weight={weight}, reduction={self.reduction.value!r}"
