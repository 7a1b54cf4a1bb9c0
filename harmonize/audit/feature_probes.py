"""The probes every audit runs on a set of held-out features: site, and the biology (age, sex) to keep."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from harmonize import defaults
from harmonize.audit.features import FeatureSet
from harmonize.audit.probe import classifier_probe, regressor_probe
from harmonize.keys import Keys

__all__ = ["MIN_AGE_SCANS", "MIN_SCANS_PER_CLASS", "feature_probes"]

logger = logging.getLogger(__name__)

#: Scans of each class a probe needs to cross-validate (the sex probe is skipped below it).
MIN_SCANS_PER_CLASS = 2
#: Scans with a known age that the age probe needs (its cross-validation has at least two folds).
MIN_AGE_SCANS = 2


def feature_probes(fs: FeatureSet, permutations: int = 0, seed: int = defaults.SEED) -> dict[str, Any]:
    """Can the site, age and sex be read from a set of held-out features? (The probes every audit shares.)

    The site probe is a cross-validated logistic regression on the scans of the training sites (site index >= 0);
    age (ridge regression) is probed on the scans with a known age and sex (logistic regression) when each sex has
    :data:`MIN_SCANS_PER_CLASS` scans; both are skipped otherwise.

    Args:
        fs: features with ``site`` (and optionally ``age``, ``sex``) metadata.
        permutations: label permutations of the site probe's p-value (0: none).
        seed: seed of the probes' folds and permutations.

    Returns:
        ``site_probe_bacc``, ``site_probe_p``, ``chance``, ``n_subjects`` and, when measured, ``age_probe_r2``,
        ``age_probe_mae`` and ``sex_probe_bacc``.
    """
    site = fs.meta[Keys.SITE]
    known = site >= 0
    site_probe = classifier_probe(fs.features[known], site[known], permutations=permutations, seed=seed)
    metrics: dict[str, Any] = {
        "site_probe_bacc": site_probe.balanced_accuracy,
        "site_probe_p": site_probe.p_value,
        "chance": site_probe.chance,
        "n_subjects": len(fs),
    }
    age = fs.meta.get(Keys.AGE)
    aged = np.isfinite(age.astype(float)) if age is not None else np.zeros(len(fs), dtype=bool)
    if aged.sum() >= MIN_AGE_SCANS:
        age_probe = regressor_probe(fs.features[aged], age[aged].astype(float), seed=seed)
        metrics["age_probe_r2"], metrics["age_probe_mae"] = age_probe.r2, age_probe.mae
    else:
        logger.info("Age probe skipped: %d audited scans have an age; it needs %d.", aged.sum(), MIN_AGE_SCANS)
    sex = fs.meta.get(Keys.SEX)
    counts = np.unique(sex[sex >= 0], return_counts=True)[1] if sex is not None else np.array([])
    if len(counts) == 2 and counts.min() >= MIN_SCANS_PER_CLASS:
        metrics["sex_probe_bacc"] = classifier_probe(fs.features[sex >= 0], sex[sex >= 0], seed=seed).balanced_accuracy
    else:
        logger.info("Sex probe skipped: the audited scans hold %s scans of each sex; it needs %d of each.",
                    counts.tolist(), MIN_SCANS_PER_CLASS)
    return metrics
