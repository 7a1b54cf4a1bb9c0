"""Regional measures of scans, the classic inputs of ComBat: tissue volumes and mean tissue intensities."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from harmonize.audit.combat_inputs import _listed
from harmonize.errors import ConfigError, HarmonizeError, number_problem, raise_problems

__all__ = ["MM3_PER_ML", "TISSUE_LABELS", "regional_intensities", "tissue_volumes"]

logger = logging.getLogger(__name__)

#: Tissue labels of a label map and their names (the convention of :mod:`harmonize.data.templates`:
#: 0 background, 1 CSF, 2 GM, 3 WM); the columns of :func:`tissue_volumes` follow this order.
TISSUE_LABELS: dict[str, int] = {"csf": 1, "gm": 2, "wm": 3}
#: Cubic millimetres in a millilitre.
MM3_PER_ML = 1000.0


def _load(item: Any, what: str) -> tuple[np.ndarray, float | None]:
    """An image or label map as a numpy array, with its voxel volume (mm^3) when it carries an affine."""
    affine = None
    if isinstance(item, (str, os.PathLike)):
        import nibabel as nib

        path = Path(item)
        if not path.is_file():
            raise HarmonizeError(f"{what}: file {str(path)!r} does not exist.")
        try:
            item = nib.load(str(path))
        except (OSError, ValueError) as err:
            raise HarmonizeError(f"{what}: cannot read {str(path)!r} as an image ({err}).") from err
    if hasattr(item, "dataobj") and hasattr(item, "affine"):  # a nibabel image
        array, affine = np.asarray(item.dataobj), np.asarray(item.affine, dtype=float)
    elif hasattr(item, "detach"):  # a torch tensor, or a MONAI MetaTensor with an affine
        meta_affine = getattr(item, "affine", None)
        if meta_affine is not None:
            affine = np.asarray(meta_affine.detach().cpu() if hasattr(meta_affine, "detach") else meta_affine, float)
        array = item.detach().cpu().numpy()
    else:
        array = np.asarray(item)
    # one channel, channel-first (MONAI) or channel-last (NIfTI 4-D)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ConfigError(f"{what}: expected a 2-D or 3-D volume (one channel), got shape {array.shape}.")
    voxel = None if affine is None else float(abs(np.linalg.det(affine[:3, :3])))
    return array, voxel


def _labels(array: np.ndarray, what: str) -> np.ndarray:
    values = np.unique(array)
    allowed = {0, *TISSUE_LABELS.values()}
    stray = [v.item() for v in values if not (float(v).is_integer() and int(v) in allowed)]
    if stray:
        raise ConfigError(
            f"{what}: label values {_listed(stray)} are not tissue labels; expected 0 background, 1 CSF, 2 GM, 3 WM."
        )
    return array.astype(np.int64)


def tissue_volumes(label_maps: Any, voxel_volume_mm3: float | None = None) -> np.ndarray:
    """CSF, GM and WM volumes (mL) of label maps (0 background, 1 CSF, 2 GM, 3 WM).

    Args:
        label_maps: a sequence of label maps, each a NIfTI path, a nibabel image, a (Meta)Tensor or an array
            (a single one of these is treated as one map). One leading or trailing channel of size 1 is allowed.
        voxel_volume_mm3: voxel volume for maps that carry no affine (plain arrays and tensors); maps with an
            affine use ``|det(affine[:3, :3])|``.

    Returns:
        ``(n_maps, 3)`` volumes in mL, columns in the order of :data:`TISSUE_LABELS` (CSF, GM, WM).

    Raises:
        ConfigError: a map without an affine and no ``voxel_volume_mm3``, or values that are not tissue labels.
        HarmonizeError: a path that does not exist or cannot be read.
    """
    single = isinstance(label_maps, (str, os.PathLike, np.ndarray))
    if single or hasattr(label_maps, "dataobj") or hasattr(label_maps, "detach"):
        label_maps = [label_maps]
    raise_problems("tissue_volumes", [number_problem("voxel_volume_mm3", voxel_volume_mm3, optional=True)])
    rows = []
    for i, item in enumerate(label_maps):
        what = f"tissue_volumes (map {i}{': ' + str(item) if isinstance(item, (str, os.PathLike)) else ''})"
        array, voxel = _load(item, what)
        voxel = voxel if voxel is not None else voxel_volume_mm3
        if voxel is None:
            raise ConfigError(f"{what}: the map carries no affine; give voxel_volume_mm3 (e.g. 8.0 for 2 mm voxels).")
        labels = _labels(array, what)
        counts = np.bincount(labels.reshape(-1), minlength=max(TISSUE_LABELS.values()) + 1)
        rows.append([counts[label] * voxel / MM3_PER_ML for label in TISSUE_LABELS.values()])
    if not rows:
        raise ConfigError("tissue_volumes: no label maps given.")
    return np.asarray(rows, dtype=float)


def regional_intensities(image: Any, label: Any) -> np.ndarray:
    """Mean image intensity within each tissue (CSF, GM, WM) of a label map.

    Args:
        image: a NIfTI path, nibabel image, (Meta)Tensor or array.
        label: its label map (0 background, 1 CSF, 2 GM, 3 WM) on the same grid.

    Returns:
        ``(3,)`` mean intensities in the order of :data:`TISSUE_LABELS`; NaN for a tissue absent from the map.

    Raises:
        ConfigError: image and label shapes differ, or values that are not tissue labels.
    """
    values, _ = _load(image, "regional_intensities (image)")
    labels, _ = _load(label, "regional_intensities (label)")
    if values.shape != labels.shape:
        raise ConfigError(
            f"regional_intensities: image shape {values.shape} differs from label shape {labels.shape}; resample "
            "the label map onto the image grid (nearest neighbour) first."
        )
    labels = _labels(labels, "regional_intensities (label)")
    values = values.astype(float)
    out = np.full(len(TISSUE_LABELS), np.nan)
    for i, (name, code) in enumerate(TISSUE_LABELS.items()):
        inside = labels == code
        if inside.any():
            out[i] = float(values[inside].mean())
        else:
            logger.warning("regional_intensities: no %s voxels (label %d); its mean intensity is NaN.", name, code)
    return out
