"""Tests of the simulated coil sensitivity maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.recon.coil_maps import simulate_coil_maps


@pytest.mark.parametrize("num_coils", [1, 4, 8])
def test_maps_have_unit_root_sum_of_squares(num_coils: int) -> None:
    maps = simulate_coil_maps((10, 14), num_coils)
    assert maps.shape == (num_coils, 10, 14, 2)
    torch.testing.assert_close(maps.pow(2).sum(dim=(0, -1)), torch.ones(10, 14), atol=1e-5, rtol=0)


def test_maps_are_smooth_and_differ_between_coils() -> None:
    maps = simulate_coil_maps((32, 32), 4)
    magnitude = maps.pow(2).sum(-1).sqrt()
    assert float((magnitude[0] - magnitude[2]).abs().max()) > 0.3  # opposite coils see different regions
    assert float(magnitude.diff(dim=1).abs().max()) < 0.1  # smooth: small change between neighbours


def test_rng_rotates_and_seeds_reproduce() -> None:
    fixed = simulate_coil_maps((8, 8), 3)
    torch.testing.assert_close(fixed, simulate_coil_maps((8, 8), 3))
    a = simulate_coil_maps((8, 8), 3, np.random.default_rng(5))
    torch.testing.assert_close(a, simulate_coil_maps((8, 8), 3, np.random.default_rng(5)))
    assert not torch.allclose(a, fixed)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"'num_coils' must be an integer >= 1, got 0 \(int\)"):
        simulate_coil_maps((8, 8), 0)
    with pytest.raises(ConfigError, match=r"'shape' must be a sequence of 2 integers >= 1, got \(8,\) \(tuple\) \(H, W\)"):
        simulate_coil_maps((8,), 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:  # both at once
        simulate_coil_maps((8, 0), 1.5)  # type: ignore[arg-type]
    assert err.value.problems == ["'num_coils' must be an integer >= 1, got 1.5 (float)",
                                  "'shape' must be a sequence of 2 integers >= 1, got (8, 0) (tuple) (H, W)"]
