"""Tests of the k-space forward model (MONAI centred FFTs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.blocks.fft_utils_t import ifftn_centered_t

from harmonize.keys import Keys
from harmonize.recon.coil_maps import simulate_coil_maps
from harmonize.recon.kspace import SimulateKspaced, image_to_kspace, kspace_to_image


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(1, 16, 12, generator=torch.Generator().manual_seed(0))


def test_fully_sampled_round_trip_is_exact(image: torch.Tensor) -> None:
    kspace = image_to_kspace(image)
    assert kspace.shape == (1, 16, 12, 2)
    torch.testing.assert_close(kspace_to_image(kspace), image, atol=1e-5, rtol=0)


def test_round_trip_accepts_a_2d_numpy_slice(image: torch.Tensor) -> None:
    kspace = image_to_kspace(image[0].numpy())
    torch.testing.assert_close(kspace_to_image(kspace), image, atol=1e-5, rtol=0)


def test_multicoil_round_trip_gives_the_magnitude(image: torch.Tensor) -> None:
    maps = simulate_coil_maps((16, 12), 4, np.random.default_rng(1))
    kspace = image_to_kspace(image, maps)
    assert kspace.shape == (4, 16, 12, 2)
    torch.testing.assert_close(kspace_to_image(kspace), image, atol=1e-5, rtol=0)


def test_parseval_and_dc_at_the_centre() -> None:
    constant = torch.full((1, 8, 8), 0.5)
    kspace = image_to_kspace(constant)
    energy = kspace.pow(2).sum(-1)[0]
    assert torch.isclose(energy.sum(), constant.pow(2).sum(), atol=1e-5)
    assert divmod(int(energy.argmax()), 8) == (4, 4)  # DC in the centre (fftshift convention)
    assert torch.isclose(energy[4, 4], energy.sum())


def test_complex_image_keeps_its_phase() -> None:
    image = torch.polar(torch.ones(8, 8), torch.full((8, 8), 0.7))
    back = torch.view_as_complex(ifftn_centered_t(image_to_kspace(image), spatial_dims=2)[0].contiguous())
    torch.testing.assert_close(back.angle(), torch.full((8, 8), 0.7), atol=1e-5, rtol=0)


def test_bad_shapes_are_reported(image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(H, W\) or \(1, H, W\), got image of shape \(2, 4, 4\)"):
        image_to_kspace(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(coils, H, W, 2\) = \(C, 16, 12, 2\), got \(2, 8, 8, 2\)"):
        image_to_kspace(image, torch.rand(2, 8, 8, 2))


def test_simulate_kspaced_adds_kspace_and_target(image: torch.Tensor) -> None:
    out = SimulateKspaced()({Keys.IMAGE: image, "other": 3})
    assert out["other"] == 3
    assert out[Keys.KSPACE].shape == (1, 16, 12, 2)
    torch.testing.assert_close(out[Keys.TARGET], image)
    assert out[Keys.TARGET] is not out[Keys.IMAGE]
    with pytest.raises(ValueError, match="takes one image key"):
        SimulateKspaced(keys=[Keys.IMAGE, Keys.LABEL])
