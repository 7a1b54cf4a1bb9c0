"""The scans a bundle's ``inference.json`` predicts: a list of image files, a folder, or a manifest's rows."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.data import Dataset
from monai.transforms import Compose, LoadImaged

from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, HarmonizeError, check_option
from harmonize.keys import Keys, Split

__all__ = ["ALL_SPLITS", "NIFTI_SUFFIXES", "inference_dataset", "subject_id_of"]

logger = logging.getLogger(__name__)

#: File name endings of the images found in a folder (and removed to name a scan).
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: ``split`` value that keeps every manifest row (``monai.bundle run`` drops overrides whose value is ``None``).
ALL_SPLITS = "all"


def subject_id_of(path: str | os.PathLike[str]) -> str:
    """A scan's id from its file name: the name without ``.nii.gz``/``.nii`` (``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _image_items(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], site: str | None = None
                 ) -> list[dict[str, str]]:
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    files: list[Path] = []
    problems = []
    for entry in paths:
        path = Path(entry).expanduser().resolve()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
            if not found:
                problems.append(f"{path}: a folder without .nii or .nii.gz files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    if problems:
        raise HarmonizeError(f"{len(problems)} of the images given to inference cannot be read.", problems=problems)
    ids: dict[str, Path] = {}
    for path in dict.fromkeys(files):  # a file given twice (e.g. itself and its folder) is predicted once
        sid = subject_id_of(path)
        if sid in ids:
            problems.append(f"{path} and {ids[sid]} would both be written as '{sid}'")
        ids[sid] = path
    if problems:
        raise ConfigError("Images with the same file name would overwrite each other's predictions; rename them "
                          "or use a manifest (its subject_id column names the outputs).", problems=problems)
    extra = {} if site is None else {Keys.SITE.value: str(site)}
    return [{Keys.SUBJECT_ID.value: sid, Keys.IMAGE.value: str(path), **extra} for sid, path in ids.items()]


def _manifest_items(manifest: str | os.PathLike[str], split: str | None) -> list[dict[str, str]]:
    frame = read_manifest(manifest)
    if split is not None and split != ALL_SPLITS:
        split = check_option("split", split, Split)
        frame = frame[frame[Keys.SPLIT] == split]
        if frame.empty:
            raise HarmonizeError(f"No row of {manifest} has split '{split}'; give another --split, or 'all' for every row.")
    missing = [f"row {row}: {path}" for row, path in frame[Keys.IMAGE].items() if not os.path.isfile(path)]
    if missing:
        raise HarmonizeError(f"{len(missing)} image(s) listed in {manifest} do not exist.", problems=missing)
    sites = frame[Keys.SITE] if Keys.SITE in frame else [None] * len(frame)
    return [{Keys.SUBJECT_ID.value: str(sid), Keys.IMAGE.value: str(path),
             **({} if site is None or pd.isna(site) else {Keys.SITE.value: str(site)})}
            for sid, path, site in zip(frame[Keys.SUBJECT_ID], frame[Keys.IMAGE], sites)]


def inference_dataset(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    split: str | None = None,
    transform: Callable[[Mapping[Hashable, Any]], Any] | None = None,
    site: str | None = None,
    load: bool = True,
) -> Dataset:
    """A MONAI dataset of ``{"subject_id", "image"[, "site"]}`` items to predict, loaded channel-first as float32.

    Args:
        images: image files and/or folders of ``.nii``/``.nii.gz`` files; each scan is named after its file.
        manifest: a manifest CSV (used when ``images`` is not given); scans are named by ``subject_id`` and
            carry the manifest's ``site`` (if it has the column).
        split: only the manifest rows of this split (``None`` or ``"all"``: every row).
        transform: a MONAI dictionary transform applied after loading (e.g. intensity normalisation).
        site: the site (scanner) of every image given by ``images`` (None: not known).
        load: prepend ``LoadImaged``; ``False`` when ``transform`` loads the images itself (a bundle's
            ``preprocessing``, which ``Invertd`` replays in reverse).

    Raises:
        ConfigError: neither or both of ``images`` and ``manifest``, or two images with the same name.
        HarmonizeError: files that do not exist (every one listed), or no row in ``split``.
    """
    if (images is None) == (manifest is None):
        raise ConfigError("Inference needs either images (a list of files or a folder) or a manifest, not "
                          f"{'both' if images is not None else 'neither'}.")
    items = _image_items(images, site) if images is not None else _manifest_items(manifest, split)
    steps: list[Callable] = []
    if load:
        steps.append(LoadImaged(keys=str(Keys.IMAGE), ensure_channel_first=True, dtype=np.float32))
    if transform is not None:
        steps.append(transform)
    logger.info("Inference on %d scan(s)", len(items))
    return Dataset(items, Compose(steps))
