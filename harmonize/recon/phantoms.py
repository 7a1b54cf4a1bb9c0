"""Phantom "anatomy" for the forget domain of reconstruction unlearning, built offline.

Xue et al. train the original model on brain plus knee scans and unlearn the knee. Without fastMRI at hand, a
second anatomy that is clearly not a brain is made from what ships offline: the Shepp-Logan head phantom of
scikit-image (``skimage.data.shepp_logan_phantom``) and random-ellipse phantoms. A phantom *volume* is a stack
of slices through 3D ellipsoids, so neighbouring slices differ smoothly, like the slices of a scan.

Coordinates are normalised: the field of view spans ``[-1, 1]`` in each axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.data import shepp_logan_phantom
from skimage.transform import AffineTransform, resize, warp

from harmonize.errors import ConfigError, check_option, integer_problem
from harmonize.keys import PhantomKind

__all__ = [
    "Ellipsoid",
    "ellipse_slice",
    "ellipsoid_volume",
    "phantom_volume",
    "random_ellipsoids",
    "shepp_logan",
    "shepp_logan_volume",
]

#: Supersampling factor used to anti-alias ellipse edges.
SUPERSAMPLE = 2
#: Half-height (normalised) of the slab that a phantom volume's slices span.
SLAB_HALF_HEIGHT = 0.3
#: Range of the number of inner ellipsoids of a random phantom.
NUM_INNER_ELLIPSOIDS = (4, 10)
#: Largest rotation (degrees), scale range and shift (normalised) of a Shepp-Logan volume's random pose.
SL_MAX_ROTATION = 20.0
SL_SCALE_RANGE = (0.75, 1.0)
SL_MAX_SHIFT = 0.1


@dataclass(frozen=True)
class Ellipsoid:
    """One ellipsoid of a phantom, in normalised coordinates.

    Attributes:
        center: ``(z, y, x)``.
        radii: semi-axes ``(rz, ry, rx)``.
        angle: in-plane rotation in radians.
        intensity: value added inside (intensities of overlapping ellipsoids add up).
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float
    intensity: float


def ellipse_slice(size: int, ellipsoids: Sequence[Ellipsoid], z: float = 0.0) -> np.ndarray:
    """Render the cross-section of ellipsoids at height ``z`` (deterministic).

    Args:
        size: output side length in pixels.
        ellipsoids: the ellipsoids.
        z: normalised height of the slice.

    Returns:
        ``(size, size)`` float32 image, clipped to ``[0, 1]``.
    """
    n = size * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    image = np.zeros((n, n), dtype=np.float64)
    for e in ellipsoids:
        dz = (z - e.center[0]) / e.radii[0]
        if abs(dz) >= 1.0:
            continue
        shrink = math.sqrt(1.0 - dz * dz)  # cross-section of an ellipsoid
        ry, rx = e.radii[1] * shrink, e.radii[2] * shrink
        c, s = math.cos(e.angle), math.sin(e.angle)
        dy, dx = yy - e.center[1], xx - e.center[2]
        u = (dx * c + dy * s) / rx
        v = (-dx * s + dy * c) / ry
        image[u * u + v * v <= 1.0] += e.intensity
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def random_ellipsoids(rng: np.random.Generator, num_inner: tuple[int, int] = NUM_INNER_ELLIPSOIDS) -> list[Ellipsoid]:
    """Draw a random phantom: a large body ellipsoid with smaller inner structures of other intensities.

    Args:
        rng: the random generator.
        num_inner: inclusive range of the number of inner ellipsoids.

    Returns:
        The ellipsoids (body first).
    """
    body = Ellipsoid(
        center=(0.0, float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
        radii=(2.0, float(rng.uniform(0.6, 0.85)), float(rng.uniform(0.6, 0.85))),
        angle=float(rng.uniform(0, math.pi)),
        intensity=float(rng.uniform(0.3, 0.5)),
    )
    inner = []
    for _ in range(int(rng.integers(num_inner[0], num_inner[1] + 1))):
        r = float(rng.uniform(0.05, 0.3))
        inner.append(
            Ellipsoid(
                center=(
                    float(rng.uniform(-SLAB_HALF_HEIGHT, SLAB_HALF_HEIGHT)),
                    float(rng.uniform(-0.45, 0.45)),
                    float(rng.uniform(-0.45, 0.45)),
                ),
                radii=(float(rng.uniform(0.3, 0.8)), r, r * float(rng.uniform(0.3, 1.0))),
                angle=float(rng.uniform(0, math.pi)),
                intensity=float(rng.uniform(-0.3, 0.5)),
            )
        )
    return [body, *inner]


def shepp_logan(size: int) -> np.ndarray:
    """The Shepp-Logan phantom of scikit-image, anti-aliased to ``size x size``, in ``[0, 1]``."""
    if problem := integer_problem("size", size, minimum=8):
        raise ConfigError("Invalid phantom size.", problems=[problem])
    return resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)


def _slab_heights(num_slices: int) -> np.ndarray:
    return np.linspace(-SLAB_HALF_HEIGHT, SLAB_HALF_HEIGHT, num_slices) if num_slices > 1 else np.zeros(1)


def ellipsoid_volume(size: int, num_slices: int, ellipsoids: Sequence[Ellipsoid]) -> np.ndarray:
    """Slices ``(num_slices, size, size)`` through a slab of the given ellipsoids (deterministic), max 1."""
    volume = np.stack([ellipse_slice(size, ellipsoids, float(z)) for z in _slab_heights(num_slices)])
    return (volume / max(float(volume.max()), 1e-6)).astype(np.float32)


def shepp_logan_volume(size: int, num_slices: int, rng: np.random.Generator) -> np.ndarray:
    """A Shepp-Logan "scan": the phantom in a random pose and contrast, shrinking towards the slab's ends.

    Args:
        size: side length in pixels.
        num_slices: number of slices.
        rng: the random generator (pose, contrast).

    Returns:
        ``(num_slices, size, size)`` float32, max 1.
    """
    base = shepp_logan(size * SUPERSAMPLE).astype(np.float64)
    gamma = float(rng.uniform(0.7, 1.4))
    rotation = math.radians(float(rng.uniform(-SL_MAX_ROTATION, SL_MAX_ROTATION)))
    scale = float(rng.uniform(*SL_SCALE_RANGE))
    shift = rng.uniform(-SL_MAX_SHIFT, SL_MAX_SHIFT, size=2) * base.shape[0] / 2
    centre = np.array(base.shape[::-1], dtype=np.float64) / 2 - 0.5
    slices = []
    for z in _slab_heights(num_slices):
        s = scale * math.sqrt(1.0 - (z / (2 * SLAB_HALF_HEIGHT)) ** 2)
        to_centre = AffineTransform(translation=-centre)
        pose = AffineTransform(scale=s, rotation=rotation, translation=centre + shift)
        forward = AffineTransform(matrix=pose.params @ to_centre.params)
        moved = warp(base, forward.inverse, order=1, preserve_range=True)
        slices.append(resize(moved, (size, size), anti_aliasing=True) ** gamma)
    volume = np.stack(slices)
    return (volume / max(float(volume.max()), 1e-6)).astype(np.float32)


def phantom_volume(
    size: int, num_slices: int, rng: np.random.Generator, kind: PhantomKind | str = PhantomKind.MIXED
) -> np.ndarray:
    """One forget-domain volume: Shepp-Logan, random ellipsoids, or (``mixed``) one of them at random.

    Args:
        size: side length in pixels (>= 8).
        num_slices: slices per volume (>= 1).
        rng: the random generator.
        kind: :class:`PhantomKind`. ``mixed`` picks Shepp-Logan for a third of the volumes.

    Returns:
        ``(num_slices, size, size)`` float32 in ``[0, 1]`` with max 1.

    Raises:
        ConfigError: for an unknown kind, ``size`` < 8 or ``num_slices`` < 1.
    """
    kind = check_option("kind", kind, PhantomKind)
    problems = [p for p in (integer_problem("size", size, minimum=8), integer_problem("num_slices", num_slices)) if p]
    if problems:
        raise ConfigError("Invalid volume size.", problems=problems)
    if kind == PhantomKind.MIXED:
        kind = PhantomKind.SHEPP_LOGAN if rng.uniform() < 1.0 / 3.0 else PhantomKind.ELLIPSES
    if kind == PhantomKind.SHEPP_LOGAN:
        return shepp_logan_volume(size, num_slices, rng)
    return ellipsoid_volume(size, num_slices, random_ellipsoids(rng))
