"""The per-scan steps of preprocessing: foreground mask, spatial steps 1-4, intensity step 5, and their checks.

:func:`spatial_steps` and :func:`intensity_steps` are the one implementation of the pipeline, shared by
:func:`~harmonize.data.preprocess.preprocess_manifest` and the bundles' inference
(:class:`harmonize.bundle.BundlePreprocessd`). They work on loaded TorchIO subjects and write nothing.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from skimage.filters import threshold_otsu

from harmonize.data.manifest import TISSUE_CLASSES
from harmonize.data.preprocess.config import PreprocessConfig
from harmonize.errors import HarmonizeError, check_option
from harmonize.keys import Keys, MaskMethod
from harmonize.memory import check_memory, resample_bytes

__all__ = [
    "MIN_MASK_VOXELS", "OUTLIER_FACTOR", "ROBUST_PERCENTILE", "check_finite", "check_label_values", "foreground_mask",
    "intensity_steps", "label_tensor", "spatial_steps", "stored_voxels",
]

logger = logging.getLogger(__name__)

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
#: Names of the images in a TorchIO subject (TorchIO checks for exact ``str``, not a ``StrEnum``).
_IMAGE, _LABEL, _MASK = str(Keys.IMAGE), str(Keys.LABEL), str(Keys.MASK)
#: Start of the message of TorchIO's ZNormalization when the masked voxels are constant.
_ZERO_STD_MESSAGE = "Standard deviation is 0"


def foreground_mask(data: torch.Tensor | np.ndarray, method: str = MaskMethod.OTSU) -> np.ndarray:
    """Foreground (head) mask of a 3D image, or of a 1-channel 4D one.

    ``otsu``: voxels above Otsu's threshold of the whole volume (which separates a dark background from
    tissue; intensities are first clipped at their :data:`ROBUST_PERCENTILE` th percentile, so that a few
    extreme voxels cannot raise the threshold above the head), then the largest connected component (drops
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


def label_tensor(data: torch.Tensor) -> torch.Tensor:
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
    check_finite(where, subject[_IMAGE].data, "its resampled image", "check the input's intensities and affine")
    subject[_IMAGE].set_data(_clip_outliers(where, subject[_IMAGE].data, subject[_MASK].data))
    return subject


def intensity_steps(
    subject: tio.Subject, landmarks: np.ndarray | None, config: PreprocessConfig, where: str
) -> tio.ScalarImage:
    """Step 5 on a spatially preprocessed subject (``"image"`` and ``"mask"``): histogram standardisation with
    ``landmarks`` (skipped when None), z-normalisation within the mask, background set to 0 if configured.

    The step runs on one torch thread: the z-normalisation's mean sums in an order that depends on the number of
    threads (for more than a few ten thousand voxels), and on one thread the outputs are the same bytes whatever
    ``OMP_NUM_THREADS`` or ``--jobs`` a run has.

    Returns:
        The standardised image (float32).

    Raises:
        HarmonizeError: the foreground is constant, or a standardised voxel is not finite, naming ``where``.
    """
    steps = [] if landmarks is None else [tio.HistogramStandardization({_IMAGE: landmarks}, masking_method=_MASK)]
    transform = tio.Compose([*steps, tio.ZNormalization(masking_method=_MASK)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subject = transform(subject)
    except RuntimeError as err:
        if _ZERO_STD_MESSAGE not in str(err):
            raise
        raise HarmonizeError(f"{where}: cannot normalise the image: its foreground is constant.") from err
    finally:
        torch.set_num_threads(threads)
    image = subject[_IMAGE]
    data = image.data.float()
    if config.zero_background:
        data = torch.where(subject[_MASK].data.bool(), data, torch.zeros_like(data))
    check_finite(where, data, "its standardised image", "check the site's landmarks and the scan's intensities")
    image.set_data(data.contiguous())
    return image


def stored_voxels(path: str) -> torch.Tensor:
    """The voxels of a float image as stored (TorchIO's reader turns NaN into 0 without a word); empty for integers."""
    image = nib.load(path)
    if not np.issubdtype(image.get_data_dtype(), np.floating):
        return torch.zeros(0)
    return torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))


def check_finite(where: str, data: torch.Tensor, what: str, fix: str) -> None:
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


def check_label_values(where: str, label: str, data: torch.Tensor) -> None:
    """Fail the scan (``where``) by name when its label map (file ``label``) holds values outside the tissue classes."""
    values = torch.unique(data)
    bad = [float(v) for v in values if not (float(v).is_integer() and 0 <= float(v) < TISSUE_CLASSES)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5])
        raise HarmonizeError(
            f"{where}: its label map {label} holds values outside the tissue classes 0-"
            f"{TISSUE_CLASSES - 1} ({shown}); relabel it (0 background, 1 CSF, 2 grey matter, 3 white matter).")
