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


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"gm_thinning": (0.5, 1.0)}, "'gm_thinning' must be one finite number >= 0 and < 1 or a (low, high) pair of them "
                                  "with low <= high, got (0.5, 1.0) (tuple)"),
    ({"ventricle_dilation_mm": (0, 8)}, "'ventricle_dilation_mm' must be one finite number >= 0 and <= 6 or a (low, "
                                        "high) pair of them with low <= high, got (0, 8) (tuple) (larger warps may "
                                        "fold)"),
    ({"channels": (0, 1, 1)}, "'channels' must be a sequence of 3 distinct integers >= 0, got (0, 1, 1) (tuple)"),
])
def test_bad_ranges_are_named(kwargs, problem):
    with pytest.raises(ConfigError) as info:
        RandomAtrophy(**kwargs)
    assert info.value.message == "RandomAtrophy: invalid arguments." and info.value.problems == [problem]


def test_every_bad_range_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        RandomAtrophy(gm_thinning=(-0.1, 0.2), ventricle_dilation_mm=(3, 1), channels="012", seed=1.0)
    assert [p.split(" must ")[0] for p in info.value.problems] == ["'gm_thinning'", "'ventricle_dilation_mm'",
                                                                   "'channels'", "'seed'"]
