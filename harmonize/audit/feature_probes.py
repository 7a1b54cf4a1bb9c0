"""The probes every audit runs on a set of held-out features: site, and the biology (age, sex) to keep."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from harmonize import defaults
from harmonize.audit.features import FeatureSet
from harmonize.audit.probe import classifier_probe, regressor_probe
from harmonize.keys import Keys

__all__ = ["MIN_AGE_SCANS", "MIN_SCANS_PER_CLASS", "biology_covariates", "evidence_beyond", "feature_probes",
           "floor_and_conditional"]

logger = logging.getLogger(__name__)

#: Scans of each class a probe needs to cross-validate (the sex probe is skipped below it).
MIN_SCANS_PER_CLASS = 2
#: Scans with a known age that the age probe needs (its cross-validation has at least two folds).
MIN_AGE_SCANS = 2
#: Knots of the cubic-spline basis of age in the site probe's biology floor (a curved age effect, few parameters).
FLOOR_AGE_KNOTS = 5


def biology_covariates(age: np.ndarray, sex: np.ndarray | None = None) -> np.ndarray:
    """Age as a cubic-spline basis (and sex as 0/1, 0.5 where unknown): what the site floor probe reads.

    Args:
        age: ``(n,)`` years, all finite.
        sex: ``(n,)`` 0/1 codes, ``-1`` where unknown, or ``None``.
    """
    from sklearn.preprocessing import SplineTransformer

    columns = SplineTransformer(n_knots=FLOOR_AGE_KNOTS, degree=3).fit_transform(np.asarray(age, float)[:, None])
    if sex is not None and len(np.unique(sex[sex >= 0])) == 2:
        columns = np.column_stack([columns, np.where(sex >= 0, sex, 0.5)])
    return columns


def floor_and_conditional(features: np.ndarray, labels: np.ndarray, covariates: np.ndarray | None,
                          seed: int = defaults.SEED) -> tuple[float, float]:
    """The probe of ``labels`` from the covariates alone (the floor; chance without covariates) and from the features
    and the covariates together (balanced accuracies of :func:`~harmonize.audit.probe.classifier_probe`).

    Raises:
        ConfigError: fewer than 2 classes, or a class with a single sample.
    """
    if covariates is None:
        return 1.0 / len(np.unique(labels)), classifier_probe(features, labels, seed=seed).balanced_accuracy
    floor = classifier_probe(covariates, labels, seed=seed).balanced_accuracy
    return floor, classifier_probe(np.column_stack([features, covariates]), labels, seed=seed).balanced_accuracy


def evidence_beyond(features: np.ndarray, labels: np.ndarray, covariates: Mapping[str, np.ndarray],
                    seed: int = defaults.SEED) -> float:
    """How much better a cross-validated probe reads ``labels`` from the features and the covariates than from the
    covariates alone (balanced accuracy; what :class:`~harmonize.handlers.EvidenceGate` measures).

    Args:
        features: ``(n, d)``.
        labels: ``(n,)`` classes (e.g. site indices).
        covariates: ``age`` (years, as a cubic-spline basis) and ``sex`` (0/1, ``-1`` unknown), either or neither;
            with neither, the floor is chance.
        seed: seed of the probes' folds.

    Raises:
        ConfigError: fewer than 2 classes, or a class with a single sample.
    """
    age, sex = covariates.get(Keys.AGE), covariates.get(Keys.SEX)
    columns = (biology_covariates(age, sex) if age is not None
               else None if sex is None else np.where(sex >= 0, sex, 0.5)[:, None])
    floor, conditional = floor_and_conditional(features, labels, columns, seed)
    return conditional - floor


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
        ``age_probe_mae``, ``sex_probe_bacc``, ``site_probe_floor``: the same site probe given only the scans'
        age and sex (:func:`biology_covariates`), and ``site_probe_conditional``: the site probe given the features
        *and* age and sex. When the audited sites' scans differ in age, by chance or by design, a network that keeps
        age (as it must) lets a probe read the site about as well as biology alone does, so a fully harmonised
        network scores near the floor rather than at ``chance``. The features alone can also hide what they carry:
        a prediction that is too young on one scanner and too old on another tells the site only together with the
        true age. The conditional probe reads that too; it is the floor when the features add nothing about the
        site to age and sex, and ``site_probe_conditional - site_probe_floor`` is the scanner information beyond
        biology.
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
    floor_rows = known & aged
    per_site = np.unique(site[floor_rows], return_counts=True)[1]
    if len(per_site) >= 2 and per_site.min() >= MIN_SCANS_PER_CLASS:
        covariates = biology_covariates(age[floor_rows].astype(float), None if sex is None else sex[floor_rows])
        metrics["site_probe_floor"], metrics["site_probe_conditional"] = floor_and_conditional(
            fs.features[floor_rows], site[floor_rows], covariates, seed)
    else:
        logger.info("Site floor probe skipped: too few audited scans with an age per site (%s).", per_site.tolist())
    counts = np.unique(sex[sex >= 0], return_counts=True)[1] if sex is not None else np.array([])
    if len(counts) == 2 and counts.min() >= MIN_SCANS_PER_CLASS:
        # reported, not judged: one split (a binary probe on ~100 features is the slowest to converge)
        metrics["sex_probe_bacc"] = classifier_probe(fs.features[sex >= 0], sex[sex >= 0], seed=seed,
                                                     repeats=1).balanced_accuracy
    else:
        logger.info("Sex probe skipped: the audited scans hold %s scans of each sex; it needs %d of each.",
                    counts.tolist(), MIN_SCANS_PER_CLASS)
    return metrics

