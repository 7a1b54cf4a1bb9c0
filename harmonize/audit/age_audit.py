"""The brain-age figures of one set of held-out scans: the age error of the predictions, the per-site bias of the
predicted age, and the probes of the features (what every brain-age audit, baseline and benchmark reports)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonize import defaults
from harmonize.audit.feature_probes import feature_probes
from harmonize.audit.features import FeatureSet
from harmonize.audit.site_bias import site_bias
from harmonize.keys import Keys

__all__ = ["audit_feature_set"]


def audit_feature_set(
    fs: FeatureSet, site_names: list[str], permutations: int = 0, seed: int = defaults.SEED,
    bias_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """Age error of the predictions and probes of the features, for one set of held-out scans.

    ``bias_mask`` (boolean, one per scan; default all) chooses the scans of the site-bias figures, e.g. those in
    the age range the sites share.

    Returns a dictionary with ``age_mae`` (years), ``age_mae_per_site``, ``age_mae_unseen_sites`` when some scans
    come from sites unseen in training, ``site_mean_signed_error`` and ``site_bias_spread`` (years, of the training
    sites' scans: :func:`~harmonize.audit.site_bias.site_bias`), and the probes of
    :func:`~harmonize.audit.feature_probes.feature_probes`:
    ``site_probe_bacc`` (cross-validated balanced accuracy of a logistic-regression site probe on the features of
    the sites seen in training), ``site_probe_p`` (permutation p-value when ``permutations`` > 0), ``chance``
    (``1 / n_sites``), ``age_probe_r2`` / ``age_probe_mae`` (ridge regression of age on the features),
    ``sex_probe_bacc`` and ``n_subjects``.
    """
    age = fs.meta[Keys.AGE].astype(float)
    site = fs.meta[Keys.SITE]
    err = np.abs(fs.predictions.reshape(-1) - age)
    known = site >= 0
    per_site = {site_names[i]: float(np.nanmean(err[site == i])) for i in np.unique(site[known])}
    metrics: dict[str, Any] = {"age_mae": float(np.nanmean(err)), "age_mae_per_site": per_site,
                               **site_bias(fs.predictions, age, site, site_names, mask=bias_mask),
                               **feature_probes(fs, permutations=permutations, seed=seed)}
    if (~known).any():
        metrics["age_mae_unseen_sites"] = float(np.nanmean(err[~known]))
    return metrics
