"""The two stages of preprocessing for one scan, each cached: spatial (steps 1-4) and intensity (step 5).

:func:`cached_spatial` and :func:`cached_intensity` take a :class:`~harmonize.data.preprocess.layout.Scan` and
return an :class:`Outcome`, never raising for a problem of the scan itself (it is reported in the outcome, so
that one bad scan does not stop the others). They are module-level functions with picklable arguments, so a
process pool (:mod:`harmonize.data.preprocess.pool`) runs them as they run here.

Cache: a scan's record (``cache/<id>.json``) holds a hash of the input image and label *content* and the spatial
settings (``spatial_key``), and for the final image the intensity settings and the site's landmarks
(``final_key``), plus the hash of each output file. A stage is skipped only when its key and every output hash
match. Every file is written to a temporary file and renamed (:func:`harmonize.io.atomic_write`), and a record is
written only after its files, so a file without a matching record is never trusted.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torchio as tio
from nibabel.filebasedimages import ImageFileError

from harmonize.data.manifest import AFFINE_ATOL, header_problems
from harmonize.data.preprocess.config import PreprocessConfig
from harmonize.data.preprocess.layout import (
    CACHE_DIR,
    JSON_FORMAT,
    PIPELINE_VERSION,
    Scan,
    content_key,
    file_hash,
    files_ok,
    outputs,
)
from harmonize.data.preprocess.steps import (
    check_finite,
    check_label_values,
    intensity_steps,
    label_tensor,
    spatial_steps,
    stored_voxels,
)
from harmonize.errors import HarmonizeError
from harmonize.io import (
    OutputWriteError,
    atomic_write,
    read_json_object,
    write_json_atomic,
)
from harmonize.keys import Keys

__all__ = ["Outcome", "cached_intensity", "cached_spatial", "intensity_stage", "save_image", "spatial_stage"]

#: Names of the images in a TorchIO subject (TorchIO checks for exact ``str``, not a ``StrEnum``).
_IMAGE, _LABEL, _MASK = str(Keys.IMAGE), str(Keys.LABEL), str(Keys.MASK)


class Outcome(NamedTuple):
    """What one stage did to one scan.

    Attributes:
        record: the scan's cache record after the stage.
        spatial_key: the cache key of its spatial outputs.
        computed: the stage (re)computed the scan's outputs (False: reused from the cache).
        problem: why the scan failed (a :class:`~harmonize.errors.HarmonizeError`'s message), or None.
        write_error: ``(file, errno, strerror)`` of an output that could not be written (a full disk): the run
            stops, since every other scan would fail the same way.
    """

    record: dict[str, Any]
    spatial_key: str
    computed: bool = False
    problem: str | None = None
    write_error: tuple[str, int | None, str | None] | None = None

    def raise_write_error(self) -> None:
        """Raise the :class:`~harmonize.io.OutputWriteError` this outcome reports, if any."""
        if self.write_error is not None:
            path, number, reason = self.write_error
            raise OutputWriteError(path, OSError(number, reason))


def _failed(scan: Scan, err: HarmonizeError) -> Outcome:
    if isinstance(err, OutputWriteError):
        return Outcome(scan.record, scan.spatial_key, write_error=(err.filename, err.errno, err.strerror))
    return Outcome(scan.record, scan.spatial_key, problem=str(err))


def cached_spatial(scan: Scan, config: PreprocessConfig, out_dir: Path, overwrite: bool) -> Outcome:
    """Steps 1-4 of one scan, unless its cache record shows they were done from the same input and settings.

    Args:
        scan: the scan.
        config: the pipeline settings.
        out_dir: the output folder.
        overwrite: recompute even when the cache matches.

    Returns:
        The scan's record and spatial key, whether it was computed, or its problem.
    """
    try:
        record_path = out_dir / CACHE_DIR / f"{scan.name}.json"
        try:
            hashes = [None if p is None else file_hash(p) for p in (scan.image, scan.label)]
        except OSError as err:
            raise HarmonizeError(f"{scan.where()}: cannot read {err.filename}: {err.strerror}") from err
        spatial_key = content_key({"version": PIPELINE_VERSION, "image": hashes[0], "label": hashes[1],
                                   "settings": config.spatial_settings()})
        record = {} if overwrite else (read_json_object(record_path) or {})
        if record.get("spatial_key") == spatial_key and files_ok(out_dir, record.get("spatial_files")):
            return Outcome(record, spatial_key)
        files = spatial_stage(scan, config, out_dir)
        record = {"subject_id": scan.subject_id, "spatial_key": spatial_key, "spatial_files": files}
        write_json_atomic(record_path, record, **JSON_FORMAT)  # only after its files exist
        return Outcome(record, spatial_key, computed=True)
    except HarmonizeError as err:
        return _failed(scan, err)


def cached_intensity(scan: Scan, landmarks: Mapping[str, np.ndarray | None], landmarks_hashes: Mapping[str, str | None],
                     config: PreprocessConfig, out_dir: Path) -> Outcome:
    """Step 5 of one spatially preprocessed scan, unless its record shows it was done with the same landmarks.

    Args:
        scan: the scan, with the ``spatial_key`` and ``record`` of its spatial stage.
        landmarks: the landmarks of each site (None: no histogram standardisation).
        landmarks_hashes: their hashes (part of the cache key).
        config: the pipeline settings.
        out_dir: the output folder.

    Returns:
        The scan's record, whether the final image was computed, or its problem.
    """
    try:
        final_key = content_key({"spatial_key": scan.spatial_key, "settings": config.intensity_settings(),
                                 "landmarks": landmarks_hashes[scan.site]})
        if scan.record.get("final_key") == final_key and files_ok(out_dir, scan.record.get("final_files")):
            return Outcome(scan.record, scan.spatial_key)
        files = intensity_stage(scan, landmarks[scan.site], config, out_dir)
        record = {**scan.record, "final_key": final_key, "final_files": files}
        # only after its file exists
        write_json_atomic(out_dir / CACHE_DIR / f"{scan.name}.json", record, **JSON_FORMAT)
        return Outcome(record, scan.spatial_key, computed=True)
    except HarmonizeError as err:
        return _failed(scan, err)


def spatial_stage(scan: Scan, config: PreprocessConfig, out_dir: Path) -> dict[str, Any]:
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
    check_finite(where, stored_voxels(scan.image), "the image", "replace them (e.g. with 0) first")
    if scan.label is not None:
        check_label_values(scan.where(), scan.label, subject[_LABEL].data)
    subject = spatial_steps(subject, config, where)
    if scan.label is not None:
        subject[_LABEL].set_data(label_tensor(subject[_LABEL].data))
    paths = outputs(out_dir, scan)
    files = {}
    for name, key in (("spatial", _IMAGE), ("mask", _MASK), ("label", _LABEL)):
        if key in subject:
            files[name] = {"path": paths[name].relative_to(out_dir).as_posix(),
                           "sha256": save_image(subject[key], paths[name])}
    return files


def intensity_stage(
    scan: Scan, landmarks: np.ndarray | None, config: PreprocessConfig, out_dir: Path
) -> dict[str, Any]:
    """Standardise one spatially preprocessed scan with its site's landmarks (if any); write the final image."""
    paths = outputs(out_dir, scan)
    subject = tio.Subject({_IMAGE: tio.ScalarImage(paths["spatial"]), _MASK: tio.LabelMap(paths["mask"])})
    image = intensity_steps(subject, landmarks, config, f"{scan.where()}: {scan.image}")
    return {"image": {"path": paths["image"].relative_to(out_dir).as_posix(),
                      "sha256": save_image(image, paths["image"])}}


def save_image(image: tio.Image, path: Path) -> str:
    """Write a TorchIO image atomically and return the hash of the written file."""
    atomic_write(path, image.save)
    return file_hash(path)

