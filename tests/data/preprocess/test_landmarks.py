"""Tests of harmonize.data.preprocess.landmarks: per-site landmarks from training rows only, pooled for unseen sites."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from harmonize.data.manifest import read_manifest
from harmonize.errors import HarmonizeError

from .conftest import run


def test_landmarks_come_from_the_sites_training_rows_only(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=4, n_train=2)
    first = run(manifest, tmp_path / "out")
    landmarks_a = np.load(first.landmarks["siteA"])
    landmarks_b = np.load(first.landmarks["siteB"])
    assert first.landmarks["siteA"].name == "site-siteA.npy" and not np.allclose(landmarks_a, landmarks_b)

    rows = read_manifest(manifest)
    test_image = rows[(rows["site"] == "siteA") & (rows["split"] == "test")]["image"].iloc[0]
    train_image = rows[(rows["site"] == "siteA") & (rows["split"] == "train")]["image"].iloc[0]
    image = nib.load(test_image)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) ** 1.5, image.affine), test_image)
    second = run(manifest, tmp_path / "out")
    assert second.processed == 1  # only the changed scan
    np.testing.assert_array_equal(np.load(second.landmarks["siteA"]), landmarks_a)

    image = nib.load(train_image)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) ** 1.5, image.affine), train_image)
    third = run(manifest, tmp_path / "out")
    assert third.processed == 4  # siteA's landmarks changed, so all siteA scans are redone
    assert not np.allclose(np.load(third.landmarks["siteA"]), landmarks_a)
    np.testing.assert_array_equal(np.load(third.landmarks["siteB"]), landmarks_b)


def test_unseen_site_gets_pooled_landmarks_with_a_warning(make_cohort, tmp_path, caplog):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=2, n_train=2, unseen=("siteD",))
    with caplog.at_level(logging.WARNING, logger="harmonize.data.preprocess"):
        result = run(manifest, tmp_path / "out")
    assert result.pooled_sites == ("siteD",)
    assert result.landmarks["siteD"].name == "pooled.npy"
    assert "['siteD'] have no training scans" in caplog.text and "pooled over the 4 training scans" in caplog.text
    image = nib.load(tmp_path / "out" / "images" / "siteD-00.nii.gz").get_fdata()
    mask = nib.load(tmp_path / "out" / "masks" / "siteD-00.nii.gz").get_fdata() > 0
    assert abs(image[mask].mean()) < 1e-4 and abs(image[mask].std() - 1) < 1e-2


def test_no_training_rows_is_an_error(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=0)
    with pytest.raises(HarmonizeError, match="no training rows"):
        run(manifest, tmp_path / "out")
