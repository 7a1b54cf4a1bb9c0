"""The training scans' grid and intensity preprocessing, recorded and checked against the scans given later."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from harmonize.data.manifest import MANIFEST_ATTR, read_manifest
from harmonize.errors import HarmonizeError
from harmonize.workflows.input_check import check_inputs, common_grid, describe_inputs

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


def test_scans_of_different_shapes_are_named_with_the_fix(tmp_path):
    files = []
    for name, side in (("a", 8), ("b", 10)):
        files.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((side, side, side), np.float32), np.eye(4)), files[-1])
    frame = pd.DataFrame({"image": [str(f) for f in files]})
    frame.attrs[MANIFEST_ATTR] = str(tmp_path / "m.csv")
    with pytest.raises(HarmonizeError) as info:
        common_grid(frame)
    assert str(info.value) == (
        f"The scans of {tmp_path / 'm.csv'} have different shapes: {files[0]} is (8, 8, 8) voxels and {files[1]} is "
        "(10, 10, 10). A network needs scans of one shape (and spacing) to batch them: preprocess the manifest first "
        f"(harmonize preprocess {tmp_path / 'm.csv'} --out DIR, then use DIR/manifest.csv).")


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
