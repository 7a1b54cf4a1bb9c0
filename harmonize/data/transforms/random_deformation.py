"""Draw a random head size and smooth diffeomorphism, then apply them with :class:`Deformation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torchio as tio
from torchio.transforms.spatial_transform import SpatialTransform

from harmonize.errors import integer_problem, number_problem, raise_problems, range_problem

from ._checks import as_range
from ._seeding import SeededRandomTransform, seed_problem
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
        problems = [range_problem("scale", scale, minimum=0, strict=True, scalar=True),
                    number_problem("velocity_std_mm", velocity_std_mm, strict=False),
                    integer_problem("control_points", control_points, minimum=2),
                    integer_problem("integration_steps", integration_steps, minimum=0), seed_problem(seed)]
        raise_problems(type(self).__name__, problems)
        super().__init__(seed=seed, **kwargs)
        self.scale_range = as_range(scale)
        self.velocity_std_mm = float(velocity_std_mm)
        self.control_points = int(control_points)
        self.integration_steps = int(integration_steps)

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
