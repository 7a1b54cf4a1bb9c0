"""The batch size of a bundle's site-balanced training loader, for any number of training sites."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from harmonize.bundle.check_settings import check_settings
from harmonize.keys import Keys

__all__ = ["site_balanced_batch_size"]

logger = logging.getLogger(__name__)


def site_balanced_batch_size(batch_size: Any, dataset: Any) -> int:
    """``batch_size``, or the nearest multiple of the training sites when it is not one (with a warning).

    A site-balanced batch (:class:`~harmonize.data.dataset.SiteBalancedBatchSampler`) holds as many scans of each
    site, so its size must be a multiple of the number of sites. The bundles' default (8) suits 2, 4 or 8 sites;
    on the 3-site cohort (``--cohort#sites 3``, or a manifest of 3 sites) each batch then takes 3 scans of each
    site, 9 in all, and the warning says how to choose another size.

    Args:
        batch_size: the bundle's ``batch_size`` id.
        dataset: the training dataset (:func:`~harmonize.data.dataset.make_dataset`: ``dataset.data`` items carry
            the site index).

    Returns:
        A positive multiple of the number of sites in ``dataset``.

    Raises:
        ConfigError: ``batch_size`` is not an integer >= 1, naming the bundle id (:func:`check_settings`).
    """
    check_settings(positive_integers={"batch_size": batch_size})
    items: Sequence[Mapping[str, Any]] = getattr(dataset, "data", dataset)
    sites = {int(item[Keys.SITE.value]) for item in items}
    if not sites or batch_size % len(sites) == 0:
        return int(batch_size)
    n_sites = len(sites)
    per_site = max(1, round(batch_size / n_sites))
    logger.warning(
        "batch_size %d is not a multiple of the %d training sites, and a site-balanced batch holds as many scans "
        "of each site: each batch takes %d scan(s) of each site, %d in all. Pass --batch_size with a multiple of "
        "%d to choose another size.", batch_size, n_sites, per_site, per_site * n_sites, n_sites)
    return per_site * n_sites
