"""Which scans an audit reads, and the audit of them that every task shares.

An audit measures a model on the scans it did not train on: the held-out rows of its training sites, and every
scan of a site it never saw. :func:`audit_held_out_scans` does what every task shares (which rows, the unseen
sites' names, their number, the features of both kinds of scan); a :class:`TaskAudit` adapter does what the task
measures (the brain-age error, the Dice per tissue).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from harmonize.audit.features import FeatureSet
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys, Split

__all__ = ["ALL_SPLITS", "UNSEEN_SUFFIX", "TaskAudit", "audit_held_out_scans", "concat_feature_sets", "held_out_rows"]

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


class TaskAudit(Protocol):
    """What one task measures in an audit (the per-task part of :func:`audit_held_out_scans`)."""

    def held_out(self, model: Any, frame: pd.DataFrame, rows: pd.DataFrame, splits: Sequence[str],
                 permutations: int, seed: int) -> tuple[dict[str, Any], FeatureSet]:
        """Metrics (probes and task figures) and features of ``rows``, the held-out scans of the training sites
        (``frame`` is the whole manifest, e.g. for the training sites' age ranges)."""

    def unseen_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows of unseen sites this task can measure (those it cannot are logged, not dropped silently)."""

    def unseen(self, model: Any, rows: pd.DataFrame) -> tuple[FeatureSet, np.ndarray]:
        """Features and per-scan task scores (first axis: the scans, in the features' order) of unseen-site rows."""

    def add_unseen(self, metrics: dict[str, Any], scores: np.ndarray, sites: np.ndarray) -> None:
        """Add the unseen-site figures, overall and per site (``"<site> (unseen)"``), to ``metrics``."""


def audit_held_out_scans(model: Any, frame: pd.DataFrame, task: TaskAudit, permutations: int, seed: int,
                         splits: Sequence[str] = (Split.VAL, Split.TEST)) -> tuple[dict[str, Any], FeatureSet]:
    """Audit a model on the scans it did not train on: ``task`` measures them, this adds the unseen sites' names.

    Args:
        model: the model (anything with a ``site_index`` that ``task`` measures).
        frame: the manifest; its sites that the model's site index lacks count as unseen.
        task: the task's measures.
        permutations: label permutations of the site probe's p-value (0: no p-value).
        seed: seed of the probes' folds and permutations.
        splits: held-out splits of the training sites.

    Returns:
        ``(metrics, features)``: ``task``'s metrics, plus ``unseen_sites`` and ``n_unseen`` when the manifest holds
        unseen sites that ``task`` can measure; the features of every audited scan, unseen ones with site index -1.

    Raises:
        HarmonizeError: no held-out scan of a training site (nothing to probe), or what ``task`` raises.
    """
    seen, unseen = held_out_rows(frame, model.site_index, splits)
    metrics, features = task.held_out(model, frame, seen, splits, permutations, seed)
    unseen = task.unseen_rows(unseen)
    if unseen.empty:
        return metrics, features
    other, scores = task.unseen(model, unseen)
    site_of = dict(zip(unseen[Keys.SUBJECT_ID].astype(str), unseen[Keys.SITE].astype(str)))
    sites = np.array([site_of[str(subject)] for subject in other.meta[Keys.SUBJECT_ID]])
    task.add_unseen(metrics, scores, sites)
    metrics["unseen_sites"] = sorted(set(sites.tolist()))
    metrics["n_unseen"] = len(other)
    return metrics, concat_feature_sets(features, other)
