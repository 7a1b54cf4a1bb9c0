"""Per-site TorchIO preprocessing of a manifest's scans, with a content-addressed cache.

Every image goes through the same spatial steps, then an intensity standardisation fitted **per site**:

1. ``tio.ToCanonical``: reorient to RAS+.
2. ``tio.Resample``: resample to the target voxel size (linear for images, nearest neighbour for labels, which
   TorchIO does for every ``LabelMap``).
3. Foreground mask (:func:`foreground_mask`): for a T1 with a dark background, voxels above Otsu's threshold,
   the largest connected component, holes filled (the dark CSF inside the head stays in the mask);
   ``MaskMethod.NONZERO`` takes every non-zero voxel, for images already skull-stripped.
4. ``tio.CropOrPad``: to the target shape, centred on the mask's bounding box (``crop_to_mask``) so that a
   field of view with much neck or air keeps the head. Voxels brighter than :data:`OUTLIER_FACTOR` times the
   head's 99.5th percentile (a spike, an artefact) are clipped to that value, and voxels as far below the head's
   0.5th percentile (a dark or negative spike) to that floor, with a warning.
5. ``tio.HistogramStandardization`` with landmarks trained (``HistogramStandardization.train``) on the
   foreground of the site's **training** scans only (Nyul & Udupa 2000), then ``tio.ZNormalization`` within
   the mask, so the foreground of every scan has mean 0 and standard deviation 1; the background is set to 0.

Each scan's outputs are checked before they are written: a NaN or infinite voxel (in the input as stored, or
after any step), a mask of fewer than :data:`MIN_MASK_VOXELS` voxels, a label value outside the tissue classes,
or landmarks that are not finite and increasing fail that scan by name. Inputs are checked by
:func:`~harmonize.data.manifest.header_problems` first (3D, orientation, voxel size, a header claiming more
voxels than the file holds), and a manifest listing one image twice is refused.

Validation and test scans never influence the landmarks. A site with no training scan (an unseen site,
which the audit evaluates) cannot have landmarks of its own: its scans are standardised with landmarks
pooled over every training scan of every site, and a warning is logged.

Output folder (``out_dir``)::

    manifest.csv        the input manifest, same rows and columns, image/label pointing at the outputs
    images/<id>.nii.gz  the preprocessed image (float32)
    labels/<id>.nii.gz  the label, on the same grid (integer)
    masks/<id>.nii.gz   the foreground mask (uint8)
    spatial/<id>.nii.gz the image after steps 1-4 (landmarks are trained on these)
    landmarks/          one ``.npy`` of landmarks per site, ``pooled.npy``, and ``landmarks.json``
    cache/<id>.json     what each output was made from (see below)
    preprocess.json     marks the folder as a preprocessing output and records the settings

Cache: each scan's record holds a hash of the input image and label *content*, the spatial settings, and
for the final image the intensity settings and the site's landmarks, plus the hash of each output file. A
scan is reused only when every key and every output hash matches, so a second run does no work, changing a
setting redoes what depends on it, and an interrupted run is safe: every file is written to a temporary file
and renamed (:func:`harmonize.io.atomic_write`), and a record is written only after its files, so a file
without a matching record is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torchio as tio
from nibabel.filebasedimages import ImageFileError
from scipy import ndimage
from skimage.filters import threshold_otsu

from harmonize import defaults
from harmonize.data.manifest import AFFINE_ATOL, header_problems, read_manifest, write_manifest
from harmonize.errors import ConfigError, HarmonizeError, ManifestError, check_option
from harmonize.io import TMP_GLOB, OutputWriteError, atomic_write, read_json_object, write_json_atomic
from harmonize.keys import Keys, MaskMethod, Split
from harmonize.memory import check_memory, resample_bytes
from harmonize.output_dir import OutputDir
from harmonize.progress import progress as show_progress

__all__ = [
    "LANDMARKS_INDEX_FILENAME",
    "MANIFEST_FILENAME",
    "MARKER_FILENAME",
    "PreprocessConfig",
    "PreprocessResult",
    "foreground_mask",
    "intensity_steps",
    "preprocess_manifest",
    "spatial_steps",
]

logger = logging.getLogger(__name__)

#: Name of the manifest written into the output folder.
MANIFEST_FILENAME = "manifest.csv"
#: File that marks a folder as the output of :func:`preprocess_manifest` (and records its settings).
MARKER_FILENAME = "preprocess.json"
#: Index of the trained landmarks, inside :data:`LANDMARKS_DIR`.
LANDMARKS_INDEX_FILENAME = "landmarks.json"
#: Sub-folders of the output folder.
IMAGES_DIR, LABELS_DIR, MASKS_DIR, SPATIAL_DIR = "images", "labels", "masks", "spatial"
LANDMARKS_DIR, CACHE_DIR = "landmarks", "cache"
#: Top-level names written into the output folder: a file harmonize did not write there is refused by name.
RESERVED_NAMES = (MANIFEST_FILENAME, MARKER_FILENAME, IMAGES_DIR, LABELS_DIR, MASKS_DIR, SPATIAL_DIR, LANDMARKS_DIR,
                  CACHE_DIR)
#: Landmarks file of the sites without training scans.
POOLED_LANDMARKS_FILENAME = "pooled.npy"
#: Bumped whenever the pipeline's code changes what it writes, so that old caches are not trusted.
PIPELINE_VERSION = 3
#: Percentile of the finite voxels above which (and its complement, below which) intensities are clipped before
#: the mask's threshold is found, so that a few extreme voxels (a spike 50x the tissue maximum, or -50x) cannot
#: pull Otsu's threshold above the head or below the background.
ROBUST_PERCENTILE = 99.5
#: Voxels brighter than this many times the head's :data:`ROBUST_PERCENTILE` th percentile are clipped to that
#: value before standardisation (with a warning): a spike of a few voxels would otherwise dominate the
#: z-normalisation and compress the whole scan's contrast. Real tissue stays well below it.
OUTLIER_FACTOR = 3.0
#: A mask with fewer voxels than this (a 3x3x3 block) is no head: the scan fails by name.
MIN_MASK_VOXELS = 27
#: Tag written into the marker file.
MARKER_TOOL = "harmonize preprocess"
#: Suffix of the written NIfTI files.
NIFTI_SUFFIX = ".nii.gz"
#: Bytes read at a time when hashing a file.
HASH_CHUNK = 1 << 20
#: Characters kept as they are in an output file name; others become "_" (and a hash of the id is added).
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
#: Names of the images in a TorchIO subject (TorchIO checks for exact ``str``, not a ``StrEnum``).
_IMAGE, _LABEL, _MASK = str(Keys.IMAGE), str(Keys.LABEL), str(Keys.MASK)
#: Start of the message of TorchIO's ZNormalization when the masked voxels are constant.
_ZERO_STD_MESSAGE = "Standard deviation is 0"
#: How the JSON files (records, marker, landmarks index) are formatted.
_JSON_FORMAT: Mapping[str, Any] = MappingProxyType({"indent": 1, "sort_keys": True})


# --------------------------------------------------------------------------------------------------------
# settings and result
# --------------------------------------------------------------------------------------------------------
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
    """What :func:`preprocess_manifest` did.

    Attributes:
        manifest: the new manifest (``out_dir/manifest.csv``).
        processed: scans whose output was (re)computed.
        cached: scans whose outputs were reused from an earlier run.
        landmarks: ``{site: landmarks .npy}``; a site without training scans maps to the pooled landmarks.
        pooled_sites: sites without training scans, standardised with the pooled landmarks.
        seconds: wall time of the run.
    """

    manifest: Path
    processed: int
    cached: int
    landmarks: dict[str, Path] = field(default_factory=dict)
    pooled_sites: tuple[str, ...] = ()
    seconds: float = 0.0

    def format(self) -> str:
        """One line per fact, for the command line."""
        lines = [
            f"preprocessed manifest: {self.manifest}",
            f"scans: {self.processed + self.cached} (processed {self.processed}, cached {self.cached}) "
            f"in {self.seconds:.1f} s",
            f"landmarks: {len(self.landmarks) - len(self.pooled_sites)} site(s) from their training scans",
        ]
        if self.pooled_sites:
            lines.append(f"sites without training scans (pooled landmarks): {', '.join(self.pooled_sites)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# small helpers: hashing and atomic writes
# --------------------------------------------------------------------------------------------------------
def _file_hash(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _key(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _save_image(image: tio.Image, path: Path) -> str:
    """Write a TorchIO image atomically and return the hash of the written file."""
    atomic_write(path, image.save)
    return _file_hash(path)


def _safe_name(subject_id: str) -> str:
    """A file-name stem for a subject id (ids with other characters get a hash so they stay unique)."""
    safe = _SAFE_NAME.sub("_", subject_id)
    if safe != subject_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(subject_id.encode()).hexdigest()[:8]}"
    return safe


# --------------------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------------------
def foreground_mask(data: torch.Tensor | np.ndarray, method: str = MaskMethod.OTSU) -> np.ndarray:
    """Foreground (head) mask of a 3D image, or of a 1-channel 4D one.

    ``otsu``: voxels above Otsu's threshold of the whole volume (which separates a dark background from
    tissue; intensities are first clipped to their ``100 - ROBUST_PERCENTILE`` th and :data:`ROBUST_PERCENTILE` th
    percentiles, so that a few extreme voxels cannot raise the threshold above the head, or a very dark one lower
    it below the background), then the largest connected component (drops
    specks of noise), with holes filled (keeps dark CSF and ventricles enclosed by tissue). ``nonzero``: every
    voxel that is not 0 (skull-stripped images).

    Args:
        data: the intensities, shape ``(X, Y, Z)`` or ``(1, X, Y, Z)``.
        method: a :class:`~harmonize.keys.MaskMethod`.

    Returns:
        A boolean array of the input's shape; all False for a constant image.
    """
    method = check_option("method", method, MaskMethod)
    array = np.asarray(data, dtype=np.float32)
    if method == MaskMethod.NONZERO:
        return array != 0
    finite = array[np.isfinite(array)]
    if finite.size == 0 or finite.min() == finite.max():
        return np.zeros(array.shape, dtype=bool)
    spatial = array.reshape(array.shape[-3:])
    floor, ceiling = (float(q) for q in np.percentile(finite, [100 - ROBUST_PERCENTILE, ROBUST_PERCENTILE]))
    if floor < ceiling:  # clip a few extreme voxels, bright or dark (a volume almost all one value keeps its range)
        finite, spatial = np.clip(finite, floor, ceiling), np.clip(spatial, floor, ceiling)
    mask = spatial > threshold_otsu(finite)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(sizes.argmax())
    mask = ndimage.binary_fill_holes(mask)
    return mask.reshape(array.shape)


# --------------------------------------------------------------------------------------------------------
# the output folder
# --------------------------------------------------------------------------------------------------------
def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_out_dir(out_dir: Path, manifest: Path, frame: pd.DataFrame) -> None:
    """Refuse an output folder that would mix with the inputs (the rest is :class:`OutputDir`'s work)."""
    source = manifest.parent.resolve()
    if out_dir == source:
        raise HarmonizeError(
            f"The output folder {out_dir} is the folder of the input manifest {manifest}. Preprocessing never "
            "writes beside its inputs: choose another folder, e.g. --out "
            f"{source.parent / (source.name + '_preprocessed')}."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise HarmonizeError(f"The output path {out_dir} exists and is not a folder; choose a folder.")
    inputs = [manifest.resolve()] + [
        Path(p).resolve() for column in (Keys.IMAGE, Keys.LABEL) if column in frame for p in frame[column].dropna()
    ]
    clashes = [p for p in inputs if _is_within(p, out_dir)]
    if clashes:
        examples = ", ".join(str(p) for p in clashes[:3])
        raise HarmonizeError(
            f"The output folder {out_dir} holds {len(clashes)} of the input files (e.g. {examples}); outputs "
            "written there could replace inputs. Choose a folder outside the input data."
        )


def _check_scans_listed_once(manifest: Path, frame: pd.DataFrame) -> None:
    """Refuse a manifest that lists one image file in two rows (a train/test leak the outputs would hide)."""
    problems = []
    first: dict[str, tuple[int, str]] = {}
    for row, image, split in zip(frame.index, frame[Keys.IMAGE], frame[Keys.SPLIT]):
        key = os.path.realpath(str(image))
        if key in first:
            other, other_split = first[key]
            problems.append(f"row {int(row)} (split '{split}'): the same image as row {other} "
                            f"(split '{other_split}'), {image}")
        else:
            first[key] = (int(row), str(split))
    if problems:
        raise ManifestError(
            f"{manifest} lists {len(problems)} image(s) twice. Each row must be its own scan: a scan in both a "
            "training and a test row leaks the test set into training, and the preprocessed copies would hide "
            "it. Remove the repeated rows (harmonize validate lists them too).", problems=problems)


def _remove_leftover_temporaries(out_dir: Path) -> None:
    """Delete temporary files left by a run that was killed (they are never trusted, only clutter)."""
    for sub in (IMAGES_DIR, LABELS_DIR, MASKS_DIR, SPATIAL_DIR, LANDMARKS_DIR, CACHE_DIR):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.glob(TMP_GLOB):
                path.unlink(missing_ok=True)


def _is_earlier_output(out_dir: Path) -> bool:
    """True when ``out_dir`` holds an earlier run's outputs (its cache may be reused without ``overwrite``)."""
    marker = read_json_object(out_dir / MARKER_FILENAME)
    return marker is not None and marker.get("tool") == MARKER_TOOL


def _earlier_outputs(out_dir: Path) -> list[Path]:
    """Files an earlier run wrote, known from its marker, cache records and landmarks index (before records)."""
    if not _is_earlier_output(out_dir):
        return []
    found = [out_dir / MARKER_FILENAME, out_dir / MANIFEST_FILENAME,
             out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME]
    for record_path in (out_dir / CACHE_DIR).glob("*.json"):
        record = read_json_object(record_path) or {}
        found.append(record_path)
        for stage in ("spatial_files", "final_files"):
            entries = record.get(stage)
            if isinstance(entries, dict):
                found.extend(out_dir / str(e.get("path")) for e in entries.values() if isinstance(e, dict))
    index = read_json_object(out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME) or {}
    entries = [*(index.get("sites") or {}).values(), index.get("pooled")]
    found.extend(out_dir / LANDMARKS_DIR / str(e["file"]) for e in entries if isinstance(e, dict) and "file" in e)
    return found


# --------------------------------------------------------------------------------------------------------
# the two stages
# --------------------------------------------------------------------------------------------------------
@dataclass
class _Scan:
    """One manifest row on its way through the pipeline."""

    row: int
    subject_id: str
    site: str
    split: str
    image: str
    label: str | None
    name: str
    spatial_key: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"row {self.row} (subject {self.subject_id!r})"


def _files_ok(out_dir: Path, files: Mapping[str, Any] | None) -> bool:
    """True when every recorded output exists with the recorded hash."""
    if not files:
        return False
    for entry in files.values():
        path = out_dir / entry["path"]
        if not path.is_file() or _file_hash(path) != entry["sha256"]:
            return False
    return True


def _outputs(out_dir: Path, scan: _Scan) -> dict[str, Path]:
    file = scan.name + NIFTI_SUFFIX
    paths = {"spatial": out_dir / SPATIAL_DIR / file, "mask": out_dir / MASKS_DIR / file,
             "image": out_dir / IMAGES_DIR / file}
    if scan.label is not None:
        paths["label"] = out_dir / LABELS_DIR / file
    return paths


def _label_tensor(data: torch.Tensor) -> torch.Tensor:
    """Integer label data, in the smallest of uint8/int32 that holds it."""
    if data.is_floating_point():
        data = torch.round(data)
    small = data.numel() == 0 or (data.min() >= 0 and data.max() <= np.iinfo(np.uint8).max)
    return data.to(torch.uint8 if small else torch.int32)


def spatial_steps(subject: tio.Subject, config: PreprocessConfig, where: str) -> tio.Subject:
    """Steps 1-4 on a loaded subject (image, optional label): reorient, resample, add the mask, crop/pad.

    The one implementation of the spatial steps, shared by :func:`preprocess_manifest` and the bundles'
    inference (:class:`harmonize.bundle.BundlePreprocessd`).

    Args:
        subject: a TorchIO subject with the image under ``"image"`` (and any label maps).
        config: the pipeline settings.
        where: names the scan in an error (e.g. its row and file).

    Returns:
        The transformed subject, with the foreground mask added under ``"mask"`` and the few voxels far brighter
        or darker than the head clipped (:data:`OUTLIER_FACTOR`, logged).

    Raises:
        HarmonizeError: the image has no foreground (it is constant), a mask of fewer than
            :data:`MIN_MASK_VOXELS` voxels, or a non-finite voxel after resampling.
        ResourceError: resampling would not fit in memory.
    """
    image = subject[_IMAGE]
    check_memory(resample_bytes(image.spatial_shape, image.spacing, config.target_spacing,
                                volumes=len(subject.get_images(intensity_only=False))),
                 f"{where}: resampling ({image.spatial_shape} voxels of "
                 f"{tuple(round(float(s), 3) for s in image.spacing)} mm) to {config.target_spacing} mm voxels",
                 "choose a coarser --spacing (target_spacing)")
    subject[_IMAGE].set_data(subject[_IMAGE].data.float())
    subject = tio.Compose([tio.ToCanonical(), tio.Resample(config.target_spacing)])(subject)
    mask = foreground_mask(subject[_IMAGE].data, config.mask_method)
    if not mask.any():
        raise HarmonizeError(
            f"{where}: no foreground found (the image is constant); check the file, or "
            f"use mask_method '{MaskMethod.NONZERO}' for skull-stripped images."
        )
    subject.add_image(tio.LabelMap(tensor=torch.from_numpy(mask.astype(np.uint8)), affine=subject[_IMAGE].affine),
                      _MASK)
    crop = tio.CropOrPad(config.target_shape, mask_name=_MASK if config.crop_to_mask else None)
    subject = crop(subject)
    _check_mask(where, subject[_MASK].data, config)
    _check_finite(where, subject[_IMAGE].data, "its resampled image", "check the input's intensities and affine")
    subject[_IMAGE].set_data(_clip_outliers(where, subject[_IMAGE].data, subject[_MASK].data))
    return subject


def intensity_steps(
    subject: tio.Subject, landmarks: np.ndarray | None, config: PreprocessConfig, where: str
) -> tio.ScalarImage:
    """Step 5 on a spatially preprocessed subject (``"image"`` and ``"mask"``): histogram standardisation with
    ``landmarks`` (skipped when None), z-normalisation within the mask, background set to 0 if configured.

    Returns:
        The standardised image (float32).

    Raises:
        HarmonizeError: the foreground is constant, or a standardised voxel is not finite, naming ``where``.
    """
    steps = [] if landmarks is None else [tio.HistogramStandardization({_IMAGE: landmarks}, masking_method=_MASK)]
    transform = tio.Compose([*steps, tio.ZNormalization(masking_method=_MASK)])
    try:
        subject = transform(subject)
    except RuntimeError as err:
        if _ZERO_STD_MESSAGE not in str(err):
            raise
        raise HarmonizeError(f"{where}: cannot normalise the image: its foreground is constant.") from err
    image = subject[_IMAGE]
    data = image.data.float()
    if config.zero_background:
        data = torch.where(subject[_MASK].data.bool(), data, torch.zeros_like(data))
    _check_finite(where, data, "its standardised image", "check the site's landmarks and the scan's intensities")
    image.set_data(data.contiguous())
    return image


def _stored_voxels(path: str) -> torch.Tensor:
    """The voxels of a float image as stored (TorchIO's reader turns NaN into 0 without a word); empty for integers."""
    image = nib.load(path)
    if not np.issubdtype(image.get_data_dtype(), np.floating):
        return torch.zeros(0)
    return torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))


def _check_finite(where: str, data: torch.Tensor, what: str, fix: str) -> None:
    """Fail the scan by name when ``data`` holds a NaN or infinite voxel."""
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise HarmonizeError(f"{where}: {what} has {bad} NaN or infinite voxel(s) of {data.numel()}; {fix}.")


def _check_mask(where: str, mask: torch.Tensor, config: PreprocessConfig) -> None:
    """Fail the scan by name when its foreground mask (after crop/pad) is empty or a few voxels."""
    voxels = int(mask.bool().sum())
    if voxels < MIN_MASK_VOXELS:
        raise HarmonizeError(
            f"{where}: its foreground mask has {voxels} voxel(s) (fewer than {MIN_MASK_VOXELS}): "
            "no head was found, so the intensity standardisation would be meaningless. Check the "
            f"image (a few extreme voxels? an empty field of view?), or use mask_method '{MaskMethod.NONZERO}' "
            "for skull-stripped images."
            if config.mask_method == MaskMethod.OTSU else
            f"{where}: its foreground mask has {voxels} voxel(s) (fewer than {MIN_MASK_VOXELS}): the image is "
            "(almost) all zero; check the file.")


def _clip_outliers(where: str, data: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Clip the few voxels far outside the head's robust range, bright or dark (logged).

    The ceiling is :data:`OUTLIER_FACTOR` times the head's :data:`ROBUST_PERCENTILE` th percentile (``high``); the
    floor lies as far below the head's ``100 - ROBUST_PERCENTILE`` th percentile (``low``):
    ``low - (OUTLIER_FACTOR - 1) * high``. A dark (negative) spike would otherwise dominate the z-normalisation
    just as a bright one does.
    """
    head = data[mask.bool()].double()
    quantiles = torch.tensor([1 - ROBUST_PERCENTILE / 100, ROBUST_PERCENTILE / 100], dtype=torch.float64)
    low, high = (float(q) for q in torch.quantile(head, quantiles))
    if high <= 0:
        return data
    ceiling, floor = OUTLIER_FACTOR * high, low - (OUTLIER_FACTOR - 1) * high
    bright, dark = int((data > ceiling).sum()), int((data < floor).sum())
    if bright:
        logger.warning("%s: %d voxel(s) are brighter than %g (%g times the head's %gth percentile) and were "
                       "clipped to it; check the scan for artefacts.", where, bright, ceiling, OUTLIER_FACTOR,
                       ROBUST_PERCENTILE)
    if dark:
        logger.warning("%s: %d voxel(s) are darker than %g (the head's %gth percentile %g, less %g times its %gth "
                       "percentile) and were clipped to it; check the scan for artefacts.", where, dark, floor,
                       100 - ROBUST_PERCENTILE, low, OUTLIER_FACTOR - 1, ROBUST_PERCENTILE)
    return torch.clamp(data, min=floor, max=ceiling) if bright or dark else data


def _check_label_values(scan: _Scan, data: torch.Tensor) -> None:
    """Fail the scan by name when its label map holds values outside the tissue classes."""
    from harmonize.data.manifest import TISSUE_CLASSES

    values = torch.unique(data)
    bad = [float(v) for v in values if not (float(v).is_integer() and 0 <= float(v) < TISSUE_CLASSES)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5])
        raise HarmonizeError(
            f"{scan.where()}: its label map {scan.label} holds values outside the tissue classes 0-"
            f"{TISSUE_CLASSES - 1} ({shown}); relabel it (0 background, 1 CSF, 2 grey matter, 3 white matter).")


def _spatial_stage(scan: _Scan, config: PreprocessConfig, out_dir: Path) -> dict[str, Any]:
    """Reorient, resample, mask and crop/pad one scan; write the spatial image, mask and label."""
    images: dict[str, tio.Image] = {_IMAGE: tio.ScalarImage(scan.image)}
    if scan.label is not None:
        images[_LABEL] = tio.LabelMap(scan.label)
    subject = tio.Subject(images)
    for path, is_label in ((scan.image, False), (scan.label, True)):
        problems = [] if path is None else header_problems(path, is_label)
        if problems:
            what = "cannot read its image or label" if problems[0].startswith("cannot") else "unusable input"
            raise HarmonizeError(f"{scan.where()}: {what}: {path} {'; '.join(problems)}.")
    try:
        subject.load()
    except (RuntimeError, OSError, EOFError, ValueError, zlib.error, ImageFileError) as err:
        raise HarmonizeError(f"{scan.where()}: cannot read its image or label: {err}") from err
    if scan.label is not None and subject[_LABEL].spatial_shape != subject[_IMAGE].spatial_shape:
        raise HarmonizeError(
            f"{scan.where()}: label shape {subject[_LABEL].spatial_shape} differs from the image shape "
            f"{subject[_IMAGE].spatial_shape}; the label must be on the image's grid."
        )
    if scan.label is not None and not np.allclose(subject[_LABEL].affine, subject[_IMAGE].affine, atol=AFFINE_ATOL):
        difference = float(np.abs(subject[_LABEL].affine - subject[_IMAGE].affine).max())
        raise HarmonizeError(
            f"{scan.where()}: the affine of its label {scan.label} differs from the image's (largest difference "
            f"{difference:.3g}); resample the label onto the image's grid.")
    where = f"{scan.where()}: {scan.image}"
    _check_finite(where, _stored_voxels(scan.image), "the image", "replace them (e.g. with 0) first")
    if scan.label is not None:
        _check_label_values(scan, subject[_LABEL].data)
    subject = spatial_steps(subject, config, where)
    if scan.label is not None:
        subject[_LABEL].set_data(_label_tensor(subject[_LABEL].data))
    paths = _outputs(out_dir, scan)
    files = {}
    for name, key in (("spatial", _IMAGE), ("mask", _MASK), ("label", _LABEL)):
        if key in subject:
            files[name] = {"path": paths[name].relative_to(out_dir).as_posix(),
                           "sha256": _save_image(subject[key], paths[name])}
    return files


def _intensity_stage(
    scan: _Scan, landmarks: np.ndarray | None, config: PreprocessConfig, out_dir: Path
) -> dict[str, Any]:
    """Standardise one spatially preprocessed scan with its site's landmarks (if any); write the final image."""
    paths = _outputs(out_dir, scan)
    subject = tio.Subject({_IMAGE: tio.ScalarImage(paths["spatial"]), _MASK: tio.LabelMap(paths["mask"])})
    image = intensity_steps(subject, landmarks, config, f"{scan.where()}: {scan.image}")
    return {"image": {"path": paths["image"].relative_to(out_dir).as_posix(),
                      "sha256": _save_image(image, paths["image"])}}


# --------------------------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------------------------
def _landmarks_file(site: str) -> str:
    return f"site-{_safe_name(site)}.npy"


def _train_landmarks(
    scans: Sequence[_Scan], file: str, config: PreprocessConfig, out_dir: Path, previous: Mapping[str, Any] | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Landmarks of ``scans`` (reused when trained before from the very same spatial outputs)."""
    key = _key({"version": PIPELINE_VERSION, "scans": sorted(s.spatial_key for s in scans),
                "cutoff": list(config.landmarks_cutoff)})
    path = out_dir / LANDMARKS_DIR / file
    if previous and previous.get("key") == key and path.is_file() and _file_hash(path) == previous.get("sha256"):
        return np.load(path), dict(previous)
    paths = [_outputs(out_dir, s) for s in scans]
    landmarks = tio.HistogramStandardization.train(
        [str(p["spatial"]) for p in paths],
        cutoff=config.landmarks_cutoff,
        mask_path=[str(p["mask"]) for p in paths],
        progress=False,
    )
    landmarks = np.asarray(landmarks, dtype=float)
    if not np.all(np.isfinite(landmarks)) or not np.all(np.diff(landmarks) > 0):
        subjects = ", ".join(sorted(s.subject_id for s in scans))
        raise HarmonizeError(
            f"The intensity landmarks trained for {file} are not finite and increasing "
            f"({landmarks.round(3).tolist()}); the masks of its training scans ({subjects}) hold too few distinct "
            "intensities. Check these scans (masks/ shows what was taken as the head).")
    atomic_write(path, lambda tmp: np.save(tmp, landmarks))
    entry = {"key": key, "file": file, "sha256": _file_hash(path), "n_scans": len(scans),
             "subjects": sorted(s.subject_id for s in scans)}
    return landmarks, entry


def _site_landmarks(
    scans: Sequence[_Scan], config: PreprocessConfig, out_dir: Path, overwrite: bool
) -> tuple[dict[str, np.ndarray], dict[str, Path], tuple[str, ...]]:
    """Train (or reuse) landmarks per site from its training scans; pooled ones for sites without any."""
    index_path = out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME
    previous = {} if overwrite else (read_json_object(index_path) or {})
    train = [s for s in scans if s.split == Split.TRAIN]
    if not train:
        raise HarmonizeError(
            "The manifest has no training rows (split 'train'): per-site intensity landmarks are trained on "
            "training scans only. Add training rows to the manifest."
        )
    sites = sorted({s.site for s in scans})
    unseen = tuple(site for site in sites if not any(s.site == site for s in train))
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, Path] = {}
    entries: dict[str, Any] = {"sites": {}}
    for site in sorted({s.site for s in train}):
        site_scans = [s for s in train if s.site == site]
        arrays[site], entries["sites"][site] = _train_landmarks(
            site_scans, _landmarks_file(site), config, out_dir, previous.get("sites", {}).get(site))
        files[site] = out_dir / LANDMARKS_DIR / _landmarks_file(site)
    if unseen:
        pooled, entries["pooled"] = _train_landmarks(train, POOLED_LANDMARKS_FILENAME, config, out_dir,
                                                     previous.get("pooled"))
        for site in unseen:
            arrays[site] = pooled
            files[site] = out_dir / LANDMARKS_DIR / POOLED_LANDMARKS_FILENAME
        logger.warning(
            "Site(s) %s have no training scans; their scans are standardised with landmarks pooled over the "
            "%d training scans of all sites (the per-site landmarks need training scans of the site).",
            list(unseen), len(train))
    entries["pooled_sites"] = list(unseen)
    write_json_atomic(index_path, entries, **_JSON_FORMAT)
    return arrays, files, unseen


# --------------------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------------------
def _scans(frame: pd.DataFrame) -> list[_Scan]:
    labels = frame[Keys.LABEL] if Keys.LABEL in frame else pd.Series(None, index=frame.index, dtype=object)
    scans = []
    for row, sid, site, split, image, label in zip(frame.index, frame[Keys.SUBJECT_ID], frame[Keys.SITE],
                                                   frame[Keys.SPLIT], frame[Keys.IMAGE], labels):
        label = None if label is None or pd.isna(label) else str(label)
        scans.append(_Scan(int(row), str(sid), str(site), str(split), str(image), label, _safe_name(str(sid))))
    return scans


def _run_stage(
    items: Iterable[_Scan], work: Callable[[_Scan], None], desc: str, progress: bool
) -> list[str]:
    """Apply ``work`` to each scan, collecting the user-facing problems instead of stopping at the first."""
    problems = []
    for scan in show_progress(list(items), desc, unit="scan", enabled=progress):
        try:
            work(scan)
        except OutputWriteError:
            raise  # a full disk or a folder that cannot be written: every other scan would fail the same way
        except HarmonizeError as err:
            problems.append(str(err))
    return problems


def preprocess_manifest(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PreprocessConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    bids_derivatives: bool = False,
) -> PreprocessResult:
    """Preprocess every scan of a manifest into ``out_dir`` and write a new manifest there.

    See the module docstring for the pipeline, the output layout and the cache. The inputs are never
    modified. A second run with the same inputs and settings reuses every output (``processed == 0``).

    Args:
        manifest: the input manifest CSV (read with :func:`~harmonize.data.manifest.read_manifest`).
        out_dir: the output folder: new, empty, or the output of an earlier run (then its cache is used).
        config: the pipeline settings (defaults: :class:`PreprocessConfig`).
        overwrite: write into a non-empty folder that is not an earlier output, and recompute every scan
            instead of reusing the cache.
        progress: show progress (a bar on a terminal, else a line per hundred scans: :mod:`harmonize.progress`).
        bids_derivatives: also lay the outputs out as a BIDS-Derivatives dataset in
            ``out_dir/derivatives/harmonize`` and point the new manifest at it
            (:mod:`harmonize.data.bids_derivatives`); the manifest's images must be BIDS scans.

    Returns:
        The new manifest's path, counts of processed and cached scans, and the landmarks per site.

    Raises:
        ManifestError: the manifest cannot be read (every problem listed).
        HarmonizeError: ``out_dir`` is the manifest's folder or holds input files, or is a foreign non-empty
            folder without ``overwrite``; the manifest has no training rows; scans that cannot be read or
            have no foreground (every such scan listed, after the others were processed).
    """
    start = time.perf_counter()
    config = config or PreprocessConfig()
    manifest = Path(manifest).expanduser().absolute()
    frame = read_manifest(manifest)
    out = Path(out_dir).expanduser().resolve()
    _check_out_dir(out, manifest, frame)
    _check_scans_listed_once(manifest, frame)
    reserved = RESERVED_NAMES
    if bids_derivatives:
        from harmonize.data.bids_derivatives import DERIVATIVES_DIR, check_bids_sources

        check_bids_sources(frame)
        # the run writes into derivatives/ too: a file of the user's there is refused by name, never replaced
        reserved = (*RESERVED_NAMES, DERIVATIVES_DIR.parts[0])
    claim = OutputDir(out, MARKER_TOOL, overwrite=overwrite, inputs=[manifest], reserved=reserved,
                      reuse=_is_earlier_output, known_outputs=_earlier_outputs)
    with claim:
        return _preprocess_into(out, manifest, frame, config, overwrite, progress, bids_derivatives, start)


def _preprocess_into(out: Path, manifest: Path, frame: pd.DataFrame, config: PreprocessConfig, overwrite: bool,
                     progress: bool, bids_derivatives: bool, start: float) -> PreprocessResult:
    """The body of :func:`preprocess_manifest`, run while ``out`` is locked."""
    _remove_leftover_temporaries(out)
    marker = {"tool": MARKER_TOOL, "version": PIPELINE_VERSION, "source": str(manifest), "config": asdict(config)}
    write_json_atomic(out / MARKER_FILENAME, marker, **_JSON_FORMAT)
    (out / CACHE_DIR).mkdir(exist_ok=True)
    scans = _scans(frame)

    spatial_settings = config.spatial_settings()

    def spatial(scan: _Scan) -> None:
        record_path = out / CACHE_DIR / f"{scan.name}.json"
        try:
            hashes = [None if p is None else _file_hash(p) for p in (scan.image, scan.label)]
        except OSError as err:
            raise HarmonizeError(f"{scan.where()}: cannot read {err.filename}: {err.strerror}") from err
        scan.spatial_key = _key({"version": PIPELINE_VERSION, "image": hashes[0], "label": hashes[1],
                                 "settings": spatial_settings})
        record = {} if overwrite else (read_json_object(record_path) or {})
        if record.get("spatial_key") == scan.spatial_key and _files_ok(out, record.get("spatial_files")):
            scan.record = record
            return
        files = _spatial_stage(scan, config, out)
        scan.record = {"subject_id": scan.subject_id, "spatial_key": scan.spatial_key, "spatial_files": files}
        write_json_atomic(record_path, scan.record, **_JSON_FORMAT)  # only after its files exist

    problems = _run_stage(scans, spatial, "preprocess: resample", progress)
    if problems:
        raise HarmonizeError(f"{len(problems)} scan(s) of {manifest} could not be preprocessed; the others are "
                             "cached for the next run.", problems=problems)

    if config.histogram_standardisation:
        landmarks, landmark_files, unseen = _site_landmarks(scans, config, out, overwrite)
    else:
        landmarks, landmark_files, unseen = {s.site: None for s in scans}, {}, ()
    intensity_settings = config.intensity_settings()
    counts = {"processed": 0, "cached": 0}

    landmark_hashes = {site: None if values is None else hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
                       for site, values in landmarks.items()}

    def intensity(scan: _Scan) -> None:
        final_key = _key({"spatial_key": scan.spatial_key, "settings": intensity_settings,
                          "landmarks": landmark_hashes[scan.site]})
        if scan.record.get("final_key") == final_key and _files_ok(out, scan.record.get("final_files")):
            counts["cached"] += 1
            return
        files = _intensity_stage(scan, landmarks[scan.site], config, out)
        scan.record = {**scan.record, "final_key": final_key, "final_files": files}
        # only after its file exists
        write_json_atomic(out / CACHE_DIR / f"{scan.name}.json", scan.record, **_JSON_FORMAT)
        counts["processed"] += 1

    problems = _run_stage(scans, intensity, "preprocess: standardise", progress)
    if problems:
        raise HarmonizeError(f"{len(problems)} scan(s) of {manifest} could not be normalised.", problems=problems)

    new = frame.copy()
    new[Keys.IMAGE] = [str(_outputs(out, s)["image"]) for s in scans]
    if Keys.LABEL in new:
        new[Keys.LABEL] = [str(_outputs(out, s)["label"]) if s.label is not None else None for s in scans]
    if bids_derivatives:
        from harmonize.data.bids_derivatives import write_bids_derivatives

        new = write_bids_derivatives(new, frame, [_outputs(out, s) for s in scans], out, asdict(config))
    new_manifest = write_manifest(new, out / MANIFEST_FILENAME, overwrite=True)
    result = PreprocessResult(
        manifest=new_manifest,
        processed=counts["processed"],
        cached=counts["cached"],
        landmarks=landmark_files,
        pooled_sites=unseen,
        seconds=time.perf_counter() - start,
    )
    logger.debug("Preprocessed %d scans into %s: processed %d, cached %d (%.1f s)", len(scans), out,
                result.processed, result.cached, result.seconds)
    return result
