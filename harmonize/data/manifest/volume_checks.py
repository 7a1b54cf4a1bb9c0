"""Checks of the image and label files a manifest row names: the NIfTI header alone, then the voxels once.

A header that cannot be read, an image that is not 3D, missing or degenerate geometry, a header that claims
more voxels than the file holds, non-finite voxels, a label off its image's grid or outside the tissue classes:
each is a message naming the file, never a crash.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from harmonize.data.manifest.problem import ManifestProblem
from harmonize.keys import Keys

__all__ = [
    "AFFINE_ATOL",
    "GEOMETRY_FIX",
    "MAX_DEFLATE_RATIO",
    "MAX_EXAMPLES",
    "MIN_VOXEL_VOLUME",
    "TISSUE_CLASSES",
    "Volume",
    "check_row",
    "header_problems",
    "load_volume",
]

logger = logging.getLogger(__name__)

#: Largest difference (mm) between an image's and its label's affine entries that still counts as equal.
AFFINE_ATOL = 1e-3
#: How many example values a message quotes at most.
MAX_EXAMPLES = 3
#: Classes a label map may hold: 0 background, 1 CSF, 2 grey matter, 3 white matter
#: (:data:`harmonize.data.templates.TISSUE_NAMES` plus the background).
TISSUE_CLASSES = 4
#: Largest expansion of deflate (zlib's documented limit is about 1032:1): bounds a .gz file's content.
MAX_DEFLATE_RATIO = 1032
#: Smallest absolute determinant of an affine's 3x3 part (mm^3 per voxel) that counts as non-singular.
MIN_VOXEL_VOLUME = 1e-6
#: The fix given for a scan without usable geometry.
GEOMETRY_FIX = ("fix the header (e.g. re-export it from DICOM with dcm2niix, or set the voxel size and "
                "orientation with fslorient / nibabel's set_sform)")


@dataclass
class Volume:
    """A loaded image's voxel grid: its 3D shape and its affine."""

    shape: tuple[int, ...]
    affine: np.ndarray


def stored_data_bytes(path: str, offset: int) -> tuple[int, bool]:
    """Bytes of voxel data a NIfTI file can hold after ``offset``, and whether that is exact.

    A plain file holds exactly its size less the offset. A compressed file is not decompressed: deflate expands
    at most :data:`MAX_DEFLATE_RATIO` times, which bounds it (a gzip trailer's size field is not used: files
    of several gzip members, such as BGZF, carry the size of their last member only).
    """
    size = os.path.getsize(path)
    if path.endswith(".gz"):
        return MAX_DEFLATE_RATIO * size, False
    return size - offset, True


def raw_header(path: str, loaded: Any) -> Any:
    """The header as stored: nibabel's loader silently sets a pixdim of 0 to 1 mm, which would hide the problem."""
    from nibabel.openers import ImageOpener
    from nibabel.spatialimages import HeaderDataError

    try:
        with ImageOpener(path) as handle:
            return type(loaded).from_fileobj(handle, check=False)
    except (OSError, EOFError, ValueError, TypeError, AttributeError, zlib.error, HeaderDataError) as err:
        logger.debug("reading the raw header of %s failed (%s); using nibabel's", path, err)
        return loaded


def header_problems(path: str, is_label: bool = False) -> list[str]:
    """Problems found in a NIfTI file's header alone, without reading its voxels.

    A header that cannot be read, an image that is not 3D, missing or degenerate geometry (both orientation
    codes 0, a zero or non-finite voxel size, a singular or non-finite affine), and a header that claims more
    voxels than the file holds (checked before any read, so that it is a message, not a memory error).

    Args:
        path: the image or label file (it exists).
        is_label: the file is a label map (the orientation codes may then be 0: it follows its image).

    Returns:
        One message per problem, without the file's name (the caller names it).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        img = nib.load(path)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [f"cannot be read as a NIfTI image (truncated or corrupt file?): {reason}"]
    header = raw_header(path, img.header)
    shape = tuple(int(d) for d in img.shape)
    problems = []
    extra = shape[3:]
    if len(shape) < 3:
        problems.append(f"is {len(shape)}D (shape {shape}); harmonize needs 3D volumes: point this row at "
                        "the 3D NIfTI scan, not a slice or a 2D derivative")
    elif any(d != 1 for d in extra):
        problems.append(f"is {len(shape)}D with {int(np.prod(extra))} volumes (shape {shape}); give one 3D "
                        "volume per row (split the series, e.g. with fslsplit, and list each as its own row)")
    elif 1 in shape[:3]:
        problems.append(f"is a single slice (shape {shape}), not a 3D volume")
    zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    codes = (int(header["qform_code"]), int(header["sform_code"])) if "qform_code" in header else (1, 1)
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms[: len(shape)] <= 0):
        problems.append(f"has voxel size {tuple(float(z) for z in zooms)} (pixdim): a size of 0 or less has no "
                        f"geometry, and harmonize would not know the scan's spacing; {GEOMETRY_FIX}")
    elif not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < MIN_VOXEL_VOLUME:
        problems.append("has a singular or non-finite affine (voxel-to-world matrix "
                        f"{np.round(affine[:3, :3], 3).tolist()}): it gives no voxel size or orientation; "
                        f"{GEOMETRY_FIX}")
    elif codes == (0, 0) and not is_label:
        problems.append(f"has no orientation (qform_code and sform_code are both 0): left and right, and the "
                        f"voxel-to-world mapping, are unknown; {GEOMETRY_FIX}")
    if len(shape) >= 3:
        try:
            itemsize = np.dtype(header.get_data_dtype()).itemsize
            offset = int(header.get_data_offset()) if hasattr(header, "get_data_offset") else 0
            if offset == 0 and getattr(header, "single_magic", None) == header.get("magic", None):
                offset = int(header.sizeof_hdr) + 4  # a single-file NIfTI: header and 4 extension bytes
            stored = stored_data_bytes(path, offset)
        except (OSError, TypeError, ValueError):
            stored = None
        claimed = int(np.prod(shape, dtype=np.int64)) * itemsize
        if stored is not None and stored[0] < claimed:
            holds = (f"the file holds {max(stored[0], 0)} bytes of data" if stored[1] else
                     f"the compressed file ({os.path.getsize(path)} bytes) can hold at most {stored[0]} bytes")
            problems.append("cannot be read as a NIfTI image (truncated or corrupt file?): its header claims "
                            f"{int(np.prod(shape, dtype=np.int64))} voxels (shape {shape}, {claimed} bytes) but "
                            f"{holds}; copy or convert it again")
    return problems


def load_volume(path: str, is_label: bool) -> tuple[Volume | None, list[str]]:
    """Check one image's header, then load it (one data read); return its grid and the problems found."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    if not os.path.exists(path):
        return None, ["does not exist (relative paths in a manifest start from the manifest's folder)"]
    problems = header_problems(path, is_label)
    if problems:
        return None, problems
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, [f"cannot be read as a NIfTI image (truncated or corrupt file?): {reason}"]
    except MemoryError:
        return None, [f"its voxels (shape {img.shape}) do not fit in memory; check the header's dimensions"]
    shape = tuple(int(d) for d in data.shape)
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
        n_nan = int(np.isnan(data).sum())
        n_inf = int(np.isinf(data).sum())
        if n_nan or n_inf:
            problems.append(f"has {n_nan} NaN and {n_inf} infinite voxel(s) of {data.size}; replace them "
                            "(e.g. with 0) before training")
        elif is_label and not np.array_equal(data, np.round(data)):
            sample = data[data != np.round(data)].ravel()[:MAX_EXAMPLES]
            problems.append(f"has non-integer values (e.g. {', '.join(f'{v:g}' for v in sample)}); a label map "
                            "holds integer class ids")
    if is_label and not problems and data.size and data.min() < 0:
        problems.append(f"has negative values (minimum {data.min():g}); a label map holds class ids >= 0")
    elif is_label and not problems and data.size and data.max() >= TISSUE_CLASSES:
        outside = np.unique(data[data >= TISSUE_CLASSES])[:MAX_EXAMPLES]
        problems.append(f"has values outside the tissue classes 0-{TISSUE_CLASSES - 1} (e.g. "
                        f"{', '.join(f'{v:g}' for v in outside)}); a label map holds 0 background, 1 CSF, 2 grey "
                        "matter, 3 white matter: relabel it")
    return Volume(shape[:3], np.asarray(img.affine, dtype=float)), problems


def check_row(row: int, image: str | None, label: str | None) -> list[ManifestProblem]:
    """Load a row's image and label (if any); the problems of each, and of the label against the image's grid."""
    problems: list[ManifestProblem] = []
    volumes: dict[str, Volume | None] = {}
    for column, path, is_label in ((Keys.IMAGE, image, False), (Keys.LABEL, label, True)):
        if path is None:
            continue
        volume, messages = load_volume(path, is_label)
        volumes[column] = volume
        problems.extend(ManifestProblem(m, row=row, column=column, file=path) for m in messages)
    image_vol, label_vol = volumes.get(Keys.IMAGE), volumes.get(Keys.LABEL)
    if image_vol is not None and label_vol is not None:
        if image_vol.shape != label_vol.shape:
            problems.append(ManifestProblem(f"shape {label_vol.shape} differs from the image's {image_vol.shape}; "
                                            "the label must be on the image's grid", row=row, column=Keys.LABEL,
                                            file=label))
        elif not np.allclose(image_vol.affine, label_vol.affine, atol=AFFINE_ATOL):
            diff = float(np.abs(image_vol.affine - label_vol.affine).max())
            problems.append(ManifestProblem(f"affine differs from the image's (largest difference {diff:.3g}); "
                                            "resample the label onto the image's grid", row=row,
                                            column=Keys.LABEL, file=label))
    return problems
