"""One site of the synthetic cohort: its age distribution and its scanner's acquisition."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harmonize.data.templates import TISSUE_NAMES

__all__ = ["REFERENCE_TISSUE_INTENSITIES", "SiteProfile"]

#: Reference T1 acquisition (0..1 scale; tissue means measured on the MNI T1 template).
REFERENCE_TISSUE_INTENSITIES = (0.27, 0.65, 0.87)


def _is_range(value: object) -> bool:
    """Whether ``value`` is a (low, high) pair of finite numbers."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )



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
        """Return what is wrong with this profile, one line each (empty when valid)."""
        found = []
        if not _is_range(self.age_range) or not 0 <= self.age_range[0] <= self.age_range[1]:
            found.append(
                f"site '{self.name}': age_range must be (low, high) with 0 <= low <= high, got {self.age_range}"
            )
        if len(self.tissue_intensities) != len(TISSUE_NAMES):
            found.append(f"site '{self.name}': tissue_intensities needs {len(TISSUE_NAMES)} values (CSF, GM, WM)")
        if any(axis not in (0, 1, 2) for axis in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            found.append(f"site '{self.name}': flip_axes must be distinct axes among 0, 1, 2, got {self.flip_axes}")
        return found
