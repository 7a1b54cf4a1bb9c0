"""RandomAtrophy: draws the amount of atrophy, then Atrophy applies it."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.data.transforms import Atrophy, RandomAtrophy
from harmonize.errors import ConfigError
from harmonize.keys import Keys


def test_same_seed_same_atrophy_other_seed_other_atrophy(make_subject):
    first = RandomAtrophy(seed=1)(make_subject())[Keys.TISSUES].numpy()
    again = RandomAtrophy(seed=1)(make_subject())[Keys.TISSUES].numpy()
    other = RandomAtrophy(seed=2)(make_subject())[Keys.TISSUES].numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.05


def test_the_deterministic_transform_in_the_history_replays_the_output(make_subject):
    subject = make_subject()
    out = RandomAtrophy(seed=4)(subject)
    replay = out.history[-1]
    assert isinstance(replay, Atrophy)
    assert 0 <= replay.gm_thinning <= 0.4 and 0 <= replay.ventricle_dilation_mm <= 4
    np.testing.assert_array_equal(replay(subject)[Keys.TISSUES].numpy(), out[Keys.TISSUES].numpy())


def test_drawn_amounts_stay_in_range():
    sampler = RandomAtrophy(gm_thinning=(0.1, 0.2), ventricle_dilation_mm=3.0)
    for seed in range(20):
        params = sampler.get_params(np.random.default_rng(seed))
        assert 0.1 <= params["gm_thinning"] <= 0.2 and params["ventricle_dilation_mm"] == 3.0


def test_bad_ranges_are_named():
    with pytest.raises(ConfigError, match="gm_thinning must stay below 1"):
        RandomAtrophy(gm_thinning=(0.5, 1.0))
    with pytest.raises(ConfigError, match="ventricle_dilation_mm must stay at most 6.0 mm"):
        RandomAtrophy(ventricle_dilation_mm=(0, 8))
    with pytest.raises(ConfigError, match="gm_thinning must not go below 0"):
        RandomAtrophy(gm_thinning=(-0.1, 0.2))
