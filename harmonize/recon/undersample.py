"""Cartesian k-space undersampling with MONAI's mask transforms, and the zero-filled reconstruction.

A Cartesian acquisition samples whole lines of k-space; skipping lines by an acceleration ``R`` shortens the
scan ``R``-fold and folds aliases into the zero-filled image. The centre lines (low frequencies, which hold the
contrast) are always sampled. :class:`UndersampleKspaced` draws the mask with
:class:`monai.apps.reconstruction.transforms.dictionary.EquispacedKspaceMaskd` or
:class:`~monai.apps.reconstruction.transforms.dictionary.RandomKspaceMaskd` (the fastMRI masks: Zbontar et al.
2018); :func:`apply_kspace_mask` applies a given mask (e.g. the one stored in a fastMRI test file).
:class:`UndersampleVolumed` does the same slice by slice to a fully sampled magnitude volume (what the
reconstruction bundle's ``inference.json`` reconstructs), and :class:`RestoreScaled` puts the reconstruction back
on the input's intensity scale.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.apps.reconstruction.transforms.dictionary import (
    EquispacedKspaceMaskd,
    RandomKspaceMaskd,
)
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import FastMRIKeys
from monai.utils.type_conversion import convert_to_dst_type
from torch import Tensor

from harmonize import defaults
from harmonize.errors import ConfigError, number_problem, option_problem, option_value, raise_problems
from harmonize.keys import Keys, MaskType
from harmonize.recon.kspace import SimulateKspaced

__all__ = [
    "RestoreScaled",
    "UndersampleKspaced",
    "UndersampleVolumed",
    "apply_kspace_mask",
    "check_undersampling",
    "undersampling_problems",
]

#: Spatial dimensions of a 2D slice.
SLICE_DIMS = 2


def undersampling_problems(
    acceleration: object, center_fraction: object, mask_type: object = MaskType.EQUISPACED
) -> list[str]:
    """What is wrong with an undersampling's settings, one line each (empty when valid).

    Args:
        acceleration: undersampling factor ``R`` (> 1).
        center_fraction: fraction of central lines always sampled, in (0, 1), with ``center_fraction x R < 1``.
        mask_type: ``equispaced`` or ``random`` (:class:`~harmonize.keys.MaskType`).
    """
    problems = []
    if problem := number_problem("acceleration", acceleration, minimum=1):
        problems.append(f"{problem}; e.g. 4 or 8")
    if problem := number_problem("center_fraction", center_fraction, maximum=1, strict_maximum=True):
        problems.append(f"{problem}; fastMRI uses 0.08 at R=4, 0.04 at R=8")
    if not problems and center_fraction * acceleration >= 1:  # type: ignore[operator]
        problems.append(
            f"'center_fraction' x 'acceleration' must be < 1 (the centre alone would exceed the 1/R budget), "
            f"got {center_fraction} x {acceleration}"
        )
    if problem := option_problem("mask_type", mask_type, MaskType):
        problems.append(problem)
    return problems


def check_undersampling(
    acceleration: float, center_fraction: float, mask_type: MaskType | str = MaskType.EQUISPACED
) -> None:
    """Check an undersampling's settings before any mask is drawn (:func:`undersampling_problems`).

    Raises:
        ConfigError: naming every bad value and what is allowed.
    """
    raise_problems("The k-space undersampling", undersampling_problems(acceleration, center_fraction, mask_type))


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
        check_undersampling(acceleration, center_fraction, mask_type)
        self.mask_type = option_value("mask_type", mask_type, MaskType)[0]  # checked by check_undersampling
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


class UndersampleVolumed(MapTransform):
    """Undersample every slice of a fully sampled magnitude volume as the training data were, and zero-fill.

    The volume under ``keys`` (``(1, H, W, slices)``, slices along the last axis) is scaled so that its maximum is 1
    (as :func:`~harmonize.recon.slices.volume_items` scales training volumes); each slice gets its k-space, a
    Cartesian mask along the columns (W: the phase-encoding lines, as in training) and its zero-filled magnitude.
    The zero-filled stack replaces the image (a MetaTensor keeps its metadata, so MONAI can invert the spatial
    transforms before this one), the scaled fully sampled stack goes to ``target_key`` and the scale to
    ``scale_key``. The masks come from ``seed`` alone: a volume gets the same masks whatever else is reconstructed.

    Args:
        keys: the magnitude volume's key (one key).
        mask_type: ``equispaced`` or ``random``.
        acceleration: undersampling factor ``R``.
        center_fraction: fraction of central lines always kept.
        seed: seed of the masks.
        target_key: where to write the scaled fully sampled stack (``None`` to skip).
        scale_key: where to write the scale (the volume's maximum) for :class:`RestoreScaled`.
        allow_missing_keys: don't raise if the key is missing.

    Raises:
        ConfigError: more than one key, an unknown mask type, or impossible undersampling settings.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.IMAGE,
        mask_type: MaskType | str = MaskType.EQUISPACED,
        acceleration: float = defaults.RECON_ACCELERATION,
        center_fraction: float = defaults.RECON_CENTER_FRACTION,
        seed: int = defaults.SEED,
        target_key: str | None = Keys.TARGET,
        scale_key: str = Keys.SCALE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ConfigError(f"UndersampleVolumed takes one image key, got keys={self.keys}.")
        check_undersampling(acceleration, center_fraction, mask_type)
        self.mask_type = option_value("mask_type", mask_type, MaskType)[0]  # checked by check_undersampling
        self.acceleration = float(acceleration)
        self.center_fraction = float(center_fraction)
        self.seed = int(seed)
        self.target_key = target_key
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, Tensor]) -> dict[Hashable, Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            volume = d[key]
            if volume.ndim != 4 or volume.shape[0] != 1:
                raise ValueError(f"UndersampleVolumed expects (1, H, W, slices), got shape {tuple(volume.shape)}.")
            full = torch.as_tensor(volume).detach().float()
            scale = full.max().clamp(min=1e-12)
            full = full / scale
            simulate = SimulateKspaced(keys=Keys.IMAGE, target_key=None)
            undersample = UndersampleKspaced(
                mask_type=self.mask_type, acceleration=self.acceleration, center_fraction=self.center_fraction
            ).set_random_state(seed=self.seed)
            slices = [
                undersample(simulate({Keys.IMAGE: full[..., s]}))[Keys.IMAGE] for s in range(full.shape[-1])
            ]
            zero_filled = torch.stack(slices, dim=-1).to(full)
            d[key] = convert_to_dst_type(zero_filled, volume, dtype=torch.float32)[0]
            if self.target_key is not None:
                d[self.target_key] = convert_to_dst_type(full, volume, dtype=torch.float32)[0]
            d[self.scale_key] = scale
        return d


class RestoreScaled(MapTransform):
    """Multiply an image by the scale :class:`UndersampleVolumed` divided its input by (back to input units).

    Args:
        keys: the image(s) to rescale, e.g. the prediction.
        scale_key: the key of the scale.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, scale_key: str = Keys.SCALE, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, Tensor]) -> dict[Hashable, Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key] * torch.as_tensor(d[self.scale_key]).to(d[key].device, torch.float32)
        return d
