"""The withdrawn subjects of a manifest: its ``forget`` column, checked, or a random share of its training rows.

A manifest marks the subjects a trained model must forget (consent withdrawn) with the optional boolean ``forget``
column (true/false, 1/0, yes/no; an empty cell is false). :func:`forget_rows` checks the list against what
forgetting can do: the withdrawn rows must be training rows (a model does not depend on a scan it never trained
on), at least one must be marked (else there is nothing to forget) and at least one training row must be kept
(else nothing is left to retain: retrain from scratch on other data). :func:`mark_forget` withdraws a random
share of the training subjects, for a demonstration or a bundle run without a list.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harmonize import defaults
from harmonize.data.manifest import MANIFEST_ATTR
from harmonize.errors import ConfigError, ManifestError, number_problem
from harmonize.keys import Keys, Split

__all__ = ["forget_rows", "mark_forget"]

#: Row numbers named in one error message.
SHOWN = 10


def _rows(index: pd.Index) -> str:
    rows = [str(r) for r in index[:SHOWN]]
    more = f" and {len(index) - SHOWN} more" if len(index) > SHOWN else ""
    return ", ".join(rows) + more


def forget_rows(frame: pd.DataFrame) -> pd.Series:
    """The boolean ``forget`` column of a manifest's ``train`` rows, checked.

    Args:
        frame: a manifest frame (:func:`~harmonize.data.manifest.read_manifest`, which already refuses a cell that is
            not a boolean, naming its row).

    Returns:
        One boolean per ``train`` row (indexed by the manifest's row numbers): True for a withdrawn subject.

    Raises:
        ManifestError: no ``forget`` column, a marked row that is not a training row (naming the rows), no training
            row marked, or every training row marked.
    """
    source = frame.attrs.get(MANIFEST_ATTR, "the manifest")
    if Keys.FORGET not in frame:
        raise ManifestError(
            f"{source} has no '{Keys.FORGET}' column: add one and mark the withdrawn subjects' training rows true "
            f"(the others false or empty). Columns: {', '.join(map(str, frame.columns))}."
        )
    marked = frame[Keys.FORGET].astype(bool)
    train = frame[Keys.SPLIT] == Split.TRAIN
    outside = frame.index[marked & ~train]
    if len(outside):
        raise ManifestError(
            f"{source}: row(s) {_rows(outside)} are marked '{Keys.FORGET}' but are not '{Split.TRAIN}' rows: the model "
            f"never trained on them, so there is nothing to forget. Unmark them, or give the split the model was "
            "trained with."
        )
    flags = marked[train]
    if not flags.any():
        raise ManifestError(
            f"{source}: no training row is marked '{Keys.FORGET}' ({int(train.sum())} training rows): mark the "
            "withdrawn subjects' rows true."
        )
    if flags.all():
        raise ManifestError(
            f"{source}: all {len(flags)} training rows are marked '{Keys.FORGET}': nothing is left to retain. "
            "Forgetting keeps what the model learnt from the other subjects; without any, train a new model."
        )
    return flags


def mark_forget(frame: pd.DataFrame, fraction: float = defaults.FORGET_FRACTION, seed: int = defaults.SEED
                ) -> pd.DataFrame:
    """A copy of ``frame`` whose ``forget`` column withdraws a random ``fraction`` of the training rows.

    The withdrawn rows are drawn per site (a share of each site's training rows, rounded, at least one per site
    with two or more rows), so every site keeps training rows and the held-out scans of the same sites are the
    membership-inference audit's non-members. An existing ``forget`` column is replaced; ``frame`` is not changed.

    Raises:
        ConfigError: ``fraction`` not in (0, 1).
    """
    if problem := number_problem("fraction", fraction, maximum=1, strict_maximum=True):
        raise ConfigError("mark_forget: invalid argument.", problems=[problem])
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out[Keys.FORGET] = False
    train = out[out[Keys.SPLIT] == Split.TRAIN]
    for _, rows in train.groupby(train[Keys.SITE].astype(str), sort=True):
        if len(rows) < 2:
            continue
        count = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        chosen = rng.choice(np.asarray(rows.index), size=count, replace=False)
        out.loc[chosen, Keys.FORGET] = True
    return out
