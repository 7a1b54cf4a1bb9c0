"""SiteEraser: LEACE erasure of the site from features, conditional on age when given a prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from harmonize.audit.erasure import SiteEraser
from harmonize.audit.features import FeatureSet
from harmonize.errors import ConfigError
from harmonize.handlers import ConditionalPrior
from harmonize.keys import Keys

SITES = 3


def _biased(n_per_site: int = 60, seed: int = 0) -> FeatureSet:
    """Sites of overlapping age windows; features = age signal + a scanner offset + noise."""
    rng = np.random.default_rng(seed)
    site = np.repeat(np.arange(SITES), n_per_site)
    age = np.concatenate([rng.uniform(20 + 15 * s, 50 + 15 * s, n_per_site) for s in range(SITES)])
    scanner = np.eye(SITES)[site] @ rng.normal(0, 3, size=(SITES, 8))
    features = np.outer(age, rng.normal(size=8)) / 10 + scanner + rng.normal(0, 0.5, size=(site.size, 8))
    return FeatureSet(features, None, {Keys.SITE: site, Keys.AGE: age})


def _linear_site_accuracy(fs: FeatureSet) -> float:
    probe = LogisticRegression(max_iter=2000).fit(fs.features, fs.meta[Keys.SITE])
    return float(probe.score(fs.features, fs.meta[Keys.SITE]))


def test_plain_erasure_leaves_no_linear_site_information_on_the_fitting_scans() -> None:
    train = _biased()
    erased = SiteEraser(SITES, shrinkage=False).fit(train)(train)
    onehot = np.eye(SITES)[train.meta[Keys.SITE]]
    cov = (erased.features - erased.features.mean(0)).T @ (onehot - onehot.mean(0)) / len(train)
    np.testing.assert_allclose(cov, 0.0, atol=1e-5)  # float32 features
    assert _linear_site_accuracy(train) > 0.95 > 0.6 > _linear_site_accuracy(erased)


def test_conditional_erasure_keeps_age_and_removes_the_scanner_beyond_it() -> None:
    train, test = _biased(seed=0), _biased(seed=0)
    test.features = test.features.copy()
    prior = ConditionalPrior(train.meta[Keys.AGE], train.meta[Keys.SITE], SITES)
    p = prior({Keys.AGE: torch.as_tensor(train.meta[Keys.AGE])}).numpy()
    conditional = SiteEraser(SITES).fit(train, prior=p)(test)
    plain = SiteEraser(SITES).fit(train)(test)
    age = test.meta[Keys.AGE]
    mae_conditional = np.abs(conditional.predictions.reshape(-1) - age).mean()
    mae_plain = np.abs(plain.predictions.reshape(-1) - age).mean()
    assert mae_conditional < 0.8 * mae_plain  # plain erasure of biased sites erases age with them
    residual = np.eye(SITES)[test.meta[Keys.SITE]] - p
    cov = (conditional.features - conditional.features.mean(0)).T @ (residual - residual.mean(0)) / len(test)
    assert np.abs(cov).max() < 1e-2 * np.abs(test.features).max()


def test_errors_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'num_sites' must be an integer >= 2, got 1 \(int\): one site has nothing"):
        SiteEraser(1)
    train = _biased()
    with pytest.raises(ConfigError, match=r"site indices must lie in 0..1"):
        SiteEraser(2).fit(train)
    with pytest.raises(ConfigError, match=r"prior must have shape \(180, 3\)"):
        SiteEraser(SITES).fit(train, prior=np.ones((180, 2)))
    with pytest.raises(ConfigError, match="call fit"):
        SiteEraser(SITES)(train)
