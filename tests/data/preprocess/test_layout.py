"""Tests of harmonize.data.preprocess.layout: the output folder is checked before anything is written."""

from __future__ import annotations

import pytest

from harmonize.data.preprocess import MANIFEST_FILENAME
from harmonize.errors import HarmonizeError

from .conftest import run


def test_out_dir_in_the_input_folder_is_refused(make_cohort, tmp_path):
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(HarmonizeError, match="is the folder of the input manifest") as err:
        run(manifest, manifest.parent)
    assert "cohort_preprocessed" in str(err.value)
    with pytest.raises(HarmonizeError, match=r"holds 5 of the input files .*Choose a folder outside"):
        run(manifest, tmp_path)  # the cohort lies inside it
    subfolder = manifest.parent / "derivatives"  # inside the input tree but holding no input: allowed
    assert run(manifest, subfolder).processed == 2


def test_foreign_non_empty_folder_needs_overwrite(make_cohort, tmp_path):
    manifest = make_cohort(per_site=1, n_train=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HarmonizeError, match=r"not empty: it holds 1 file\(s\) harmonize did not write \(notes.txt\).*--overwrite"):
        run(manifest, out)
    assert run(manifest, out, overwrite=True).processed == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / MANIFEST_FILENAME).is_file()


def test_overwrite_recomputes_everything(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=2)
    run(manifest, tmp_path / "out")
    result = run(manifest, tmp_path / "out", overwrite=True)
    assert (result.processed, result.cached) == (4, 0)


def test_an_image_listed_twice_is_refused_before_any_output(make_cohort, tmp_path):
    manifest = make_cohort(per_site=3, n_train=2)
    rows = manifest.read_text().splitlines()
    # the test row (row 4) points at the image of the training row 2: a leak
    rows[3] = rows[3].replace("siteA-02_T1w", "siteA-00_T1w")
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(HarmonizeError, match=r"lists 1 image\(s\) twice.*leaks the test set") as err:
        run(manifest, tmp_path / "out")
    assert err.value.problems == [f"row 4 (split 'val'): the same image as row 2 (split 'train'), "
                                  f"{manifest.parent / 'img' / 'siteA-00_T1w.nii.gz'}"]
    assert not (tmp_path / "out").exists()
