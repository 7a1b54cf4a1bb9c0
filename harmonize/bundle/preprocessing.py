"""The training preprocessing of a bundle, saved beside its weights and replayed on raw scans at inference.

A bundle trains on scans that ``harmonize preprocess`` made (reorient, resample, crop/pad, per-site histogram
standardisation; :mod:`harmonize.data.preprocess`). :func:`save_preprocessing` writes what inference needs to
prepare a new raw scan the same way into ``models/preprocessing.json``: the settings, the landmarks of each
training site, and landmarks pooled over every training scan (for a scanner never seen in training).
:class:`BundlePreprocessd` replays it with the very same TorchIO steps
(:func:`~harmonize.data.preprocess.spatial_steps`, :func:`~harmonize.data.preprocess.intensity_steps`), and is a
MONAI :class:`~monai.transforms.InvertibleTransform`: ``Invertd`` maps a prediction back onto the input scan's
grid, as Model Zoo bundles do.

It refuses what the model cannot take (2D, 4D, a single slice, non-finite values, intensities that cannot be a
T1-weighted magnitude image) and warns, naming the file, when the input's voxels are strongly anisotropic or
coarser than the training spacing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from copy import deepcopy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, SpatialResample
from monai.utils import TraceKeys

from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess import (
    IMAGES_DIR,
    LANDMARKS_DIR,
    LANDMARKS_INDEX_FILENAME,
    MARKER_FILENAME,
    MARKER_TOOL,
    MASKS_DIR,
    SPATIAL_DIR,
    PreprocessConfig,
    intensity_steps,
    spatial_steps,
)
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.io import read_json_object, write_json_atomic
from harmonize.keys import Keys, Split
from harmonize.workflows.input_check import BUNDLE_PREPROCESSING_FORMAT

__all__ = [
    "ANISOTROPY_LIMIT",
    "COARSER_LIMIT",
    "NEGATIVE_FRACTION_LIMIT",
    "POOLED",
    "PREPROCESSING_FILENAME",
    "BundlePreprocessd",
    "load_preprocessing",
    "parse_flag",
    "save_preprocessing",
    "voxel_spacing",
]

logger = logging.getLogger(__name__)

#: File written beside ``models/model.pt`` by training, read by inference.
PREPROCESSING_FILENAME = "preprocessing.json"
#: ``format`` and ``version`` of that file (the audit reads it too: :mod:`harmonize.workflows.input_check`).
FORMAT, FORMAT_VERSION = BUNDLE_PREPROCESSING_FORMAT, 1
#: ``intensity_reference`` of a scan standardised with the pooled landmarks.
POOLED = "pooled"
#: Largest ratio of an input's largest to smallest voxel size that passes without a warning.
ANISOTROPY_LIMIT = 2.0
#: An input voxel size more than this factor coarser than the training spacing is warned about.
COARSER_LIMIT = 1.5
#: A T1-weighted magnitude image has (almost) no negative values: refused when more than this fraction of the
#: voxels lies below ``-NEGATIVE_TOLERANCE`` times the 99.5th percentile of the absolute values.
NEGATIVE_FRACTION_LIMIT = 0.01
NEGATIVE_TOLERANCE = 0.05
#: Relative difference of spacing tolerated when the input is declared already preprocessed.
SPACING_TOLERANCE = 0.05
#: A scan declared already preprocessed (z-normalised within the head, background 0) must have non-zero voxels of
#: mean within this of 0, and a standard deviation within this factor of 1.
STANDARDISED_MEAN_LIMIT = 0.5
STANDARDISED_STD_FACTOR = 2.0
_IMAGE = str(Keys.IMAGE)


#: Strings a bundle override may give for a boolean id (``python -m monai.bundle`` passes ``--x false`` as text).
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_flag(value: bool | str | int, name: str) -> bool:
    """A boolean bundle id: ``True``/``False``, or their text (``--preprocess false`` reaches a config as text).

    Raises:
        ConfigError: any other value, naming the id.
    """
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"'{name}' must be true or false, not {value!r}.")


def voxel_spacing(affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Voxel sizes (mm) of a 4x4 voxel-to-world affine: the lengths of its first three columns."""
    matrix = np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
    return np.linalg.norm(matrix[:3, :3], axis=0)


def _spatial_file(image: str | os.PathLike[str], folder: str) -> Path:
    """``<out>/images/<id>.nii.gz`` -> ``<out>/<folder>/<id>.nii.gz`` (layout of :func:`preprocess_manifest`)."""
    path = Path(image)
    if path.parent.name != IMAGES_DIR:
        raise HarmonizeError(f"{path} is not in the images/ folder of a `harmonize preprocess` output.")
    return path.parent.parent / folder / path.name


def save_preprocessing(
    manifest: str | os.PathLike[str], path: str | os.PathLike[str]
) -> Path:
    """Write what inference needs to preprocess raw scans like the training scans of ``manifest``.

    ``manifest`` is the training manifest. When it is the output of ``harmonize preprocess`` (a
    ``preprocess.json`` beside it), the file holds its settings, the landmarks of every training site and the
    landmarks pooled over all training scans (trained here from the spatial outputs when preprocessing did
    not need them). Otherwise it records that the preprocessing is unknown, and inference then only takes
    scans already preprocessed like the training scans (``preprocess`` false).

    Args:
        manifest: the training manifest.
        path: the JSON file to write (atomically), usually ``models/preprocessing.json``.

    Returns:
        ``path``.

    Raises:
        HarmonizeError: the preprocessing output beside the manifest lacks its landmarks or spatial files.
    """
    manifest = Path(manifest).expanduser().absolute()
    folder = manifest.parent
    marker = read_json_object(folder / MARKER_FILENAME)
    content: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "manifest": str(manifest)}
    if marker is None or marker.get("tool") != MARKER_TOOL:
        logger.warning("%s was not made by `harmonize preprocess` (no %s beside it): %s records no preprocessing, "
                       "so inference will only take scans preprocessed like the training scans (preprocess false).",
                       manifest, MARKER_FILENAME, path)
        content["config"] = None
        return write_json_atomic(path, content, indent=1)
    config = PreprocessConfig(**marker["config"])
    content["config"] = asdict(config)
    content["landmarks"], content["pooled_landmarks"] = {}, None
    if config.histogram_standardisation:
        index_path = folder / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME
        index = read_json_object(index_path)
        if index is None:
            raise HarmonizeError(f"{index_path} is missing or unreadable: rerun `harmonize preprocess` for {manifest}.")
        for site, entry in sorted(index.get("sites", {}).items()):
            content["landmarks"][site] = np.load(folder / LANDMARKS_DIR / entry["file"]).tolist()
        if index.get("pooled"):
            pooled = np.load(folder / LANDMARKS_DIR / index["pooled"]["file"])
        else:
            frame = read_manifest(manifest)
            train = frame.loc[frame[Keys.SPLIT] == Split.TRAIN, Keys.IMAGE]
            spatial = [str(_spatial_file(p, SPATIAL_DIR)) for p in train]
            missing = [p for p in spatial if not os.path.isfile(p)]
            if missing:
                raise HarmonizeError(f"{len(missing)} spatial output(s) of {folder} are missing, needed for the pooled "
                                     "landmarks; rerun `harmonize preprocess`.", problems=missing[:10])
            pooled = tio.HistogramStandardization.train(
                spatial, cutoff=config.landmarks_cutoff,
                mask_path=[str(_spatial_file(p, MASKS_DIR)) for p in train], progress=False)
        content["pooled_landmarks"] = np.asarray(pooled).tolist()
    written = write_json_atomic(path, content, indent=1)
    logger.info("Saved the training preprocessing (%d site(s) with landmarks) to %s", len(content["landmarks"]), path)
    return written


def load_preprocessing(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`save_preprocessing`.

    Raises:
        HarmonizeError: the file is missing or is not such a file, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise HarmonizeError(
            f"{path} does not exist. Bundle inference replays the training preprocessing that train.json saves "
            f"beside models/model.pt; train the bundle first, or put the {PREPROCESSING_FILENAME} that came with "
            "the weights there.")
    content = read_json_object(path)
    if content is None or content.get("format") != FORMAT:
        raise HarmonizeError(
            f"{path} is not a bundle preprocessing file (written by harmonize.bundle.save_preprocessing).")
    return content


class BundlePreprocessd(MapTransform, InvertibleTransform):
    """Preprocess a loaded raw scan as the bundle's training scans were, invertibly.

    The input is a channel-first MetaTensor from ``LoadImaged`` (with its affine). The scan is reoriented,
    resampled, cropped/padded and standardised with the landmarks of its site (``site_key`` in the sample);
    a site without landmarks (never seen in training, or not given) uses the pooled landmarks, and
    ``intensity_reference`` in the sample says which (``site <name>`` or ``pooled ...``). ``warnings`` holds
    the warnings about the scan ('' if none). ``inverse`` resamples a prediction on the preprocessed grid
    back onto the input's grid (MONAI's ``SpatialResample``; zero outside the crop).

    Args:
        keys: the image key(s).
        preprocessing: the file of :func:`save_preprocessing` (read on first use) or its content.
        site_key: key of the scan's site in the sample (may be absent).
        enabled: preprocess; ``False`` takes scans already preprocessed like the training scans and only
            checks them (spacing and shape must be the training ones).
        mode: interpolation of :meth:`inverse` (``bilinear`` for probabilities; ``Invertd(nearest_interp=True)``
            turns it to ``nearest``).
        allow_missing_keys: don't raise for a missing key.

    Raises:
        ConfigError: ``enabled`` is not a boolean (or its text).
        HarmonizeError: (when called) a 2D or 4D image, a single slice, non-finite values, an intensity range
            that is not a magnitude MR image, or (``enabled`` False) a spacing or shape other than the
            training one; every message names the file.
    """

    def __init__(
        self,
        keys: KeysCollection = _IMAGE,
        preprocessing: str | os.PathLike[str] | Mapping[str, Any] = PREPROCESSING_FILENAME,
        site_key: str = Keys.SITE.value,
        enabled: bool | str = True,
        mode: str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.preprocessing = preprocessing
        self.site_key = site_key
        self.enabled = parse_flag(enabled, "preprocess")
        self.mode = mode
        self._content: dict[str, Any] | None = dict(preprocessing) if isinstance(preprocessing, Mapping) else None

    @property
    def content(self) -> dict[str, Any]:
        """The saved preprocessing (read from the file on first use)."""
        if self._content is None:
            self._content = load_preprocessing(self.preprocessing)  # type: ignore[arg-type]
        return self._content

    @property
    def config(self) -> PreprocessConfig | None:
        """The training's preprocessing settings, or None when training did not record them."""
        config = self.content.get("config")
        return None if config is None else PreprocessConfig(**config)

    # ---------------------------------------------------------------------------------------------- checks
    @staticmethod
    def check_image(image: torch.Tensor, name: str, raw: bool = True) -> None:
        """Refuse a 2D, 4D or single-slice image, non-finite values, and (``raw``) intensities that are not a
        magnitude MR image (many strongly negative values: CT in Hounsfield units, or a scan already
        standardised)."""
        if image.ndim != 4 or image.shape[0] != 1:
            what = (f"a 4D image ({image.shape[0]} volumes)" if image.ndim == 4 else
                    f"a {image.ndim - 1}D image of shape {tuple(image.shape[1:])}")
            raise HarmonizeError(f"{name}: {what}; the model takes one 3D T1-weighted volume per file. Split a 4D "
                                 "series into 3D files, and give 3D scans.")
        if min(image.shape[1:]) < 2:
            raise HarmonizeError(f"{name}: shape {tuple(image.shape[1:])} is a single slice (2D); the model takes "
                                 "3D T1-weighted volumes.")
        data = torch.as_tensor(image).float()
        if not torch.isfinite(data).all():
            raise HarmonizeError(f"{name}: {int((~torch.isfinite(data)).sum())} voxel(s) are NaN or infinite; "
                                 "fix or replace the file.")
        if not raw:
            return
        scale = float(torch.quantile(data.abs().flatten()[:: max(1, data.numel() // 1_000_000)], 0.995))
        negative = float((data < -NEGATIVE_TOLERANCE * scale).float().mean()) if scale > 0 else 0.0
        if negative > NEGATIVE_FRACTION_LIMIT:
            raise HarmonizeError(
                f"{name}: {negative:.0%} of the voxels are strongly negative (intensities {float(data.min()):.4g} "
                f"to {float(data.max()):.4g}). A T1-weighted MR magnitude image is not negative: this looks like "
                "CT (Hounsfield units) or a scan already intensity-standardised. Give raw T1-weighted scans, or run "
                "with --preprocess false for scans preprocessed exactly like the training scans.")

    def _spacing_warnings(self, spacing: np.ndarray, config: PreprocessConfig, name: str) -> list[str]:
        target = np.asarray(config.target_spacing, dtype=float)
        text = " x ".join(f"{s:.3g}" for s in spacing)
        train = " x ".join(f"{s:.3g}" for s in target)
        found = []
        if spacing.max() / spacing.min() > ANISOTROPY_LIMIT:
            found.append(f"{name}: strongly anisotropic voxels of {text} mm, while the model was trained at {train} "
                         "mm; predictions on such scans can be much less accurate (thick slices blur the anatomy "
                         "the model learned). Prefer a near-isotropic acquisition.")
        elif np.any(np.sort(spacing) > COARSER_LIMIT * np.sort(target)):
            found.append(f"{name}: voxels of {text} mm are coarser than the training spacing {train} mm; "
                         "predictions can be less accurate.")
        for message in found:
            logger.warning(message)
        return found

    def _check_preprocessed(self, image: MetaTensor, config: PreprocessConfig | None, name: str) -> None:
        if config is None:
            return
        spacing = voxel_spacing(image.affine)
        target = np.asarray(config.target_spacing, dtype=float)
        shape = tuple(int(s) for s in image.shape[1:])
        if np.any(np.abs(np.sort(spacing) - np.sort(target)) > SPACING_TOLERANCE * np.sort(target)) \
                or shape != tuple(config.target_shape):
            raise HarmonizeError(
                f"{name}: voxels of {' x '.join(f'{s:.3g}' for s in spacing)} mm and shape {shape}, while the model "
                f"was trained on {' x '.join(f'{s:.3g}' for s in target)} mm and {tuple(config.target_shape)}. "
                "With --preprocess false the scans must already be preprocessed like the training scans; "
                "leave preprocess true (the default) to preprocess raw scans.")
        if config.zero_background:
            # z-normalised within the head, background 0: the non-zero voxels have mean 0 and deviation 1
            head = torch.as_tensor(image).float()
            head = head[head != 0]
            mean, std = (float(head.mean()), float(head.std())) if head.numel() > 1 else (0.0, 1.0)
            if abs(mean) > STANDARDISED_MEAN_LIMIT or not 1 / STANDARDISED_STD_FACTOR < std < STANDARDISED_STD_FACTOR:
                raise HarmonizeError(
                    f"{name}: its head's intensities have mean {mean:.4g} and standard deviation {std:.4g}, while the "
                    "model was trained on intensity-standardised scans (mean 0, deviation 1 within the head, "
                    "background 0). With --preprocess false the scans must already be preprocessed like the "
                    "training scans, intensities included; leave preprocess true (the default) to preprocess raw "
                    "scans.")

    # ------------------------------------------------------------------------------------------- transform
    def _landmarks(self, site: Any) -> tuple[np.ndarray | None, str]:
        content = self.content
        landmarks = content.get("landmarks") or {}
        if content["config"] is not None and not PreprocessConfig(**content["config"]).histogram_standardisation:
            return None, "z-normalisation only (no landmarks)"
        name = None if site is None or (isinstance(site, float) and np.isnan(site)) else str(site)
        if name is not None and name in landmarks:
            return np.asarray(landmarks[name]), f"site {name}"
        why = "no site given" if name is None else f"site {name!r} not seen in training"
        return np.asarray(content["pooled_landmarks"]), f"{POOLED} ({why})"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor):
                raise TypeError(f"BundlePreprocessd needs the MetaTensor of LoadImaged under {key!r}, "
                                f"not {type(image).__name__}.")
            name = str(image.meta.get("filename_or_obj", key))
            self.check_image(image, name, raw=self.enabled)
            config = self.config
            if not self.enabled:
                self._check_preprocessed(image, config, name)
                d[Keys.INTENSITY_REFERENCE.value] = "as given (preprocess false)"
                d[Keys.WARNINGS.value] = ""
                continue
            if config is None:
                raise HarmonizeError(
                    f"{name}: the model was trained on scans that `harmonize preprocess` did not make ("
                    f"{self.preprocessing} records no preprocessing), so the bundle cannot preprocess raw scans "
                    "the same way. Preprocess them as the training scans were, and run with --preprocess false.")
            affine = np.asarray(image.affine.cpu(), dtype=np.float64)
            warnings = self._spacing_warnings(voxel_spacing(affine), config, name)
            landmarks, reference = self._landmarks(d.get(self.site_key))
            if reference.startswith(POOLED):
                logger.warning("%s: standardised with the pooled landmarks: %s.", name, reference.split("(")[1][:-1])
            subject = tio.Subject({_IMAGE: tio.ScalarImage(tensor=image.as_tensor().cpu().float(), affine=affine)})
            subject = spatial_steps(subject, config, name)
            result = intensity_steps(subject, landmarks, config, name)
            meta = deepcopy(image.meta)
            meta["affine"] = torch.as_tensor(result.affine, dtype=torch.float64)
            out = MetaTensor(result.data.float(), meta=meta, applied_operations=deepcopy(image.applied_operations))
            self.push_transform(out, orig_size=tuple(int(s) for s in image.shape[1:]),
                                extra_info={"affine": torch.as_tensor(affine), "mode": self.mode})
            d[key] = out
            d[Keys.INTENSITY_REFERENCE.value] = reference
            d[Keys.WARNINGS.value] = " ".join(warnings)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Resample each key's data (e.g. a prediction carrying the image's transforms) onto the input's grid."""
        d = dict(data)
        for key in self.key_iterator(d):
            if not self.enabled:
                continue
            transform = self.pop_transform(d[key])
            extra = transform[TraceKeys.EXTRA_INFO]
            value = d[key]
            if not isinstance(value, MetaTensor):
                value = MetaTensor(torch.as_tensor(value))
            resample = SpatialResample(mode=extra.get("mode", self.mode), padding_mode="zeros")
            with resample.trace_transform(False):
                out = resample(value, dst_affine=torch.as_tensor(extra["affine"], dtype=torch.float64),
                               spatial_size=[int(s) for s in transform[TraceKeys.ORIG_SIZE]])
            d[key] = out
        return d

