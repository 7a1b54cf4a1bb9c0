"""Per-sample masks and reductions shared by the losses of this package (private helpers).

A *sample mask* says which samples of a batch count: ``True``/``1`` counts, ``False``/``0`` contributes nothing.
A float mask is a non-negative per-sample weight. The reductions never divide by zero: a mean over a batch in
which nothing counts is ``0`` and keeps a gradient path, so an optimiser step on it is a harmless no-op.
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction

from harmonize.errors import option_value, raise_problems

__all__ = ["as_plain_tensor", "parse_reduction", "reduce_per_sample", "sample_weights", "zero_with_graph"]


def parse_reduction(reduction: LossReduction | str, owner: str) -> LossReduction:
    """Check a ``reduction`` argument against MONAI's :class:`~monai.utils.LossReduction`.

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        owner: the class that received it, named in the error.

    Returns:
        The matching :class:`~monai.utils.LossReduction` member.

    Raises:
        ConfigError: (a ``ValueError``) naming the argument and the valid choices (:func:`~harmonize.errors.option_value`).
    """
    value, problem = option_value("reduction", reduction, LossReduction)
    raise_problems(owner, [problem])
    return LossReduction(value)


def as_plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """View a tensor subclass (e.g. MONAI's ``MetaTensor``) as a plain tensor, keeping its autograd graph."""
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


def sample_weights(mask: torch.Tensor | None, reference: torch.Tensor, owner: str) -> torch.Tensor | None:
    """Turn a per-sample mask into float weights of shape ``(batch,)`` on ``reference``'s device.

    Args:
        mask: ``None`` (every sample counts) or a bool/integer/float tensor of shape ``(batch,)`` or
            ``(batch, 1)``; a float mask holds non-negative, finite weights.
        reference: the batched input the mask refers to (its first dimension is the batch).
        owner: the class that received the mask, named in errors.

    Returns:
        ``None`` when ``mask`` is ``None``, else float weights ``(batch,)`` in ``reference``'s float dtype.

    Raises:
        ValueError: the mask's shape does not match the batch (both shapes are named), or a weight is negative
            or not finite.
    """
    if mask is None:
        return None
    batch = reference.shape[0]
    mask = as_plain_tensor(mask)
    if not (mask.ndim == 1 or (mask.ndim == 2 and mask.shape[1] == 1)) or mask.shape[0] != batch:
        raise ValueError(
            f"{owner}: mask must hold one value per sample, shape ({batch},) or ({batch}, 1), "
            f"but mask has shape {tuple(mask.shape)} and the input has shape {tuple(reference.shape)}."
        )
    mask = mask.reshape(batch).to(device=reference.device)
    dtype = reference.dtype if reference.dtype.is_floating_point else torch.float32
    if mask.dtype == torch.bool:
        return mask.to(dtype)
    weights = mask.to(dtype)
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(
            f"{owner}: a float mask holds non-negative finite weights per sample, got {weights.tolist()}."
        )
    return weights


def reduce_per_sample(
    values: torch.Tensor, weights: torch.Tensor | None, reduction: LossReduction
) -> torch.Tensor:
    """Reduce per-sample losses ``(batch,)`` with optional per-sample weights.

    ``none`` returns ``values * weights``; ``sum`` their sum; ``mean`` their sum divided by the sum of the
    weights (the plain mean without weights). A mean whose weights sum to zero (an all-masked or empty batch)
    is ``0`` with a gradient path, never NaN.

    Args:
        values: per-sample losses, shape ``(batch,)``; finite wherever the weight is non-zero.
        weights: per-sample weights ``(batch,)`` or ``None``.
        reduction: a :class:`~monai.utils.LossReduction`.

    Returns:
        The reduced loss: ``(batch,)`` for ``none``, else a scalar.
    """
    weighted = values if weights is None else values * weights
    if reduction == LossReduction.NONE:
        return weighted
    total = weighted.sum()
    if reduction == LossReduction.SUM:
        return total
    denominator = values.new_tensor(float(values.shape[0])) if weights is None else weights.sum()
    return total / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def zero_with_graph(pred: torch.Tensor) -> torch.Tensor:
    """A scalar ``0`` connected to ``pred``'s graph (zero gradient), finite even where ``pred`` is not."""
    finite = torch.isfinite(pred)
    return torch.where(finite, pred * 0.0, torch.zeros_like(pred)).sum()
