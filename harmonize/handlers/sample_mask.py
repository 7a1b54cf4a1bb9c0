"""Per-sample masks that choose which samples of a batch enter the unlearning losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from harmonize.errors import ConfigError
from harmonize.keys import Keys

__all__ = ["LabelRangeMask"]


class LabelRangeMask:
    """Keep the samples whose value of ``key`` lies in ``[low, high]``: the biased-dataset variant.

    When sites cover different label ranges (e.g. one scanner scanned only the young), removing scanner
    information everywhere would also remove the label information that differs between sites. Dinsdale et al.
    (2021) therefore unlearn only on the subjects in the range where all sites overlap, while the task trains on
    all. :func:`harmonize.data.manifest.overlap_range` computes that range from a manifest.

    Args:
        low: lower bound (inclusive).
        high: upper bound (inclusive).
        key: batch key of the label (default ``age``).

    Example::

        DomainUnlearningHandler(..., sample_mask=LabelRangeMask(45.0, 60.0))
    """

    def __init__(self, low: float, high: float, key: str = Keys.AGE) -> None:
        if not (float(low) <= float(high)):
            raise ConfigError(
                f"LabelRangeMask: the overlap range is empty (low={low} > high={high}): the sites share no "
                f"'{key}' values, so there is nothing to unlearn on; check the sites' ranges or give a range."
            )
        self.low, self.high, self.key = float(low), float(high), str(key)

    def __call__(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.key not in batch:
            raise KeyError(f"LabelRangeMask: the batch has no key '{self.key}'; keys: {sorted(map(str, batch))}.")
        values = torch.as_tensor(batch[self.key]).reshape(-1).float()
        return (values >= self.low) & (values <= self.high)
