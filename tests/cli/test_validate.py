"""Tests of ``harmonize validate``: exit status, the report, row-naming messages, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from harmonize.cli.main import main
from harmonize.keys import Keys

from ..conftest import write_csv

SHAPE = (8, 8, 8)
COLUMNS = [Keys.SUBJECT_ID, Keys.IMAGE, Keys.SITE, Keys.AGE, Keys.SEX, Keys.SPLIT, Keys.LABEL]
DESIGN = [("A", 25.0, "F", "train"), ("A", 55.0, "M", "test"), ("B", 35.0, "M", "train"), ("B", 65.0, "F", "val")]


def save(path: Path, data: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return str(path.relative_to(path.parents[2]))


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(1)
    rows = []
    for i, (site, age, sex, split) in enumerate(DESIGN, start=1):
        sid = f"sub-{i:02d}"
        image = save(tmp_path / sid / "anat" / f"{sid}_T1w.nii.gz", rng.random(SHAPE, dtype=np.float32))
        label = save(tmp_path / sid / "anat" / f"{sid}_dseg.nii.gz", rng.integers(0, 2, SHAPE).astype(np.uint8))
        rows.append({Keys.SUBJECT_ID: sid, Keys.IMAGE: image, Keys.SITE: site, Keys.AGE: age, Keys.SEX: sex,
                     Keys.SPLIT: split, Keys.LABEL: label})
    return write_csv(tmp_path / "manifest.csv", rows), rows


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    status = main(["validate", *argv])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return status, text


def test_valid_manifest_exits_0_with_summary(cohort, capsys):
    path, _ = cohort
    status, text = run_cli(capsys, str(path))
    assert status == 0
    assert "4 scans, 2 site(s), 4 with a label, 0 marked forget" in text
    assert "  A        1     0     1      2  25.0-55.0" in text
    assert "  B        1     1     0      2  35.0-65.0" in text
    assert "age range shared by all sites: 35.0-55.0" in text
    assert "image and label files loaded: 8" in text
    assert "\nOK\n" in text


def _break(tmp: Path, rows: list[dict], case: str) -> str:
    """Apply one mistake to the rows; return the message the report must contain."""
    if case == "missing image":
        rows[1][Keys.IMAGE] = "sub-02/anat/gone.nii.gz"
        return f"row 3, column 'image', file '{tmp / 'sub-02' / 'anat' / 'gone.nii.gz'}': does not exist"
    if case == "age":
        rows[2][Keys.AGE] = "forty"
        return "row 4, column 'age': 'forty' is not a number"
    if case == "split":
        rows[0][Keys.SPLIT] = "training"
        return "row 2, column 'split': 'training' is not one of 'train', 'val', 'test'"
    if case == "duplicate":
        rows[3][Keys.SUBJECT_ID] = "sub-01"
        return "row 5, column 'subject_id': 'sub-01' is also the id of row 2"
    if case == "sex":
        rows[3][Keys.SEX] = "X"
        return "row 5, column 'sex': 'X' is not one of 'F', 'M'"
    if case == "nan":
        data = np.zeros(SHAPE, np.float32)
        data[2, 2, 2] = np.nan
        rows[0][Keys.IMAGE] = save(tmp / "sub-01" / "anat" / "nan_T1w.nii.gz", data)
        return f"row 2, column 'image', file '{tmp / rows[0][Keys.IMAGE]}': has 1 NaN and 0 infinite voxel(s)"
    if case == "4d":
        rows[1][Keys.IMAGE] = save(tmp / "sub-02" / "func" / "bold.nii.gz", np.zeros((*SHAPE, 3), np.float32))
        rows[1][Keys.LABEL] = ""
        return f"row 3, column 'image', file '{tmp / rows[1][Keys.IMAGE]}': is 4D with 3 volumes"
    if case == "truncated":
        image = tmp / rows[2][Keys.IMAGE]
        image.write_bytes(image.read_bytes()[:300])
        return f"row 4, column 'image', file '{image}': cannot be read as a NIfTI image"
    if case == "label shape":
        rows[3][Keys.LABEL] = save(tmp / "sub-04" / "anat" / "small_dseg.nii.gz", np.zeros((8, 8, 4), np.uint8))
        return f"row 5, column 'label', file '{tmp / rows[3][Keys.LABEL]}': shape (8, 8, 4) differs from the image's"
    if case == "2d":
        rows[1][Keys.IMAGE] = save(tmp / "sub-02" / "anat" / "flat_T1w.nii.gz", np.zeros((8, 8), np.float32))
        rows[1][Keys.LABEL] = ""
        return f"row 3, column 'image', file '{tmp / rows[1][Keys.IMAGE]}': is 2D (shape (8, 8)); harmonize needs 3D"
    if case == "inf":
        data = np.zeros(SHAPE, np.float32)
        data[0, 0, 0] = np.inf
        rows[2][Keys.IMAGE] = save(tmp / "sub-03" / "anat" / "inf_T1w.nii.gz", data)
        return f"row 4, column 'image', file '{tmp / rows[2][Keys.IMAGE]}': has 0 NaN and 1 infinite voxel(s)"
    if case == "label affine":
        path = tmp / "sub-04" / "anat" / "shifted_dseg.nii.gz"
        shifted = np.eye(4)
        shifted[0, 3] = 2.0
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), shifted), str(path))
        rows[3][Keys.LABEL] = str(path.relative_to(tmp))
        return (f"row 5, column 'label', file '{path}': affine differs from the image's (largest difference 2); "
                "resample the label onto the image's grid")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing image", "age", "split", "duplicate", "sex", "nan", "inf", "4d", "2d",
                                  "truncated", "label shape", "label affine"])
def test_problem_exits_1_naming_the_row(cohort, capsys, case):
    path, rows = cohort
    expected = _break(path.parent, rows, case)
    write_csv(path, rows)
    status, text = run_cli(capsys, str(path))
    assert status == 1
    assert expected in text
    assert "FAILED: 1 problem(s)" in text


def test_no_images_skips_file_checks(cohort, capsys):
    path, rows = cohort
    rows[0][Keys.IMAGE] = "nowhere.nii.gz"
    write_csv(path, rows)
    status, text = run_cli(capsys, str(path), "--no-images")
    assert status == 0
    assert "images and labels not loaded (table checks only)" in text


def test_confounds_and_require(cohort, capsys):
    path, _ = cohort
    status, text = run_cli(capsys, str(path), "--confounds", "age,scanner", "--require", "label")
    assert status == 1
    assert "row 1: the header has no column 'scanner' (a declared confound)" in text
    status, text = run_cli(capsys, str(path), "--confounds", "age:ordinal")
    assert status == 1
    assert "error: invalid confound declarations" in text and "kind 'ordinal' is not one of" in text


def test_missing_manifest_exits_1(tmp_path, capsys):
    status, text = run_cli(capsys, str(tmp_path / "none.csv"))
    assert status == 1
    assert f"manifest file not found: {tmp_path / 'none.csv'}" in text


def test_console_script_prints_no_traceback(cohort):
    path, rows = cohort
    rows[2][Keys.AGE] = "forty"
    write_csv(path, rows)
    done = subprocess.run([sys.executable, "-m", "harmonize.cli.main", "validate", str(path), "--no-images"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "row 4, column 'age': 'forty' is not a number" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_required_label_column_is_named(cohort, capsys):
    path, rows = cohort
    write_csv(path, rows, [c for c in COLUMNS if c != Keys.LABEL])  # a brain-age manifest: no label column
    status, text = run_cli(capsys, str(path), "--require", "label", "--no-images")
    assert status == 1
    assert "row 1: the header has no column 'label' (required for this task)" in text


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one site", ("column 'site': only one site ('A') in the data: there is no scanner bias to unlearn "
                      "(site-unlearning needs two or more sites)")),
        ("no train", "column 'site': site 'B' has no 'train' scans; it can only serve as an unseen test site"),
        ("few scans", "column 'site': site 'C' has only 1 scan(s); the domain head cannot learn a site from so few"),
        ("no overlap", ("column 'age': the sites' age ranges do not overlap: unlearning on the shared age range "
                        "(biased-data experiment) is impossible")),
    ],
)
def test_design_warnings_pass_or_fail_with_strict(cohort, capsys, case, expected):
    path, rows = cohort
    if case == "one site":
        for row in rows:
            row[Keys.SITE] = "A"
    elif case == "no train":
        rows[2][Keys.SPLIT] = "test"
    elif case == "few scans":
        rows[3][Keys.SITE] = "C"
    else:
        rows[0][Keys.AGE], rows[1][Keys.AGE] = 20.0, 22.0
    write_csv(path, rows)
    status, text = run_cli(capsys, str(path), "--no-images")
    assert status == 0 and expected in text and "\nOK\n" in text
    status, text = run_cli(capsys, str(path), "--no-images", "--strict")
    assert status == 1 and expected in text and "FAILED (--strict): " in text
