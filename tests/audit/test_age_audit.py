"""audit_feature_set: the brain-age figures of a set of held-out features."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.audit.age_audit import audit_feature_set
from harmonize.audit.features import FeatureSet
from harmonize.keys import Keys


def _feature_set(sex: list[int]) -> FeatureSet:
    rng = np.random.default_rng(0)
    n = len(sex)
    site = np.arange(n) % 2
    return FeatureSet(rng.normal(size=(n, 4)) + site[:, None], rng.normal(50, 5, size=(n, 1)),
                      {Keys.SITE: site, Keys.AGE: rng.uniform(40, 60, n), Keys.SEX: np.asarray(sex)})


def test_audit_skips_the_sex_probe_when_a_sex_has_one_scan():
    metrics = audit_feature_set(_feature_set([0] * 11 + [1]), ["a", "b"])
    assert "sex_probe_bacc" not in metrics and metrics["n_subjects"] == 12
    metrics = audit_feature_set(_feature_set([0] * 10 + [1, 1]), ["a", "b"])
    assert 0 <= metrics["sex_probe_bacc"] <= 1


def test_the_age_error_is_measured_per_site_and_for_unseen_sites():
    meta = {Keys.SITE: np.array([0, 0, 1, 1, -1, -1]), Keys.AGE: np.array([40.0, 50, 60, 70, 30, 80]),
            Keys.SEX: np.array([0, 1, 0, 1, 0, 1])}
    predictions = meta[Keys.AGE][:, None] + np.array([[1.0], [-3], [2], [2], [4], [-6]])
    features = np.random.default_rng(0).normal(size=(6, 3))
    metrics = audit_feature_set(FeatureSet(features, predictions, meta), ["a", "b"])
    assert metrics["age_mae"] == pytest.approx(3.0)
    assert metrics["age_mae_per_site"] == pytest.approx({"a": 2.0, "b": 2.0})
    assert metrics["age_mae_unseen_sites"] == pytest.approx(5.0)
