"""Tests of harmonize.data.bids_derivatives: the BIDS dataset of docs/bids.md in, a Derivatives dataset out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from harmonize import __version__
from harmonize.cli.main import main
from harmonize.data.bids_derivatives import DERIVATIVES_DIR, derivative_name
from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess import preprocess_manifest
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "bids.md"


def test_documented_commands_bids_in_derivatives_out(bids_example, tmp_path, monkeypatch, capsys):
    """The commands of docs/bids.md, run on its dataset; the files the doc lists are the files written."""
    monkeypatch.chdir(tmp_path)
    assert main(["manifest", "from-bids", "ds", "--site-from", "sidecar:Manufacturer,ManufacturersModelName",
                 "--out", "manifest.csv"]) == 0
    assert main(["preprocess", "manifest.csv", "--out", "prep", "--bids-derivatives", "--spacing", "2.4",
                 "--shape", "10", "10", "10", "--no-progress"]) == 0
    capsys.readouterr()
    source = read_manifest(tmp_path / "manifest.csv")
    assert source[Keys.SUBJECT_ID].tolist() == ["sub-01_ses-01", "sub-01_ses-02", "sub-02_ses-01", "sub-02_ses-02",
                                                "sub-03", "sub-04"]
    assert source[Keys.AGE].tolist() == [45.0, 49.5, 61.0, 63.0, 38.0, 52.0]  # ses-02 has its own age
    assert source[Keys.SITE].tolist() == ["Siemens_Prisma", "Siemens_Prisma", "GE_Premier", "Siemens_Prisma",
                                          "GE_Premier", "Siemens_Prisma"]
    deriv = tmp_path / "prep" / DERIVATIVES_DIR
    description = json.loads((deriv / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"] == "1.10.0"
    assert description["GeneratedBy"][0]["Name"] == "harmonize"
    assert description["GeneratedBy"][0]["Version"] == __version__
    assert description["SourceDatasets"] == [{"URL": (tmp_path / "ds").resolve().as_uri()}]
    assert description["DatasetLinks"] == {"raw": (tmp_path / "ds").resolve().as_uri()}
    prepared = read_manifest(tmp_path / "prep" / "manifest.csv")
    assert prepared[Keys.IMAGE].tolist() == [
        str(deriv / f"{sub}/{ses}anat/{sub}_{ses.strip('/') + '_' if ses else ''}desc-preproc_T1w.nii.gz")
        for sub, ses in (("sub-01", "ses-01/"), ("sub-01", "ses-02/"), ("sub-02", "ses-01/"), ("sub-02", "ses-02/"),
                         ("sub-03", ""), ("sub-04", ""))]
    image = Path(prepared[Keys.IMAGE].iloc[1])
    assert image.stat().st_ino == (tmp_path / "prep" / "images" / "sub-01_ses-02.nii.gz").stat().st_ino  # a link
    assert nib.load(image).shape == (10, 10, 10)
    sidecar = json.loads(image.with_name("sub-01_ses-02_desc-preproc_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz"]
    assert sidecar["Site"] == "Siemens_Prisma" and sidecar["Settings"]["target_shape"] == [10, 10, 10]
    mask = nib.load(image.with_name("sub-01_ses-02_desc-head_mask.nii.gz")).get_fdata()
    assert set(np.unique(mask)) == {0.0, 1.0}
    # every file docs/bids.md names exists in the dataset or the derivatives
    named = set(re.findall(r"(?<![\w-])(sub-\d[\w-]*\.(?:nii\.gz|json|tsv)|[A-Za-z]\w*\.(?:tsv|json))",
                           DOC.read_text()))
    written = {p.name for p in (tmp_path / "ds").rglob("*")} | {p.name for p in (tmp_path / "prep").rglob("*")}
    assert {"sub-01_sessions.tsv", "sub-02_ses-01_T1w.json", "sub-01_ses-02_desc-preproc_T1w.nii.gz",
            "sub-03_desc-head_mask.nii.gz", "dataset_description.json"} <= named
    assert named <= written, sorted(named - written)
    # a second run reuses every output and keeps the links
    again = preprocess_manifest(tmp_path / "manifest.csv", tmp_path / "prep", progress=False, bids_derivatives=True,
                                config=_config())
    assert again.processed == 0
    assert image.stat().st_ino == (tmp_path / "prep" / "images" / "sub-01_ses-02.nii.gz").stat().st_ino


def _config():
    from harmonize.data.preprocess import PreprocessConfig

    return PreprocessConfig(target_spacing=2.4, target_shape=(10, 10, 10))


def test_a_file_of_the_user_s_in_derivatives_is_refused_not_replaced(bids_example, tmp_path, monkeypatch, capsys):
    """A rerun with --bids-derivatives into an earlier output where the user put their own derivatives file."""
    monkeypatch.chdir(tmp_path)
    assert main(["manifest", "from-bids", "ds", "--site-from", "sidecar:Manufacturer", "--out", "manifest.csv"]) == 0
    argv = ["preprocess", "manifest.csv", "--out", "prep", "--spacing", "2.4", "--shape", "10", "10", "10",
            "--no-progress"]
    assert main(argv) == 0
    mine = tmp_path / "prep" / DERIVATIVES_DIR / "dataset_description.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"Name": "my own derivatives"}')
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main([*argv, "--bids-derivatives", *extra]) == 1
        err = capsys.readouterr().err
        assert "holds 1 file(s) that harmonize did not write, where this run writes its outputs: " \
               "derivatives/harmonize/dataset_description.json" in err and "Traceback" not in err
        assert mine.read_text() == '{"Name": "my own derivatives"}'


def test_derivatives_need_bids_scans(make_cohort, tmp_path):
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(HarmonizeError) as info:
        preprocess_manifest(manifest, tmp_path / "out", progress=False, bids_derivatives=True)
    message = str(info.value)
    assert "--bids-derivatives needs a manifest of BIDS scans" in message
    assert f"row 2: {manifest.parent / 'img' / 'siteA-00_T1w.nii.gz'} is not a BIDS T1w scan" in message
    assert not (tmp_path / "out" / "images").exists()  # checked before any work


def test_derivative_name():
    assert derivative_name("/d/sub-01/anat/sub-01_acq-mp_run-2_T1w.nii", "label").as_posix() == \
        "sub-01/anat/sub-01_acq-mp_run-2_desc-preproc_dseg.nii.gz"
    with pytest.raises(HarmonizeError, match="is not a BIDS T1w scan name"):
        derivative_name("/d/scan.nii.gz", "image")
