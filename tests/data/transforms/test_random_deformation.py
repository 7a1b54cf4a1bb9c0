"""RandomDeformation: draws a head size and a smooth warp, then Deformation applies them."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.data.transforms import Deformation, RandomDeformation
from harmonize.errors import ConfigError
from harmonize.keys import Keys


def test_same_seed_same_warp_other_seed_other_warp(make_subject):
    first = RandomDeformation(seed=5)(make_subject())[Keys.TISSUES].numpy()
    again = RandomDeformation(seed=5)(make_subject())[Keys.TISSUES].numpy()
    other = RandomDeformation(seed=6)(make_subject())[Keys.TISSUES].numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 0.01


def test_the_deterministic_transform_in_the_history_replays_the_output(make_subject):
    subject = make_subject()
    out = RandomDeformation(seed=2)(subject)
    replay = out.history[-1]
    assert isinstance(replay, Deformation)
    np.testing.assert_array_equal(replay(subject)[Keys.TISSUES].numpy(), out[Keys.TISSUES].numpy())


def test_drawn_scales_stay_in_range_and_default_warps_are_invertible(jacobian_determinant):
    sampler = RandomDeformation(scale=(0.9, 1.1), velocity_std_mm=4.0, control_points=4)
    for seed in range(10):
        params = sampler.get_params(np.random.default_rng(seed))
        assert 0.9 <= params["scale"] <= 1.1
        assert params["velocity_mm"].shape == (3, 4, 4, 4)
        coords = Deformation(**params).sampling_coordinates((24, 24, 24), (3.0, 3.0, 3.0))
        assert jacobian_determinant(coords).min() > 0
    assert RandomDeformation(velocity_std_mm=0).get_params(np.random.default_rng(0))["velocity_mm"] is None


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"control_points": 1}, "'control_points' must be an integer >= 2, got 1 (int)"),
    ({"scale": (0.0, 1.0)}, "'scale' must be one finite number > 0 or a (low, high) pair of them with low <= high, "
                            "got (0.0, 1.0) (tuple)"),
    ({"velocity_std_mm": -2}, "'velocity_std_mm' must be a finite number >= 0, got -2 (int)"),
])
def test_bad_arguments_are_named(kwargs, problem):
    with pytest.raises(ConfigError) as info:
        RandomDeformation(**kwargs)
    assert info.value.message == "RandomDeformation: invalid arguments." and info.value.problems == [problem]


def test_every_bad_argument_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        RandomDeformation(scale=(1.1, 0.9), velocity_std_mm=None, control_points=2.0, integration_steps=-1, seed="0")
    assert [p.split(" must ")[0] for p in info.value.problems] == [
        "'scale'", "'velocity_std_mm'", "'control_points'", "'integration_steps'", "'seed'"]
