"""Tests of ConditionalPrior: the confusion target p(site | age) of biased data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.handlers import ConditionalPrior, Confound
from harmonize.networks import DomainHead


def test_windows_give_their_site_and_the_shared_range_a_mixture() -> None:
    # site 0 aged 20-40, site 1 aged 30-50: only 30-40 is shared.
    ages = np.concatenate([np.linspace(20, 40, 21), np.linspace(30, 50, 21)])
    sites = np.repeat([0, 1], 21)
    prior = ConditionalPrior(ages, sites, num_classes=2, bandwidth=1.0)
    p = prior({"age": torch.tensor([21.0, 35.0, 49.0])})
    assert p.shape == (3, 2)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    assert p[0, 0] > 0.99 and p[2, 1] > 0.99
    torch.testing.assert_close(p[1], torch.tensor([0.5, 0.5]), atol=0.02, rtol=0)


def test_matches_bayes_rule_over_kernel_densities() -> None:
    ages, sites = np.array([10.0, 12.0, 20.0, 30.0]), np.array([0, 1, 1, 0])
    prior = ConditionalPrior(ages, sites, num_classes=3)
    h = [1.06 * ages[sites == k].std() * 2 ** -0.2 for k in (0, 1)]
    assert prior.bandwidths[:2] == pytest.approx(h)
    density = [sum(np.exp(-0.5 * ((11.0 - a) / h[k]) ** 2) / h[k] for a in ages[sites == k]) for k in (0, 1)]
    expected = np.array([density[0], density[1], 0.0]) / sum(density)
    np.testing.assert_allclose(prior({"age": torch.tensor([11.0])}).numpy()[0], expected, rtol=1e-4)


def test_missing_value_gets_the_overall_frequencies() -> None:
    prior = ConditionalPrior([1.0, 2.0, 3.0, 4.0], [0, 0, 0, 1], num_classes=2)
    torch.testing.assert_close(prior({"age": torch.tensor([float("nan")])})[0], torch.tensor([0.75, 0.25]))


def test_overlapping_windows_keep_their_edges_and_share_the_middle() -> None:
    rng = np.random.default_rng(0)
    ages = np.concatenate([rng.uniform(20, 50, 100), rng.uniform(40, 70, 100)])
    prior = ConditionalPrior(ages, np.repeat([0, 1], 100), num_classes=2)
    p = prior({"age": torch.tensor([30.0, 45.0, 60.0])})
    assert p[0, 0] > 0.95 and p[2, 1] > 0.95
    assert 0.3 < float(p[1, 0]) < 0.7


@pytest.mark.parametrize(
    ("ages", "sites", "kwargs", "message"),
    [
        ([1.0, 2.0], [0], {}, "2 values but 1 classes"),
        ([1.0, 2.0], [0, 2], {}, r"classes must be integers in 0..1"),
        ([1.0, 2.0], [0.0, 1.0], {}, r"classes must be integers"),
        ([1.0, float("nan")], [0, 1], {}, "at least 2 finite 'age' values, got 1"),
        ([1.0, 2.0], [0, 1], {"bandwidth": 0.0}, r"'bandwidth' must be a finite number > 0 or None, got 0.0"),
    ],
)
def test_bad_input_is_named(ages, sites, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ConditionalPrior(ages, sites, num_classes=2, **kwargs)


def test_missing_batch_key_is_named() -> None:
    with pytest.raises(KeyError, match="no key 'age'"):
        ConditionalPrior([1.0, 2.0], [0, 1], num_classes=2)({"site": torch.tensor([0])})


def test_confound_refuses_a_prior_that_is_not_callable() -> None:
    with pytest.raises(ConfigError, match="'prior' must be a function of the batch, got 0.5"):
        Confound(DomainHead(4, 2), 2, prior=0.5)
