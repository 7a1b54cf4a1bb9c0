"""Settings of the preprocessing pipeline and the summary of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonize import defaults
from harmonize.errors import ConfigError, check_option
from harmonize.keys import MaskMethod

__all__ = ["PreprocessConfig", "PreprocessResult"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing pipeline (every one of them is part of the cache key).

    Args:
        target_spacing: voxel size after resampling, in mm: one number (isotropic) or three.
        target_shape: shape after crop/pad, in voxels (three positive integers).
        mask_method: how the foreground mask is found (:class:`~harmonize.keys.MaskMethod`).
        crop_to_mask: centre the crop/pad on the mask's bounding box instead of the volume's centre.
        landmarks_cutoff: the quantiles (pc1, pc2) of the foreground intensities that histogram
            standardisation maps; TorchIO's default is (0.01, 0.99).
        zero_background: set voxels outside the mask to 0 (the foreground mean) after normalisation.
        histogram_standardisation: map each site's intensity landmarks to a common scale before the
            z-normalisation (step 5). Turn it off for z-normalisation alone, the usual deep-learning
            preprocessing, which leaves more of the scanner's contrast in the images.

    Raises:
        ConfigError: a value out of range, naming the argument.
    """

    target_spacing: float | tuple[float, float, float] = defaults.TARGET_SPACING
    target_shape: tuple[int, int, int] = defaults.TARGET_SHAPE
    mask_method: str = MaskMethod.OTSU.value
    crop_to_mask: bool = True
    landmarks_cutoff: tuple[float, float] = defaults.LANDMARKS_CUTOFF
    zero_background: bool = True
    histogram_standardisation: bool = True

    def __post_init__(self) -> None:
        problems = []
        spacing = self.target_spacing
        spacing_t = (spacing,) * 3 if isinstance(spacing, (int, float)) else tuple(spacing)
        if len(spacing_t) != 3 or not all(isinstance(s, (int, float)) and np.isfinite(s) and s > 0 for s in spacing_t):
            problems.append(f"target_spacing must be one positive number or three, not {spacing!r}")
        shape_t = tuple(self.target_shape)
        if len(shape_t) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape_t):
            problems.append(f"target_shape must be three positive integers, not {self.target_shape!r}")
        low_high = tuple(self.landmarks_cutoff)
        if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 1:
            problems.append(
                f"landmarks_cutoff must be two quantiles 0 <= low < high <= 1, not {self.landmarks_cutoff!r}")
        if problems:
            raise ConfigError("Invalid preprocessing settings.", problems=problems)
        object.__setattr__(self, "target_spacing", tuple(float(s) for s in spacing_t))
        object.__setattr__(self, "target_shape", tuple(int(s) for s in shape_t))
        object.__setattr__(self, "landmarks_cutoff", tuple(float(q) for q in low_high))
        object.__setattr__(self, "mask_method", check_option("mask_method", self.mask_method, MaskMethod))

    def spatial_settings(self) -> dict[str, Any]:
        """The settings that steps 1-4 (reorient, resample, mask, crop/pad) depend on."""
        return {
            "target_spacing": list(self.target_spacing),
            "target_shape": list(self.target_shape),
            "mask_method": self.mask_method,
            "crop_to_mask": self.crop_to_mask,
        }

    def intensity_settings(self) -> dict[str, Any]:
        """The settings that step 5 (histogram standardisation, z-normalisation) depends on."""
        return {"landmarks_cutoff": list(self.landmarks_cutoff), "zero_background": self.zero_background,
                "histogram_standardisation": self.histogram_standardisation}


@dataclass(frozen=True)
class PreprocessResult:
    """What :func:`~harmonize.data.preprocess.preprocess_manifest` (or one of its steps) did.

    Attributes:
        manifest: the new manifest (``out_dir/manifest.csv``; a shard's own part for a shard; ``None`` after the
            fit step, which writes no manifest).
        processed: scans whose output was (re)computed.
        cached: scans whose outputs were reused from an earlier run.
        landmarks: ``{site: landmarks .npy}``; a site without training scans maps to the pooled landmarks.
        pooled_sites: sites without training scans, standardised with the pooled landmarks.
        seconds: wall time of the run.
        step: which step ran: ``""`` (a whole run), ``"fit"``, ``"shard K/N"`` or ``"merge"``.
    """

    manifest: Path | None
    processed: int
    cached: int
    landmarks: dict[str, Path] = field(default_factory=dict)
    pooled_sites: tuple[str, ...] = ()
    seconds: float = 0.0
    step: str = ""

    def format(self) -> str:
        """One line per fact, for the command line."""
        scans = self.processed + self.cached
        if self.manifest is None:
            first = f"{self.step}: landmarks fitted; the shards may run now"
        else:
            first = f"{self.step + ' ' if self.step else ''}preprocessed manifest: {self.manifest}"
        lines = [
            first,
            f"scans: {scans} (processed {self.processed}, cached {self.cached}) in {self.seconds:.1f} s",
            f"landmarks: {len(self.landmarks) - len(self.pooled_sites)} site(s) from their training scans",
        ]
        if self.pooled_sites:
            lines.append(f"sites without training scans (pooled landmarks): {', '.join(self.pooled_sites)}")
        return "\n".join(lines)
