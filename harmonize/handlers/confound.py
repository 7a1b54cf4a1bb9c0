"""A variable to unlearn from a network's features: the scanner, or a confound such as sex or age."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from harmonize.errors import ConfigError, integer_problem, number_problem, option_value, raise_problems
from harmonize.keys import ConfoundKind, Keys
from harmonize.losses import DomainLoss

__all__ = ["Confound", "batch_targets", "quantile_bin_edges"]

SampleMask = Callable[[Mapping[str, Any]], torch.Tensor]

#: Index that marks a sample whose confound value is unknown (it is left out of that confound's losses).
MISSING = -1


def quantile_bin_edges(values: Sequence[float] | np.ndarray, num_bins: int) -> list[float]:
    """Inner edges that split ``values`` into ``num_bins`` bins of about equal count.

    Equal-count bins make the uniform distribution over bins the honest "knows nothing" answer, which is the
    target of the confusion loss; equal-width bins would ask the features to forget that the age histogram is
    not flat.

    Args:
        values: observed values of the continuous confound (non-finite values are ignored).
        num_bins: number of bins (>= 2).

    Returns:
        ``num_bins - 1`` increasing edges.
    """
    raise_problems("quantile_bin_edges", [integer_problem("num_bins", num_bins, minimum=2)])
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size < num_bins:
        raise ConfigError(f"Need at least {num_bins} finite values to make {num_bins} quantile bins, got {arr.size}.")
    edges = np.quantile(arr, np.linspace(0, 1, num_bins + 1)[1:-1])
    if np.any(np.diff(edges) <= 0):
        raise ConfigError(
            f"The values have too many ties for {num_bins} quantile bins (edges {edges.tolist()}); use fewer bins."
        )
    return edges.tolist()


@dataclass
class Confound:
    """One variable whose information the features must lose, with its domain head and weights.

    Args:
        head: the domain head, mapping features to ``num_classes`` logits (e.g. :class:`~harmonize.networks.DomainHead`).
        num_classes: number of classes of the head (sites, sexes, or bins of a continuous confound).
        key: batch key holding the confound's value: an integer index for a categorical confound (``-1`` when
            unknown), a float for a continuous one (``NaN`` when unknown).
        name: short name used in ``engine.state`` attributes (``domain_acc_<name>``); defaults to ``key``.
        kind: categorical or continuous.
        bin_edges: for a continuous confound, the inner edges of its bins (see :func:`quantile_bin_edges`).
        beta: weight of the confound's unlearning term (the confusion loss, or the gradient reversal's strength
            times the objective's ``reversal_weight``), a number or a function of the epoch (a schedule).
        alpha: weight of the domain loss.
        class_weights: optional weights per class for the domain loss (unbalanced sites).
        prior: optional function of the batch giving each sample's target distribution of the confusion loss,
            ``(batch, num_classes)`` (e.g. :class:`~harmonize.handlers.ConditionalPrior`); default uniform.

    Raises:
        ConfigError: on construction, naming the confound and every setting out of range at once.
    """

    head: nn.Module
    num_classes: int
    key: str = Keys.SITE
    name: str | None = None
    kind: ConfoundKind | str = ConfoundKind.CATEGORICAL
    bin_edges: Sequence[float] | None = None
    beta: float | Callable[[int], float] = 10.0
    alpha: float = 1.0
    class_weights: Sequence[float] | None = None
    prior: Callable[[Mapping[str, Any]], torch.Tensor] | None = None
    _edges: torch.Tensor | None = field(default=None, init=False, repr=False)
    #: The head's loss, cross-entropy with ``class_weights`` (:class:`~harmonize.losses.DomainLoss`).
    domain_loss: DomainLoss = field(default=None, init=False, repr=False, compare=False)
    #: Factor on ``beta``: lowered by :class:`~harmonize.handlers.TaskCollapseGuard` when the adversary took the task.
    weight_scale: float = field(default=1.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.name = str(self.name or self.key)
        kind, kind_problem = option_value("kind", self.kind, ConfoundKind)
        self.kind = ConfoundKind(kind) if kind else self.kind
        problems = [kind_problem, integer_problem("num_classes", self.num_classes, minimum=2)]
        classes_known = problems[1] is None
        if self.kind == ConfoundKind.CONTINUOUS and classes_known and (
            self.bin_edges is None or len(self.bin_edges) != self.num_classes - 1
        ):
            problems.append(f"a continuous confound needs bin_edges with num_classes - 1 = {self.num_classes - 1} "
                            "values (see harmonize.handlers.quantile_bin_edges)")
        if not callable(self.beta):
            problems.append(number_problem("beta", self.beta, strict=False))
        problems.append(number_problem("alpha", self.alpha, strict=False))
        if self.prior is not None and not callable(self.prior):
            problems.append(f"'prior' must be a function of the batch, got {self.prior!r}")
        if self.class_weights is not None and classes_known and len(self.class_weights) != self.num_classes:
            problems.append(f"'class_weights' has {len(self.class_weights)} values, expected num_classes = "
                            f"{self.num_classes}")
        try:
            self.domain_loss = DomainLoss(weight=self.class_weights, reduction="mean")
        except ConfigError as err:  # the class weights' values, named with the other problems
            problems.append(f"'class_weights': {err.message}")
        raise_problems(f"Confound '{self.name}'", problems)
        if self.kind == ConfoundKind.CONTINUOUS:
            self._edges = torch.as_tensor(self.bin_edges, dtype=torch.float32)

    def beta_at(self, epoch: int) -> float:
        """The confusion weight at an epoch (1-based, as ignite counts), times :attr:`weight_scale`."""
        value = float(self.beta(epoch)) if callable(self.beta) else float(self.beta)
        if problem := number_problem(f"beta({epoch})", value, strict=False):
            raise ConfigError(f"Confound '{self.name}': {problem}.")
        return value * self.weight_scale

    def targets(self, values: torch.Tensor | Sequence[Any] | np.ndarray) -> torch.Tensor:
        """Class indices from a batch's values; unknown values (``NaN`` or ``-1``) become ``-1``.

        A categorical confound's values must be integer class indices (a site's index in the site index,
        :class:`~harmonize.data.site_index.CategoryIndex`, which :func:`~harmonize.data.dataset.make_dataset`
        applies): floats are accepted only when whole (``2.0``), never truncated.

        Args:
            values: ``(B,)`` (or ``(B, 1)``) tensor (or sequence) of the confound's values.

        Raises:
            ConfigError: (a ``ValueError``) strings or non-integral numbers for a categorical confound, or an index
                outside ``[-1, num_classes)``, naming the confound.
        """
        if not isinstance(values, torch.Tensor):
            flat = np.asarray(values, dtype=object).reshape(-1)
            strings = [v for v in flat if isinstance(v, (str, bytes))]
            if strings:
                raise ConfigError(
                    f"Confound '{self.name}' (key '{self.key}'): the batch holds text values "
                    f"{sorted(set(map(str, strings)))[:5]}, not class indices. Map them to integers through the site "
                    "(or category) index, e.g. harmonize.data.site_index.CategoryIndex.from_frame(frame).encode(...); "
                    "harmonize.data.dataset.make_dataset does it for a manifest."
                )
            values = torch.as_tensor(np.asarray(values, dtype=float) if flat.dtype == object else values)
        values = values.reshape(-1)
        if self.kind == ConfoundKind.CONTINUOUS:
            v = values.float()
            idx = torch.bucketize(v, self._edges.to(v.device), right=True)
            return torch.where(torch.isfinite(v), idx, torch.full_like(idx, MISSING))
        if values.is_floating_point() or values.is_complex():
            finite = torch.isfinite(values)
            fractional = finite & (values != torch.round(values))
            if bool(fractional.any()):
                raise ConfigError(
                    f"Confound '{self.name}' (key '{self.key}') got non-integral values "
                    f"{values[fractional].unique()[:5].tolist()}: class labels (e.g. sites) must be integer indices, "
                    "and a fraction is never truncated. Check the column: map site names to indices through the site "
                    "index (harmonize.data.site_index), and fix values such as 0.6 or 1.4 in the manifest."
                )
            values = torch.where(finite, values, torch.full_like(values, MISSING))
        idx = values.long()
        bad = (idx < MISSING) | (idx >= self.num_classes)
        if bool(bad.any()):
            raise ConfigError(
                f"Confound '{self.name}' (key '{self.key}') got class indices {idx[bad].unique().tolist()}, "
                f"outside 0..{self.num_classes - 1}; check num_classes against the data's site/category index."
            )
        return idx


def batch_targets(confounds: Sequence[Confound], batch: Any, sample_mask: SampleMask | None,
                  device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each confound's class indices in a batch, :data:`MISSING` where unknown or left out by ``sample_mask``,
    and the confusion targets of the confounds that have a ``prior``.

    Raises:
        TypeError: a batch that is not a dictionary; KeyError: a confound's key missing from the batch.
    """
    if not isinstance(batch, Mapping):
        raise TypeError("DomainUnlearningHandler needs dictionary batches (MONAI style) holding the confound keys.")
    mask = None
    if sample_mask is not None:
        mask = torch.as_tensor(sample_mask(batch)).to(device=device, dtype=torch.bool).reshape(-1)
    targets = {}
    for c in confounds:
        if c.key not in batch:
            raise KeyError(f"Batch has no key '{c.key}' for confound '{c.name}'; batch keys: {sorted(map(str, batch))}.")
        t = c.targets(batch[c.key]).to(device)
        valid = t != MISSING if mask is None else (t != MISSING) & mask
        targets[c.name] = torch.where(valid, t, torch.full_like(t, MISSING))
    priors = {c.name: torch.as_tensor(c.prior(batch)).to(device) for c in confounds if c.prior}
    return targets, priors
