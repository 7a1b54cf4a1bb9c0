"""Smooth diffeomorphic deformation plus a global scale: one subject's head size and shape."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from torchio.transforms.spatial_transform import SpatialTransform

from harmonize.errors import integer_problem, numbers_problem, raise_problems

from ._checks import as_floats
from ._resample import sample_at, upsample_field

__all__ = ["Deformation", "resample_image"]

#: Points per axis of the grid on which the velocity field is integrated (upsampled to the image after).
INTEGRATION_GRID = 16
#: Default number of squaring steps of the scaling-and-squaring integration (the field is divided by 2**steps).
INTEGRATION_STEPS = 6


class Deformation(SpatialTransform):
    r"""Warp a subject by the exponential of a smooth velocity field, then scale it about the centre.

    The stationary velocity field is given on a coarse grid of control points spanning the field of view,
    interpolated with cubic B-splines and integrated by scaling and squaring (Arsigny et al. 2006, "A
    Log-Euclidean framework for statistics on diffeomorphisms", MICCAI), so the displacement is smooth and the
    map invertible. The global ``scale`` (> 1 enlarges the head) models head size. Intensity images and
    floating-point (partial-volume) label maps are resampled linearly, integer label maps with nearest neighbour.
    The integration runs on a grid of at most 16 points per axis: keep the velocities well below the spacing of
    the control points (e.g. 3 mm for 50 mm apart), where the numerical flow stays free of folds.

    Args:
        scale: head-size factor, one number or one per axis.
        velocity_mm: control-point velocities in mm, shape ``(3, nx, ny, nz)`` with every ``n >= 2``,
            or ``None`` for a pure scale.
        integration_steps: squaring steps (the velocity is divided by ``2**integration_steps``).
        **kwargs: see :class:`torchio.transforms.Transform`.

    Example:
        >>> import numpy as np, torch, torchio as tio
        >>> image = tio.ScalarImage(tensor=torch.rand(1, 16, 16, 16))
        >>> velocity = np.random.default_rng(0).normal(0, 2, (3, 4, 4, 4))
        >>> Deformation(scale=1.05, velocity_mm=velocity)(image).shape
        (1, 16, 16, 16)
    """

    def __init__(
        self,
        scale: float | Sequence[float] = 1.0,
        velocity_mm: np.ndarray | Sequence | None = None,
        integration_steps: int = INTEGRATION_STEPS,
        **kwargs,
    ) -> None:
        problems = [numbers_problem("scale", scale, length=3, minimum=0, strict=True, scalar=True),
                    _velocity_problem(velocity_mm), integer_problem("integration_steps", integration_steps, minimum=0)]
        raise_problems(type(self).__name__, problems)
        super().__init__(**kwargs)
        self.scale = as_floats(scale, 3)
        self.velocity_mm = None if velocity_mm is None else np.asarray(velocity_mm, dtype=np.float64)
        self.integration_steps = int(integration_steps)
        self.args_names = ["scale", "velocity_mm", "integration_steps"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        cache: dict[tuple, np.ndarray] = {}
        for image in self.get_images(subject):
            key = (tuple(image.spatial_shape), tuple(np.round(image.spacing, 6)))
            if key not in cache:
                cache[key] = self.sampling_coordinates(image.spatial_shape, image.spacing)
            resample_image(image, cache[key])
        return subject

    def sampling_coordinates(self, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
        """Voxel coordinates in the input that each output voxel samples.

        Args:
            shape: spatial shape ``(X, Y, Z)``.
            spacing: voxel size in mm along each axis.

        Returns:
            float32 array ``(3, X, Y, Z)``.
        """
        shape = tuple(int(n) for n in shape)
        coords = np.indices(shape, dtype=np.float32)
        if self.velocity_mm is not None:
            coords += self.displacement(shape, spacing)
        centre = (np.asarray(shape, dtype=np.float32) - 1.0) / 2.0
        for axis in range(3):
            if self.scale[axis] != 1.0:
                coords[axis] = centre[axis] + (coords[axis] - centre[axis]) / np.float32(self.scale[axis])
        return coords

    def displacement(self, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
        """Displacement (in voxels) of the diffeomorphism ``exp(v)`` on the image grid, ``(3, X, Y, Z)`` float32."""
        if self.velocity_mm is None:
            return np.zeros((3, *shape), dtype=np.float32)
        shape_arr = np.asarray(shape, dtype=np.float64)
        grid = np.minimum(shape_arr, INTEGRATION_GRID).astype(int)
        grid_step = (shape_arr - 1.0) / np.maximum(grid - 1.0, 1.0)  # image voxels per integration-grid step
        controls = np.asarray(self.velocity_mm.shape[1:], dtype=np.float64)
        at_grid = np.indices(tuple(grid), dtype=np.float64)
        at_grid *= ((controls - 1.0) / np.maximum(grid - 1.0, 1.0))[:, None, None, None]
        velocity = np.stack([
            ndimage.map_coordinates(self.velocity_mm[c], at_grid, order=3, mode="nearest")
            / (float(spacing[c]) * grid_step[c])
            for c in range(3)
        ])
        flow = velocity / (2.0**self.integration_steps)
        identity = np.indices(tuple(grid), dtype=np.float64)
        for _ in range(self.integration_steps):
            warped_at = identity + flow
            flow = flow + np.stack([
                ndimage.map_coordinates(flow[c], warped_at, order=1, mode="nearest") for c in range(3)
            ])
        upsampled = upsample_field(flow, shape)
        upsampled *= grid_step.astype(np.float32)[:, None, None, None]
        return upsampled


def _velocity_problem(velocity_mm: object) -> str | None:
    """The problem with ``velocity_mm`` (None, or finite numbers of shape ``(3, nx, ny, nz)``, every ``n >= 2``)."""
    if velocity_mm is None:
        return None
    try:
        velocity = np.asarray(velocity_mm, dtype=np.float64)
    except (TypeError, ValueError):
        return f"'velocity_mm' must be an array of numbers, got {type(velocity_mm).__name__}"
    if velocity.ndim != 4 or velocity.shape[0] != 3 or min(velocity.shape[1:]) < 2:
        return f"'velocity_mm' must have shape (3, nx, ny, nz) with every n >= 2, got {velocity.shape}"
    if not np.isfinite(velocity).all():
        return "'velocity_mm' must be finite"
    return None


def resample_image(image: tio.Image, coords: np.ndarray) -> None:
    """Resample every channel of ``image`` in place at voxel coordinates ``coords`` (outside = 0).

    Intensity images and floating-point label maps are interpolated linearly; integer label maps with
    nearest neighbour (labels are never blended).

    Args:
        image: the TorchIO image to change.
        coords: ``(3, X, Y, Z)`` voxel coordinates in the image.
    """
    data = image.data
    nearest = isinstance(image, tio.LabelMap) and not torch.is_floating_point(data)
    image.set_data(torch.from_numpy(sample_at(data.numpy(), coords, nearest=nearest)))
