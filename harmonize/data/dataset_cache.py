"""Where a dataset keeps its scans: read from disk per item, cached in memory, or cached on disk, within a limit.

:func:`cached_dataset` builds the MONAI dataset for a :class:`~harmonize.keys.DatasetCache` choice:

- ``none``: :class:`monai.data.Dataset`; every item is read when the loader asks for it, so memory does not grow
  with the number of scans (use loader workers, ``num_workers``, to read ahead).
- ``memory``: :class:`monai.data.CacheDataset`; the first scans that fit in ``limit_gb`` are loaded once and kept
  in memory, the others stream.
- ``disk``: :class:`BoundedPersistentDataset`, MONAI's :class:`monai.data.PersistentDataset` with a size limit;
  the first scans that fit in ``limit_gb`` are loaded once and saved into ``cache_dir`` (one ``.pt`` file each,
  written to a temporary file and renamed), then read from there, the others stream. The cache key of an item
  holds its fields and the size and modification time of its image and label files
  (:func:`item_hash`), so a scan preprocessed again is read again, not taken from a stale cache. The files keep
  MONAI's metadata (affine, file name), so they are read back with ``torch.load(weights_only=False)``: keep the
  cache folder where only you write.

The size of one cached item is estimated from the first image's header (float32 image, int64 label).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.data.utils import json_hashing

from harmonize.errors import ConfigError, HarmonizeError, number_problem, option_value, raise_problems
from harmonize.keys import DatasetCache, Keys

__all__ = ["BoundedPersistentDataset", "cached_dataset", "cached_items", "item_bytes", "item_hash"]

logger = logging.getLogger(__name__)

#: Bytes of one voxel of a loaded image (float32) and label (int64).
IMAGE_VOXEL_BYTES, LABEL_VOXEL_BYTES = 4, 8
_GB = 1024**3


def item_hash(item: Mapping[str, Any]) -> bytes:
    """The cache key of a dataset item: its fields, and the size and modification time of its files.

    A file written again (a scan preprocessed with other settings) changes the key, so the disk cache never
    serves an item made from an older file.
    """
    fields: dict[str, Any] = {}
    for key, value in sorted(item.items(), key=lambda kv: str(kv[0])):
        fields[str(key)] = value.tolist() if isinstance(value, torch.Tensor) else value
        if key in (Keys.IMAGE, Keys.LABEL) and isinstance(value, (str, os.PathLike)):
            stat = os.stat(value)
            fields[f"{key}:file"] = [stat.st_size, stat.st_mtime_ns]
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest().encode()


def item_bytes(item: Mapping[str, Any]) -> int:
    """Estimated bytes of one loaded item, from its image header (float32) and label (int64), if any."""
    voxels = int(np.prod(nib.load(str(item[Keys.IMAGE])).shape))
    return voxels * (IMAGE_VOXEL_BYTES + (LABEL_VOXEL_BYTES if Keys.LABEL in item else 0))


def cached_items(n_items: int, bytes_per_item: int, limit_gb: float | None) -> int:
    """How many of ``n_items`` items of ``bytes_per_item`` bytes fit in ``limit_gb`` GiB (all when None)."""
    if limit_gb is None:
        return n_items
    return min(n_items, math.floor(limit_gb * _GB / max(1, bytes_per_item)))


class BoundedPersistentDataset(PersistentDataset):
    """MONAI's :class:`~monai.data.PersistentDataset` that caches only its first ``cache_num`` items on disk.

    The other items are loaded and transformed on every read, as by :class:`~monai.data.Dataset`; so a cache
    folder holds at most ``cache_num`` files, whatever the number of scans. A cached item has the types of a
    streamed one (the image a ``MetaTensor``, the fields given as tensors plain tensors), so both batch together.

    Args:
        data: the items.
        transform: the transforms (cached up to the first random one).
        cache_dir: the cache folder (created if needed).
        cache_num: how many of the first items are cached.
        **kwargs: further arguments of :class:`~monai.data.PersistentDataset`.
    """

    def __init__(self, data: Sequence, transform: Callable, cache_dir: str | os.PathLike[str], cache_num: int,
                 **kwargs: Any) -> None:
        super().__init__(data=data, transform=transform, cache_dir=cache_dir, **kwargs)
        self.cache_num = int(cache_num)

    def _transform(self, index: int) -> Any:
        if index >= self.cache_num:
            return Dataset._transform(self, index)
        item = super()._transform(index)
        given = self.data[index]
        # saved with MONAI's metadata, every tensor comes back as a MetaTensor: a field given as a plain tensor is
        # made one again, as when streamed, so that cached and streamed items batch together
        if isinstance(item, dict) and isinstance(given, Mapping):
            for key, value in given.items():
                if type(value) is torch.Tensor and isinstance(item.get(key), MetaTensor):
                    item[key] = item[key].as_tensor()
        return item


def cached_dataset(items: Sequence[Mapping[str, Any]], transform: Callable, cache: str | bool = DatasetCache.NONE,
                   cache_dir: str | os.PathLike[str] | None = None, limit_gb: float | None = None) -> Dataset:
    """The dataset of ``items`` that keeps them as ``cache`` says (see the module docstring).

    Args:
        items: the per-scan dictionaries (file paths under ``image`` and ``label``).
        transform: the loading (and any further) transforms.
        cache: a :class:`~harmonize.keys.DatasetCache`; True means ``memory`` and False ``none``.
        cache_dir: the cache folder, for ``disk``.
        limit_gb: cache at most this many GiB (the first items that fit); None caches every item.

    Returns:
        A MONAI dataset (``Dataset``, ``CacheDataset`` or :class:`BoundedPersistentDataset`).

    Raises:
        ConfigError: an unknown ``cache``, ``disk`` without ``cache_dir``, or a negative ``limit_gb``.
        HarmonizeError: ``cache_dir`` cannot be created.
    """
    mode, problem = ((DatasetCache.MEMORY, None) if cache is True else (DatasetCache.NONE, None) if cache is False
                     else option_value("cache", cache, DatasetCache))
    limit_problem = number_problem("cache_limit_gb", limit_gb, strict=False, optional=True)
    raise_problems("The dataset cache", [problem, limit_problem and f"{limit_problem}: GiB of cached scans"])
    mode = DatasetCache(mode)
    if mode == DatasetCache.NONE or not items:
        return Dataset(items, transform)
    count = cached_items(len(items), item_bytes(items[0]), limit_gb)
    logger.info("Caching %d of %d scans (%s%s)", count, len(items), mode,
                "" if limit_gb is None else f", limit {limit_gb:g} GiB")
    if mode == DatasetCache.MEMORY:
        return CacheDataset(items, transform, cache_num=count, num_workers=0, progress=False)
    if cache_dir is None:
        raise ConfigError("Argument 'cache' is 'disk' but no 'cache_dir' was given: name the folder where the scans "
                          "are cached (e.g. --cache-dir /scratch/me/cache), or choose cache 'memory' or 'none'.")
    try:
        Path(cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HarmonizeError(f"Cannot create the dataset cache folder {cache_dir}: {err.strerror or err}. Choose a "
                             "cache_dir (--cache-dir) you can write to.") from err
    return BoundedPersistentDataset(items, transform, Path(cache_dir).expanduser(), count, hash_func=item_hash,
                                    hash_transform=json_hashing, track_meta=True, weights_only=False)
