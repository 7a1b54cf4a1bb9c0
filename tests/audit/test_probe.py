"""The lead's probes: a classifier reads site from features that encode it and not from noise; a regressor reads
a linear signal; both refuse data they cannot cross-validate."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.audit.probe import classifier_probe, regressor_probe
from harmonize.errors import ConfigError

PER_SITE = 24
#: Distance of the site clusters in units of the noise: sites are then separable almost without error.
SITE_SIGNAL = 5.0
#: Samples per site of the pure-noise probes (their balanced accuracy scatters around chance).
NOISE_PER_SITE = 60


def _sites(n_sites: int, per_site: int = PER_SITE) -> np.ndarray:
    return np.repeat(np.arange(n_sites), per_site)


def _encoding(site: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One-hot site times SITE_SIGNAL plus noise, plus a few pure-noise columns."""
    n_sites = int(site.max()) + 1
    encoded = np.eye(n_sites)[site] * SITE_SIGNAL + rng.normal(size=(len(site), n_sites))
    return np.concatenate([encoded, rng.normal(size=(len(site), 4))], axis=1)


@pytest.mark.parametrize(
    ("n_sites", "chance"),
    [(2, 0.5), (4, 0.25), (8, 0.125)],
)
def test_classifier_probe_reads_encoded_site(n_sites: int, chance: float) -> None:
    rng = np.random.default_rng(n_sites)
    site = _sites(n_sites)
    result = classifier_probe(_encoding(site, rng), site)
    assert result.balanced_accuracy > 0.97
    assert result.chance == pytest.approx(chance)
    assert (result.n_samples, result.n_classes, result.folds) == (n_sites * PER_SITE, n_sites, 5)
    assert result.p_value is None


@pytest.mark.parametrize(
    ("n_sites", "chance", "tolerance"),
    # about 3 standard deviations of the noise probe's balanced accuracy at NOISE_PER_SITE samples per site
    # (measured over 20 seeds: 0.065, 0.037 and 0.015 for 2, 4 and 8 sites)
    [(2, 0.5, 0.2), (4, 0.25, 0.11), (8, 0.125, 0.05)],
)
def test_classifier_probe_at_chance_on_noise(n_sites: int, chance: float, tolerance: float) -> None:
    rng = np.random.default_rng(100 + n_sites)
    site = _sites(n_sites, NOISE_PER_SITE)
    result = classifier_probe(rng.normal(size=(len(site), 10)), site)
    assert result.chance == pytest.approx(chance)
    assert abs(result.balanced_accuracy - chance) < tolerance


def test_classifier_probe_permutation_p_value() -> None:
    permutations = 9
    rng = np.random.default_rng(0)
    site = _sites(2, 20)
    encoded = classifier_probe(_encoding(site, rng), site, permutations=permutations)
    noise = classifier_probe(rng.normal(size=(len(site), 6)), site, permutations=permutations)
    # no permuted labelling beats the real one: the smallest p-value a permutation test can give
    assert encoded.p_value == pytest.approx(1 / (permutations + 1))
    assert noise.p_value > 0.1


def test_classifier_probe_chance_ignores_imbalance_and_folds_shrink() -> None:
    rng = np.random.default_rng(1)
    site = np.array([0] * 40 + [1] * 3)
    result = classifier_probe(_encoding(site, rng), site)
    assert result.chance == pytest.approx(0.5)
    assert result.folds == 3  # the rarest class has 3 samples
    assert result.balanced_accuracy > 0.9
    # string labels work as well
    assert classifier_probe(_encoding(site, rng), np.where(site == 0, "prisma", "trio")).n_classes == 2


def test_classifier_probe_errors() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3))
    with pytest.raises(ConfigError, match=r"needs at least 2 classes, got \[3\]"):
        classifier_probe(x, np.full(10, 3))
    with pytest.raises(ConfigError, match=r"classes \[7\] have a single sample"):
        classifier_probe(x, np.array([0] * 9 + [7]))
    with pytest.raises(ConfigError, match=r"n_samples=9, got \(10, 3\)"):
        classifier_probe(x, np.zeros(9))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN or Inf"):
        classifier_probe(bad, np.array([0, 1] * 5))


def test_regressor_probe_linear_signal() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 6))
    y = x @ np.array([2.0, -1.0, 0.5, 0.0, 0.0, 3.0]) + 40 + 0.05 * rng.normal(size=80)
    result = regressor_probe(x, y)
    assert result.r2 > 0.99
    assert result.mae < 0.2
    assert (result.n_samples, result.folds) == (80, 5)
    # non-finite targets are left out
    y[:5] = np.nan
    assert regressor_probe(x, y).n_samples == 75


def test_regressor_probe_noise_and_errors() -> None:
    rng = np.random.default_rng(4)
    assert regressor_probe(rng.normal(size=(60, 5)), rng.normal(size=60)).r2 < 0.1
    with pytest.raises(ConfigError, match="at least 2 samples with a finite target, got 1"):
        regressor_probe(rng.normal(size=(3, 2)), np.array([1.0, np.nan, np.nan]))
    with pytest.raises(ConfigError, match=r"n_samples=4, got \(3, 2\)"):
        regressor_probe(rng.normal(size=(3, 2)), np.zeros(4))


def test_probes_average_repeated_splits() -> None:
    rng = np.random.default_rng(5)
    site = _sites(4, 20)
    x = np.eye(4)[site] * 0.8 + rng.normal(size=(len(site), 4))  # weakly readable: the split matters
    singles = [classifier_probe(x, site, seed=s, repeats=1).balanced_accuracy for s in range(5)]
    repeated = classifier_probe(x, site, seed=0, repeats=5)
    assert repeated.repeats == 5 and len(set(singles)) > 1
    assert repeated.balanced_accuracy == pytest.approx(np.mean(singles))
    y = x[:, 0] * 3 + rng.normal(size=len(site))
    singles_r2 = [regressor_probe(x, y, seed=s, repeats=1).r2 for s in range(3)]
    assert regressor_probe(x, y, seed=0, repeats=3).r2 == pytest.approx(np.mean(singles_r2))
    with pytest.raises(ConfigError, match=r"'repeats' must be an integer >= 1, got 0 \(int\)"):
        classifier_probe(x, site, repeats=0)
