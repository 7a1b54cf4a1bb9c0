"""The MNI ICBM152 2009 templates shipped inside nilearn, resampled to a small cubic grid.

nilearn carries the symmetric ICBM152 2009a T1 and its grey- and white-matter probability maps
(``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``, 197x233x189 voxels of 1 mm) inside its package,
so they are read from disk and nothing is downloaded. There is no CSF map: the CSF probability is derived as the
(slightly smoothed) brain envelope of the skull-stripped T1 minus grey and white matter (Fonov et al. 2011,
"Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54).

The templates are resampled, with an anti-aliasing Gaussian, to a cube of ``shape`` voxels covering a field of
view of ``fov_mm`` millimetres centred on the brain, in MNI world coordinates (RAS).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import nibabel as nib
import numpy as np
from scipy import ndimage

from harmonize.errors import ConfigError, HarmonizeError, integer_problem, number_problem

__all__ = [
    "TEMPLATE_FOV_MM",
    "TISSUE_NAMES",
    "Templates",
    "derive_csf",
    "find_template_files",
    "load_templates",
]

logger = logging.getLogger(__name__)

#: Tissue channels of a partial-volume tissue map, in order; the label of channel ``i`` is ``i + 1``
#: (0 is background), so labels are 0 background, 1 CSF, 2 GM, 3 WM.
TISSUE_NAMES: tuple[str, ...] = ("csf", "gm", "wm")
#: Side (mm) of the cubic field of view the templates are resampled into (the brain spans 145x181x155 mm).
TEMPLATE_FOV_MM = 200.0
#: File names of the templates inside ``nilearn/datasets/data``.
TEMPLATE_FILES: Mapping[str, str] = MappingProxyType({
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
})
#: Smoothing (mm) of the binary brain envelope, so that CSF has soft partial-volume edges.
ENVELOPE_SMOOTHING_MM = 1.0
#: Margin (mm) added around the template's brain mask: the subarachnoid CSF between brain and skull, which the
#: skull-stripped template leaves out, so that young brains have a realistic share of CSF.
ENVELOPE_MARGIN_MM = 2.0
#: Smallest cubic shape accepted (the deformation and atrophy models need a few voxels per structure).
MIN_SHAPE = 8
#: Gaussian sigma, in output voxels, of the anti-aliasing filter applied before downsampling
#: (0.42 voxel is a full width at half maximum of about one output voxel).
ANTIALIAS_SIGMA_VOXELS = 0.42
_UINT8_MAX = 255.0


@dataclass(frozen=True)
class Templates:
    """MNI templates on a cubic grid; every array is read-only, shape ``(S, S, S)``, float32.

    Attributes:
        t1: T1-weighted template scaled to [0, 1] (skull-stripped).
        csf: CSF probability (derived, see :func:`derive_csf`).
        gm: grey-matter probability.
        wm: white-matter probability.
        affine: voxel-to-world (MNI, RAS, mm) matrix, 4x4 float64.
    """

    t1: np.ndarray
    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape of every map."""
        return tuple(int(n) for n in self.t1.shape)  # type: ignore[return-value]

    @property
    def voxel_size(self) -> float:
        """Isotropic voxel size in mm."""
        return float(np.linalg.norm(self.affine[:3, 0]))

    def tissues(self) -> np.ndarray:
        """Return a new ``(3, S, S, S)`` float32 array of the CSF, GM and WM probabilities (see ``TISSUE_NAMES``)."""
        return np.stack([self.csf, self.gm, self.wm]).astype(np.float32)


def find_template_files() -> dict[str, Path]:
    """Locate the ICBM152 templates inside the installed nilearn package (no network).

    Returns:
        A mapping ``{"t1": path, "gm": path, "wm": path}``.

    Raises:
        HarmonizeError: if nilearn is not installed or lacks any of the files.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise HarmonizeError(
            "The MNI templates come from the nilearn package, which is not installed: run `pip install nilearn`."
        )
    data_dir = Path(spec.origin).parent / "datasets" / "data"
    paths = {key: data_dir / name for key, name in TEMPLATE_FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise HarmonizeError(
            f"The installed nilearn ({data_dir}) lacks the MNI ICBM152 2009 templates; reinstall nilearn "
            "(`pip install --force-reinstall nilearn`), which ships them inside its package.",
            problems=[f"missing {path}" for path in missing],
        )
    return paths


def derive_csf(
    gm: np.ndarray,
    wm: np.ndarray,
    brain_mask: np.ndarray,
    smoothing_voxels: float = ENVELOPE_SMOOTHING_MM,
    margin_voxels: int = 0,
) -> np.ndarray:
    """Derive a CSF probability map as the brain envelope minus grey and white matter.

    The envelope is the brain mask with its holes filled, grown by ``margin_voxels`` and smoothed.

    Args:
        gm: grey-matter probability in [0, 1].
        wm: white-matter probability in [0, 1].
        brain_mask: boolean brain mask including the CSF around and inside the brain.
        smoothing_voxels: Gaussian sigma (voxels) that softens the envelope's edge.
        margin_voxels: dilation of the mask (voxels, a 6-connected step each).

    Returns:
        CSF probability, float32, clipped to [0, 1], with ``csf + gm + wm <= 1`` (up to rounding).
    """
    filled = ndimage.binary_fill_holes(brain_mask)
    if margin_voxels > 0:
        filled = ndimage.binary_dilation(filled, iterations=int(margin_voxels))
    envelope = ndimage.gaussian_filter(filled.astype(np.float32), smoothing_voxels) if smoothing_voxels > 0 else (
        filled.astype(np.float32)
    )
    parenchyma = np.clip(gm + wm, 0.0, 1.0)
    envelope = np.maximum(envelope, parenchyma)
    return np.clip(envelope - parenchyma, 0.0, 1.0).astype(np.float32)


def load_templates(shape: int = 64, fov_mm: float = TEMPLATE_FOV_MM) -> Templates:
    """Load the MNI templates resampled to a cube of ``shape`` voxels of ``fov_mm / shape`` mm.

    The result is cached per ``(shape, fov_mm)`` for the life of the process; its arrays are read-only (copy
    them before changing them).

    Args:
        shape: voxels along each axis (at least 8).
        fov_mm: side of the cubic field of view in mm, centred on the brain.

    Returns:
        The :class:`Templates`.

    Raises:
        ConfigError: if ``shape`` or ``fov_mm`` is out of range.
        HarmonizeError: if nilearn lacks the template files.
    """
    problems = [integer_problem("shape", shape, minimum=MIN_SHAPE), number_problem("fov_mm", fov_mm)]
    if problems := [p for p in problems if p]:
        raise ConfigError("load_templates: invalid arguments (shape: voxels per axis, fov_mm: millimetres).",
                          problems=problems)
    return _load_templates_cached(int(shape), float(fov_mm))


@functools.lru_cache(maxsize=8)
def _load_templates_cached(shape: int, fov_mm: float) -> Templates:
    paths = find_template_files()
    images = {}
    for key, path in paths.items():
        try:
            image = nib.load(path)
            images[key] = (np.asarray(image.dataobj, dtype=np.float32) / _UINT8_MAX, image.affine)
        except (OSError, nib.filebasedimages.ImageFileError) as err:
            raise HarmonizeError(f"Cannot read the MNI template {path}: {err}. Reinstall nilearn.") from err
    t1, affine = images["t1"]
    gm, wm = images["gm"][0], images["wm"][0]
    brain_mask = t1 > 0
    csf = derive_csf(
        gm,
        wm,
        brain_mask,
        smoothing_voxels=ENVELOPE_SMOOTHING_MM / _voxel_size(affine),
        margin_voxels=int(round(ENVELOPE_MARGIN_MM / _voxel_size(affine))),
    )

    out_voxel = fov_mm / shape
    corners = np.argwhere(brain_mask)
    centre_world = nib.affines.apply_affine(affine, (corners.min(0) + corners.max(0)) / 2.0)
    out_affine = np.diag([out_voxel, out_voxel, out_voxel, 1.0])
    out_affine[:3, 3] = centre_world - out_voxel * (shape - 1) / 2.0
    # Output voxel centres in the input's voxel coordinates.
    to_input = np.linalg.inv(affine) @ out_affine
    grid = np.indices((shape,) * 3, dtype=np.float32).reshape(3, -1)
    coords = to_input[:3, :3].astype(np.float32) @ grid + to_input[:3, 3:4].astype(np.float32)
    coords = coords.reshape(3, shape, shape, shape)
    sigma = ANTIALIAS_SIGMA_VOXELS * out_voxel / _voxel_size(affine)

    def resample(volume: np.ndarray) -> np.ndarray:
        smoothed = ndimage.gaussian_filter(volume, sigma) if out_voxel > _voxel_size(affine) else volume
        out = ndimage.map_coordinates(smoothed, coords, order=1, mode="constant", cval=0.0)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        out.flags.writeable = False
        return out

    maps = {"t1": resample(t1), "csf": resample(csf), "gm": resample(gm), "wm": resample(wm)}
    total = maps["csf"] + maps["gm"] + maps["wm"]
    if float(total.max()) > 1.0:  # interpolation can push the sum a hair above 1
        scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
        for key in ("csf", "gm", "wm"):
            fixed = maps[key] * scale
            fixed.flags.writeable = False
            maps[key] = fixed
    out_affine.flags.writeable = False
    logger.debug("Loaded MNI templates at %d^3, %.3f mm voxels", shape, out_voxel)
    return Templates(affine=out_affine, **maps)


def _voxel_size(affine: np.ndarray) -> float:
    return float(np.linalg.norm(affine[:3, 0]))
