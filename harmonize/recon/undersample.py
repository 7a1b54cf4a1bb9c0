"""Cartesian k-space undersampling with MONAI's mask transforms, and the zero-filled reconstruction.

A Cartesian acquisition samples whole lines of k-space; skipping lines by an acceleration ``R`` shortens the
scan ``R``-fold and folds aliases into the zero-filled image. The centre lines (low frequencies, which hold the
contrast) are always sampled. :class:`UndersampleKspaced` draws the mask with
:class:`monai.apps.reconstruction.transforms.dictionary.EquispacedKspaceMaskd` or
:class:`~monai.apps.reconstruction.transforms.dictionary.RandomKspaceMaskd` (the fastMRI masks: Zbontar et al.
2018); :func:`apply_kspace_mask` applies a given mask (e.g. the one stored in a fastMRI test file).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.apps.reconstruction.transforms.dictionary import (
    EquispacedKspaceMaskd,
    RandomKspaceMaskd,
)
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import FastMRIKeys
from torch import Tensor

from harmonize import defaults
from harmonize.errors import ConfigError, check_option
from harmonize.keys import Keys, MaskType

__all__ = ["UndersampleKspaced", "apply_kspace_mask", "check_undersampling"]

#: Spatial dimensions of a 2D slice.
SLICE_DIMS = 2


def check_undersampling(acceleration: float, center_fraction: float) -> None:
    """Check an acceleration and centre fraction before any mask is drawn.

    Args:
        acceleration: undersampling factor ``R`` (> 1).
        center_fraction: fraction of central lines always sampled, in (0, 1).

    Raises:
        ConfigError: naming every bad value and the valid range.
    """
    problems = []
    if not acceleration > 1:
        problems.append(f"'acceleration' must be > 1 (e.g. 4 or 8), got {acceleration}.")
    if not 0 < center_fraction < 1:
        problems.append(
            f"'center_fraction' must be in (0, 1) (fastMRI uses 0.08 at R=4, 0.04 at R=8), got {center_fraction}."
        )
    if not problems and center_fraction * acceleration >= 1:
        problems.append(
            f"'center_fraction' x 'acceleration' must be < 1 (the centre alone would exceed the 1/R budget), "
            f"got {center_fraction} x {acceleration}."
        )
    if problems:
        raise ConfigError("Invalid k-space undersampling settings.", problems=problems)


def apply_kspace_mask(kspace: Tensor, line_mask: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Apply a given Cartesian line mask (one value per column of k-space) and zero-fill.

    Args:
        kspace: ``(coils, H, W, 2)``.
        line_mask: ``W`` zeros and ones (any shape with ``W`` elements).

    Returns:
        ``(masked_kspace, mask)``, the mask shaped ``(1, 1, W, 1)`` like MONAI's mask transforms.
    """
    mask = torch.as_tensor(np.asarray(line_mask, dtype=np.float32)).reshape(1, 1, -1, 1).to(kspace)
    if mask.shape[2] != kspace.shape[-2]:
        raise ValueError(f"line_mask has {mask.shape[2]} entries but k-space has {kspace.shape[-2]} columns.")
    return kspace * mask, mask


class UndersampleKspaced(RandomizableTransform, MapTransform):
    """Undersample k-space with a Cartesian mask and add the zero-filled magnitude image.

    Reads ``(coils, H, W, 2)`` k-space under ``keys`` and writes the masked k-space (``masked_key``), the
    mask ``(1, 1, W, 1)`` (``mask_key``) and the zero-filled root-sum-of-squares magnitude ``(1, H, W)``
    (``image_key``, the network input). Columns (the last spatial axis) are the phase-encoding lines.

    Args:
        keys: key of the fully sampled k-space (one key).
        mask_type: ``equispaced`` (fastMRI brain/knee test masks) or ``random``.
        acceleration: undersampling factor ``R``: about ``W / R`` lines are kept.
        center_fraction: fraction of central lines always kept (fully sampled centre).
        masked_key: where to write the masked k-space.
        mask_key: where to write the mask (kept apart from ``Keys.MASK``, the brain mask).
        image_key: where to write the zero-filled magnitude.
        allow_missing_keys: don't raise if the key is missing.

    Raises:
        ConfigError: for an unknown mask type or an impossible acceleration / centre fraction.
    """

    def __init__(
        self,
        keys: str = Keys.KSPACE,
        mask_type: MaskType | str = MaskType.EQUISPACED,
        acceleration: float = defaults.RECON_ACCELERATION,
        center_fraction: float = defaults.RECON_CENTER_FRACTION,
        masked_key: str = Keys.MASKED_KSPACE,
        mask_key: str = Keys.SAMPLING_MASK,
        image_key: str = Keys.IMAGE,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if len(self.keys) != 1:
            raise ConfigError(f"UndersampleKspaced takes one k-space key, got keys={self.keys}.")
        self.mask_type = check_option("mask_type", mask_type, MaskType)
        check_undersampling(acceleration, center_fraction)
        self.acceleration = float(acceleration)
        self.center_fraction = float(center_fraction)
        self.masked_key = masked_key
        self.mask_key = mask_key
        self.image_key = image_key
        mask_cls = EquispacedKspaceMaskd if self.mask_type == MaskType.EQUISPACED else RandomKspaceMaskd
        self._masker = mask_cls(
            keys=self.keys,
            center_fractions=[self.center_fraction],
            accelerations=[self.acceleration],
            spatial_dims=SLICE_DIMS,
            is_complex=True,
        )

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> UndersampleKspaced:
        """Seed this transform and MONAI's mask generator inside it."""
        super().set_random_state(seed, state)
        self._masker.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Tensor]) -> dict[Hashable, Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            # a fresh dict: MONAI writes the mask under "mask", which is Keys.MASK (the brain mask) here
            out = self._masker({key: d[key]})
            d[self.masked_key] = out[f"{key}_masked"]
            d[self.mask_key] = out[FastMRIKeys.MASK]
            d[self.image_key] = out[f"{key}_masked_ifft"].unsqueeze(0).float()  # (H, W) -> (1, H, W)
        return d
