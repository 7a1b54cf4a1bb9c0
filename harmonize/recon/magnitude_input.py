"""Check a user's fully sampled magnitude image before the reconstruction bundle undersamples and reconstructs it.

The reconstruction network was trained on magnitude slices: non-negative, finite intensities from one 2D or 3D
image. :class:`CheckMagnitudeImaged` refuses what it cannot take (a 4D series, a 1D signal, an empty or all-zero
image, non-finite values, a range with large negative values such as a CT in Hounsfield units) with a
:class:`~harmonize.errors.HarmonizeError` that names the file, and gives a 2D image a slice axis so that every
input is a ``(1, H, W, slices)`` stack.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from harmonize.errors import HarmonizeError
from harmonize.keys import Keys

__all__ = ["NEGATIVE_TOLERANCE", "CheckMagnitudeImaged", "source_name"]

#: Negative values down to this fraction of the image's maximum are taken as interpolation ringing and clipped to
#: zero; anything lower is not a magnitude image.
NEGATIVE_TOLERANCE = 0.05
#: Spatial dimensions of the stack the bundle reconstructs (rows, columns, slices).
STACK_DIMS = 3


def source_name(image: Any) -> str:
    """The file an image was loaded from (its MetaTensor's ``filename_or_obj``), or ``"<in memory>"``."""
    meta = getattr(image, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "<in memory>")


class CheckMagnitudeImaged(MapTransform):
    """Refuse images a magnitude reconstruction network cannot take; make a 2D image a one-slice stack.

    Expects channel-first images as ``LoadImaged(..., ensure_channel_first=True)`` gives them: ``(1, X, Y, Z)`` for
    a 3D file, ``(1, X, Y)`` for a 2D file (returned as ``(1, X, Y, 1)``, metadata kept). Small negative values
    (at most :data:`NEGATIVE_TOLERANCE` of the maximum, e.g. from sinc interpolation) are clipped to zero.

    Args:
        keys: the image key(s).
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        HarmonizeError: naming the file and what is wrong: several channels or volumes (a 4D file), not 2D or 3D,
            no voxels, non-finite values, an all-zero image, or negative values below the tolerance.
    """

    def __init__(self, keys: KeysCollection = Keys.IMAGE, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d

    @staticmethod
    def check(image: torch.Tensor) -> torch.Tensor:
        """Check one channel-first image and return it as ``(1, H, W, slices)``."""
        name = source_name(image)
        shape = tuple(image.shape)
        if image.ndim < 1 or shape[0] != 1:
            raise HarmonizeError(
                f"{name}: expected one magnitude image, got {shape[0] if shape else 0} channels or volumes "
                f"(array shape {shape}). Split a 4D series or a multi-echo file into one 3D file per volume."
            )
        if image.ndim - 1 not in (2, STACK_DIMS):
            raise HarmonizeError(
                f"{name}: expected a 2D slice or a 3D volume, got {image.ndim - 1} spatial dimension(s) "
                f"(shape {shape[1:]})."
            )
        if image.numel() == 0:
            raise HarmonizeError(f"{name}: the image has no voxels (shape {shape[1:]}).")
        if not bool(torch.isfinite(image).all()):
            bad = int((~torch.isfinite(image)).sum())
            raise HarmonizeError(f"{name}: {bad} voxel(s) are NaN or infinite; a magnitude image has finite values.")
        top, bottom = float(image.max()), float(image.min())
        if bottom < -NEGATIVE_TOLERANCE * max(top, 0.0):
            raise HarmonizeError(
                f"{name}: values range from {bottom:g} to {top:g}, but a magnitude MR image is non-negative (values "
                f"below -{NEGATIVE_TOLERANCE:g} x the maximum are refused). Give the magnitude image, not a phase "
                "map, a CT (Hounsfield units) or an intensity-normalised (z-scored) scan."
            )
        if top <= 0:
            raise HarmonizeError(
                f"{name}: the image is empty (maximum {top:g}): there is nothing to reconstruct. Check that the file "
                "holds the scan and not a mask or a blank volume."
            )
        image = image.clamp(min=0.0) if bottom < 0 else image
        return image.unsqueeze(-1) if image.ndim == STACK_DIMS else image
