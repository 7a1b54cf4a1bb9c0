"""Tests of harmonize.data.manifest.writer: a written manifest reads back the same, and never overwrites silently."""

from __future__ import annotations

import pandas as pd
import pytest

from harmonize.data.manifest import read_manifest, write_manifest
from harmonize.errors import ManifestError


def test_write_manifest_round_trip_and_no_overwrite(cohort, tmp_path):
    path, _ = cohort
    frame = read_manifest(path, confounds=["tiv"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = write_manifest(frame, out_dir / "copy.csv")
    first_line = out.read_text().splitlines()[1]
    assert "../sub-001/anat/sub-001_T1w.nii.gz" in first_line
    again = read_manifest(out, confounds=["tiv"])
    pd.testing.assert_frame_equal(again, frame, check_like=True)
    with pytest.raises(ManifestError, match="already exists"):
        write_manifest(frame, out)
    assert write_manifest(frame, out, overwrite=True) == out
    assert list(out_dir.iterdir()) == [out]
