"""site_bias: the mean signed age error per site and its spread (max - min), on the scans a mask keeps."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.audit.site_bias import site_bias
from harmonize.errors import ConfigError

#: Site a over-predicts by 2 and 4 y (mean +3), b under-predicts by 1 y, c by 3 y; an unseen scan (-1) and a scan
#: without age are left out.
PREDICTIONS = np.array([52.0, 64.0, 49.0, 59.0, 47.0, 90.0, 10.0])
AGES = np.array([50.0, 60.0, 50.0, 60.0, 50.0, 50.0, np.nan])
SITES = np.array([0, 0, 1, 1, 2, -1, 0])
NAMES = ["a", "b", "c"]


def test_per_site_means_and_their_spread():
    result = site_bias(PREDICTIONS.reshape(-1, 1), AGES, SITES, NAMES)
    assert result["site_mean_signed_error"] == pytest.approx({"a": 3.0, "b": -1.0, "c": -3.0})
    assert result["site_bias_spread"] == pytest.approx(6.0)


def test_a_mask_restricts_the_scans():
    keep = np.array([True, False, True, True, False, True, True])  # a: +2 only; c dropped entirely
    result = site_bias(PREDICTIONS, AGES, SITES, NAMES, mask=keep)
    assert result["site_mean_signed_error"] == pytest.approx({"a": 2.0, "b": -1.0})
    assert result["site_bias_spread"] == pytest.approx(3.0)
    one_site = site_bias(PREDICTIONS, AGES, SITES, NAMES, mask=SITES == 0)
    assert one_site == {"site_mean_signed_error": {"a": 3.0}, "site_bias_spread": None}


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match=r"one predicted age, age, site and mask entry per scan; got \{'predictions"
                                          r"': 7, 'ages': 7, 'sites': 7, 'mask': 2\}"):
        site_bias(PREDICTIONS, AGES, SITES, NAMES, mask=np.array([True, False]))
    with pytest.raises(ConfigError, match=r"site index 2 has no name in site_names \['a', 'b'\]"):
        site_bias(PREDICTIONS, AGES, SITES, NAMES[:2])


def test_shared_age_mask_keeps_ages_two_sites_share():
    from harmonize.audit.site_bias import shared_age_mask

    ranges = [(20.0, 40.0), (30.0, 50.0), (45.0, 60.0)]
    ages = np.array([25.0, 35.0, 42.0, 47.0, 55.0, np.nan])
    assert shared_age_mask(ages, ranges).tolist() == [False, True, False, True, False, False]
    assert shared_age_mask(ages, ranges[:1]).tolist() == [True] * 5 + [False]


def test_age_overlap_note_names_biased_sites_only():
    from harmonize.audit.site_bias import age_overlap_note

    balanced = [(20.0, 80.0), (25.0, 85.0), (22.0, 84.0)]
    assert age_overlap_note(balanced, ["a", "b", "c"]) is None
    windows = [(20.0, 44.0), (31.0, 53.0), (40.0, 64.0)]
    note = age_overlap_note(windows, ["a", "b", "c"])
    assert note.startswith("Biased sites: the training sites' ages only partly overlap (a 20-44, b 31-53, c 40-64; "
                           "all share only 40-44 y)")
    assert "no age is common to all" in age_overlap_note([(20.0, 30.0), (40.0, 50.0)], ["a", "b"])
    assert age_overlap_note([(20.0, 30.0)], ["a"]) is None


def test_in_window_note_only_when_the_held_out_scans_lie_in_their_sites_windows():
    from harmonize.audit.site_bias import in_window_note

    windows = [(20.0, 44.0), (31.0, 53.0)]
    in_window = in_window_note(windows, ["a", "b"], np.array([25.0, 40.0, 35.0, 50.0, np.nan, 70.0]),
                               ["a", "a", "b", "b", "b", "unseen"])
    assert in_window.startswith("100% of the 4 held-out scans of the training sites lie in their own site's")
    every_age = in_window_note(windows, ["a", "b"], np.array([25.0, 60.0, 35.0, 80.0]), ["a", "a", "b", "b"])
    assert every_age is None
    assert in_window_note(windows, ["a", "b"], np.array([70.0]), ["unseen"]) is None
