"""Per-sample masks that choose which samples of a batch enter the unlearning losses."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch

from harmonize.errors import ConfigError
from harmonize.keys import Keys

__all__ = ["LabelRangeMask", "SharedRangeMask"]


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


class SharedRangeMask:
    """Keep the samples whose value of ``key`` lies in a range their site shares with at least one other site.

    The biased-data variant for sites whose label ranges overlap only pairwise (e.g. each site's age window
    overlaps only its neighbours'), where :class:`LabelRangeMask` has no range common to all sites: a subject
    enters the unlearning losses when another site also scanned subjects of that age, so scanner and label
    can be told apart there. :meth:`shared_ranges` computes the ranges from each site's (min, max).

    Args:
        ranges: ``{site index: [(low, high), ...]}``, inclusive bounds; a site without ranges keeps nothing.
        key: batch key of the label (default ``age``).
        site_key: batch key of the site index (default ``site``).

    Raises:
        ConfigError: no site has a range, or a range with low > high.

    Example::

        ranges = SharedRangeMask.shared_ranges({0: (20, 50), 1: (40, 70), 2: (60, 90)})
        # {0: [(40, 50)], 1: [(40, 50), (60, 70)], 2: [(60, 70)]}
        DomainUnlearningHandler(..., sample_mask=SharedRangeMask(ranges))
    """

    def __init__(
        self,
        ranges: Mapping[int, Sequence[tuple[float, float]]],
        key: str = Keys.AGE,
        site_key: str = Keys.SITE,
    ) -> None:
        bad = [f"site {site}: ({low}, {high})" for site, pairs in ranges.items() for low, high in pairs
               if not float(low) <= float(high)]
        if bad:
            raise ConfigError(f"SharedRangeMask: ranges with low > high: {', '.join(bad)}.")
        if not any(len(pairs) for pairs in ranges.values()):
            raise ConfigError(
                f"SharedRangeMask: no site shares a '{key}' range with another site, so there is nothing to "
                "unlearn on; check the sites' ranges.")
        self.ranges = {int(site): [(float(low), float(high)) for low, high in pairs] for site, pairs in ranges.items()}
        self.key, self.site_key = str(key), str(site_key)

    @staticmethod
    def shared_ranges(extents: Mapping[Hashable, tuple[float, float]]) -> dict[Hashable, list[tuple[float, float]]]:
        """``{site: (min, max)}`` -> ``{site: [its intersection with each other site's range, if not empty]}``."""
        shared: dict[Hashable, list[tuple[float, float]]] = {}
        for site, (low, high) in extents.items():
            shared[site] = []
            for other, (other_low, other_high) in extents.items():
                start, stop = max(float(low), float(other_low)), min(float(high), float(other_high))
                if other != site and start <= stop:
                    shared[site].append((start, stop))
        return shared

    def __call__(self, batch: Mapping[str, Any]) -> torch.Tensor:
        missing = [k for k in (self.key, self.site_key) if k not in batch]
        if missing:
            raise KeyError(f"SharedRangeMask: the batch has no key(s) {missing}; keys: {sorted(map(str, batch))}.")
        values = torch.as_tensor(batch[self.key]).reshape(-1).float()
        sites = torch.as_tensor(batch[self.site_key]).reshape(-1)
        keep = torch.zeros_like(values, dtype=torch.bool)
        for site, pairs in self.ranges.items():
            for low, high in pairs:
                keep |= (sites == site) & (values >= low) & (values <= high)
        return keep
