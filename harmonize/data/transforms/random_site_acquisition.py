"""Draw a random scanner (site) acquisition, then render the image with :class:`SiteAcquisition`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torchio as tio
from torchio.transforms.intensity_transform import IntensityTransform

from harmonize.errors import integer_problem, raise_problems, range_problem
from harmonize.keys import Keys

from ._checks import as_range, is_number
from ._seeding import SeededRandomTransform, seed_problem
from .site_acquisition import SiteAcquisition, num_bias_coefficients

__all__ = ["RandomSiteAcquisition"]

#: Default ranges of a T1-weighted acquisition, on the 0..1 intensity scale (CSF, GM, WM).
DEFAULT_TISSUE_INTENSITIES: tuple[tuple[float, float], ...] = ((0.15, 0.35), (0.55, 0.72), (0.82, 0.95))
DEFAULT_GAMMA = (0.8, 1.25)
DEFAULT_BLUR_FWHM_MM = (0.0, 4.0)
DEFAULT_BIAS_COEFFICIENTS = 0.3
DEFAULT_NOISE_STD = (0.01, 0.05)
DEFAULT_INTENSITY_SCALE = (0.5, 2.0)
#: Exclusive upper bound of a drawn noise seed.
MAX_SEED = 2**31


class RandomSiteAcquisition(SeededRandomTransform, IntensityTransform):
    """Render an image from tissue maps with a randomly drawn scanner acquisition.

    Every parameter of :class:`SiteAcquisition` is drawn uniformly from its range (the blur independently per
    axis, so some acquisitions have thick slices; each bias coefficient from ``bias_coefficients`` as in
    TorchIO's ``RandomBiasField``), then :class:`SiteAcquisition` applies them, so a subject's history can
    replay the result exactly. A range is ``(low, high)`` or one number meaning exactly that value.

    Args:
        tissue_intensities: one ``(low, high)`` range per tissue channel.
        gamma: range of the contrast-curve exponent.
        blur_fwhm_mm: range of the point-spread FWHM (mm), drawn per axis.
        bias_coefficients: range of each bias coefficient; one number ``c`` means ``(-c, c)``.
        bias_order: degree of the bias polynomial.
        noise_std: range of the noise standard deviation (0..1 intensity scale).
        intensity_scale: range of the global intensity factor.
        rician: Rician (true) or Gaussian (false) noise.
        mask_background: set background voxels to 0.
        tissues_key: name of the tissue maps in the subject.
        image_key: name of the image to create.
        seed: seed of the transform's own generator; ``None`` follows torch's global generator.
        **kwargs: see :class:`torchio.transforms.Transform`.
    """

    def __init__(
        self,
        tissue_intensities: Sequence[float | Sequence[float]] = DEFAULT_TISSUE_INTENSITIES,
        gamma: float | Sequence[float] = DEFAULT_GAMMA,
        blur_fwhm_mm: float | Sequence[float] = DEFAULT_BLUR_FWHM_MM,
        bias_coefficients: float | Sequence[float] = DEFAULT_BIAS_COEFFICIENTS,
        bias_order: int = 3,
        noise_std: float | Sequence[float] = DEFAULT_NOISE_STD,
        intensity_scale: float | Sequence[float] = DEFAULT_INTENSITY_SCALE,
        rician: bool = True,
        mask_background: bool = True,
        tissues_key: str = Keys.TISSUES,
        image_key: str = Keys.IMAGE,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        if is_number(bias_coefficients):
            bias_coefficients = (-abs(float(bias_coefficients)), abs(float(bias_coefficients)))
        if isinstance(tissue_intensities, Sequence) and not isinstance(tissue_intensities, str) and tissue_intensities:
            problems = [range_problem(f"tissue_intensities[{i}]", r, minimum=0, scalar=True)
                        for i, r in enumerate(tissue_intensities)]
        else:
            problems = [f"'tissue_intensities' must be a sequence of (low, high) ranges, one per tissue channel, "
                        f"got {tissue_intensities!r} ({type(tissue_intensities).__name__})"]
        problems += [range_problem("gamma", gamma, minimum=0, strict=True, scalar=True),
                     range_problem("blur_fwhm_mm", blur_fwhm_mm, minimum=0, scalar=True),
                     range_problem("bias_coefficients", bias_coefficients, scalar=True),
                     integer_problem("bias_order", bias_order, minimum=0),
                     range_problem("noise_std", noise_std, minimum=0, scalar=True),
                     range_problem("intensity_scale", intensity_scale, minimum=0, strict=True, scalar=True),
                     seed_problem(seed)]
        raise_problems(type(self).__name__, problems)
        super().__init__(seed=seed, **kwargs)
        self.tissue_intensities_ranges = [as_range(r) for r in tissue_intensities]
        self.gamma_range = as_range(gamma)
        self.blur_fwhm_mm_range = as_range(blur_fwhm_mm)
        self.bias_coefficients_range = as_range(bias_coefficients)
        self.bias_order = int(bias_order)
        self.noise_std_range = as_range(noise_std)
        self.intensity_scale_range = as_range(intensity_scale)
        self.rician = bool(rician)
        self.mask_background = bool(mask_background)
        self.tissues_key = str(tissues_key)
        self.image_key = str(image_key)

    def get_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw the parameters of one acquisition.

        Args:
            rng: the generator to draw from.

        Returns:
            Keyword arguments of :class:`SiteAcquisition` (all but the keys and switches).
        """

        def uniform(bounds: tuple[float, float], size: int | None = None) -> Any:
            return rng.uniform(bounds[0], bounds[1], size)

        return {
            "tissue_intensities": [float(uniform(r)) for r in self.tissue_intensities_ranges],
            "gamma": float(uniform(self.gamma_range)),
            "blur_fwhm_mm": [float(v) for v in uniform(self.blur_fwhm_mm_range, 3)],
            "bias_coefficients": [
                float(v) for v in uniform(self.bias_coefficients_range, num_bias_coefficients(self.bias_order))
            ],
            "bias_order": self.bias_order,
            "noise_std": float(uniform(self.noise_std_range)),
            "noise_seed": int(rng.integers(MAX_SEED)),
            "intensity_scale": float(uniform(self.intensity_scale_range)),
        }

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        params = self.get_params(self.next_generator())
        transform = SiteAcquisition(
            **params,
            rician=self.rician,
            mask_background=self.mask_background,
            tissues_key=self.tissues_key,
            image_key=self.image_key,
            **self._get_base_args(),
        )
        return transform(subject)
