"""Tests of harmonize.data.dataset: the MONAI dataset factory and the site-balanced loader."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Lambdad

from harmonize.data.dataset import (
    EpochShuffleSampler,
    make_dataloader,
    make_dataset,
)
from harmonize.data.manifest import read_manifest
from harmonize.data.site_index import SiteIndex
from harmonize.errors import ConfigError, HarmonizeError, ManifestError

from ..conftest import write_csv

SHAPE = (1, 20, 20, 20)


def drop_label(manifest, subject_id):
    """Empty the label cell of one row (a scan without a label, as in semi-supervised data)."""
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["subject_id"] == subject_id:
            row["label"] = ""
    write_csv(manifest, rows)


def test_items_have_the_documented_keys_dtypes_and_shapes(make_cohort):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=3, n_train=2)
    drop_label(manifest, "siteB-01")
    dataset = make_dataset(manifest, split="train", confounds=["scanner", "tiv:continuous"])
    assert isinstance(dataset, Dataset) and len(dataset) == 4
    items = {item["subject_id"]: item for item in dataset}
    item = items["siteB-00"]
    assert set(item) == {"image", "label", "has_label", "site", "age", "sex", "scanner", "tiv", "subject_id"}
    assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == SHAPE
    assert item["label"].dtype == torch.int64 and tuple(item["label"].shape) == SHAPE
    assert set(item["label"].unique().tolist()) == {0, 1, 2}
    assert item["site"].dtype == torch.int64 and item["site"].item() == 1
    assert item["age"].dtype == torch.float32 and item["age"].item() == 40.0
    assert item["sex"].dtype == torch.int64 and item["sex"].item() == 0  # F
    assert items["siteB-01"]["sex"].item() == 1  # M
    assert item["has_label"].dtype == torch.bool and bool(item["has_label"])
    assert item["scanner"].dtype == torch.int64 and item["tiv"].dtype == torch.float32
    assert item["tiv"].item() == 1400.0
    assert isinstance(item["subject_id"], str)
    unlabelled = items["siteB-01"]
    assert not bool(unlabelled["has_label"]) and unlabelled["label"].sum() == 0
    assert tuple(unlabelled["label"].shape) == SHAPE


def test_without_any_label_there_is_no_label_key(make_cohort):
    manifest = make_cohort(per_site=1, n_train=1, labels=False)
    item = make_dataset(manifest)[0]
    assert "label" not in item and not bool(item["has_label"])


def test_missing_age_and_sex_become_nan_and_minus_one(make_cohort):
    manifest = make_cohort(per_site=1, n_train=1)
    frame = read_manifest(manifest)
    frame.loc[frame.index[0], "age"] = float("nan")
    frame.loc[frame.index[0], "sex"] = None
    item = make_dataset(frame)[0]
    assert math.isnan(item["age"].item()) and item["sex"].item() == -1


def test_site_index_is_saved_beside_the_manifest_and_reused(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteB", "siteA"), per_site=3, n_train=2)
    index_path = manifest.parent / "site_index.json"
    dataset = make_dataset(manifest, split="val", confounds=["scanner"])
    assert SiteIndex.load(index_path) == dataset.site_index
    assert dataset.site_index.categories == ("siteA", "siteB")
    assert (manifest.parent / "scanner_index.json").is_file()  # categorical confounds keep theirs beside it
    # new data (another folder, only siteB) reuses the training run's index through its path
    other = make_cohort(sites=("siteB",), per_site=1, n_train=1, folder="new")
    items = make_dataset(other, site_index=index_path)
    assert items.data[0]["site"].item() == 1 and items.site_index.categories == ("siteA", "siteB")
    assert not (other.parent / "site_index.json").exists()
    given = make_dataset(other, site_index=SiteIndex(["siteB", "siteA"]))
    assert given.data[0]["site"].item() == 0


def test_unknown_site_names_site_row_and_known_sites(make_cohort):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=1, n_train=1, unseen=("siteD",))
    with pytest.raises(HarmonizeError) as err:
        make_dataset(manifest, split="test")
    message = str(err.value)
    assert "known sites: ['siteA', 'siteB']" in message and "allow_unknown_sites=True" in message
    assert err.value.problems == ["unknown site 'siteD' in row 4"]
    dataset = make_dataset(manifest, split="test", allow_unknown_sites=True)
    assert [item["site"].item() for item in dataset.data] == [-1]


def test_user_errors(make_cohort):
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(HarmonizeError, match=r"No row .* has split 'val'; splits present: \['train'\]"):
        make_dataset(manifest, split="val")
    with pytest.raises(ConfigError, match="Argument 'split'"):
        make_dataset(manifest, split="training")
    with pytest.raises(ManifestError, match="no column 'scaner'.*did you mean 'scanner'"):
        make_dataset(manifest, confounds=["scaner"])
    with pytest.raises(HarmonizeError, match=r"Confound column\(s\) \['scaner'\] are not in the manifest"):
        make_dataset(read_manifest(manifest), confounds=["scaner"])
    (manifest.parent / "img" / "siteA-00_T1w.nii.gz").unlink()
    with pytest.raises(HarmonizeError, match="1 file") as err:
        make_dataset(manifest)
    assert err.value.problems[0].startswith("row 2, column 'image': file not found")


def test_cache_and_transform(make_cohort):
    manifest = make_cohort(per_site=1, n_train=1)
    double = Lambdad(keys="image", func=lambda x: x * 2)
    plain = make_dataset(manifest)
    cached = make_dataset(manifest, transform=double, cache=True)
    assert isinstance(cached, CacheDataset)
    torch.testing.assert_close(cached[0]["image"], plain[0]["image"] * 2)


@pytest.mark.parametrize(("batch_size", "shown"), [(0, "0 (int)"), (2.5, "2.5 (float)"), ("4", "'4' (str)")])
def test_bad_batch_size_is_named_with_its_value(make_cohort, batch_size, shown):
    manifest = make_cohort(per_site=3, n_train=3)
    with pytest.raises(ConfigError, match=rf"'batch_size' must be an integer >= 1, got {re.escape(shown)}"):
        make_dataloader(manifest, split="train", batch_size=batch_size)


def test_plain_loader_batches(make_cohort):
    manifest = make_cohort(per_site=3, n_train=3)
    drop_label(manifest, "siteA-01")
    loader = make_dataloader(manifest, split="train", batch_size=4, seed=0)
    batches = list(loader)
    assert [len(b["subject_id"]) for b in batches] == [4, 2]
    batch = batches[0]
    assert batch["image"].shape == (4, *SHAPE) and batch["label"].dtype == torch.int64
    assert batch["site"].dtype == torch.int64 and batch["age"].dtype == torch.float32
    assert batch["has_label"].dtype == torch.bool
    assert sum(int(b["has_label"].sum()) for b in batches) == 5
    again = [b["subject_id"] for b in make_dataloader(manifest, split="train", batch_size=4, seed=0)]
    assert again == [b["subject_id"] for b in batches]  # the seed fixes the shuffle


def test_balanced_loader_gives_each_site_equally(make_cohort):
    manifest = make_cohort(sites=("siteA", "siteB", "siteC"), per_site=4, n_train=4)
    full = read_manifest(manifest)
    frame = full[~full["subject_id"].isin(["siteB-02", "siteB-03", "siteC-03"])]  # sites of 4, 2 and 3 scans
    loader = make_dataloader(frame, batch_size=6, balance_sites=True, seed=1,
                             site_index=manifest.parent / "site_index.json")
    batches = list(loader)
    assert len(batches) == 2  # until the 4 scans of the largest site were each drawn once
    for batch in batches:
        assert Counter(batch["site"].tolist()) == {0: 2, 1: 2, 2: 2}
    drawn = Counter(sid for b in batches for sid in b["subject_id"])
    assert {sid for sid in drawn if sid.startswith("siteA")} == {f"siteA-{i:02d}" for i in range(4)}
    assert all(count == 1 for sid, count in drawn.items() if sid.startswith("siteA"))


def test_preprocessed_cohort_feeds_a_balanced_loader(tiny_cohort, tmp_path):
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

    config = PreprocessConfig(target_spacing=12.5, target_shape=(16, 16, 16))
    result = preprocess_manifest(tiny_cohort, tmp_path / "pre", config, progress=False)
    loader = make_dataloader(result.manifest, split="train", batch_size=3, balance_sites=True, seed=0)
    batches = list(loader)
    assert len(batches) == 4  # 4 training scans per site, one of each site per batch
    assert (tmp_path / "pre" / "site_index.json").is_file()
    for batch in batches:
        assert sorted(batch["site"].tolist()) == [0, 1, 2]
        assert batch["image"].shape == (3, 1, 16, 16, 16) and batch["label"].shape == (3, 1, 16, 16, 16)


def test_confound_value_unseen_in_training_gets_minus_one(make_cohort, caplog):
    manifest = make_cohort(sites=("siteA",), per_site=2, n_train=1)  # training rows only have vendor0
    with caplog.at_level("WARNING", logger="harmonize.data.site_index"):
        dataset = make_dataset(manifest, split="val", confounds=["scanner"])
    assert dataset.data[0]["scanner"].item() == -1
    assert "['vendor1'] are not in the scanner index ['vendor0']" in caplog.text


def test_shuffled_loader_resumes_mid_epoch(tiny_cohort):
    loader = make_dataloader(tiny_cohort, split="train", batch_size=4, seed=5)
    assert isinstance(loader.sampler, EpochShuffleSampler)
    epochs = [[sid for b in loader for sid in b["subject_id"]] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    again = make_dataloader(tiny_cohort, split="train", batch_size=4, seed=5)
    again.sampler.set_epoch(1, start_batch=2)
    assert [sid for b in again for sid in b["subject_id"]] == epochs[1][8:]


def test_scans_of_different_shapes_are_refused_before_training(make_cohort, tmp_path):
    """Issue 17: unpreprocessed scans of different shapes failed deep inside collation."""
    import nibabel as nib

    manifest = make_cohort(sites=("siteA", "siteB"), per_site=2, n_train=2)
    small = manifest.parent / "img" / "siteB-01_T1w.nii.gz"
    image = nib.load(small)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, :12], image.affine), small)
    with pytest.raises(HarmonizeError) as err:
        make_dataset(manifest, split="train")
    assert err.value.message == (
        f"The scans of {manifest} have 2 different shapes, and a batch needs one. Preprocess the manifest first: "
        f"'harmonize preprocess {manifest} --out DIR' resamples and crops every scan to one grid (then use "
        "DIR/manifest.csv), or give a transform that does.")
    first = read_manifest(manifest)["image"].iloc[0]
    assert err.value.problems == [f"shape (20, 20, 20): 3 scan(s), rows 2, 3, 4 (e.g. {first})",
                                  f"shape (20, 20, 12): 1 scan(s), rows 5 (e.g. {small})"]
    assert len(make_dataset(manifest, split="train", transform=Lambdad("image", lambda x: x))) == 4  # it resizes


def test_a_distributed_loader_must_balance_sites():
    dataset = Dataset([{"image": torch.zeros(1, 2, 2, 2), "site": torch.tensor(i % 2)} for i in range(4)])
    with pytest.raises(ConfigError, match="Argument 'distributed' shards site-balanced batches: pass balance_sites"):
        make_dataloader(dataset, batch_size=2, distributed=True)
