"""save_preprocessing writes what inference needs; BundlePreprocessd replays it on raw scans, checks and inverts."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from monai.data import MetaTensor
from monai.transforms import LoadImaged

from harmonize.bundle.preprocessing import (
    POOLED,
    BundlePreprocessd,
    load_preprocessing,
    parse_flag,
    save_preprocessing,
    voxel_spacing,
)
from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.keys import Keys, Split
from harmonize.workflows.input_check import (
    check_inputs,
    describe_inputs,
    describe_preprocessing,
)


@pytest.fixture(scope="module")
def saved(tiny_preprocessed, tmp_path_factory):
    """The preprocessing of the tiny preprocessed cohort, as training saves it."""
    path = tmp_path_factory.mktemp("models") / "preprocessing.json"
    save_preprocessing(tiny_preprocessed, path)
    return path


def _load(path, site=None):
    sample = LoadImaged("image", ensure_channel_first=True, dtype=np.float32)({"image": str(path)})
    if site is not None:
        sample["site"] = site
    return sample


def _nifti(tmp_path, array, zooms=(8.0, 8.0, 8.0), name="scan.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.diag([*zooms, 1.0])), path)
    return path


def test_save_keeps_the_settings_the_site_landmarks_and_pooled_ones(saved, tiny_preprocessed):
    content = load_preprocessing(saved)
    assert content["config"]["target_spacing"] == [10.0, 10.0, 10.0]
    assert content["config"]["target_shape"] == [16, 16, 16]
    assert sorted(content["landmarks"]) == ["site0", "site1", "site2"]
    folder = tiny_preprocessed.parent / "landmarks"
    np.testing.assert_allclose(content["landmarks"]["site1"], np.load(folder / "site-site1.npy"))
    # pooled landmarks trained here (every site has training scans, so preprocessing wrote none): the same
    # TorchIO training over every training scan's spatial output
    frame = read_manifest(tiny_preprocessed)
    names = [p.split("/")[-1] for p in frame.loc[frame[Keys.SPLIT] == Split.TRAIN, Keys.IMAGE]]
    expected = tio.HistogramStandardization.train(
        [str(tiny_preprocessed.parent / "spatial" / n) for n in names], cutoff=(0.01, 0.99),
        mask_path=[str(tiny_preprocessed.parent / "masks" / n) for n in names], progress=False)
    np.testing.assert_allclose(content["pooled_landmarks"], expected)


def test_the_saved_preprocessing_describes_the_training_scans_as_the_audit_reads_them(saved, tiny_preprocessed,
                                                                                      tiny_cohort):
    """The audit of a bundle checks its scans against preprocessing.json: the training manifest itself passes."""
    recorded = describe_preprocessing(load_preprocessing(saved))
    found = describe_inputs(read_manifest(tiny_preprocessed))
    assert recorded == {**found, "manifest": str(tiny_preprocessed)}
    assert recorded["shape"] == [16, 16, 16] and recorded["spacing"] == [10.0] * 3 and recorded["standardised"]
    check_inputs(recorded, read_manifest(tiny_preprocessed), "bundle")
    with pytest.raises(HarmonizeError, match="are not preprocessed as the training scans of bundle were"):
        check_inputs(recorded, read_manifest(tiny_cohort), "bundle")


def test_save_of_a_manifest_not_preprocessed_by_harmonize_records_none(tiny_cohort, tmp_path):
    content = load_preprocessing(save_preprocessing(tiny_cohort, tmp_path / "p.json"))
    assert content["config"] is None
    assert describe_preprocessing(content) == {"manifest": str(tiny_cohort), "shape": None, "spacing": None,
                                               "standardised": False}
    with pytest.raises(HarmonizeError, match="did not make.*--preprocess false"):
        BundlePreprocessd(preprocessing=tmp_path / "p.json")(_load(read_manifest(tiny_cohort)[Keys.IMAGE].iloc[0]))


def test_load_names_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(HarmonizeError, match=r"nothing\.json does not exist.*train the bundle first"):
        load_preprocessing(tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(HarmonizeError, match="other.json is not a bundle preprocessing file"):
        load_preprocessing(tmp_path / "other.json")


def test_a_raw_scan_becomes_the_preprocessed_scan(saved, tiny_cohort, tiny_preprocessed):
    raw, pre = read_manifest(tiny_cohort).iloc[0], read_manifest(tiny_preprocessed).iloc[0]
    out = BundlePreprocessd(preprocessing=saved)(_load(raw[Keys.IMAGE], raw[Keys.SITE]))
    expected = nib.load(pre[Keys.IMAGE])
    assert out["image"].shape == (1, 16, 16, 16)
    np.testing.assert_allclose(out["image"].affine.numpy(), expected.affine, atol=1e-5)
    np.testing.assert_allclose(out["image"][0].numpy(), expected.get_fdata(), atol=1e-5)
    assert out[Keys.INTENSITY_REFERENCE] == f"site {raw[Keys.SITE]}" and out[Keys.WARNINGS] == ""


@pytest.mark.parametrize("site, why", [("scanner-x", "site 'scanner-x' not seen in training"), (None, "no site given")])
def test_a_scanner_never_seen_uses_the_pooled_landmarks_and_says_so(saved, tiny_cohort, site, why, caplog):
    raw = read_manifest(tiny_cohort).iloc[0]
    with caplog.at_level(logging.WARNING):
        out = BundlePreprocessd(preprocessing=saved)(_load(raw[Keys.IMAGE], site))
    assert out[Keys.INTENSITY_REFERENCE] == f"{POOLED} ({why})"
    assert why in caplog.text and raw[Keys.IMAGE] in caplog.text
    known = BundlePreprocessd(preprocessing=saved)(_load(raw[Keys.IMAGE], raw[Keys.SITE]))
    assert not torch.allclose(out["image"], known["image"])  # other landmarks, other intensities


def test_inverse_maps_a_label_back_onto_the_input_grid_as_torchio_does(saved, tiny_cohort, tiny_preprocessed):
    raw, pre = read_manifest(tiny_cohort).iloc[3], read_manifest(tiny_preprocessed).iloc[3]
    transform = BundlePreprocessd(preprocessing=saved, mode="nearest")
    image = transform(_load(raw[Keys.IMAGE], raw[Keys.SITE]))["image"]
    label = nib.load(pre[Keys.LABEL])
    pred = MetaTensor(torch.from_numpy(np.asarray(label.dataobj, dtype=np.float32))[None], meta=dict(image.meta),
                      applied_operations=image.applied_operations)
    back = transform.inverse({"image": pred})["image"]
    source = tio.ScalarImage(raw[Keys.IMAGE])
    expected = tio.Resample(source)(tio.LabelMap(tensor=torch.as_tensor(np.asarray(label.dataobj))[None].int(),
                                                 affine=label.affine)).data
    assert back.shape == (1, *source.spatial_shape)
    np.testing.assert_array_equal(back.numpy().astype(int), expected.numpy())
    truth = np.asarray(nib.load(raw[Keys.LABEL]).dataobj)
    assert (back[0].numpy() == truth).mean() > 0.9  # the preprocessed label, mapped back, is the raw one but for resolution


@pytest.mark.parametrize(
    "array, message",
    [
        (np.ones((20, 20, 8, 3)), r"a 4D image \(3 volumes\)"),
        (np.ones((20, 20, 1)), r"shape \(20, 20, 1\) is a single slice"),
        (np.full((8, 8, 8), np.nan), "512 voxel\\(s\\) are NaN or infinite"),
        (np.linspace(-1000, 2000, 16**3).reshape(16, 16, 16), "strongly negative.*CT \\(Hounsfield units\\)"),
    ],
    ids=["4d", "slice", "nan", "ct"],
)
def test_what_the_model_cannot_take_is_refused_by_name(saved, tmp_path, array, message):
    path = _nifti(tmp_path, array)
    with pytest.raises(HarmonizeError, match=f"{path}: .*{message}"):
        BundlePreprocessd(preprocessing=saved)(_load(path))


def test_a_2d_image_is_refused(saved):
    image = MetaTensor(torch.ones(1, 20, 20), meta={"filename_or_obj": "slice.png"})
    with pytest.raises(HarmonizeError, match=r"slice.png: a 2D image of shape \(20, 20\)"):
        BundlePreprocessd(preprocessing=saved)({"image": image})


def test_anisotropic_voxels_are_warned_about_naming_the_file_and_both_spacings(saved, tiny_cohort, tmp_path, caplog):
    raw = nib.load(read_manifest(tiny_cohort)[Keys.IMAGE].iloc[0])
    thick = _nifti(tmp_path, raw.get_fdata()[:, :, ::4], zooms=(8.333, 8.333, 33.33), name="thick.nii.gz")
    with caplog.at_level(logging.WARNING):
        out = BundlePreprocessd(preprocessing=saved)(_load(thick, "site0"))
    assert f"{thick}: strongly anisotropic voxels of 8.33 x 8.33 x 33.3 mm" in out[Keys.WARNINGS]
    assert "trained at 10 x 10 x 10 mm" in caplog.text


def test_preprocess_false_takes_preprocessed_scans_and_refuses_other_settings(saved, tiny_preprocessed, tiny_cohort):
    pre = read_manifest(tiny_preprocessed)[Keys.IMAGE].iloc[0]
    out = BundlePreprocessd(preprocessing=saved, enabled=False)(_load(pre))
    np.testing.assert_array_equal(out["image"][0].numpy(), nib.load(pre).get_fdata().astype(np.float32))
    raw = read_manifest(tiny_cohort)[Keys.IMAGE].iloc[0]
    with pytest.raises(HarmonizeError, match=r"voxels of 8.33 x 8.33 x 8.33 mm and shape \(24, 24, 24\).*trained "
                                             r"on 10 x 10 x 10 mm and \(16, 16, 16\)"):
        BundlePreprocessd(preprocessing=saved, enabled=False)(_load(raw))
    # the training grid, but raw intensities (preprocess's spatial output, before standardisation): refused too
    spatial = tiny_preprocessed.parent / "spatial" / pre.split("/")[-1]
    with pytest.raises(HarmonizeError, match=r"its head's intensities have mean [\d.]+ and standard deviation "
                                             r"[\d.]+, while the model was trained on intensity-standardised scans"):
        BundlePreprocessd(preprocessing=saved, enabled=False)(_load(spatial))


def test_voxel_spacing_reads_the_affine_columns():
    affine = np.array([[0, 0, 3.0, 0], [-2.0, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(voxel_spacing(affine), [2.0, 1.5, 3.0])


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("false", False), ("True", True), (0, False)])
def test_parse_flag_takes_booleans_and_their_text(value, expected):
    assert parse_flag(value, "preprocess") is expected


def test_parse_flag_names_the_id_of_anything_else():
    with pytest.raises(ConfigError, match="'preprocess' must be true or false, not 'maybe'"):
        BundlePreprocessd(enabled="maybe")
