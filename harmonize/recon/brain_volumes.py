"""Synthetic brain "scans" for reconstruction: axial slices of the MNI T1 template, warped per subject.

Each subject is the skull-stripped MNI ICBM152 T1 (shipped in nilearn, loaded by
:func:`harmonize.data.templates.load_templates`) seen through a random smooth deformation (affine plus a coarse
displacement field), a random gamma and a smooth multiplicative bias field, then cut into a few neighbouring
axial slices around a random height. Many subjects give many distinct slices for the retain set of the
reconstruction-unlearning experiment (Xue et al. use fastMRI brain scans there).

As in TorchIO, :class:`BrainWarp` holds the drawn parameters, :func:`random_brain_warp` draws them and
:func:`brain_volume` applies them deterministically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harmonize.data.templates import load_templates
from harmonize.errors import ConfigError, integer_problem

__all__ = ["BrainWarp", "axial_slab", "brain_volume", "random_brain_warp"]

#: The template is sampled on a grid this many times finer than the output, then averaged down (anti-aliasing).
OVERSAMPLE = 2
#: Largest in-plane rotation (degrees), scale range, largest shift (fraction of the half field of view).
MAX_ROTATION = 10.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT = 0.05
#: Control points per side of the coarse displacement field, and its standard deviation (normalised units).
DISPLACEMENT_POINTS = 5
DISPLACEMENT_STD = 0.03
#: Range of the gamma applied to intensities, and largest coefficient of the quadratic log-bias field.
GAMMA_RANGE = (0.7, 1.4)
MAX_BIAS = 0.3
#: Range of slab centres as a fraction of the brain's extent from its bottom, and slab spacing in template voxels.
CENTRE_RANGE = (0.4, 0.65)
SLICE_SPACING_RANGE = (1.5, 3.0)
#: Intensity above which a template voxel counts as brain (to find the brain's extent).
BRAIN_THRESHOLD = 0.05


@dataclass(frozen=True)
class BrainWarp:
    """The per-subject parameters of a synthetic brain scan.

    Attributes:
        rotation: in-plane rotation (radians).
        scale: ``(sy, sx)`` scale factors.
        shift: ``(ty, tx)`` shift in normalised units (the field of view spans [-1, 1]).
        displacement: coarse displacement field ``(2, P, P)`` (x then y, normalised units), upsampled smoothly.
        gamma: intensity gamma.
        bias: 3x3 coefficients of the log bias field (Legendre-like polynomial in y, x up to order 2).
        centre: slab centre as a fraction of the brain's extent along z (0 bottom, 1 top).
        spacing: distance between slices in template voxels.
    """

    rotation: float
    scale: tuple[float, float]
    shift: tuple[float, float]
    displacement: np.ndarray
    gamma: float
    bias: np.ndarray
    centre: float
    spacing: float


def random_brain_warp(rng: np.random.Generator) -> BrainWarp:
    """Draw the parameters of one synthetic subject."""
    return BrainWarp(
        rotation=math.radians(float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))),
        scale=(float(rng.uniform(*SCALE_RANGE)), float(rng.uniform(*SCALE_RANGE))),
        shift=(float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)), float(rng.uniform(-MAX_SHIFT, MAX_SHIFT))),
        displacement=rng.normal(0.0, DISPLACEMENT_STD, size=(2, DISPLACEMENT_POINTS, DISPLACEMENT_POINTS)),
        gamma=float(rng.uniform(*GAMMA_RANGE)),
        bias=rng.uniform(-MAX_BIAS, MAX_BIAS, size=(3, 3)),
        centre=float(rng.uniform(*CENTRE_RANGE)),
        spacing=float(rng.uniform(*SLICE_SPACING_RANGE)),
    )


def axial_slab(t1: np.ndarray, num_slices: int, centre: float, spacing: float) -> np.ndarray:
    """Cut ``num_slices`` axial slices (linearly interpolated in z) out of a RAS volume.

    Args:
        t1: ``(X, Y, Z)`` volume in RAS orientation.
        num_slices: number of slices.
        centre: slab centre as a fraction of the brain's extent along z.
        spacing: distance between slices in voxels.

    Returns:
        ``(num_slices, Y, X)`` slices shown in radiological convention (anterior up).
    """
    along_z = np.flatnonzero((t1 > BRAIN_THRESHOLD).any(axis=(0, 1)))
    if along_z.size == 0:
        raise ConfigError("The template volume has no brain voxels above the threshold; cannot cut slices.")
    z0 = along_z[0] + centre * (along_z[-1] - along_z[0])
    heights = z0 + spacing * (np.arange(num_slices) - (num_slices - 1) / 2.0)
    heights = np.clip(heights, 0, t1.shape[2] - 1)
    lower = np.floor(heights).astype(int)
    upper = np.minimum(lower + 1, t1.shape[2] - 1)
    frac = (heights - lower)[:, None, None]
    slab = (1 - frac) * np.moveaxis(t1[:, :, lower], 2, 0) + frac * np.moveaxis(t1[:, :, upper], 2, 0)
    return np.ascontiguousarray(np.flip(np.swapaxes(slab, 1, 2), axis=1))  # (S, X, Y) -> (S, Y, X), anterior up


def brain_volume(size: int, num_slices: int, warp: BrainWarp) -> np.ndarray:
    """Render one synthetic subject: ``num_slices`` warped axial slices of the MNI T1 (deterministic).

    Args:
        size: output side length in pixels (>= 8).
        num_slices: number of slices (>= 1).
        warp: the subject's parameters (:func:`random_brain_warp`).

    Returns:
        ``(num_slices, size, size)`` float32 in [0, 1], max 1.

    Raises:
        ConfigError: if ``size`` < 8 or ``num_slices`` < 1.
    """
    problems = [p for p in (integer_problem("size", size, minimum=8), integer_problem("num_slices", num_slices)) if p]
    if problems:
        raise ConfigError("Invalid volume size.", problems=problems)
    fine = size * OVERSAMPLE
    t1 = load_templates(shape=fine).t1
    slab = torch.from_numpy(axial_slab(t1, num_slices, warp.centre, warp.spacing).copy()).float().unsqueeze(1)

    c, s = math.cos(warp.rotation), math.sin(warp.rotation)
    theta = torch.tensor(
        [[warp.scale[1] * c, -warp.scale[1] * s, warp.shift[1]], [warp.scale[0] * s, warp.scale[0] * c, warp.shift[0]]],
        dtype=torch.float32,
    )
    grid = F.affine_grid(theta.expand(num_slices, 2, 3), [num_slices, 1, fine, fine], align_corners=False)
    coarse = torch.from_numpy(np.asarray(warp.displacement, dtype=np.float32)).unsqueeze(0)
    field = F.interpolate(coarse, size=(fine, fine), mode="bicubic", align_corners=True)
    grid = grid + field.permute(0, 2, 3, 1)
    moved = F.grid_sample(slab, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    image = F.avg_pool2d(moved, OVERSAMPLE).squeeze(1).clamp_min(0.0)

    coords = torch.linspace(-1.0, 1.0, size)
    basis = torch.stack([torch.ones(size), coords, 1.5 * coords**2 - 0.5])  # Legendre P0, P1, P2
    log_bias = torch.einsum("ij,iy,jx->yx", torch.from_numpy(np.asarray(warp.bias, dtype=np.float32)), basis, basis)
    image = image.pow(warp.gamma) * torch.exp(log_bias)
    image = image / image.max().clamp_min(1e-6)
    return image.numpy().astype(np.float32)
