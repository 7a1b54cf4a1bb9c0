"""inference_dataset: the scans inference.json predicts, from files, folders or a manifest."""

from __future__ import annotations

import shutil

import pytest

from harmonize.bundle import inference_dataset
from harmonize.bundle.inference_dataset import subject_id_of
from harmonize.errors import ConfigError, HarmonizeError


def test_subject_id_of():
    assert [subject_id_of(n) for n in ("a/sub-01_T1w.nii.gz", "b.nii", "c.mgz")] == ["sub-01_T1w", "b", "c"]


def test_images_and_folders(tiny_cohort):
    images = tiny_cohort.parent / "images"
    one = min(images.iterdir())
    dataset = inference_dataset(images=[str(one), str(images / "..") + "/images"])
    assert len(dataset) == 18  # the file, then the folder's 18 files (the file once)
    item = dataset[0]
    assert item["subject_id"] == subject_id_of(one) and tuple(item["image"].shape) == (1, 24, 24, 24)
    assert str(item["image"].dtype) == "torch.float32"


@pytest.mark.parametrize("split, count", [("test", 3), ("val", 3), ("all", 18), (None, 18)])
def test_manifest_rows(tiny_cohort, split, count):
    dataset = inference_dataset(manifest=tiny_cohort, split=split)
    assert len(dataset) == count and dataset.data[0]["subject_id"].startswith("site")
    assert dataset.data[0]["site"] == dataset.data[0]["subject_id"].split("-")[0]  # the site picks the landmarks


def test_images_carry_the_given_site_and_a_loading_transform_replaces_the_loader(tiny_cohort):
    images = tiny_cohort.parent / "images"
    assert "site" not in inference_dataset(images=images).data[0]
    dataset = inference_dataset(images=images, site="scanner-x", load=False, transform=lambda d: d)
    assert dataset[0]["site"] == "scanner-x" and isinstance(dataset[0]["image"], str)  # nothing loaded it


def test_neither_or_both(tiny_cohort):
    with pytest.raises(ConfigError, match="not neither"):
        inference_dataset()
    with pytest.raises(ConfigError, match="not both"):
        inference_dataset(images=[], manifest=tiny_cohort)


def test_missing_files_are_each_listed(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarmonizeError, match="2 of the images") as err:
        inference_dataset(images=[tmp_path / "nope.nii.gz", tmp_path / "empty"])
    assert err.value.problems == [f"{tmp_path / 'nope.nii.gz'}: no such file or folder",
                                  f"{tmp_path / 'empty'}: a folder without .nii or .nii.gz files"]


def test_same_names_would_collide(tiny_cohort, tmp_path):
    image = min((tiny_cohort.parent / "images").iterdir())
    (tmp_path / "copy").mkdir()
    shutil.copy(image, tmp_path / "copy" / image.name)
    with pytest.raises(ConfigError, match="same file name") as err:
        inference_dataset(images=[image, tmp_path / "copy"])
    assert subject_id_of(image) in err.value.problems[0]


def test_unknown_split(tiny_cohort):
    with pytest.raises(ConfigError, match="split"):
        inference_dataset(manifest=tiny_cohort, split="tests")
