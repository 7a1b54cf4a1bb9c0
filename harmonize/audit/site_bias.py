"""Scanner offset of a brain-age network: the mean signed age error per site and its spread across sites.

A network that reads age partly from the scanner (a shortcut the sites' age ranges invite when they only partly
overlap) predicts too old on one scanner and too young on another. The mean signed error (prediction - age) of each
site's held-out scans shows that offset, and ``site_bias_spread``, the largest minus the smallest of them (years),
sums it up in one figure: 0 when no scanner shifts the predictions against another. The MAE does not show it: a
shift of +2 y on one site and -2 y on another can leave it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harmonize.errors import ConfigError

__all__ = ["age_overlap_note", "in_window_note", "shared_age_mask", "site_bias"]

#: Sites count as biased when the age range all of them share is under this share of the narrowest site's range.
BIASED_SHARED_FRACTION = 0.5
#: Held-out scans count as drawn from their site's window when at least this share lies in its training age range.
IN_WINDOW_FRACTION = 0.9


def site_bias(
    predictions: np.ndarray,
    ages: np.ndarray,
    sites: np.ndarray,
    site_names: Sequence[str],
    mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """The mean signed age error of each site's scans, and their spread across sites.

    Args:
        predictions: predicted age of each scan (years), shape ``(n,)`` or ``(n, 1)``.
        ages: true age of each scan (years; NaN where unknown: that scan is left out).
        sites: site index of each scan (into ``site_names``); scans of index < 0 (sites unseen in training) are
            left out.
        site_names: the name of each site index.
        mask: the scans to use (boolean, ``(n,)``), e.g. those in the age range the sites share; default all.

    Returns:
        ``site_mean_signed_error`` (site name -> mean of prediction - age over its scans, years; sites without a
        scan in ``mask`` are absent) and ``site_bias_spread`` (max - min of those means, years; ``None`` when
        fewer than two sites have a scan).

    Raises:
        ConfigError: arrays of different lengths, or a site index without a name.
    """
    predictions = np.asarray(predictions, dtype=float).reshape(len(predictions), -1)
    ages, sites = np.asarray(ages, dtype=float).reshape(-1), np.asarray(sites).reshape(-1)
    keep = np.ones(len(ages), dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    lengths = {"predictions": len(predictions), "ages": len(ages), "sites": len(sites), "mask": len(keep)}
    if len(set(lengths.values())) > 1 or predictions.shape[1] != 1:
        raise ConfigError(f"site_bias: give one predicted age, age, site and mask entry per scan; got {lengths} "
                          f"rows and {predictions.shape[1]} predictions per scan.")
    if sites.size and sites.max() >= len(site_names):
        raise ConfigError(f"site_bias: site index {int(sites.max())} has no name in site_names {list(site_names)}.")
    error = predictions[:, 0] - ages
    keep &= (sites >= 0) & np.isfinite(error)
    means = {str(site_names[i]): float(error[keep & (sites == i)].mean()) for i in np.unique(sites[keep])}
    spread = max(means.values()) - min(means.values()) if len(means) >= 2 else None
    return {"site_mean_signed_error": means, "site_bias_spread": spread}


def shared_age_mask(ages: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """The scans whose age lies in the age range of at least two of the training sites.

    Where only one site has subjects of an age, its scans cannot show one scanner's offset against another's;
    where two share the age, a network that reads age from the scanner shifts them apart. In a balanced cohort
    nearly every scan is kept.

    Args:
        ages: each scan's age (years; NaN: not kept).
        ranges: ``(min, max)`` age of each training site's training scans.

    Returns:
        A boolean mask, one entry per scan (every finite age when fewer than two ranges are given).
    """
    ages = np.asarray(ages, dtype=float).reshape(-1)
    if len(ranges) < 2:
        return np.isfinite(ages)
    covering = sum(((ages >= low) & (ages <= high)).astype(int) for low, high in ranges)
    return covering >= 2


def age_overlap_note(ranges: Sequence[tuple[float, float]], site_names: Sequence[str]) -> str | None:
    """A sentence for the report when the training sites' age ranges only partly overlap (a biased design).

    Sites are biased when the age range every one of them covers is less than half the narrowest site's range (or
    empty): their scanner then tells part of the age, a shortcut a network may take.

    Args:
        ranges: ``(min, max)`` age of each training site's training scans.
        site_names: the sites, in the order of ``ranges``.

    Returns:
        The sentence, or ``None`` when the ranges broadly overlap (or fewer than two sites have ages).
    """
    if len(ranges) < 2:
        return None
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    narrowest = min(r[1] - r[0] for r in ranges)
    if high - low >= BIASED_SHARED_FRACTION * narrowest:
        return None
    shown = ", ".join(f"{name} {a:.0f}-{b:.0f}" for name, (a, b) in zip(site_names, ranges))
    common = f"all share only {low:.0f}-{high:.0f} y" if high > low else "no age is common to all"
    return (f"Biased sites: the training sites' ages only partly overlap ({shown}; {common}), so the scanner tells "
            "part of the age. Unlearning trains with an age loss that gives each site a free offset and makes the "
            "sites agree where they share ages (SiteAgreementLoss), with no adversary, and the site bias spread is "
            "measured on held-out scans of ages at least two training sites share. Read the site probe given age & "
            "sex against its floor: the features alone can hide a scanner that the true age reveals "
            "(docs/unlearning.md).")


def in_window_note(ranges: Sequence[tuple[float, float]], site_names: Sequence[str], ages: np.ndarray,
                   sites: Sequence[str]) -> str | None:
    """A sentence for the report when the held-out scans of biased sites lie in their own site's training age range.

    Drawn so (a random split of a biased cohort), the held-out scans reward the scanner shortcut as the training
    scans do: a network that reads the scanner places each scan in its site's window, and one that does not is
    left with what the anatomy tells. Call it for sites that :func:`age_overlap_note` finds biased.

    Args:
        ranges: ``(min, max)`` age of each training site's training scans.
        site_names: the sites, in the order of ``ranges``.
        ages: the held-out scans' ages (years; NaN: not counted).
        sites: their sites (scans of other sites are not counted).

    Returns:
        The sentence, or ``None`` when fewer than :data:`IN_WINDOW_FRACTION` of the counted scans lie in their
        site's range (or none is counted).
    """
    window = dict(zip((str(n) for n in site_names), ranges))
    ages = np.asarray(ages, dtype=float).reshape(-1)
    counted = [(a, window[str(s)]) for a, s in zip(ages, sites) if str(s) in window and np.isfinite(a)]
    if not counted:
        return None
    inside = float(np.mean([low <= a <= high for a, (low, high) in counted]))
    if inside < IN_WINDOW_FRACTION:
        return None
    return (f"{inside:.0%} of the {len(counted)} held-out scans of the training sites lie in their own site's training "
            "age range, as in a random split of a biased cohort: on them the scanner tells part of the age too, so "
            "a network that reads it is rewarded, and one that does not is left with what the anatomy tells. Expect "
            "unlearning's age MAE above none's here, by what the scanner adds to the anatomy; held-out scans of "
            "every age show the harm the shortcut does (docs/unlearning.md, session 14).")
