"""Tests of the phantom anatomy of the forget domain."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harmonize.errors import ConfigError
from harmonize.keys import PhantomKind
from harmonize.recon.phantoms import (
    Ellipsoid,
    ellipse_slice,
    ellipsoid_volume,
    phantom_volume,
    random_ellipsoids,
    shepp_logan,
)


def test_shepp_logan_is_the_skimage_phantom_resized() -> None:
    image = shepp_logan(32)
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert 0.0 <= image.min() and 0.5 < image.max() <= 1.0  # the bright (thin, anti-aliased) skull
    assert image[16, 16] < 0.5  # darker inside


def test_ellipse_slice_area_and_cross_section() -> None:
    disc = Ellipsoid(center=(0.0, 0.0, 0.0), radii=(1.0, 0.5, 0.5), angle=0.0, intensity=1.0)
    image = ellipse_slice(64, [disc], z=0.0)
    assert image.max() == pytest.approx(1.0)
    assert image.mean() == pytest.approx(math.pi * 0.25 / 4, abs=0.01)  # area pi r^2 over a 2 x 2 field of view
    shrunk = ellipse_slice(64, [disc], z=0.8)  # radius shrinks by sqrt(1 - 0.64) = 0.6
    assert shrunk.mean() == pytest.approx(image.mean() * 0.36, abs=0.01)
    assert ellipse_slice(64, [disc], z=1.2).max() == 0.0  # above the ellipsoid


@pytest.mark.parametrize("kind", list(PhantomKind))
def test_phantom_volume_shape_range_and_smooth_slices(kind: PhantomKind) -> None:
    volume = phantom_volume(32, 3, np.random.default_rng(0), kind)
    assert volume.shape == (3, 32, 32) and volume.dtype == np.float32
    assert volume.min() >= 0.0 and volume.max() == pytest.approx(1.0)
    assert 0.05 < (volume > 0.01).mean() < 0.9  # an object, not empty, not the whole field
    assert np.abs(volume[0] - volume[1]).mean() < np.abs(volume[0] - volume[1].T[::-1]).mean() + 0.05


def test_phantoms_are_seeded() -> None:
    a = phantom_volume(16, 2, np.random.default_rng(4), PhantomKind.ELLIPSES)
    np.testing.assert_array_equal(a, phantom_volume(16, 2, np.random.default_rng(4), PhantomKind.ELLIPSES))
    assert not np.array_equal(a, phantom_volume(16, 2, np.random.default_rng(5), PhantomKind.ELLIPSES))


def test_random_ellipsoids_body_first() -> None:
    ellipsoids = random_ellipsoids(np.random.default_rng(0), num_inner=(2, 2))
    assert len(ellipsoids) == 3
    assert ellipsoids[0].radii[1] >= 0.6 and ellipsoids[0].intensity > 0
    volume = ellipsoid_volume(16, 1, ellipsoids)
    assert volume.shape == (1, 16, 16) and volume.max() == pytest.approx(1.0)


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"'size' must be an integer >= 8, got 4 \(int\)"):
        phantom_volume(4, 2, rng)
    with pytest.raises(ConfigError, match=r"'num_slices' must be an integer >= 1, got 0 \(int\)"):
        phantom_volume(16, 0, rng)
    with pytest.raises(ConfigError) as err:  # both at once
        phantom_volume(4, 0, rng)
    assert err.value.problems == ["'size' must be an integer >= 8, got 4 (int)",
                                  "'num_slices' must be an integer >= 1, got 0 (int)"]
    with pytest.raises(ConfigError, match="Argument 'kind'.*cube"):
        phantom_volume(16, 2, rng, "cube")
