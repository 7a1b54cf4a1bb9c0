"""fastMRI HDF5 files as reconstruction samples, so the unlearning experiment runs on real scans too.

A fastMRI file (Zbontar et al. 2018, https://fastmri.org/dataset) holds one volume:

- ``kspace``: ``(slices, H, W)`` complex (single-coil) or ``(slices, coils, H, W)`` (multi-coil);
- ``reconstruction_esc`` (single-coil) or ``reconstruction_rss`` (multi-coil): ``(slices, h, w)`` targets,
  cropped to the central ``h x w`` (320 x 320); absent in the challenge's test files;
- ``mask`` (test files only): the ``W`` sampled lines;
- attributes ``max`` (largest target value of the volume), ``norm``, ``acquisition`` (e.g. ``AXT2``,
  ``CORPD_FBK``), ``patient_id``.

:class:`FastMRISliceDataset` reads one slice at a time with h5py (a multi-coil volume is hundreds of MB) and
returns the same sample dicts as :mod:`harmonize.recon.slices`: the zero-filled input is cropped to the target's
size, as in fastMRI, and input and target are divided by the volume's ``max`` so the target lies in [0, 1] (a
challenge test file, with neither target nor ``max``, by its slice's zero-filled maximum); ``Keys.SCALE`` records
the divisor, so that a reconstruction can be put back on the file's scale.
:func:`read_fastmri_volume` reads a whole file with MONAI's
:class:`~monai.apps.reconstruction.fastmri_reader.FastMRIReader`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.apps.reconstruction.complex_utils import convert_to_tensor_complex
from monai.apps.reconstruction.fastmri_reader import FastMRIReader
from monai.transforms import CenterSpatialCrop
from monai.utils import FastMRIKeys, optional_import
from torch.utils.data import Dataset

from harmonize.errors import HarmonizeError, ManifestError
from harmonize.keys import Keys, Split
from harmonize.recon.kspace import kspace_to_image
from harmonize.recon.slices import KspaceSettings, ReconSplits, manifest_groups
from harmonize.recon.undersample import UndersampleKspaced, apply_kspace_mask

h5py, _ = optional_import("h5py")

__all__ = ["TARGET_DATASETS", "FastMRISliceDataset", "fastmri_splits", "read_fastmri_volume"]

logger = logging.getLogger(__name__)

#: Target datasets, in order of preference (single-coil files have ``esc``, multi-coil ``rss``).
TARGET_DATASETS: tuple[str, ...] = ("reconstruction_esc", FastMRIKeys.RECON)
#: Suffix of fastMRI files.
H5_SUFFIX = ".h5"
#: Smallest scale a slice is divided by (an all-zero slice stays zero).
_MIN_SCALE = 1e-12
#: Dataset of the sampled lines in fastMRI test files.
MASK_DATASET = FastMRIKeys.MASK


def read_fastmri_volume(path: str | os.PathLike) -> dict[str, Any]:
    """Read a whole fastMRI file with MONAI's ``FastMRIReader`` (every dataset and attribute).

    Args:
        path: the ``.h5`` file.

    Returns:
        A dict of the file's datasets (numpy arrays) and attributes, plus ``filename``.

    Raises:
        HarmonizeError: if the file is not ``.h5``, cannot be read, or has no ``kspace``.
    """
    # FastMRIReader.verify_suffix (MONAI 1.6.1) rejects every file (it looks for "..h5"), so check here.
    if not str(path).lower().endswith(H5_SUFFIX):
        raise HarmonizeError(f"{path} is not a fastMRI file: expected an HDF5 file ending in {H5_SUFFIX}.")
    try:
        data = FastMRIReader().read(str(path))
    except OSError as err:
        raise HarmonizeError(f"Cannot read fastMRI file {path}: {err}") from err
    if FastMRIKeys.KSPACE not in data:
        found = sorted(str(k) for k in data)
        raise HarmonizeError(f"fastMRI file {path} has no '{FastMRIKeys.KSPACE}' dataset; found {found}.")
    return data


class _VolumeInfo:
    """What the dataset needs to know about one file, read once from its header."""

    def __init__(self, path: str, index: int, forget: bool, extra: Mapping[str, Any]) -> None:
        self.path = path
        self.index = index
        self.forget = forget
        self.extra = dict(extra)
        try:
            with h5py.File(path, "r") as f:
                if FastMRIKeys.KSPACE not in f:
                    raise HarmonizeError(
                        f"fastMRI file {path} has no '{FastMRIKeys.KSPACE}' dataset; found {sorted(f.keys())}."
                    )
                shape = f[FastMRIKeys.KSPACE].shape
                if len(shape) not in (3, 4):
                    raise HarmonizeError(
                        f"fastMRI file {path}: 'kspace' must be (slices, H, W) or (slices, coils, H, W), got {shape}."
                    )
                self.num_slices = int(shape[0])
                self.target_key = next((k for k in TARGET_DATASETS if k in f), None)
                self.target_shape = tuple(f[self.target_key].shape[-2:]) if self.target_key else None
                self.mask = np.asarray(f[MASK_DATASET][()]) if MASK_DATASET in f else None
                if FastMRIKeys.MAX in f.attrs:
                    self.max = float(f.attrs[FastMRIKeys.MAX])
                elif self.target_key:
                    self.max = float(np.max(f[self.target_key][()]))
                else:
                    self.max = None
                self.acquisition = str(f.attrs.get(FastMRIKeys.ACQUISITION, ""))
        except OSError as err:
            raise HarmonizeError(f"Cannot read fastMRI file {path}: {err}") from err
        self.volume_id = Path(path).name.removesuffix(".h5")


class FastMRISliceDataset(Dataset):
    """Slices of fastMRI files as reconstruction samples (read lazily, one slice per item).

    Args:
        files: ``.h5`` paths.
        forget: one flag for all files, or one per file.
        kspace: undersampling settings (``num_coils`` is ignored: the file's coils are used). A file that carries
            its own ``mask`` (a challenge test file) uses that mask instead.
        crop: ``(h, w)`` of input and target; default: the target's size in the file (320 x 320), or no crop.
        slices: which slices of each volume to use (a Python ``slice``, e.g. ``slice(5, -5)`` to skip the edges).
        seed: seed of the masks; the mask of a slice depends only on ``seed``, the file's position and the slice.
        extra: per-file fields copied into its samples (e.g. ``{Keys.SITE: "A"}``), one mapping per file.

    Raises:
        HarmonizeError: a file cannot be read or lacks ``kspace``.
        ManifestError: ``forget`` or ``extra`` have the wrong length.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        forget: bool | Sequence[bool] = False,
        kspace: KspaceSettings | None = None,
        crop: tuple[int, int] | None = None,
        slices: slice | None = None,
        seed: int = 0,
        extra: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.kspace = kspace or KspaceSettings()
        flags = [bool(forget)] * len(files) if isinstance(forget, (bool, np.bool_)) else [bool(f) for f in forget]
        extras = list(extra) if extra is not None else [{}] * len(files)
        problems = []
        if len(flags) != len(files):
            problems.append(f"'forget' has {len(flags)} flags for {len(files)} files.")
        if len(extras) != len(files):
            problems.append(f"'extra' has {len(extras)} mappings for {len(files)} files.")
        if problems:
            raise ManifestError("FastMRISliceDataset arguments do not match the files.", problems=problems)
        self.crop = crop
        self.seed = seed
        self.volumes = [_VolumeInfo(str(p), i, flags[i], extras[i]) for i, p in enumerate(files)]
        self.index: list[tuple[int, int]] = []
        for v, info in enumerate(self.volumes):
            chosen = range(info.num_slices)[slices] if slices is not None else range(info.num_slices)
            self.index += [(v, s) for s in chosen]
        logger.debug("fastMRI dataset: %d files, %d slices", len(self.volumes), len(self.index))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, s = self.index[i]
        info = self.volumes[v]
        try:
            with h5py.File(info.path, "r") as f:
                raw = f[FastMRIKeys.KSPACE][s]
                target = np.asarray(f[info.target_key][s], dtype=np.float32) if info.target_key else None
        except OSError as err:
            raise HarmonizeError(f"Cannot read slice {s} of fastMRI file {info.path}: {err}") from err
        kspace = convert_to_tensor_complex(np.asarray(raw)).float()
        if kspace.ndim == 3:  # single-coil (H, W, 2) -> (1, H, W, 2)
            kspace = kspace.unsqueeze(0)
        if info.mask is not None:
            masked, mask = apply_kspace_mask(kspace, info.mask)
            sample: dict[str, Any] = {Keys.MASKED_KSPACE: masked, Keys.SAMPLING_MASK: mask}
            sample[Keys.IMAGE] = kspace_to_image(masked)
        else:
            seed = int(np.random.SeedSequence([self.seed, info.index, s]).generate_state(1)[0])
            undersample = UndersampleKspaced(
                mask_type=self.kspace.mask_type,
                acceleration=self.kspace.acceleration,
                center_fraction=self.kspace.center_fraction,
            ).set_random_state(seed=seed)
            sample = undersample({Keys.KSPACE: kspace})
        crop = self.crop or info.target_shape
        image = sample[Keys.IMAGE]
        if crop is not None:
            image = torch.as_tensor(CenterSpatialCrop(crop)(image))
        if info.max and info.max > 0:
            scale = info.max
        else:  # no target and no "max" (a challenge test file): the slice's zero-filled maximum
            scale = max(float(image.max()), _MIN_SCALE)
        sample[Keys.IMAGE] = image.float() / scale
        sample[Keys.SCALE] = torch.tensor(scale, dtype=torch.float32)
        if target is not None:
            target_t = torch.from_numpy(target).unsqueeze(0)
            if crop is not None:
                target_t = torch.as_tensor(CenterSpatialCrop(crop)(target_t))
            sample[Keys.TARGET] = target_t.float() / scale
        if not self.kspace.keep_kspace:
            sample.pop(Keys.KSPACE, None)
            sample.pop(Keys.MASKED_KSPACE, None)
        sample[Keys.FORGET] = torch.tensor(info.forget)
        sample[Keys.VOLUME_ID] = info.volume_id
        sample[Keys.SLICE_INDEX] = s
        sample.update(info.extra)
        return sample


def fastmri_splits(
    manifest: pd.DataFrame | str | os.PathLike,
    forget_site: str | None = None,
    kspace: KspaceSettings | None = None,
    crop: tuple[int, int] | None = None,
    slices: slice | None = None,
    eval_split: Split | str = Split.TEST,
    seed: int = 0,
) -> ReconSplits:
    """The four unlearning sets from a manifest whose ``image`` column lists fastMRI ``.h5`` files.

    Grouping is as in :func:`harmonize.recon.slices.site_forget_splits` (``forget_site`` or the ``forget``
    column; ``train`` rows train, ``eval_split`` rows evaluate). The sets are lazy
    :class:`FastMRISliceDataset` objects.

    Raises:
        ManifestError: a row's image is not ``.h5``, or a set would be empty.
    """
    groups = manifest_groups(manifest, forget_site, eval_split)
    not_h5 = [f"row {idx}: {path}" for rows in groups.values() for idx, path in rows[Keys.IMAGE].items()
              if not str(path).lower().endswith(H5_SUFFIX)]
    if not_h5:
        raise ManifestError("fastMRI manifests list .h5 files in the 'image' column.", problems=not_h5)
    kspace = kspace or KspaceSettings(keep_kspace=False)
    splits = ReconSplits()
    for offset, (name, rows) in enumerate(groups.items()):
        extra = [{Keys.SITE: str(r[Keys.SITE]), Keys.SUBJECT_ID: str(r[Keys.SUBJECT_ID])} for _, r in rows.iterrows()]
        dataset = FastMRISliceDataset(
            list(rows[Keys.IMAGE]),
            forget=name.startswith("forget"),
            kspace=kspace,
            crop=crop,
            slices=slices,
            seed=seed + offset,
            extra=extra,
        )
        setattr(splits, name, dataset)
    return splits
