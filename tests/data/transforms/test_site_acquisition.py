"""SiteAcquisition: rendering a site's image from tissue maps with explicit parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from scipy import ndimage

from harmonize.data.transforms import SiteAcquisition
from harmonize.data.transforms.site_acquisition import (
    num_bias_coefficients,
    polynomial_bias_field,
)
from harmonize.errors import ConfigError
from harmonize.keys import Keys

INTENSITIES = [0.25, 0.6, 0.9]


def uniform_subject(value: float = 1.0, shape: tuple[int, int, int] = (16, 16, 16)) -> tio.Subject:
    """One tissue channel (WM) of constant probability ``value``."""
    tissues = torch.zeros(3, *shape)
    tissues[2] = value
    return tio.Subject({Keys.TISSUES: tio.LabelMap(tensor=tissues)})


def test_clean_render_is_the_probability_weighted_sum_with_background_zeroed(make_subject):
    subject = make_subject()
    out = SiteAcquisition(INTENSITIES)(subject)
    tissues = subject[Keys.TISSUES].numpy()
    expected = np.tensordot(INTENSITIES, tissues, axes=1)
    expected[tissues.sum(0) < 0.5] = 0
    image = out[Keys.IMAGE]
    assert image.data.dtype == torch.float32
    np.testing.assert_allclose(image.numpy()[0], expected, atol=1e-6)
    np.testing.assert_array_equal(image.affine, subject[Keys.TISSUES].affine)
    assert Keys.IMAGE not in subject  # copy=True by default: the input is untouched


def test_gamma_and_scale_follow_their_formula():
    out = SiteAcquisition(INTENSITIES, gamma=2.0, intensity_scale=3.0)(uniform_subject(0.8))
    np.testing.assert_allclose(out[Keys.IMAGE].numpy(), 3.0 * (0.9 * 0.8) ** 2, rtol=1e-6)


def test_gaussian_noise_has_the_requested_std_and_rician_noise_its_floor():
    gaussian = SiteAcquisition(INTENSITIES, noise_std=0.05, rician=False)(uniform_subject(1.0, (32, 32, 32)))
    values = gaussian[Keys.IMAGE].numpy()
    assert values.std() == pytest.approx(0.05, rel=0.03)
    assert values.mean() == pytest.approx(0.9, abs=0.002)
    # Rician noise on a zero signal has mean sigma * sqrt(pi / 2) (a Rayleigh distribution).
    tissues = torch.zeros(3, 32, 32, 32)
    empty = tio.Subject({Keys.TISSUES: tio.LabelMap(tensor=tissues)})
    rician = SiteAcquisition(INTENSITIES, noise_std=0.05, mask_background=False)(empty)[Keys.IMAGE].numpy()
    assert rician.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.03)
    assert rician.min() >= 0


def test_noise_seed_makes_the_noise_reproducible():
    def render(seed: int) -> np.ndarray:
        return SiteAcquisition(INTENSITIES, noise_std=0.05, noise_seed=seed)(uniform_subject())[Keys.IMAGE].numpy()

    np.testing.assert_array_equal(render(1), render(1))
    assert np.abs(render(1) - render(2)).mean() > 0.01


def test_blur_is_a_gaussian_of_the_requested_fwhm_along_each_axis(make_subject):
    subject = make_subject()
    spacing = subject[Keys.TISSUES].spacing
    clean = SiteAcquisition(INTENSITIES, mask_background=False)(subject)[Keys.IMAGE].numpy()[0]
    out = SiteAcquisition(INTENSITIES, blur_fwhm_mm=(0, 0, 20), mask_background=False)(subject)
    sigma_voxels = 20 / (2 * np.sqrt(2 * np.log(2))) / spacing[2]  # FWHM = 2.355 sigma
    expected = ndimage.gaussian_filter1d(clean, sigma_voxels, axis=2, mode="constant")
    np.testing.assert_allclose(out[Keys.IMAGE].numpy()[0], expected, atol=1e-6)
    assert np.abs(np.diff(expected, axis=2)).mean() < 0.85 * np.abs(np.diff(clean, axis=2)).mean()


def test_bias_field_matches_torchio_and_multiplies_the_image():
    coefficients = list(np.random.default_rng(0).uniform(-0.3, 0.3, num_bias_coefficients(3)))
    field = polynomial_bias_field((16, 12, 10), coefficients, 3)
    torchio_field = tio.BiasField.generate_bias_field(torch.zeros(1, 16, 12, 10), 3, coefficients)
    np.testing.assert_allclose(field, torchio_field, rtol=1e-5)
    out = SiteAcquisition(INTENSITIES, bias_coefficients=coefficients)(uniform_subject(1.0, (16, 12, 10)))
    np.testing.assert_allclose(out[Keys.IMAGE].numpy()[0], 0.9 * field, rtol=1e-5)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"bias_coefficients": [0.1, 0.2, 0.3]},
     "'bias_coefficients' has 3 values; a bias field of order 3 needs 20 (or none for no bias field)"),
    ({"gamma": 0}, "'gamma' must be a finite number > 0, got 0 (int)"),
    ({"blur_fwhm_mm": (1, 2)}, "'blur_fwhm_mm' must be one finite number >= 0 or a sequence of 3 of them, got (1, 2) "
                               "(tuple)"),
    ({"noise_std": -1}, "'noise_std' must be a finite number >= 0, got -1 (int)"),
    ({"noise_seed": 1.5}, "'noise_seed' must be an integer >= 0, got 1.5 (float)"),
    ({"tissue_intensities": 0.5},
     "'tissue_intensities' must be a sequence of 1 or more finite numbers >= 0, got 0.5 (float)"),
])
def test_bad_arguments_are_named(kwargs, problem):
    with pytest.raises(ConfigError) as info:
        SiteAcquisition(**{"tissue_intensities": INTENSITIES, **kwargs})
    assert info.value.message == "SiteAcquisition: invalid arguments." and info.value.problems == [problem]


def test_every_bad_argument_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        SiteAcquisition([0.2, -0.1], gamma=float("nan"), blur_fwhm_mm=-1.0, bias_coefficients=[0.1], bias_order=-1,
                        noise_std="low", noise_seed=-3, intensity_scale=0)
    assert info.value.problems == [
        "'tissue_intensities' must be a sequence of 1 or more finite numbers >= 0, got [0.2, -0.1] (list)",
        "'gamma' must be a finite number > 0, got nan (float)",
        "'blur_fwhm_mm' must be one finite number >= 0 or a sequence of 3 of them, got -1.0 (float)",
        "'bias_order' must be an integer >= 0, got -1 (int)",
        "'noise_std' must be a finite number >= 0, got 'low' (str)",
        "'noise_seed' must be an integer >= 0, got -3 (int)",
        "'intensity_scale' must be a finite number > 0, got 0 (int)",
    ]


def test_missing_tissues_and_channel_mismatch_are_reported():
    with pytest.raises(ValueError, match="has 3 channels but 2 tissue_intensities"):
        SiteAcquisition([0.2, 0.8])(uniform_subject())
    other = tio.Subject(t1=tio.ScalarImage(tensor=torch.zeros(1, 4, 4, 4)))
    with pytest.raises(KeyError, match="needs tissue maps under 'tissues'; the subject has \\['t1'\\]"):
        SiteAcquisition(INTENSITIES)(other)
