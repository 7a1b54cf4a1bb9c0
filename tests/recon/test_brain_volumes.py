"""Tests of the synthetic brain scans (warped MNI T1 slices)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harmonize.errors import ConfigError
from harmonize.recon.brain_volumes import axial_slab, brain_volume, random_brain_warp

SIZE = 32



def test_brain_volume_shape_range_and_content() -> None:
    volume = brain_volume(SIZE, 3, random_brain_warp(np.random.default_rng(0)))
    assert volume.shape == (3, SIZE, SIZE) and volume.dtype == np.float32
    assert volume.min() >= 0.0 and volume.max() == pytest.approx(1.0)
    assert 0.2 < (volume > 0.05).mean() < 0.8  # a brain in the middle of a dark field of view
    assert volume[:, :, :2].mean() < 0.05 and volume[:, :, -2:].mean() < 0.05  # dark left and right edges


def test_same_warp_same_volume_and_subjects_differ() -> None:
    warp = random_brain_warp(np.random.default_rng(1))
    np.testing.assert_array_equal(brain_volume(SIZE, 2, warp), brain_volume(SIZE, 2, warp))
    other = random_brain_warp(np.random.default_rng(2))
    assert np.abs(brain_volume(SIZE, 2, warp) - brain_volume(SIZE, 2, other)).mean() > 0.02


def test_identity_warp_slices_are_neighbours() -> None:
    warp = dataclasses.replace(
        random_brain_warp(np.random.default_rng(0)),
        rotation=0.0, scale=(1.0, 1.0), shift=(0.0, 0.0), displacement=np.zeros((2, 5, 5)),
        gamma=1.0, bias=np.zeros((3, 3)), spacing=2.0,
    )
    volume = brain_volume(SIZE, 3, warp)
    assert np.abs(volume[0] - volume[1]).mean() < np.abs(volume[0] - volume[0].T).mean()


def test_axial_slab_orientation() -> None:
    t1 = np.zeros((4, 6, 10), dtype=np.float32)  # (X, Y, Z), RAS
    t1[:, :, 2:8] = 1.0
    t1[0, 5, :] = 2.0  # left, anterior
    slab = axial_slab(t1, 2, centre=0.5, spacing=1.0)
    assert slab.shape == (2, 6, 4)  # (S, Y, X)
    assert slab[0, 0, 0] == 2.0  # anterior at the top, first column = left (x = 0)
    with pytest.raises(ConfigError, match="no brain voxels"):
        axial_slab(np.zeros((4, 4, 4)), 1, 0.5, 1.0)


def test_bad_arguments() -> None:
    warp = random_brain_warp(np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"'size' must be an integer >= 8, got 4 \(int\)"):
        brain_volume(4, 2, warp)
    with pytest.raises(ConfigError, match=r"'num_slices' must be an integer >= 1, got 0 \(int\)"):
        brain_volume(SIZE, 0, warp)
    with pytest.raises(ConfigError) as err:  # both at once
        brain_volume(4, 0, warp)
    assert err.value.problems == ["'size' must be an integer >= 8, got 4 (int)",
                                  "'num_slices' must be an integer >= 1, got 0 (int)"]
