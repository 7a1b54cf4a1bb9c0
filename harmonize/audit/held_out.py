"""Which scans an audit reads: the held-out rows of a model's training sites, and every scan of the other sites."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harmonize.audit.features import FeatureSet
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys, Split

__all__ = ["ALL_SPLITS", "UNSEEN_SUFFIX", "concat_feature_sets", "held_out_rows"]

#: Every split: a site unseen in training is audited on all its scans.
ALL_SPLITS = (Split.TRAIN, Split.VAL, Split.TEST)
#: Suffix of an unseen site's entry in per-site figures (``age_mae_per_site``, ``dice_per_site``).
UNSEEN_SUFFIX = " (unseen)"


def held_out_rows(
    frame: pd.DataFrame, site_index: CategoryIndex, splits: Sequence[str] = (Split.VAL, Split.TEST)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows a model did not train on: those in ``splits`` of its sites, and every row of other sites.

    Args:
        frame: a manifest frame.
        site_index: the model's site index (the sites it was trained on).
        splits: held-out splits of the training sites.

    Returns:
        ``(seen, unseen)``: held-out rows of known sites, and all rows of sites the index does not know.

    Raises:
        HarmonizeError: no held-out row of a training site (the site probe needs some).
    """
    known = frame[Keys.SITE].astype(str).isin(list(site_index))
    seen = frame[known & frame[Keys.SPLIT].isin([str(s) for s in splits])]
    if seen.empty:
        raise HarmonizeError(
            f"No row of the manifest is in splits {[str(s) for s in splits]} of the sites the model was trained on "
            f"({list(site_index)}): the site probe needs held-out scans of those sites."
        )
    return seen, frame[~known]


def concat_feature_sets(first: FeatureSet, second: FeatureSet) -> FeatureSet:
    """The rows of ``first`` then ``second`` (metadata keys they share; predictions when both keep them)."""
    keys = [k for k in first.meta if k in second.meta]
    predictions = None
    if first.predictions is not None and second.predictions is not None:
        predictions = np.concatenate([first.predictions, second.predictions])
    return FeatureSet(np.concatenate([first.features, second.features]), predictions,
                      {k: np.concatenate([first.meta[k], second.meta[k]]) for k in keys})
