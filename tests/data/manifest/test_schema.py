"""Tests of harmonize.data.manifest.schema: the JSON Schema of a row, its text form, confound declarations."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harmonize.data.manifest import (
    format_schema,
    load_schema,
    parse_confounds,
    read_manifest,
    schema_path,
)
from harmonize.errors import ConfigError
from harmonize.keys import ConfoundKind, Keys, Split

from .conftest import COLUMNS, REPO, write_csv

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


def test_parse_confounds_rejects_bad_kind():
    assert parse_confounds(["a", "b:continuous"]) == {"a": None, "b": ConfoundKind.CONTINUOUS}
    with pytest.raises(ConfigError, match="kind 'ordinal' is not one of categorical, continuous"):
        parse_confounds(["a:ordinal"])
    with pytest.raises(ConfigError, match="not the string"):
        parse_confounds("age")
