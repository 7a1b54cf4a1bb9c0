"""The MRI forward model: a magnitude image to (multi-coil) k-space and back, with MONAI's centred FFTs.

k-space tensors use MONAI's layout ``(coils, H, W, 2)``: the last dimension holds the real and imaginary parts
(:mod:`monai.apps.reconstruction.complex_utils`). Images are channel-first ``(1, H, W)`` magnitudes. The FFTs are
orthonormal (``norm="ortho"``), so a fully sampled k-space gives back the image exactly (up to float error).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.apps.reconstruction.complex_utils import (
    complex_abs_t,
    complex_mul_t,
    convert_to_tensor_complex,
)
from monai.apps.reconstruction.mri_utils import root_sum_of_squares_t
from monai.config import KeysCollection
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t
from monai.transforms import MapTransform
from torch import Tensor

from harmonize.keys import Keys

__all__ = ["SimulateKspaced", "image_to_kspace", "kspace_to_image"]

#: Spatial dimensions of a 2D slice (the FFT runs over H and W).
SLICE_DIMS = 2


def _as_complex_image(image: Tensor | np.ndarray) -> Tensor:
    """Return ``image`` as a complex-stacked ``(1, H, W, 2)`` float tensor (a real image gets zero phase)."""
    x = torch.as_tensor(image) if not isinstance(image, Tensor) else image
    if torch.is_complex(x):
        x = convert_to_tensor_complex(x)
    else:
        x = torch.stack([x.float(), torch.zeros_like(x, dtype=torch.float32)], dim=-1)
    if x.ndim == 3:  # (H, W, 2) -> (1, H, W, 2)
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"expected a single 2D slice of shape (H, W) or (1, H, W), got image of shape {tuple(image.shape)}."
        )
    return x.float()


def image_to_kspace(image: Tensor | np.ndarray, coil_maps: Tensor | None = None) -> Tensor:
    """Fully sampled k-space of a 2D slice, optionally seen through coil sensitivities.

    Args:
        image: the slice, ``(H, W)`` or ``(1, H, W)``, real (magnitude) or complex.
        coil_maps: optional sensitivity maps ``(coils, H, W, 2)``
            (e.g. :func:`~harmonize.recon.coil_maps.simulate_coil_maps`). Without them the k-space has one coil.

    Returns:
        k-space ``(coils, H, W, 2)``, float32, DC at the centre.
    """
    x = _as_complex_image(image)
    if coil_maps is not None:
        if coil_maps.ndim != 4 or coil_maps.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"coil_maps must have shape (coils, H, W, 2) = (C, {x.shape[1]}, {x.shape[2]}, 2), "
                f"got {tuple(coil_maps.shape)}."
            )
        x = complex_mul_t(x, coil_maps.to(x))
    return fftn_centered_t(x, spatial_dims=SLICE_DIMS, is_complex=True)


def kspace_to_image(kspace: Tensor) -> Tensor:
    """Magnitude image of a k-space: inverse FFT, magnitude per coil, then root-sum-of-squares over coils.

    Args:
        kspace: ``(coils, H, W, 2)`` (or with leading batch dimensions).

    Returns:
        The magnitude image ``(..., 1, H, W)``.
    """
    coil_images = complex_abs_t(ifftn_centered_t(kspace, spatial_dims=SLICE_DIMS, is_complex=True))
    return root_sum_of_squares_t(coil_images, spatial_dim=-SLICE_DIMS - 1).unsqueeze(-SLICE_DIMS - 1)


class SimulateKspaced(MapTransform):
    """Add the fully sampled k-space of a magnitude slice to a sample (``Keys.KSPACE``).

    The magnitude slice under ``keys`` (``(1, H, W)``) is also copied to ``target_key``: it is the ground
    truth a reconstruction network must recover. With ``coil_maps`` the k-space has one channel per coil and the
    ground truth is still the magnitude, since the maps are normalised to unit root-sum-of-squares.

    Args:
        keys: key of the magnitude slice (one key).
        kspace_key: where to write the k-space.
        target_key: where to write the ground-truth magnitude (``None`` to skip).
        coil_maps: optional ``(coils, H, W, 2)`` sensitivity maps.
        allow_missing_keys: don't raise if the key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.IMAGE,
        kspace_key: str = Keys.KSPACE,
        target_key: str | None = Keys.TARGET,
        coil_maps: Tensor | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SimulateKspaced takes one image key, got keys={self.keys}.")
        self.kspace_key = kspace_key
        self.target_key = target_key
        self.coil_maps = coil_maps

    def __call__(self, data: Mapping[Hashable, Tensor]) -> dict[Hashable, Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]).float()
            d[self.kspace_key] = image_to_kspace(image, self.coil_maps)
            if self.target_key is not None:
                d[self.target_key] = image.reshape(1, *image.shape[-SLICE_DIMS:]).clone()
        return d
