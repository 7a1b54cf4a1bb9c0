"""Domain (scanner) classifier head of scanner unlearning."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from harmonize import defaults
from harmonize.errors import integer_problem, is_integer, raise_problems
from harmonize.networks._arguments import dropout_problem

__all__ = ["DomainHead"]

#: Fewest classes a domain head can have.
MIN_CLASSES = 2


class DomainHead(nn.Module):
    """An MLP from a feature vector to domain logits: ``in_features -> hidden... -> num_classes``.

    The domain predictor of Dinsdale et al. (NeuroImage 2021) is 96-32-n with ReLU and dropout (p = 0.2).
    This head returns logits (no softmax: :class:`~harmonize.losses.DomainLoss` and
    :class:`~harmonize.losses.ConfusionLoss` take logits). ``hidden`` may list several widths for a stronger
    adversary: unlearning is only as strong as the head that measures the domain information.

    Args:
        in_features: size of the feature vector (e.g. ``BrainAgeRegressor.feature_dim``, or a tap's channels
            after global average pooling).
        num_classes: number of domains (2 or more).
        hidden: width of the hidden layer, or a sequence of widths (empty: a linear head).
        dropout: dropout probability after each hidden layer, in ``[0, 1)``.
        normalize_input: apply ``LayerNorm(in_features)`` first (useful when features of several taps or
            scales are concatenated).
        standardize_input: standardise each feature over the batch first (``BatchNorm1d`` without affine
            parameters, with running statistics for evaluation), as a probe's ``StandardScaler`` does. Features
            of very different scales (e.g. an early block and the bottleneck) otherwise leave the head to learn
            slowly, and a head that has not learned the site gives the confusion loss nothing to push against.

    Raises:
        ConfigError: (a ``ValueError``) an argument outside its range (the argument is named).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int | Sequence[int] = defaults.DOMAIN_HIDDEN,
        dropout: float = defaults.DOMAIN_DROPOUT,
        normalize_input: bool = False,
        standardize_input: bool = False,
    ) -> None:
        super().__init__()
        widths = tuple(hidden) if isinstance(hidden, Iterable) else (hidden,)
        problems = [integer_problem("in_features", in_features),
                    integer_problem("num_classes", num_classes, minimum=MIN_CLASSES)]
        if not all(is_integer(w) and w >= 1 for w in widths):
            problems.append(f"'hidden' must be an integer >= 1 or a sequence of them, got {hidden!r}")
        problems.append(dropout_problem(dropout))
        if normalize_input and standardize_input:
            problems.append("choose one of normalize_input (LayerNorm) and standardize_input (BatchNorm1d)")
        raise_problems(type(self).__name__, problems)

        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        #: The constructor's arguments, so that a saved head is rebuilt exactly (``DomainHead(**head.config)``).
        self.config: dict[str, Any] = {
            "in_features": self.in_features, "num_classes": self.num_classes, "hidden": [int(w) for w in widths],
            "dropout": float(dropout), "normalize_input": bool(normalize_input),
            "standardize_input": bool(standardize_input),
        }
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if standardize_input:
            layers["norm"] = nn.BatchNorm1d(self.in_features, affine=False)
        else:
            layers["norm"] = nn.LayerNorm(self.in_features) if normalize_input else nn.Identity()
        width = self.in_features
        for i, w in enumerate(widths):
            layers[f"fc{i}"] = nn.Linear(width, int(w))
            layers[f"act{i}"] = nn.ReLU()
            layers[f"drop{i}"] = nn.Dropout(dropout)
            width = int(w)
        layers["out"] = nn.Linear(width, self.num_classes)
        self.layers = nn.Sequential(layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Domain logits of a batch of feature vectors.

        Args:
            features: ``(batch, in_features)``.

        Returns:
            Logits ``(batch, num_classes)``.

        Raises:
            ValueError: ``features`` is not ``(batch, in_features)`` (both shapes are named).
        """
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: expected features of shape (batch, {self.in_features}), got "
                f"{tuple(features.shape)}; pool spatial feature maps to vectors first (global average pooling)."
            )
        return self.layers(features)
