"""Tests of harmonize.data.manifest.volume_checks: each row's image and label files (header, voxels, grid)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from harmonize.data.manifest import header_problems
from harmonize.keys import Keys

from .conftest import SHAPE, problems_of, save_nifti, write_csv


def test_error_missing_image_file(cohort):
    path, rows = cohort
    rows[3][Keys.IMAGE] = "sub-404/anat/sub-404_T1w.nii.gz"
    problems = problems_of(write_csv(path, rows))
    missing = str(path.parent / "sub-404" / "anat" / "sub-404_T1w.nii.gz")
    assert problems == [f"row 5, column 'image', file '{missing}': does not exist (relative paths in a "
                        "manifest start from the manifest's folder)"]


def test_error_nan_voxels(cohort):
    path, rows = cohort
    data = np.ones(SHAPE, dtype=np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    bad = save_nifti(path.parent / "nan.nii.gz", data)
    rows[0][Keys.IMAGE] = bad.name
    problems = problems_of(write_csv(path, rows))
    assert problems == [f"row 2, column 'image', file '{bad}': has 3 NaN and 1 infinite voxel(s) of 512; "
                        "replace them (e.g. with 0) before training"]


def test_error_4d_image(cohort):
    path, rows = cohort
    bad = save_nifti(path.parent / "fmri.nii.gz", np.zeros((*SHAPE, 5), dtype=np.float32))
    rows[2][Keys.IMAGE] = bad.name
    rows[2][Keys.LABEL] = ""
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1
    assert problems[0].startswith(f"row 4, column 'image', file '{bad}': is 4D with 5 volumes (shape (8, 8, 8, 5))")


def test_4d_with_singleton_volume_is_accepted(cohort):
    path, rows = cohort
    image = save_nifti(path.parent / "single.nii.gz", np.ones((*SHAPE, 1), dtype=np.float32))
    rows[2][Keys.IMAGE] = image.name
    assert problems_of(write_csv(path, rows)) == []


def test_2d_image_and_single_slice_are_problems(cohort):
    path, rows = cohort
    rows[0][Keys.IMAGE] = save_nifti(path.parent / "flat.nii.gz", np.ones((8, 8), np.float32)).name
    rows[1][Keys.IMAGE] = save_nifti(path.parent / "slice.nii.gz", np.ones((8, 8, 1), np.float32)).name
    rows[0][Keys.LABEL] = rows[1][Keys.LABEL] = ""
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 2
    assert "row 2, column 'image'" in problems[0] and "is 2D (shape (8, 8)); harmonize needs 3D volumes" in problems[0]
    assert "row 3, column 'image'" in problems[1] and "is a single slice (shape (8, 8, 1))" in problems[1]


@pytest.mark.parametrize("cut", [0.5, 0.05])
def test_error_truncated_nifti(cohort, cut):
    path, rows = cohort
    good = path.parent / rows[1][Keys.IMAGE]
    content = good.read_bytes()
    bad = path.parent / "truncated.nii.gz"
    bad.write_bytes(content[: int(len(content) * cut)])
    rows[1][Keys.IMAGE] = bad.name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1
    assert problems[0].startswith(f"row 3, column 'image', file '{bad}': cannot be read as a NIfTI image "
                                  "(truncated or corrupt file?)")


def test_truncated_uncompressed_nifti(cohort):
    path, rows = cohort
    good = save_nifti(path.parent / "plain.nii", np.ones(SHAPE, np.float32))
    good.write_bytes(good.read_bytes()[:500])
    rows[0][Keys.IMAGE] = good.name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1 and "row 2, column 'image'" in problems[0] and "cannot be read" in problems[0]


def test_error_image_label_shape_mismatch(cohort):
    path, rows = cohort
    label = save_nifti(path.parent / "small_dseg.nii.gz", np.zeros((8, 8, 6), np.uint8))
    rows[4][Keys.LABEL] = label.name
    problems = problems_of(write_csv(path, rows))
    assert problems == [f"row 6, column 'label', file '{label}': shape (8, 8, 6) differs from the image's "
                        "(8, 8, 8); the label must be on the image's grid"]


def test_label_affine_mismatch_and_bad_values(cohort):
    path, rows = cohort
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    rows[0][Keys.LABEL] = save_nifti(path.parent / "shifted.nii.gz", np.zeros(SHAPE, np.uint8), shifted).name
    soft = np.full(SHAPE, 0.5, np.float32)
    rows[1][Keys.LABEL] = save_nifti(path.parent / "soft.nii.gz", soft).name
    rows[2][Keys.LABEL] = save_nifti(path.parent / "neg.nii.gz", -np.ones(SHAPE, np.int16)).name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 3
    assert "row 2, column 'label'" in problems[0] and "affine differs from the image's (largest difference 2)" in problems[0]
    assert "row 3, column 'label'" in problems[1] and "non-integer values (e.g. 0.5, 0.5, 0.5)" in problems[1]
    assert "row 4, column 'label'" in problems[2] and "negative values (minimum -1)" in problems[2]


def test_not_gzip_file_with_gz_name(cohort):
    path, rows = cohort
    bad = path.parent / "text.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti header at all"))
    rows[0][Keys.IMAGE] = bad.name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1 and problems[0].startswith(f"row 2, column 'image', file '{bad}': cannot be read")


def _patched(path: Path, **fields: np.ndarray) -> Path:
    """An 8^3 image with NIfTI-1 header fields overwritten in its bytes (``name=(byte offset, values)``)."""
    plain = save_nifti(path.parent / "plain.nii", np.ones(SHAPE, np.float32))
    content = bytearray(plain.read_bytes())
    plain.unlink()
    for offset, values in fields.values():
        raw = np.asarray(values).tobytes()
        content[offset:offset + len(raw)] = raw
    path.write_bytes(gzip.compress(bytes(content)) if path.name.endswith(".gz") else bytes(content))
    return path


def _no_geometry(path: Path, zooms: tuple[float, float, float]) -> Path:
    """qform_code = sform_code = 0 (bytes 252, 254) and pixdim[1:4] (byte 80) = ``zooms``."""
    return _patched(path, codes=(252, np.array([0, 0], "<i2")), pixdim=(80, np.array(zooms, "<f4")))


def _claims_more_voxels(path: Path) -> Path:
    """An 8^3 image whose header says 800^3 (dim[1:4] at byte 42 of the NIfTI-1 header)."""
    return _patched(path, dim=(42, np.array([800, 800, 800], "<i2")))


def _singular(path: Path) -> Path:
    affine = np.eye(4)
    affine[:3, :3] = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]  # columns of non-zero length, determinant 0
    return save_nifti(path, np.ones(SHAPE, np.float32), affine)


BAD_HEADERS = {
    "no orientation, pixdim 0": (lambda p: _no_geometry(p, (0, 0, 0)), "has voxel size (0.0, 0.0, 0.0) (pixdim)"),
    "no orientation": (lambda p: _no_geometry(p, (1, 1, 1)),
                       "has no orientation (qform_code and sform_code are both 0)"),
    "singular affine": (_singular, "has a singular or non-finite affine"),
    "all-zero affine": (lambda p: _patched(p, qform=(252, np.array([0, 1], "<i2")),
                                           srow=(280, np.zeros(12, "<f4"))), "has a singular or non-finite affine"),
    "claims more voxels gz": (_claims_more_voxels, "its header claims 512000000 voxels (shape (800, 800, 800)"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_missing_or_degenerate_geometry_is_a_problem_with_the_fix(cohort, case):
    path, rows = cohort
    make, message = BAD_HEADERS[case]
    bad = make(path.parent / "bad.nii.gz")
    rows[2][Keys.IMAGE] = bad.name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"row 4, column 'image', file '{bad}': ") and message in problems[0]
    fix = "copy or convert it again" if "claims" in case else "dcm2niix"
    assert fix in problems[0]


def test_header_claiming_more_voxels_uncompressed_is_caught_before_reading(cohort):
    path, rows = cohort
    bad = _claims_more_voxels(path.parent / "big.nii")
    rows[0][Keys.IMAGE] = bad.name
    # found from the header and the file size: reading 800^3 floats would ask for 2 GB (the MemoryError)
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1 and "row 2, column 'image'" in problems[0]
    assert "claims 512000000 voxels (shape (800, 800, 800), 2048000000 bytes) but the file holds 2048 bytes" in problems[0]


def test_label_values_outside_the_tissue_classes(cohort):
    path, rows = cohort
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, :2] = (4, 7)
    rows[3][Keys.LABEL] = save_nifti(path.parent / "seven.nii.gz", labels).name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1 and problems[0].startswith("row 5, column 'label'")
    assert "values outside the tissue classes 0-3 (e.g. 4, 7)" in problems[0]


def test_a_gzip_file_of_several_members_is_not_taken_for_truncated(cohort):
    """BGZF-style files (several gzip members) carry only the last member's size in their trailer."""
    path, rows = cohort
    plain = save_nifti(path.parent / "plain.nii", np.ones(SHAPE, np.float32)).read_bytes()
    members = path.parent / "members.nii.gz"
    members.write_bytes(gzip.compress(plain[:1000]) + gzip.compress(plain[1000:]) + gzip.compress(b""))
    rows[0][Keys.IMAGE] = members.name
    assert problems_of(write_csv(path, rows)) == []


def test_header_problems_alone_and_a_label_may_follow_its_image(cohort):
    path, _ = cohort
    assert header_problems(str(path.parent / "sub-001" / "anat" / "sub-001_T1w.nii.gz")) == []
    unoriented = str(_no_geometry(path.parent / "unoriented.nii.gz", (1, 1, 1)))
    assert [m[:60] for m in header_problems(unoriented)] == [
        "has no orientation (qform_code and sform_code are both 0): l"]
    assert header_problems(unoriented, is_label=True) == []  # a label map takes its image's orientation
