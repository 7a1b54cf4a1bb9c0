"""Smooth simulated coil sensitivity maps for multi-coil k-space (a cheap stand-in for a receive array)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from harmonize.errors import ConfigError, integer_problem, integers_problem

__all__ = ["simulate_coil_maps"]

#: Distance of the coil centres from the image centre, in units of the half field of view.
COIL_RADIUS = 1.2
#: Width of each coil's Gaussian sensitivity profile, in units of the half field of view.
COIL_WIDTH = 1.0
#: Cycles of linear phase across the field of view of each coil.
COIL_PHASE_CYCLES = 0.5


def simulate_coil_maps(
    shape: tuple[int, int],
    num_coils: int,
    rng: np.random.Generator | None = None,
    radius: float = COIL_RADIUS,
    width: float = COIL_WIDTH,
    phase_cycles: float = COIL_PHASE_CYCLES,
) -> Tensor:
    """Complex sensitivity maps of coils placed evenly on a circle around the field of view.

    Each coil sees a Gaussian magnitude profile centred at its position and a linear phase pointing towards the
    centre. The maps are normalised to unit root-sum-of-squares at every pixel, so the root-sum-of-squares of
    the coil images equals the magnitude of the object (the usual ground truth of multi-coil fastMRI).

    Args:
        shape: ``(H, W)`` of the slice.
        num_coils: number of coils (>= 1).
        rng: optional generator that rotates the array by a random angle and offsets each coil's phase;
            without it the maps are deterministic.
        radius: coil distance from the centre (units of half the field of view).
        width: standard deviation of each coil's profile (same units).
        phase_cycles: cycles of linear phase across the field of view.

    Returns:
        Maps ``(num_coils, H, W, 2)`` (real and imaginary parts last), float32.

    Raises:
        ConfigError: if ``num_coils`` < 1 or ``shape`` is not two positive sizes.
    """
    problems = [integer_problem("num_coils", num_coils), integers_problem("shape", shape, length=2, minimum=1)]
    if problems[1]:
        problems[1] += " (H, W)"
    if problems := [p for p in problems if p]:
        raise ConfigError("Invalid coil-map arguments.", problems=problems)
    rotation = float(rng.uniform(0, 2 * math.pi)) if rng is not None else 0.0
    phase_offsets = rng.uniform(0, 2 * math.pi, size=num_coils) if rng is not None else np.zeros(num_coils)
    ys = torch.linspace(-1.0, 1.0, shape[0])
    xs = torch.linspace(-1.0, 1.0, shape[1])
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    maps = []
    for c in range(num_coils):
        angle = rotation + 2 * math.pi * c / num_coils
        cy, cx = radius * math.sin(angle), radius * math.cos(angle)
        magnitude = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
        phase = math.pi * phase_cycles * (yy * math.sin(angle) + xx * math.cos(angle)) + float(phase_offsets[c])
        maps.append(torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1))
    stacked = torch.stack(maps)  # (C, H, W, 2)
    rss = stacked.pow(2).sum(dim=(0, -1)).sqrt()  # (H, W)
    return (stacked / rss[None, ..., None]).float()
