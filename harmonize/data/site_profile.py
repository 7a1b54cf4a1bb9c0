"""One site of the synthetic cohort: its age distribution and its scanner's acquisition."""

from __future__ import annotations

from dataclasses import dataclass

from harmonize.data.templates import TISSUE_NAMES
from harmonize.errors import integer_problem, integers_problem, number_problem, numbers_problem, range_problem

__all__ = ["REFERENCE_TISSUE_INTENSITIES", "SiteProfile"]

#: Reference T1 acquisition (0..1 scale; tissue means measured on the MNI T1 template).
REFERENCE_TISSUE_INTENSITIES = (0.27, 0.65, 0.87)


@dataclass(frozen=True)
class SiteProfile:
    """One site: its age distribution and its scanner's acquisition (see :class:`~harmonize.data.transforms.site_acquisition.SiteAcquisition`).

    Attributes:
        name: site id (the manifest's ``site`` value).
        age_range: ages are drawn uniformly from ``(low, high)`` years.
        tissue_intensities: CSF, GM and WM intensities (0..1 scale).
        gamma: contrast-curve exponent.
        blur_fwhm_mm: point-spread FWHM per axis (mm).
        bias_coefficients: polynomial bias-field coefficients (20 for order 3).
        bias_order: bias polynomial degree.
        noise_std: Rician noise level (0..1 scale).
        intensity_scale: the scanner's intensity unit.
        flip_axes: array axes stored reversed (the affine says so; the anatomy in world space is unchanged).
    """

    name: str
    age_range: tuple[float, float]
    tissue_intensities: tuple[float, ...] = REFERENCE_TISSUE_INTENSITIES
    gamma: float = 1.0
    blur_fwhm_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bias_coefficients: tuple[float, ...] = ()
    bias_order: int = 3
    noise_std: float = 0.02
    intensity_scale: float = 1.0
    flip_axes: tuple[int, ...] = ()

    def problems(self) -> list[str]:
        """Return what is wrong with this profile, one line each, naming the site (empty when valid)."""
        found = [range_problem("age_range", self.age_range, minimum=0),
                 numbers_problem("tissue_intensities", self.tissue_intensities, length=len(TISSUE_NAMES), minimum=0),
                 number_problem("gamma", self.gamma),
                 numbers_problem("blur_fwhm_mm", self.blur_fwhm_mm, length=3, minimum=0),
                 numbers_problem("bias_coefficients", self.bias_coefficients),
                 integer_problem("bias_order", self.bias_order, minimum=0),
                 number_problem("noise_std", self.noise_std, strict=False),
                 number_problem("intensity_scale", self.intensity_scale),
                 integers_problem("flip_axes", self.flip_axes, maximum=2, distinct=True)]
        if found[1]:
            found[1] += f" ({', '.join(name.upper() for name in TISSUE_NAMES)})"
        return [f"site '{self.name}': {p}" for p in found if p]
