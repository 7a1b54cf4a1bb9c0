"""RandomSiteAcquisition: draws a site's acquisition, then SiteAcquisition renders it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonize.data.transforms import RandomSiteAcquisition, SiteAcquisition
from harmonize.errors import ConfigError
from harmonize.keys import Keys


def test_same_seed_same_image_and_other_seed_other_image(make_subject):
    first = RandomSiteAcquisition(seed=3)(make_subject())[Keys.IMAGE].numpy()
    again = RandomSiteAcquisition(seed=3)(make_subject())[Keys.IMAGE].numpy()
    other = RandomSiteAcquisition(seed=4)(make_subject())[Keys.IMAGE].numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 0.01 * np.abs(first).mean()


def test_the_deterministic_transform_in_the_history_replays_the_output(make_subject):
    subject = make_subject()
    out = RandomSiteAcquisition(seed=7)(subject)
    replay = out.history[-1]
    assert isinstance(replay, SiteAcquisition)
    again = replay(subject)
    np.testing.assert_array_equal(again[Keys.IMAGE].numpy(), out[Keys.IMAGE].numpy())


def test_get_params_draws_within_the_ranges():
    sampler = RandomSiteAcquisition(
        tissue_intensities=[(0.1, 0.2), 0.5, (0.8, 0.9)], gamma=(0.9, 1.1), blur_fwhm_mm=(1, 2),
        bias_coefficients=0.1, noise_std=(0.02, 0.03), intensity_scale=(2, 3),
    )
    for seed in range(20):
        params = sampler.get_params(np.random.default_rng(seed))
        csf, gm, wm = params["tissue_intensities"]
        assert 0.1 <= csf <= 0.2 and gm == 0.5 and 0.8 <= wm <= 0.9
        assert 0.9 <= params["gamma"] <= 1.1
        assert len(params["blur_fwhm_mm"]) == 3 and all(1 <= v <= 2 for v in params["blur_fwhm_mm"])
        assert len(params["bias_coefficients"]) == 20 and max(map(abs, params["bias_coefficients"])) <= 0.1
        assert 0.02 <= params["noise_std"] <= 0.03 and 2 <= params["intensity_scale"] <= 3
    SiteAcquisition(**params)  # the drawn parameters are valid arguments of the deterministic transform


def test_a_seeded_transform_continues_its_stream_and_an_unseeded_one_follows_torch(make_subject):
    sampler = RandomSiteAcquisition(seed=0)
    first = sampler(make_subject())[Keys.IMAGE].numpy()
    second = sampler(make_subject())[Keys.IMAGE].numpy()
    assert not np.array_equal(first, second)
    torch.manual_seed(11)
    a = RandomSiteAcquisition()(make_subject())[Keys.IMAGE].numpy()
    torch.manual_seed(11)
    b = RandomSiteAcquisition()(make_subject())[Keys.IMAGE].numpy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"gamma": (0.0, 1.0)}, "'gamma' must be one finite number > 0 or a (low, high) pair of them with low <= high, "
                            "got (0.0, 1.0) (tuple)"),
    ({"tissue_intensities": [(0.1, 0.2), (-0.1, 0.2)]},
     "'tissue_intensities[1]' must be one finite number >= 0 or a (low, high) pair of them with low <= high, "
     "got (-0.1, 0.2) (tuple)"),
    ({"tissue_intensities": 0.5}, "'tissue_intensities' must be a sequence of (low, high) ranges, one per tissue "
                                  "channel, got 0.5 (float)"),
    ({"noise_std": (0.05, 0.01)}, "'noise_std' must be one finite number >= 0 or a (low, high) pair of them with "
                                  "low <= high, got (0.05, 0.01) (tuple)"),
    ({"seed": -1}, "'seed' must be an integer >= 0, got -1 (int)"),
])
def test_bad_ranges_are_named(kwargs, problem):
    with pytest.raises(ConfigError) as info:
        RandomSiteAcquisition(**kwargs)
    assert info.value.message == "RandomSiteAcquisition: invalid arguments." and info.value.problems == [problem]


def test_every_bad_range_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        RandomSiteAcquisition(tissue_intensities=[(0.2, 0.1), 0.5], gamma=-1, blur_fwhm_mm=(1, 2, 3),
                              bias_coefficients=float("inf"), bias_order=1.0, noise_std=(0.0, "x"),
                              intensity_scale=(0, 1), seed=True)
    assert [p.split(" must ")[0] for p in info.value.problems] == [
        "'tissue_intensities[0]'", "'gamma'", "'blur_fwhm_mm'", "'bias_coefficients'", "'bias_order'", "'noise_std'",
        "'intensity_scale'", "'seed'"]
