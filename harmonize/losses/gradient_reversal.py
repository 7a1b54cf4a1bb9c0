"""Gradient reversal layer of domain-adversarial training (Ganin & Lempitsky 2015, DANN)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harmonize.errors import ConfigError, number_problem, raise_problems

__all__ = ["GradientReversal", "GradientReversalFunction", "dann_lambda", "grad_reverse"]

#: The DANN paper's schedule steepness: lambda_p = 2 / (1 + exp(-gamma * p)) - 1 with gamma = 10.
DANN_GAMMA = 10.0


def _check_lambda(value: float, owner: str, name: str = "lambda_") -> float:
    if problem := number_problem(name, value, strict=False):
        raise ConfigError(f"{owner}: invalid argument.", problems=[problem])
    return float(value)


class GradientReversalFunction(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-lambda_`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * (-ctx.lambda_), None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Apply gradient reversal to ``x``: ``y = x`` and ``dL/dx = -lambda_ * dL/dy``.

    Args:
        x: any tensor.
        lambda_: the reversal coefficient (finite, >= 0).

    Returns:
        A tensor equal to ``x`` whose gradient is reversed and scaled.
    """
    return GradientReversalFunction.apply(x, _check_lambda(lambda_, "grad_reverse"))


class GradientReversal(nn.Module):
    """Gradient reversal layer: identity forward, ``-lambda_ * grad`` backward.

    Placed between the feature extractor and the domain head, one backward pass of the domain loss trains the
    head to classify the domain and the extractor to defeat it (Ganin & Lempitsky, "Unsupervised domain
    adaptation by backpropagation", ICML 2015). Dinsdale et al. (NeuroImage 2021) compare their confusion loss
    with this DANN baseline.

    ``lambda_`` is a plain attribute checked on assignment, so a handler can follow a schedule such as
    :func:`dann_lambda` by setting ``layer.lambda_ = ...`` each iteration.

    Args:
        lambda_: the reversal coefficient (finite, >= 0). ``0`` blocks the gradient to the extractor.

    Raises:
        ConfigError: (a ``ValueError``) for a negative or non-finite ``lambda_``.
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = lambda_

    @property
    def lambda_(self) -> float:
        """The current reversal coefficient."""
        return self._lambda

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self._lambda = _check_lambda(value, type(self).__name__)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` unchanged; its gradient is reversed and scaled by ``lambda_``."""
        return GradientReversalFunction.apply(x, self._lambda)

    def extra_repr(self) -> str:
        return f"lambda_={self._lambda}"


def dann_lambda(progress: float, gamma: float = DANN_GAMMA, max_lambda: float = 1.0) -> float:
    """The DANN schedule ``max_lambda * (2 / (1 + exp(-gamma * p)) - 1)`` for training progress ``p``.

    It rises from 0 at the start (``p = 0``) to about ``max_lambda`` at the end (``p = 1``), so the reversed
    gradient is weak while the domain head is still random (Ganin & Lempitsky 2015, section 5.2.2).

    Args:
        progress: fraction of training done, in ``[0, 1]``.
        gamma: steepness (10 in the paper), > 0.
        max_lambda: the coefficient reached at the end, >= 0.

    Returns:
        The coefficient for this point of training.

    Raises:
        ConfigError: an argument outside its range (the argument is named).
    """
    raise_problems("dann_lambda", [number_problem("progress", progress, strict=False, maximum=1),
                                   number_problem("gamma", gamma),
                                   number_problem("max_lambda", max_lambda, strict=False)])
    return max_lambda * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)
