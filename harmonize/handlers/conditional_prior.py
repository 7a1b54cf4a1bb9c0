"""The confusion loss's target when sites differ in age: how likely each site is given the subject's age."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from harmonize.errors import ConfigError, number_problem, raise_problems
from harmonize.keys import Keys

__all__ = ["ConditionalPrior"]

#: Silverman's rule-of-thumb factor for a Gaussian kernel's bandwidth (``1.06 * sd * n ** -0.2``).
SILVERMAN_FACTOR = 1.06
#: Fewest training values a prior can be estimated from.
MIN_VALUES = 2


class ConditionalPrior:
    """``p(class | value)`` from training data: Bayes' rule over per-class kernel densities (e.g. of age).

    Confusing a domain head towards the uniform distribution asks the features to forget the site entirely. When
    the sites' age ranges differ (biased data: a young site, an old site), the site is partly given away by the age
    that the task must keep, so a uniform target also pushes the features to forget age. With this prior as the
    target of :class:`~harmonize.losses.ConfusionLoss`, the features are asked to tell no more about the site than
    the subject's age already does: the scanner is removed conditionally on age, on every subject, without picking
    an overlap range. On sites that share one age distribution the prior is close to uniform.

    The estimate is Bayes' rule over kernel density estimates, ``p(c | a) = n_c f_c(a) / sum_k n_k f_k(a)``, where
    ``f_c`` is the density of the values of class ``c`` (Gaussian kernels of bandwidth ``h_c``) and ``n_c`` its count.
    A sample whose value is missing (NaN), or far from every training value, gets the classes' overall frequencies.

    Args:
        values: the variable's training values (e.g. ages), one per training sample.
        classes: each training sample's class index in ``0..num_classes-1`` (e.g. its site).
        num_classes: number of classes of the domain head.
        key: batch key of the variable.
        bandwidth: kernel standard deviation, in the variable's unit, for every class; default: Silverman's rule on
            each class's own values (``1.06 * sd_c * n_c ** -0.2``), so a site's age window keeps its edges.

    Example::

        prior = ConditionalPrior(train_ages, train_sites, num_classes=4)
        Confound(head, 4, key="site", prior=prior)
    """

    def __init__(
        self,
        values: Sequence[float] | np.ndarray,
        classes: Sequence[int] | np.ndarray,
        num_classes: int,
        key: str = Keys.AGE,
        bandwidth: float | None = None,
    ) -> None:
        v = np.asarray(values, dtype=float).reshape(-1)
        c = np.asarray(classes).reshape(-1)
        if v.shape != c.shape:
            raise ConfigError(f"ConditionalPrior: {v.size} values but {c.size} classes; give one class per value.")
        if not np.issubdtype(c.dtype, np.integer) or c.size and (c.min() < 0 or c.max() >= num_classes):
            raise ConfigError(
                f"ConditionalPrior: classes must be integers in 0..{num_classes - 1}, got {np.unique(c)}."
            )
        keep = np.isfinite(v)
        v, c = v[keep], c[keep]
        if v.size < MIN_VALUES:
            raise ConfigError(f"ConditionalPrior: needs at least {MIN_VALUES} finite '{key}' values, got {v.size}.")
        raise_problems(type(self).__name__, [number_problem("bandwidth", bandwidth, optional=True)])
        widths = np.ones(num_classes)
        for k in range(num_classes):
            own = v[c == k]
            spread = SILVERMAN_FACTOR * float(own.std()) * max(own.size, 1) ** -0.2 if own.size > 1 else 0.0
            widths[k] = bandwidth or (spread if spread > 0 else SILVERMAN_FACTOR * float(v.std()) * v.size ** -0.2)
        self.key, self.num_classes = str(key), int(num_classes)
        self.bandwidths = tuple(float(w) for w in widths)
        self._values = torch.as_tensor(v, dtype=torch.float32)
        self._width = torch.as_tensor(widths[c], dtype=torch.float32)  # each training value's kernel width
        self._onehot = torch.nn.functional.one_hot(torch.as_tensor(c, dtype=torch.long), num_classes).float()
        self._overall = self._onehot.mean(dim=0)

    def __call__(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The ``(batch, num_classes)`` target distributions of a batch's samples."""
        if self.key not in batch:
            raise KeyError(f"ConditionalPrior: the batch has no key '{self.key}'; keys: {sorted(map(str, batch))}.")
        a = torch.as_tensor(batch[self.key]).reshape(-1, 1).float().cpu()
        kernel = torch.exp(-0.5 * ((a - self._values) / self._width) ** 2) / self._width
        prior = kernel @ self._onehot / kernel.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        known = torch.isfinite(a).reshape(-1, 1) & (kernel.sum(dim=1, keepdim=True) > 0)
        return torch.where(known, prior, self._overall.expand_as(prior))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(key={self.key!r}, num_classes={self.num_classes}, "
                f"bandwidths={[round(w, 3) for w in self.bandwidths]}, n={self._values.numel()})")

