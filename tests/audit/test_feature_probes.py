"""feature_probes' site floor: what a probe reads of the site from the audited scans' age and sex alone."""

from __future__ import annotations

import numpy as np

from harmonize.audit.feature_probes import biology_covariates, feature_probes
from harmonize.audit.features import FeatureSet
from harmonize.keys import Keys


def _features(age: np.ndarray, site: np.ndarray, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(len(age), 6))  # features that know nothing of the site
    sex = rng.integers(0, 2, len(age))
    return FeatureSet(features, None, {Keys.SITE: site, Keys.AGE: age, Keys.SEX: sex})


def test_sites_of_different_ages_have_a_high_floor():
    site = np.repeat([0, 1, 2], 30)
    age = np.concatenate([np.linspace(20, 40, 30), np.linspace(45, 60, 30), np.linspace(65, 85, 30)])
    metrics = feature_probes(_features(age, site))
    assert metrics["site_probe_floor"] > 0.9  # age alone tells the site
    assert metrics["site_probe_bacc"] < 0.5  # the features do not


def test_conditional_probe_reads_the_scanner_beyond_age():
    rng = np.random.default_rng(1)
    site = np.repeat([0, 1], 40)
    age = np.concatenate([rng.uniform(20, 60, 40), rng.uniform(40, 80, 40)])
    noise = rng.normal(0, 2, size=(80, 3))
    only_age = np.column_stack([age, -0.5 * age, np.zeros(80)]) + noise  # features that carry age alone
    fs = FeatureSet(only_age, None, {Keys.SITE: site, Keys.AGE: age})
    metrics = feature_probes(fs)
    assert metrics["site_probe_bacc"] > 0.65  # the raw probe reads the sites' different ages
    assert metrics["site_probe_conditional"] < metrics["site_probe_floor"] + 0.05  # and nothing beyond them
    scanner = only_age + np.outer(site, [0.0, 0.0, 8.0])  # a scanner offset on the third feature
    assert feature_probes(FeatureSet(scanner, None, fs.meta))["site_probe_conditional"] > 0.9


def test_conditional_probe_reads_a_scanner_that_only_age_reveals():
    """A prediction too old on one scanner and too young on the other, at every age: the features alone look alike
    on both scanners, but given the true age they name it."""
    rng = np.random.default_rng(2)
    site = np.tile([0, 1], 60)
    age = rng.uniform(20, 80, 120)
    predicted = age + np.where(site == 0, 6.0, -6.0) + rng.normal(0, 2, 120)
    fs = FeatureSet(predicted[:, None], None, {Keys.SITE: site, Keys.AGE: age})
    metrics = feature_probes(fs)
    assert metrics["site_probe_bacc"] < 0.7  # both scanners' predictions span the same range
    assert metrics["site_probe_floor"] < 0.65  # both sites have every age
    assert metrics["site_probe_conditional"] > 0.9


def test_sites_of_the_same_ages_have_a_floor_near_chance():
    site = np.tile([0, 1, 2], 30)
    age = np.repeat(np.linspace(20, 85, 30), 3)  # each age once at every site
    metrics = feature_probes(_features(age, site))
    assert metrics["site_probe_floor"] < metrics["chance"] + 0.1  # nothing to read (cross-validation may dip below)


def test_floor_is_skipped_without_ages_and_ignores_unseen_sites():
    site = np.repeat([0, 1, -1], 10)
    fs = _features(np.full(30, np.nan), site)
    assert not {"site_probe_floor", "site_probe_conditional"} & set(feature_probes(fs))
    fs.meta[Keys.AGE] = np.concatenate([np.linspace(20, 30, 10), np.linspace(60, 70, 10), np.full(10, np.nan)])
    assert feature_probes(fs)["site_probe_floor"] == 1.0


def test_biology_covariates_add_sex_only_when_both_are_present():
    age = np.linspace(20, 80, 12)
    assert biology_covariates(age).shape[1] == biology_covariates(age, np.zeros(12, int)).shape[1]
    with_sex = biology_covariates(age, np.array([0, 1, -1] * 4))
    assert with_sex.shape[1] == biology_covariates(age).shape[1] + 1
    assert with_sex[2, -1] == 0.5  # unknown sex
