"""Tests of harmonize.data.manifest.reader: the table read, every cell checked, every problem named by row."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonize.data.manifest import ROW, read_manifest, summarize, validate_manifest
from harmonize.keys import ConfoundKind, Keys, Split

from .conftest import COLUMNS, REPO, problems_of, read_error, write_csv


def test_read_manifest_types_paths_and_rows(cohort):
    path, rows = cohort
    frame = read_manifest(path, confounds=["tiv"])
    assert list(frame.index) == [2, 3, 4, 5, 6, 7]
    assert frame.index.name == ROW
    assert frame[Keys.SUBJECT_ID].tolist() == ["001", "002", "003", "004", "005", "006"]
    assert frame[Keys.AGE].dtype == np.float64
    assert frame[Keys.AGE].tolist() == [20.0, 45.5, 60.0, 30.0, 50.0, 70.0]
    assert frame[Keys.IMAGE].iloc[0] == str(path.parent / rows[0][Keys.IMAGE])
    assert all(Path(p).is_absolute() and Path(p).exists() for p in frame[Keys.LABEL])
    assert frame[Keys.SEX].tolist() == ["F", "M", "F", "M", "F", "M"]
    assert frame["tiv"].dtype == np.float64
    assert frame["tiv"].iloc[0] == pytest.approx(1.3)
    assert frame.attrs["confounds"] == {"tiv": ConfoundKind.CONTINUOUS}


def test_absolute_paths_kept_and_empty_label_is_missing(cohort, tmp_path):
    path, rows = cohort
    absolute = str(tmp_path / rows[0][Keys.IMAGE])
    rows[0][Keys.IMAGE] = absolute
    rows[1][Keys.LABEL] = ""
    frame = read_manifest(write_csv(path, rows))
    assert frame[Keys.IMAGE].iloc[0] == absolute
    assert pd.isna(frame[Keys.LABEL].iloc[1])
    assert summarize(frame).n_labelled == 5
    assert validate_manifest(path, progress=False).ok


def test_forget_column_parsed_as_bool(cohort):
    path, rows = cohort
    for row, text in zip(rows, ["true", "1", "yes", "", "false", "no"]):
        row[Keys.FORGET] = text
    frame = read_manifest(write_csv(path, rows, COLUMNS + [Keys.FORGET]))
    assert frame[Keys.FORGET].dtype == bool
    assert frame[Keys.FORGET].tolist() == [True, True, True, False, False, False]
    rows[2][Keys.FORGET] = "maybe"
    message = read_error(write_csv(path, rows, COLUMNS + [Keys.FORGET]))
    assert "row 4, column 'forget': 'maybe' is not true or false" in message


def test_categorical_confound_inferred_and_declared(cohort):
    path, rows = cohort
    for row, field in zip(rows, ["1.5T", "3T", "3T", "1.5T", "3T", "3T"]):
        row["field"] = field
        row["coil"] = "1" if field == "3T" else "2"
    write_csv(path, rows, COLUMNS + ["field", "coil"])
    frame = read_manifest(path, confounds=["field", "coil:categorical", "sex"])
    assert frame.attrs["confounds"] == {"field": ConfoundKind.CATEGORICAL, "coil": ConfoundKind.CATEGORICAL,
                                        "sex": ConfoundKind.CATEGORICAL}
    assert frame["coil"].tolist() == ["2", "1", "1", "2", "1", "1"]
    assert read_manifest(path, confounds=["coil"]).attrs["confounds"] == {"coil": ConfoundKind.CONTINUOUS}
    message = read_error(path, confounds=["field:continuous"])
    assert "row 2, column 'field': '1.5T' is not a number (confound 'field' is continuous)" in message


def test_missing_column_named_with_suggestion(cohort):
    path, rows = cohort
    columns = [("Age" if c == Keys.AGE else c) for c in COLUMNS]
    for row in rows:
        row["Age"] = row.pop(Keys.AGE)
    message = read_error(write_csv(path, rows, columns), confounds=["scanner"])
    assert "row 1: the header has no column 'age' (a required column) (did you mean 'Age'?)" in message
    assert "no column 'scanner' (a declared confound)" in message


def test_require_label_column(cohort):
    path, rows = cohort
    write_csv(path, rows, [c for c in COLUMNS if c != Keys.LABEL])
    assert Keys.LABEL not in read_manifest(path)
    assert "no column 'label' (required for this task)" in read_error(path, require=[Keys.LABEL])


def test_ragged_row_and_all_problems_listed(cohort):
    path, rows = cohort
    write_csv(path, rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("007,x.nii.gz,B,40\n")
    rows[0][Keys.AGE] = "old"
    rows[1][Keys.SITE] = ""
    text = path.read_text().splitlines()
    text[1:3] = write_csv(path, rows).read_text().splitlines()[1:3]
    path.write_text("\n".join(text) + "\n")
    message = read_error(path)
    assert "has 3 problem(s)" in message
    assert "row 2, column 'age': 'old' is not a number" in message
    assert "row 3, column 'site': is empty" in message
    assert "row 8: has 4 fields but the header has 8" in message


def test_tab_separated_file_is_explained(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("subject_id\timage\tsite\n1\ta.nii\tA\n")
    assert "comma-separated" in read_error(path)


def test_missing_and_empty_manifest(tmp_path):
    assert "manifest file not found" in read_error(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in read_error(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(",".join(COLUMNS) + "\n")
    assert "no data rows" in read_error(tmp_path / "header.csv")


def test_age_out_of_range_from_schema(cohort):
    path, rows = cohort
    rows[3][Keys.AGE] = 450
    assert "row 5, column 'age': 450 is outside the allowed range [0, 130]" in read_error(write_csv(path, rows))


def test_error_age_not_a_number(cohort):
    path, rows = cohort
    rows[5][Keys.AGE] = "forty"
    assert "row 7, column 'age': 'forty' is not a number" in read_error(write_csv(path, rows))


def test_error_duplicate_subject_id(cohort):
    path, rows = cohort
    rows[4][Keys.SUBJECT_ID] = "002"
    message = read_error(write_csv(path, rows))
    assert "row 6, column 'subject_id': '002' is also the id of row 3" in message


def test_error_bad_split_value(cohort):
    path, rows = cohort
    rows[2][Keys.SPLIT] = "Train"
    message = read_error(write_csv(path, rows))
    assert "row 4, column 'split': 'Train' is not one of 'train', 'val', 'test' (did you mean 'train'?)" in message


def test_error_unknown_sex_value(cohort):
    path, rows = cohort
    rows[1][Keys.SEX] = "female"
    assert "row 3, column 'sex': 'female' is not one of 'F', 'M'" in read_error(write_csv(path, rows))


def test_fractional_site_labels_are_refused_not_truncated(cohort):
    path, rows = cohort
    for row, site in zip(rows, ("0.6", "0.6", "0.6", "1.4", "1.4", "2")):
        row[Keys.SITE] = site
    message = read_error(write_csv(path, rows))
    assert "row 2, column 'site': '0.6' is a fractional number" in message
    assert "row 5, column 'site': '1.4' is a fractional number" in message and "row 7" not in message
    for row, site in zip(rows, ("1", "1", "1", "2", "2", "2.0")):  # '2.0' would be a third site
        row[Keys.SITE] = site
    assert "row 7, column 'site': '2.0' is an integer written as '2.0'; write integer site ids plainly ('2')" in (
        read_error(write_csv(path, rows)))
    rows[5][Keys.SITE] = "2"  # integer ids and names (zero-padded too) stay allowed
    rows[0][Keys.SITE] = "007"
    assert sorted(read_manifest(write_csv(path, rows))[Keys.SITE].unique()) == ["007", "1", "2"]


@pytest.mark.parametrize(("case", "column", "value", "message"), [
    ("nul in id", Keys.SUBJECT_ID, "sub\x0001", "holds a NUL byte, which no file name or path can hold"),
    ("nul in path", Keys.IMAGE, "sub-001/anat/sub\x00.nii.gz", "holds a NUL byte"),
    ("id too long", Keys.SUBJECT_ID, "s" * 300, "is 300 bytes long; outputs are named after the subject id"),
])
def test_values_that_cannot_name_a_file_are_refused_by_row(cohort, case, column, value, message):
    path, rows = cohort
    rows[1][column] = value
    manifest = write_csv(path, rows)
    assert f"row 3, column '{column}': {message}" in read_error(manifest)
    problems = problems_of(manifest)  # validate: the same problem, and no traceback from the NUL byte
    assert any(p.startswith(f"row 3, column '{column}': {message}") for p in problems)


def test_a_manifest_path_with_a_nul_byte_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "m\x00.csv"
    assert problems_of(path) == [f"the manifest path {str(path)!r} holds a NUL byte, which no path can hold"]


def test_template_manifest_reads(tmp_path):
    template = REPO / "data_manifests" / "template.csv"
    frame = read_manifest(template, confounds=["field_strength", "tiv"])
    assert len(frame) >= 4 and frame[Keys.SITE].nunique() >= 2
    assert frame.attrs["confounds"] == {"field_strength": ConfoundKind.CATEGORICAL, "tiv": ConfoundKind.CONTINUOUS}
    assert set(frame[Keys.SPLIT]) <= {s.value for s in Split}
    assert all(not math.isnan(a) for a in frame[Keys.AGE])
