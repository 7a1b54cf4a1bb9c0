"""Tests of harmonize.data.manifest.validation: the report, its summary, design warnings and sorted problems."""

from __future__ import annotations

import pytest

from harmonize.data.manifest import validate_manifest
from harmonize.errors import ManifestError
from harmonize.keys import Keys, Split

from .conftest import problems_of, write_csv


def test_valid_cohort_report(cohort):
    path, _ = cohort
    report = validate_manifest(path, confounds=["tiv"], progress=False, num_workers=2)
    assert report.ok and report.problems == [] and report.warnings == []
    assert report.n_files_checked == 12
    assert report.summary.counts == {"A": {"train": 2, "val": 0, "test": 1}, "B": {"train": 2, "val": 1, "test": 0}}
    assert report.summary.age_ranges == {"A": (20.0, 60.0), "B": (30.0, 70.0)}
    assert report.summary.overlap == (30.0, 60.0)
    text = report.format()
    assert "age range shared by all sites: 30.0-60.0" in text and text.endswith("OK")
    assert "  A        2     0     1      3  20.0-60.0" in text


def test_design_warnings(cohort):
    path, rows = cohort
    rows[5][Keys.SITE] = "C"
    for row in rows[3:5]:
        row[Keys.SPLIT] = Split.TEST.value
    report = validate_manifest(write_csv(path, rows), check_images=False, progress=False)
    assert report.ok
    warnings = [str(w) for w in report.warnings]
    assert "column 'site': site 'B' has no 'train' scans; it can only serve as an unseen test site" in warnings
    assert any("site 'C' has only 1 scan(s)" in w for w in warnings)
    assert not report.images_checked
    assert "not loaded" in report.format()


def test_one_site_and_no_overlap_warnings(cohort):
    path, rows = cohort
    for row in rows:
        row[Keys.SITE] = "A"
    report = validate_manifest(write_csv(path, rows), check_images=False, progress=False)
    assert [str(w) for w in report.warnings] == [
        "column 'site': only one site ('A') in the data: there is no scanner bias to unlearn (site-unlearning "
        "needs two or more sites)"]
    rows[0][Keys.SITE] = rows[1][Keys.SITE] = "young"
    rows[0][Keys.AGE], rows[1][Keys.AGE] = 5, 6
    report = validate_manifest(write_csv(path, rows), check_images=False, progress=False)
    assert any("age ranges do not overlap" in str(w) for w in report.warnings)


def test_report_lists_table_and_file_problems_sorted(cohort):
    path, rows = cohort
    rows[4][Keys.AGE] = "?"
    rows[1][Keys.IMAGE] = "gone.nii.gz"
    report = validate_manifest(write_csv(path, rows), progress=False)
    assert [(p.row, p.column) for p in report.problems] == [(3, Keys.IMAGE), (6, Keys.AGE)]
    with pytest.raises(ManifestError, match="has 2 problem"):
        report.raise_for_problems()


def test_unreadable_manifest_gives_report_without_summary(tmp_path):
    report = validate_manifest(tmp_path / "missing.csv", progress=False)
    assert not report.ok and report.summary is None
    assert str(report.problems[0]).startswith("manifest file not found")


def test_same_image_in_two_rows(cohort):
    path, rows = cohort
    rows[5][Keys.IMAGE] = rows[0][Keys.IMAGE]
    problems = problems_of(write_csv(path, rows), check_images=False)
    assert problems == [f"row 7, column 'image', file '{path.parent / rows[0][Keys.IMAGE]}': the same image as "
                        "row 2; each row must be its own scan"]


def test_tiny_cohort_has_no_problems(tiny_cohort):
    report = validate_manifest(tiny_cohort, progress=False)
    assert report.problems == [], report.format()
    assert report.n_files_checked >= report.summary.n_scans == 18
    assert len(report.summary.counts) == 3 and report.summary.overlap is not None
