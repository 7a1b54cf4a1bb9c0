"""MONAI datasets and data loaders made from a manifest.

:func:`make_dataset` turns the rows of a manifest (optionally one split) into a :class:`monai.data.Dataset`
(streamed, or cached: :mod:`harmonize.data.dataset_cache`) whose items are dictionaries keyed by ``Keys``:

=============== ================================ =====================================================
key             value                            notes
=============== ================================ =====================================================
``image``       float32 ``MetaTensor`` (1, X, Y, Z) read with MONAI ``LoadImaged(ensure_channel_first)``
``label``       int64 ``MetaTensor`` (1, X, Y, Z)   only when some row of the data has a label; a row
                                                 without one gets zeros and ``has_label`` False
``has_label``   bool tensor ()                   the row has a label map
``site``        int64 tensor ()                  index from the :class:`~harmonize.data.site_index.SiteIndex`
``age``         float32 tensor ()                NaN when missing
``sex``         int64 tensor ()                  0 ``F``, 1 ``M``, -1 missing
*confound*      float32 tensor () / int64 ()     continuous value (NaN missing) / categorical index (-1)
``subject_id``  str
=============== ================================ =====================================================

The site index (and the index of each categorical confound) is built once from the manifest's *training*
rows and saved as ``site_index.json`` (``<confound>_index.json``) in the manifest's folder, or at the path
given; later calls, e.g. on validation, test or new data, reuse it, so an index means the same scanner
everywhere. A site the index does not know is an error, unless ``allow_unknown_sites`` (a held-out site at
evaluation), which gives it index -1. A categorical confound value its index does not know gets -1 (like a
missing one), with a logged warning. The returned dataset carries the site index as ``dataset.site_index``.

:func:`make_dataloader` wraps a dataset in a :class:`monai.data.DataLoader`. With ``balance_sites=True`` it
uses :class:`SiteBalancedBatchSampler`: every batch holds the same number of scans from every site, which is
what the original unlearning code obtains by zipping one loader per site (Dinsdale et al. 2021); with
``distributed=True`` each ``torch.distributed`` process gets its own share of every such batch. Both of its
samplers (:class:`SiteBalancedBatchSampler`, :class:`EpochShuffleSampler`) draw epoch ``e``'s order from
``(seed, e)`` alone and have ``set_epoch(epoch, start_batch)``, which
:class:`~harmonize.handlers.TrainingCheckpoint` calls so that a resumed training sees the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, LoadImaged, MapTransform

from harmonize import defaults
from harmonize.data.dataset_cache import cached_dataset
from harmonize.data.manifest import (
    CONFOUNDS_ATTR,
    MANIFEST_ATTR,
    parse_confounds,
    read_manifest,
)
from harmonize.data.samplers import (
    EpochShuffleSampler,
    SiteBalancedBatchSampler,
    epoch_seed,
)
from harmonize.data.site_index import (
    SITE_INDEX_FILENAME,
    CategoryIndex,
    UnknownCategoryError,
    index_filename,
)
from harmonize.distributed import rank, world_size
from harmonize.errors import ConfigError, HarmonizeError, check_option, integer_problem
from harmonize.keys import ConfoundKind, Keys, Sex, Split

__all__ = [
    "SEX_INDEX",
    "EpochShuffleSampler",
    "FillMissingLabeld",
    "SiteBalancedBatchSampler",
    "epoch_seed",
    "image_grid",
    "make_dataloader",
    "make_dataset",
]

logger = logging.getLogger(__name__)

#: Fixed index of the ``sex`` column: F -> 0, M -> 1 (the order of :class:`~harmonize.keys.Sex`).
SEX_INDEX = CategoryIndex([s.value for s in Sex], name=str(Keys.SEX))
#: Index given to a missing categorical value (and, when allowed, to an unknown site).
MISSING_INDEX = -1
#: Columns every item carries anyway; naming them as confounds adds nothing.
_BUILT_IN = {str(Keys.SITE), str(Keys.AGE), str(Keys.SEX)}


class FillMissingLabeld(MapTransform):
    """Give a sample without a label an all-zero label shaped like its image (so that batches collate).

    Args:
        label_key: key of the label.
        image_key: key of the image whose shape (and metadata) the zeros take.
    """

    def __init__(self, label_key: str = str(Keys.LABEL), image_key: str = str(Keys.IMAGE)) -> None:
        super().__init__(keys=[label_key], allow_missing_keys=True)
        self.label_key = label_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get(self.label_key) is None:
            d[self.label_key] = torch.zeros_like(d[self.image_key], dtype=torch.int64)
        return d


def _read(
    manifest: str | os.PathLike[str] | pd.DataFrame, confounds: Mapping[str, ConfoundKind | None]
) -> tuple[pd.DataFrame, Path | None]:
    if isinstance(manifest, pd.DataFrame):
        source = manifest.attrs.get(MANIFEST_ATTR)
        return manifest, None if source is None else Path(source)
    path = Path(manifest).expanduser().absolute()
    return read_manifest(path, confounds={n: k for n, k in confounds.items() if n not in _BUILT_IN}), path


def _index_path(site_index: str | os.PathLike[str] | None, manifest: Path | None) -> Path:
    if site_index is not None:
        return Path(site_index).expanduser()
    if manifest is None:
        raise HarmonizeError(
            "The manifest was given as a DataFrame without its file (frame.attrs['manifest']), so there is no "
            f"folder to keep {SITE_INDEX_FILENAME} in: pass site_index=<path> or a SiteIndex."
        )
    return manifest.parent / SITE_INDEX_FILENAME


def _confound_kinds(frame: pd.DataFrame, confounds: Mapping[str, ConfoundKind | None]) -> dict[str, ConfoundKind]:
    """Kind of each extra confound: as declared, else as read_manifest parsed it, else numeric = continuous."""
    parsed = frame.attrs.get(CONFOUNDS_ATTR, {})
    missing = [c for c in confounds if c not in frame.columns]
    if missing:
        raise HarmonizeError(f"Confound column(s) {missing} are not in the manifest; columns: {list(frame.columns)}.")
    kinds: dict[str, ConfoundKind] = {}
    for name, kind in confounds.items():
        if name in _BUILT_IN:
            continue
        kind = kind or parsed.get(name)
        if kind is None:
            numeric = pd.api.types.is_numeric_dtype(frame[name])
            kind = ConfoundKind.CONTINUOUS if numeric else ConfoundKind.CATEGORICAL
        kinds[name] = ConfoundKind(kind)
    return kinds


def _check_files(frame: pd.DataFrame, source: Path | None) -> None:
    problems = []
    for column in (Keys.IMAGE, Keys.LABEL):
        if column not in frame:
            continue
        for row, path in frame[column].items():
            if path is not None and not pd.isna(path) and not os.path.isfile(path):
                problems.append(f"row {row}, column '{column}': file not found: {path}")
    if problems:
        raise HarmonizeError(f"{len(problems)} file(s) listed in {source or 'the manifest'} do not exist.",
                             problems=problems)


#: Relative difference of voxel sizes still taken as the same spacing (:func:`image_grid`).
SPACING_TOLERANCE = 1e-3
#: Rows listed per shape in :func:`image_grid`'s error.
_ROWS_LISTED = 5


def image_grid(
    frame: pd.DataFrame, source: str | os.PathLike[str] | None = None
) -> tuple[tuple[int, ...], tuple[float, ...] | None] | None:
    """The shape and voxel spacing shared by the images of ``frame``, read from their headers.

    This is the one check that a manifest's scans can be batched (a batch stacks them): :func:`make_dataset`
    runs it when no transform resizes the scans, and the model workflows run it when they record or check the
    scans' grid (:func:`~harmonize.workflows.input_check.describe_inputs`). An unreadable image is skipped (it is
    reported by name when it is loaded).

    Args:
        frame: manifest rows (an ``image`` column; relative paths start from ``source``'s folder).
        source: the manifest file, named in the message (default: the frame's own, if it records it).

    Returns:
        ``(shape, spacing)``; the spacing is ``None`` when the images share their shape but not their voxel
        size. ``None`` when no header could be read.

    Raises:
        HarmonizeError: the images have different shapes: every shape with its rows and one file, and the
            ``harmonize preprocess`` command that brings every scan to one grid.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    source = source if source is not None else frame.attrs.get(MANIFEST_ATTR)
    folder = None if source is None else Path(source).parent
    rows_by_shape: dict[tuple[int, ...], list[tuple[Any, Path]]] = {}
    spacing: tuple[float, ...] | None = None
    same_spacing = True
    for row, value in frame[Keys.IMAGE].items():
        path = Path(str(value)).expanduser()
        path = path if path.is_absolute() or folder is None else folder / path
        try:
            header = nib.load(str(path)).header
            shape = tuple(int(d) for d in header.get_data_shape()[:3])
            zooms = tuple(float(z) for z in header.get_zooms()[:3])
        except (OSError, ValueError, TypeError, EOFError, ImageFileError):
            continue
        rows_by_shape.setdefault(shape, []).append((row, path))
        if spacing is None:
            spacing = zooms
        else:
            same_spacing &= all(math.isclose(a, b, rel_tol=SPACING_TOLERANCE) for a, b in zip(zooms, spacing))
    if len(rows_by_shape) > 1:
        name = source or "the manifest"
        groups = sorted(rows_by_shape.items(), key=lambda item: -len(item[1]))
        raise HarmonizeError(
            f"The scans of {name} have {len(groups)} different shapes, and a batch needs one. Preprocess the "
            f"manifest first: 'harmonize preprocess {source or 'MANIFEST'} --out DIR' resamples and crops every scan "
            "to one grid (then use DIR/manifest.csv), or give a transform that does.",
            problems=[f"shape {shape}: {len(rows)} scan(s), rows {', '.join(str(r) for r, _ in rows[:_ROWS_LISTED])}"
                      + (" …" if len(rows) > _ROWS_LISTED else "") + f" (e.g. {rows[0][1]})"
                      for shape, rows in groups])
    if not rows_by_shape:
        return None
    return next(iter(rows_by_shape)), spacing if same_spacing else None


def make_dataset(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    split: str | None = None,
    site_index: CategoryIndex | str | os.PathLike[str] | None = None,
    confounds: Sequence[str] = (),
    transform: Callable[[Mapping[Hashable, Any]], Any] | None = None,
    cache: bool | str = False,
    *,
    allow_unknown_sites: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit_gb: float | None = None,
) -> Dataset:
    """Build a MONAI dataset of a manifest's scans (see the module docstring for the items).

    Args:
        manifest: a manifest CSV, or a frame from :func:`~harmonize.data.manifest.read_manifest`.
        split: keep only the rows of this split (``train``/``val``/``test``); ``None`` keeps every row.
        site_index: the site index, or the path of its JSON file (loaded if it exists, else built from the
            manifest's training rows and saved there); ``None`` means ``site_index.json`` in the manifest's
            folder. Categorical confounds keep their index beside it (``<name>_index.json``).
        confounds: extra manifest columns to put in each item, as names or ``name:kind`` (kind
            ``categorical`` or ``continuous``; see :func:`~harmonize.data.manifest.read_manifest`); ``site``,
            ``age`` and ``sex`` are always there.
        transform: a MONAI dictionary transform applied after loading (e.g. augmentation).
        cache: where scans are kept between epochs (:mod:`harmonize.data.dataset_cache`): ``none`` (False) reads
            every item from disk, ``memory`` (True) a ``CacheDataset``, ``disk`` a ``PersistentDataset`` in
            ``cache_dir``; ``cache_limit_gb`` caps what is cached (the rest streams).
        allow_unknown_sites: give a site that the index does not know index -1 instead of raising (to
            evaluate a held-out, unseen site).

    Returns:
        The dataset; ``dataset.data`` is the list of per-scan dictionaries before loading and
        ``dataset.site_index`` the :class:`~harmonize.data.site_index.SiteIndex` they were encoded with.

    Raises:
        ManifestError: the manifest cannot be read.
        HarmonizeError: no row in the split, missing files, an unknown site (naming it, its row and the
            known sites), an unknown confound column, or (without a ``transform``) scans of different shapes.
    """
    declared = parse_confounds(confounds)
    frame, source = _read(manifest, declared)
    if split is not None:
        split = check_option("split", split, Split)
        rows = frame[frame[Keys.SPLIT] == split]
        if rows.empty:
            raise HarmonizeError(f"No row of {source or 'the manifest'} has split {split!r}; splits present: "
                                 f"{sorted(frame[Keys.SPLIT].dropna().unique())}.")
    else:
        rows = frame
    _check_files(rows, source)
    if transform is None:
        image_grid(rows, source)

    if isinstance(site_index, CategoryIndex):
        sites = site_index
        index_folder = None if source is None else source.parent
    else:
        path = _index_path(site_index, source)
        sites = CategoryIndex.load_or_build(path, frame, column=str(Keys.SITE), source=source)
        index_folder = path.parent
    row_numbers = list(rows.index)
    try:
        site_ids = sites.encode(list(rows[Keys.SITE]), rows=row_numbers,
                                unknown=MISSING_INDEX if allow_unknown_sites else None)
    except UnknownCategoryError as err:
        raise UnknownCategoryError(
            f"{err.message} To evaluate a held-out site, pass allow_unknown_sites=True (its scans get site "
            f"index {MISSING_INDEX}).", problems=err.problems) from None
    sex_ids = SEX_INDEX.encode(list(rows[Keys.SEX]) if Keys.SEX in rows else [None] * len(rows),
                               rows=row_numbers, missing=MISSING_INDEX)
    ages = (rows[Keys.AGE].astype(float).to_numpy() if Keys.AGE in rows else np.full(len(rows), np.nan))

    extra: dict[str, torch.Tensor] = {}
    for name, kind in _confound_kinds(frame, declared).items():
        if kind == ConfoundKind.CONTINUOUS:
            values = pd.to_numeric(rows[name], errors="coerce").astype(float).to_numpy()
            extra[name] = torch.tensor(values, dtype=torch.float32)
            continue
        if index_folder is None:
            raise HarmonizeError(f"No folder to keep the index of confound {name!r} in: give site_index as a path.")
        index = CategoryIndex.load_or_build(index_folder / index_filename(name), frame, column=name, source=source)
        extra[name] = torch.as_tensor(index.encode(list(rows[name]), rows=row_numbers, missing=MISSING_INDEX,
                                                   unknown=MISSING_INDEX))

    has_labels = Keys.LABEL in rows and rows[Keys.LABEL].notna().any()
    items = []
    for i, (sid, image) in enumerate(zip(rows[Keys.SUBJECT_ID], rows[Keys.IMAGE])):
        label = rows[Keys.LABEL].iloc[i] if has_labels else None
        label = None if label is None or pd.isna(label) else str(label)
        item: dict[str, Any] = {
            Keys.SUBJECT_ID.value: str(sid),
            Keys.IMAGE.value: str(image),
            Keys.SITE.value: torch.tensor(site_ids[i], dtype=torch.int64),
            Keys.AGE.value: torch.tensor(ages[i], dtype=torch.float32),
            Keys.SEX.value: torch.tensor(sex_ids[i], dtype=torch.int64),
            Keys.HAS_LABEL.value: torch.tensor(label is not None),
        }
        if label is not None:
            item[Keys.LABEL.value] = label
        item.update({name: values[i] for name, values in extra.items()})
        items.append(item)

    steps: list[Callable] = [LoadImaged(keys=str(Keys.IMAGE), ensure_channel_first=True, dtype=np.float32)]
    if has_labels:
        steps += [
            LoadImaged(keys=str(Keys.LABEL), ensure_channel_first=True, dtype=np.int64, allow_missing_keys=True),
            FillMissingLabeld(),
        ]
    if transform is not None:
        steps.append(transform)
    pipeline = Compose(steps)
    logger.info("Dataset of %d scans (%s) from %s, %d site(s)", len(items), split or "all splits",
                source or "a frame", len(sites))
    dataset = cached_dataset(items, pipeline, cache, cache_dir, cache_limit_gb)
    dataset.site_index = sites  # the index the items were encoded with, for whoever trains on them
    return dataset


def make_dataloader(
    manifest: str | os.PathLike[str] | pd.DataFrame | Dataset,
    split: str | None = None,
    batch_size: int = defaults.BATCH_SIZE,
    shuffle: bool | None = None,
    balance_sites: bool = False,
    num_workers: int = 0,
    seed: int | None = None,
    drop_last: bool = False,
    distributed: bool = False,
    **dataset_kwargs: Any,
) -> DataLoader:
    """Build a MONAI data loader over a manifest (or over a dataset from :func:`make_dataset`).

    Args:
        manifest: a manifest CSV or frame (passed to :func:`make_dataset` with ``split`` and
            ``dataset_kwargs``), or a dataset made by :func:`make_dataset`.
        split: see :func:`make_dataset` (ignored for a dataset).
        batch_size: scans per batch.
        shuffle: reshuffle every epoch; default True for the ``train`` split, else False.
        balance_sites: every batch holds ``batch_size / n_sites`` scans of each site
            (:class:`SiteBalancedBatchSampler`); ``batch_size`` must be a multiple of the number of sites.
        num_workers: loader worker processes.
        seed: seed of the shuffling; epoch ``e``'s order is a pure function of ``(seed, e)`` (the samplers'
            ``set_epoch``), so a resumed run draws the same batches; ``None`` draws a seed from torch.
        drop_last: drop the last, smaller batch (not used with ``balance_sites``, whose batches are full).
        distributed: under ``torch.distributed``, give this process its own share of every site-balanced batch
            (``balance_sites``; ``batch_size`` is then per process): see :class:`SiteBalancedBatchSampler`'s
            ``num_replicas``. Without ``seed``, rank 0's drawn seed is used by every process.
        **dataset_kwargs: ``site_index``, ``confounds``, ``transform``, ``cache``, ``cache_dir``, ``cache_limit_gb``,
            ``allow_unknown_sites``.

    Returns:
        The loader; a batch is a dictionary of stacked tensors (``subject_id`` a list of str).

    Raises:
        ConfigError: a non-positive batch size, ``balance_sites`` with a batch size that is not a
            multiple of the number of sites, or ``distributed`` without ``balance_sites``.
    """
    if problem := integer_problem("batch_size", batch_size):
        raise ConfigError("Invalid data loader argument.", problems=[problem])
    if isinstance(manifest, Dataset):
        if dataset_kwargs:
            raise ConfigError(f"Arguments {sorted(dataset_kwargs)} apply when building a dataset, not to a dataset.")
        dataset = manifest
    else:
        dataset = make_dataset(manifest, split=split, **dataset_kwargs)
    if distributed and not balance_sites:
        raise ConfigError("Argument 'distributed' shards site-balanced batches: pass balance_sites=True, or give "
                          "the loader a monai.data.DistributedSampler for batches that are not site-balanced.")
    if balance_sites:
        sites = [int(item[Keys.SITE.value]) for item in dataset.data]
        shards = {"num_replicas": world_size(), "rank": rank()} if distributed else {}
        sampler = SiteBalancedBatchSampler(sites, batch_size, seed=seed, shuffle=shuffle is not False, **shards)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)
    if shuffle is None:
        shuffle = split == Split.TRAIN
    sampler = EpochShuffleSampler(len(dataset), seed=seed, batch_size=batch_size) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last)
