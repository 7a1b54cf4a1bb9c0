"""Tests of harmonize.data.dataset_cache: streamed, memory-cached and disk-cached datasets give the same items."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset
from monai.data.meta_tensor import MetaTensor

from harmonize.data.dataset import make_dataset
from harmonize.data.dataset_cache import (
    BoundedPersistentDataset,
    cached_items,
    item_bytes,
)
from harmonize.errors import ConfigError

#: The make_cohort scans are 20^3 voxels: 32,000 bytes as float32, plus 64,000 for an int64 label.
ITEM_BYTES = 20**3 * (4 + 8)


def assert_same_items(dataset, reference) -> None:
    assert len(dataset) == len(reference)
    for i in range(len(reference)):
        mine, theirs = dataset[i], reference[i]
        assert sorted(mine) == sorted(theirs)
        assert isinstance(mine["image"], MetaTensor)
        torch.testing.assert_close(mine["image"], theirs["image"], rtol=0, atol=0)
        torch.testing.assert_close(mine["label"], theirs["label"], rtol=0, atol=0)
        np.testing.assert_array_equal(mine["image"].affine, theirs["image"].affine)
        assert (mine["subject_id"], int(mine["site"])) == (theirs["subject_id"], int(theirs["site"]))
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}


@pytest.mark.filterwarnings("error:Corrupt cache file")  # a cached item that cannot be read back is no cache
@pytest.mark.parametrize("cache", ["none", "memory", "disk", True, False])
def test_every_mode_gives_the_items_of_the_streamed_dataset(make_cohort, tmp_path, cache):
    manifest = make_cohort(per_site=2, n_train=2)
    reference = make_dataset(manifest, split="train")
    dataset = make_dataset(manifest, split="train", cache=cache, cache_dir=tmp_path / "cache")
    expected = {"none": Dataset, False: Dataset, "memory": CacheDataset, True: CacheDataset,
                "disk": BoundedPersistentDataset}[cache]
    assert type(dataset) is expected
    assert_same_items(dataset, reference)
    if cache == "disk":  # every item was saved once, and a new dataset reads them back without writing them again
        saved = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.pt")}
        assert len(saved) == 4
        assert_same_items(make_dataset(manifest, split="train", cache="disk", cache_dir=tmp_path / "cache"), reference)
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.pt")} == saved


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_the_size_limit_caches_only_the_first_scans_and_streams_the_rest(make_cohort, tmp_path, cache):
    manifest = make_cohort(per_site=3, n_train=3)
    reference = make_dataset(manifest, split="train")
    assert item_bytes(reference.data[0]) == ITEM_BYTES
    limit = 2.5 * ITEM_BYTES / 1024**3  # room for two scans
    dataset = make_dataset(manifest, split="train", cache=cache, cache_dir=tmp_path / "cache", cache_limit_gb=limit)
    assert dataset.cache_num == 2
    loader = DataLoader(dataset, batch_size=3, num_workers=0)  # a batch of cached and streamed items
    images = torch.cat([batch["image"] for batch in loader])
    torch.testing.assert_close(images, torch.stack([reference[i]["image"] for i in range(6)]), rtol=0, atol=0)
    if cache == "disk":
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_a_scan_written_again_is_read_again_not_taken_from_the_disk_cache(make_cohort, tmp_path):
    manifest = make_cohort(per_site=1, n_train=1)
    first = make_dataset(manifest, split="train", cache="disk", cache_dir=tmp_path / "cache")
    before = first[0]["image"].clone()
    path = first.data[0]["image"]
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.get_fdata(), dtype=np.float32) * 2, image.affine), path)
    again = make_dataset(manifest, split="train", cache="disk", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(again[0]["image"], before * 2)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # the scan as it was, and as it is now


def test_counts_and_bad_settings(make_cohort, tmp_path):
    assert cached_items(10, 100, None) == 10 and cached_items(10, 100, 250 / 1024**3) == 2
    assert cached_items(3, 100, 1.0) == 3 and cached_items(3, 100, 0) == 0
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(ConfigError, match="Argument 'cache' is 'disk' but no 'cache_dir' was given"):
        make_dataset(manifest, cache="disk")
    with pytest.raises(ConfigError, match="Argument 'cache'"):
        make_dataset(manifest, cache="ram")
    with pytest.raises(ConfigError, match=r"'cache_limit_gb' must be a finite number >= 0 or None, got -1 \(int\): GiB of cached"):
        make_dataset(manifest, cache="memory", cache_limit_gb=-1)
    with pytest.raises(ConfigError) as err:  # both at once
        make_dataset(manifest, cache="ram", cache_limit_gb=-1)
    assert err.value.message == "The dataset cache: invalid arguments."
    assert err.value.problems[0].startswith("Argument 'cache': Unsupported option 'ram'")
    assert err.value.problems[1] == "'cache_limit_gb' must be a finite number >= 0 or None, got -1 (int): GiB of " \
                                    "cached scans"
