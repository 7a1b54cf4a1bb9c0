"""Draw a random head size and smooth diffeomorphism, then apply them with :class:`Deformation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torchio as tio
from torchio.transforms.spatial_transform import SpatialTransform

from harmonize.errors import ConfigError

from ._checks import check_non_negative, parse_range
from ._seeding import SeededRandomTransform
from .deformation import INTEGRATION_STEPS, Deformation

__all__ = ["RandomDeformation"]

DEFAULT_SCALE = (0.95, 1.05)
DEFAULT_VELOCITY_STD_MM = 4.0
DEFAULT_CONTROL_POINTS = 5


class RandomDeformation(SeededRandomTransform, SpatialTransform):
    r"""Warp a subject by a random smooth diffeomorphism and a random isotropic scale.

    The scale is drawn uniformly from ``scale``; each control-point velocity (mm, per axis) from
    :math:`N(0, \sigma^2)` with :math:`\sigma` = ``velocity_std_mm``. :class:`Deformation` applies them.

    Args:
        scale: range of the isotropic head-size factor.
        velocity_std_mm: standard deviation of the control-point velocities in mm (0 = scale only).
        control_points: control points per axis (>= 2); fewer points give smoother warps.
        integration_steps: squaring steps of the integration.
        seed: seed of the transform's own generator; ``None`` follows torch's global generator.
        **kwargs: see :class:`torchio.transforms.Transform`.
    """

    def __init__(
        self,
        scale: float | Sequence[float] = DEFAULT_SCALE,
        velocity_std_mm: float = DEFAULT_VELOCITY_STD_MM,
        control_points: int = DEFAULT_CONTROL_POINTS,
        integration_steps: int = INTEGRATION_STEPS,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.scale_range = parse_range(scale, "scale")
        if self.scale_range[0] <= 0:
            raise ConfigError(f"scale must be positive, got {scale!r}")
        self.velocity_std_mm = check_non_negative(velocity_std_mm, "velocity_std_mm")
        if not isinstance(control_points, int) or control_points < 2:
            raise ConfigError(f"control_points must be an int >= 2, got {control_points!r}")
        self.control_points = control_points
        if not isinstance(integration_steps, int) or integration_steps < 0:
            raise ConfigError(f"integration_steps must be a non-negative int, got {integration_steps!r}")
        self.integration_steps = integration_steps

    def get_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw the parameters of one deformation.

        Args:
            rng: the generator to draw from.

        Returns:
            Keyword arguments of :class:`Deformation`.
        """
        scale = float(rng.uniform(*self.scale_range))
        shape = (3, self.control_points, self.control_points, self.control_points)
        velocity = rng.normal(0.0, self.velocity_std_mm, shape) if self.velocity_std_mm > 0 else None
        return {"scale": scale, "velocity_mm": velocity, "integration_steps": self.integration_steps}

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        transform = Deformation(**self.get_params(self.next_generator()), **self._get_base_args())
        return transform(subject)
