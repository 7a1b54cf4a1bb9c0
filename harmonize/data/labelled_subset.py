"""The labelled subjects of the semi-supervised variant: a fixed fraction of each site's training subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harmonize.keys import Keys

__all__ = ["labelled_subset"]


def labelled_subset(train: pd.DataFrame, fraction: float, seed: int) -> set[str] | None:
    """Subject ids whose task label training may use: ``fraction`` of each site's subjects (at least one).

    Semi-supervised unlearning (Dinsdale et al. 2021) trains the task on these few subjects and unlearns on
    all; drawing per site keeps every scanner represented among the labelled ones.

    Args:
        train: the manifest's training rows (columns ``subject_id`` and ``site``).
        fraction: fraction of each site's subjects to keep labelled; 1 or more keeps all (returns ``None``).
        seed: seed of the draw (the same seed draws the same subjects).

    Returns:
        The labelled subject ids, or ``None`` when every subject is labelled.
    """
    if fraction >= 1:
        return None
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for _, rows in train.groupby(Keys.SITE, sort=True):
        ids = sorted(rows[Keys.SUBJECT_ID].astype(str))
        n = max(1, int(round(fraction * len(ids))))
        keep.update(rng.choice(ids, size=n, replace=False).tolist())
    return keep
