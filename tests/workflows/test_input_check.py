"""The training scans' grid and intensity preprocessing, recorded and checked against the scans given later."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from harmonize.data.manifest import MANIFEST_ATTR, read_manifest
from harmonize.errors import HarmonizeError
from harmonize.workflows.input_check import (
    check_inputs,
    describe_inputs,
    describe_preprocessing,
)

SPACING = round(200 / 24, 6)  # the tiny cohort: 24^3 voxels over 200 mm


def test_raw_scans_are_described_from_their_headers(tiny_cohort):
    found = describe_inputs(read_manifest(tiny_cohort))
    assert found["shape"] == [24, 24, 24] and found["spacing"] == pytest.approx([SPACING] * 3)
    assert found["standardised"] is False and found["manifest"] == str(tiny_cohort)


def test_a_manifest_beside_preprocess_json_is_standardised(tiny_cohort, tmp_path):
    frame = read_manifest(tiny_cohort)
    frame.drop(columns=[c for c in frame.columns if c.startswith("_")]).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "preprocess.json").write_text(json.dumps({"tool": "harmonize preprocess", "version": 1}))
    assert describe_inputs(read_manifest(tmp_path / "manifest.csv"))["standardised"] is True


def test_scans_of_different_shapes_are_refused_by_the_data_layer_s_one_check(tmp_path):
    """describe_inputs (train_brain_age, the audit) refuses them with make_dataset's message; relative paths too."""
    for name, side in (("a", 8), ("b", 10)):
        nib.save(nib.Nifti1Image(np.zeros((side, side, side), np.float32), np.eye(4)), tmp_path / f"{name}.nii.gz")
    frame = pd.DataFrame({"image": ["a.nii.gz", "b.nii.gz"]}, index=[2, 3])
    frame.attrs[MANIFEST_ATTR] = str(tmp_path / "m.csv")
    with pytest.raises(HarmonizeError) as info:
        describe_inputs(frame)
    assert info.value.message == (
        f"The scans of {tmp_path / 'm.csv'} have 2 different shapes, and a batch needs one. Preprocess the manifest "
        f"first: 'harmonize preprocess {tmp_path / 'm.csv'} --out DIR' resamples and crops every scan to one grid "
        "(then use DIR/manifest.csv), or give a transform that does.")
    assert info.value.problems == [f"shape (8, 8, 8): 1 scan(s), rows 2 (e.g. {tmp_path / 'a.nii.gz'})",
                                   f"shape (10, 10, 10): 1 scan(s), rows 3 (e.g. {tmp_path / 'b.nii.gz'})"]


def test_a_bundle_s_preprocessing_file_is_described_as_a_model_file_records_its_scans():
    config = {"target_spacing": 6.0, "target_shape": [32, 32, 32], "histogram_standardisation": False}
    content = {"format": "harmonize-bundle-preprocessing", "version": 1, "manifest": "/pre/manifest.csv",
               "config": config}
    assert describe_preprocessing(content) == {"manifest": "/pre/manifest.csv", "shape": [32, 32, 32],
                                               "spacing": [6.0, 6.0, 6.0], "standardised": True}
    anisotropic = {**content, "config": {**config, "target_spacing": [1.5, 1.5, 6.25]}}
    assert describe_preprocessing(anisotropic)["spacing"] == [1.5, 1.5, 6.25]
    assert describe_preprocessing({**content, "config": None})["standardised"] is False
    assert describe_preprocessing({"format": "other"}) is None and describe_preprocessing(None) is None


def test_raw_scans_for_a_model_of_preprocessed_scans_are_refused(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    trained = {"manifest": "/prep/manifest.csv", "shape": [32, 32, 32], "spacing": [6.0, 6.0, 6.0],
               "standardised": True}
    with pytest.raises(HarmonizeError) as info:
        check_inputs(trained, frame, "none.pt")
    err = info.value
    assert err.message.startswith(f"The scans of {tiny_cohort} are not preprocessed as the training scans of none.pt "
                                  "were")
    assert err.message.endswith(f"(harmonize preprocess {tiny_cohort} --out DIR --spacing 6 --shape 32 32 32) and give "
                                "DIR/manifest.csv.")
    assert [p.split(":")[0] for p in err.problems] == ["shape", "spacing", "intensities"]
    assert "the model was trained on (32, 32, 32) voxels" in err.problems[0] and "is (24, 24, 24)" in err.problems[0]
    assert "has no preprocess.json beside it, so its intensities are raw" in err.problems[2]
    check_inputs(describe_inputs(frame), frame, "none.pt")  # the same preprocessing passes
    check_inputs(None, frame, "old.pt")  # a model that records nothing is not checked
