"""Tests of harmonize.data.manifest: reading, schema, summary, validation with images."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from harmonize.data.manifest import (
    ROW,
    ManifestProblem,
    format_schema,
    load_schema,
    overlap_range,
    parse_confounds,
    read_manifest,
    schema_path,
    summarize,
    validate_manifest,
    write_manifest,
)
from harmonize.errors import ConfigError, ManifestError
from harmonize.keys import ConfoundKind, Keys, Split

REPO = Path(__file__).resolve().parents[2]
SHAPE = (8, 8, 8)
COLUMNS = [Keys.SUBJECT_ID, Keys.IMAGE, Keys.SITE, Keys.AGE, Keys.SEX, Keys.SPLIT, Keys.LABEL, "tiv"]
# (site, age, sex, split) of the six scans of the default cohort; rows 2..7 of the CSV.
DESIGN = [("A", 20.0, "F", "train"), ("A", 45.5, "M", "train"), ("A", 60.0, "F", "test"),
          ("B", 30.0, "M", "train"), ("B", 50.0, "F", "val"), ("B", 70.0, "M", "train")]


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = [str(c) for c in (columns or COLUMNS)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({str(k): v for k, v in row.items()} for row in rows)
    return path


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Six scans at two sites (8^3 float images, uint8 labels), rows as dicts to edit, and the manifest path."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (site, age, sex, split) in enumerate(DESIGN, start=1):
        sid = f"{i:03d}"
        image = save_nifti(tmp_path / f"sub-{sid}" / "anat" / f"sub-{sid}_T1w.nii.gz",
                           rng.random(SHAPE, dtype=np.float32))
        label = save_nifti(tmp_path / f"sub-{sid}" / "anat" / f"sub-{sid}_dseg.nii.gz",
                           rng.integers(0, 3, SHAPE).astype(np.uint8))
        rows.append({Keys.SUBJECT_ID: sid, Keys.IMAGE: str(image.relative_to(tmp_path)), Keys.SITE: site,
                     Keys.AGE: age, Keys.SEX: sex, Keys.SPLIT: split, Keys.LABEL: str(label.relative_to(tmp_path)),
                     "tiv": 1.2 + 0.1 * i})
    return write_csv(tmp_path / "manifest.csv", rows), rows


def problems_of(path: Path, **kwargs) -> list[str]:
    return [str(p) for p in validate_manifest(path, progress=False, **kwargs).problems]


def read_error(path: Path, **kwargs) -> str:
    with pytest.raises(ManifestError) as info:
        read_manifest(path, **kwargs)
    return str(info.value)


# --- reading -----------------------------------------------------------------------------------------------
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


def test_parse_confounds_rejects_bad_kind():
    assert parse_confounds(["a", "b:continuous"]) == {"a": None, "b": ConfoundKind.CONTINUOUS}
    with pytest.raises(ConfigError, match="kind 'ordinal' is not one of categorical, continuous"):
        parse_confounds(["a:ordinal"])
    with pytest.raises(ConfigError, match="not the string"):
        parse_confounds("age")


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


# --- the required error tests (each names row and column, and file where there is one) -------------------
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


def test_same_image_in_two_rows(cohort):
    path, rows = cohort
    rows[5][Keys.IMAGE] = rows[0][Keys.IMAGE]
    problems = problems_of(write_csv(path, rows), check_images=False)
    assert problems == [f"row 7, column 'image', file '{path.parent / rows[0][Keys.IMAGE]}': the same image as "
                        "row 2; each row must be its own scan"]


def test_not_gzip_file_with_gz_name(cohort):
    path, rows = cohort
    bad = path.parent / "text.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti header at all"))
    rows[0][Keys.IMAGE] = bad.name
    problems = problems_of(write_csv(path, rows))
    assert len(problems) == 1 and problems[0].startswith(f"row 2, column 'image', file '{bad}': cannot be read")


# --- validation report, design warnings, summary ----------------------------------------------------------
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


@pytest.mark.parametrize(
    ("ages", "expected"),
    [({"A": [20, 60], "B": [30, 70]}, (30.0, 60.0)),
     ({"A": [20, 40], "B": [40, 70], "C": [10, 90]}, (40.0, 40.0)),
     ({"A": [20, 30], "B": [40, 70]}, None),
     ({"A": [25.5, 80]}, (25.5, 80.0))],
)
def test_overlap_range(ages, expected):
    frame = pd.DataFrame([{Keys.SITE.value: s, Keys.AGE.value: a} for s, values in ages.items() for a in values])
    assert overlap_range(frame) == expected


def test_overlap_range_empty_and_other_key():
    assert overlap_range(pd.DataFrame({Keys.SITE.value: [], Keys.AGE.value: []})) is None
    frame = pd.DataFrame({"scanner": ["x", "x", "y"], "tiv": [1.0, 2.0, 1.5], Keys.SITE.value: ["a"] * 3})
    assert overlap_range(frame, key="tiv", by="scanner") == (1.5, 1.5)


def test_problem_str():
    assert str(ManifestProblem("bad", row=3, column="age", file="/x.nii")) == "row 3, column 'age', file '/x.nii': bad"
    assert str(ManifestProblem("whole file")) == "whole file"


# --- writing -------------------------------------------------------------------------------------------------
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


# --- the schema -------------------------------------------------------------------------------------------------
def _json_row(row: dict) -> dict:
    return {str(k): v for k, v in row.items()}


VALID_ROW = {"subject_id": "sub-001", "image": "sub-001/anat/sub-001_T1w.nii.gz", "site": "A", "age": 34.5,
             "sex": "F", "split": "train"}


def test_schema_is_valid_draft_2020_12():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {Keys.SUBJECT_ID, Keys.IMAGE, Keys.SITE, Keys.AGE, Keys.SEX, Keys.SPLIT}
    assert schema["properties"][Keys.SPLIT]["enum"] == [s.value for s in Split]
    assert all(spec.get("description") for spec in schema["properties"].values())


@pytest.mark.parametrize("row", [
    VALID_ROW,
    {**VALID_ROW, "label": "sub-001/anat/sub-001_dseg.nii.gz", "forget": True, "tiv": 1.4, "scanner": "3T"},
    {**VALID_ROW, "label": None, "age": 0},
])
def test_schema_accepts_valid_rows(row):
    jsonschema.validate(row, load_schema(), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(("change", "missing"), [
    ({"age": "forty"}, None), ({"age": -1}, None), ({"age": 200}, None), ({"sex": "female"}, None),
    ({"split": "training"}, None), ({"subject_id": ""}, None), ({"subject_id": 1}, None),
    ({"forget": "yes"}, None), ({"extra": [1, 2]}, None), ({}, "image"), ({}, "site"),
])
def test_schema_rejects_bad_rows(change, missing):
    row = {**VALID_ROW, **change}
    if missing:
        del row[missing]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(row, load_schema(), cls=jsonschema.Draft202012Validator)


def test_read_rows_satisfy_the_schema(cohort):
    path, rows = cohort
    rows[0][Keys.LABEL] = ""
    for row, flag in zip(rows, ["1", "", "no", "yes", "true", "0"]):
        row[Keys.FORGET] = flag
    frame = read_manifest(write_csv(path, rows, COLUMNS + [Keys.FORGET]), confounds=["tiv"])
    validator = jsonschema.Draft202012Validator(load_schema())
    for record in json.loads(frame.to_json(orient="records")):
        validator.validate(record)


def test_schema_symlink_and_format():
    link = REPO / "data_manifests" / "schema.json"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == schema_path().resolve()
    text = format_schema()
    assert str(schema_path()) in text
    assert "split       required  string in {train, val, test}" in text
    assert "age         required  number in [0, 130]" in text


def test_template_manifest_reads(tmp_path):
    template = REPO / "data_manifests" / "template.csv"
    frame = read_manifest(template, confounds=["field_strength", "tiv"])
    assert len(frame) >= 4 and frame[Keys.SITE].nunique() >= 2
    assert frame.attrs["confounds"] == {"field_strength": ConfoundKind.CATEGORICAL, "tiv": ConfoundKind.CONTINUOUS}
    assert set(frame[Keys.SPLIT]) <= {s.value for s in Split}
    assert all(not math.isnan(a) for a in frame[Keys.AGE])


def test_tiny_cohort_has_no_problems(tiny_cohort):
    report = validate_manifest(tiny_cohort, progress=False)
    assert report.problems == [], report.format()
    assert report.n_files_checked >= report.summary.n_scans == 18
    assert len(report.summary.counts) == 3 and report.summary.overlap is not None


# --- geometry, header size, label classes, site values, ids that cannot name a file (issue 17, class 2-3) ----
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


def test_a_gzip_file_of_several_members_is_not_taken_for_truncated(cohort):
    """BGZF-style files (several gzip members) carry only the last member's size in their trailer."""
    path, rows = cohort
    plain = save_nifti(path.parent / "plain.nii", np.ones(SHAPE, np.float32)).read_bytes()
    members = path.parent / "members.nii.gz"
    members.write_bytes(gzip.compress(plain[:1000]) + gzip.compress(plain[1000:]) + gzip.compress(b""))
    rows[0][Keys.IMAGE] = members.name
    assert problems_of(write_csv(path, rows)) == []
