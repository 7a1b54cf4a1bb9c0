"""Settings of the preprocessing pipeline and the summary of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonize import defaults
from harmonize.errors import integers_problem, numbers_problem, option_value, raise_problems, range_problem
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
        ConfigError: every value out of range at once, naming each argument.
    """

    target_spacing: float | tuple[float, float, float] = defaults.TARGET_SPACING
    target_shape: tuple[int, int, int] = defaults.TARGET_SHAPE
    mask_method: str = MaskMethod.OTSU.value
    crop_to_mask: bool = True
    landmarks_cutoff: tuple[float, float] = defaults.LANDMARKS_CUTOFF
    zero_background: bool = True
    histogram_standardisation: bool = True

    def __post_init__(self) -> None:
        mask_method, mask_problem = option_value("mask_method", self.mask_method, MaskMethod)
        problems = [numbers_problem("target_spacing", self.target_spacing, length=3, minimum=0, strict=True,
                                    scalar=True),
                    integers_problem("target_shape", self.target_shape, length=3, minimum=1),
                    range_problem("landmarks_cutoff", self.landmarks_cutoff, minimum=0, maximum=1, strict_order=True),
                    mask_problem]
        raise_problems("PreprocessConfig", problems)
        spacing = self.target_spacing
        spacing = (spacing,) * 3 if isinstance(spacing, (int, float, np.number)) else tuple(spacing)
        object.__setattr__(self, "target_spacing", tuple(float(s) for s in spacing))
        object.__setattr__(self, "target_shape", tuple(int(s) for s in self.target_shape))
        object.__setattr__(self, "landmarks_cutoff", tuple(float(q) for q in self.landmarks_cutoff))
        object.__setattr__(self, "mask_method", mask_method)

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
