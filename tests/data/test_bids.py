"""Tests of harmonize.data.bids: a manifest from a small BIDS tree written by the test."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from harmonize.data.bids import (
    SEX_MAP,
    SiteFrom,
    assign_splits,
    bids_entities,
    bids_manifest_frame,
    manifest_from_bids,
    sidecar_of,
)
from harmonize.data.manifest import read_manifest, validate_manifest
from harmonize.errors import ConfigError, ManifestError
from harmonize.keys import Keys, Sex, Split
from harmonize.output_dir import OutputDirError

HEADER = ["participant_id", "age", "sex", "scanner", "handedness"]
PARTICIPANTS = [
    ["sub-01", "30", "M", "siteA", "R"],
    ["sub-02", "40.5", "female", "siteA", "n/a"],
    ["sub-03", "50", "0", "siteB", "L"],
    ["sub-04", "60", "Male", "siteB", "R"],
]


def save_t1w(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(path))


def write_participants(root: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path = root / "participants.tsv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows([header, *rows])
    return path


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    """A BIDS tree: sub-01..03 without sessions, sub-04 with two sessions."""
    root = tmp_path / "ds"
    root.mkdir()
    write_participants(root, PARTICIPANTS)
    (root / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.8.0"}')
    for sub in ("01", "02", "03"):
        save_t1w(root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    save_t1w(root / "sub-02" / "anat" / "sub-02_T2w.nii.gz")  # not a T1w: ignored
    for ses in ("1", "2"):
        save_t1w(root / "sub-04" / f"ses-{ses}" / "anat" / f"sub-04_ses-{ses}_T1w.nii.gz")
    return root


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ManifestError) as info:
        manifest_from_bids(*args, **kwargs)
    return str(info.value)


def test_manifest_from_bids(bids, tmp_path):
    out = manifest_from_bids(bids, "scanner", tmp_path / "manifest.csv", extra_columns=["handedness"])
    assert out == tmp_path / "manifest.csv"
    lines = out.read_text().splitlines()
    assert lines[0] == "subject_id,image,site,age,sex,split,handedness"
    assert lines[4] == "sub-04_ses-1,ds/sub-04/ses-1/anat/sub-04_ses-1_T1w.nii.gz,siteB,60.0,M,train,R"
    frame = read_manifest(out)
    assert frame["handedness"].tolist() == ["R", "", "L", "R", "R"]  # n/a becomes an empty cell
    with pytest.raises(ManifestError, match="row 3, column 'handedness': is empty"):
        read_manifest(out, confounds=["handedness"])
    assert frame[Keys.SUBJECT_ID].tolist() == ["sub-01", "sub-02", "sub-03", "sub-04_ses-1", "sub-04_ses-2"]
    assert frame[Keys.SEX].tolist() == ["M", "F", "F", "M", "M"]
    assert frame[Keys.AGE].tolist() == [30.0, 40.5, 50.0, 60.0, 60.0]
    assert frame[Keys.SITE].tolist() == ["siteA", "siteA", "siteB", "siteB", "siteB"]
    assert frame.loc[5, Keys.IMAGE] == str(bids / "sub-04" / "ses-1" / "anat" / "sub-04_ses-1_T1w.nii.gz")
    # two participants per site at 15 % / 15 %: nothing rounds up to a val or test participant
    assert set(frame[Keys.SPLIT]) == {Split.TRAIN.value}
    report = validate_manifest(out, progress=False)
    assert report.ok, report.format()


def test_splits_are_per_participant_and_reproducible(bids, tmp_path):
    rows = [[f"sub-{i:02d}", str(20 + i), "F", "siteA" if i % 2 else "siteB", "R"] for i in range(1, 21)]
    write_participants(bids, rows)
    for i in range(5, 21):
        save_t1w(bids / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz")
    save_t1w(bids / "sub-04" / "anat" / "sub-04_T1w.nii.gz")  # sub-04 now has three scans
    first = bids_manifest_frame(bids, "scanner", seed=3, val_fraction=0.2, test_fraction=0.2)
    again = bids_manifest_frame(bids, "scanner", seed=3, val_fraction=0.2, test_fraction=0.2)
    assert first.equals(again)
    sub04 = first[first[Keys.SUBJECT_ID].str.startswith("sub-04")]
    assert len(sub04) == 3 and sub04[Keys.SPLIT].nunique() == 1
    per_participant = first.assign(pid=first[Keys.SUBJECT_ID].str[:6]).drop_duplicates("pid")
    counts = per_participant.groupby([Keys.SITE.value, Keys.SPLIT.value]).size().to_dict()
    assert counts == {("siteA", "test"): 2, ("siteA", "train"): 6, ("siteA", "val"): 2,
                      ("siteB", "test"): 2, ("siteB", "train"): 6, ("siteB", "val"): 2}
    other = bids_manifest_frame(bids, "scanner", seed=4, val_fraction=0.2, test_fraction=0.2)
    assert not other[Keys.SPLIT].equals(first[Keys.SPLIT])


def test_assign_splits_numbers_and_site_independence():
    sites = {"A": [f"a{i}" for i in range(20)], "B": [f"b{i}" for i in range(3)], "C": ["c0"]}
    splits = assign_splits(sites, seed=0, val_fraction=0.15, test_fraction=0.15)
    a = [splits[p] for p in sites["A"]]
    assert (a.count(Split.TRAIN), a.count(Split.VAL), a.count(Split.TEST)) == (14, 3, 3)
    assert [splits[p] for p in sites["B"]] == [Split.TRAIN] * 3  # 3 * 0.15 rounds to 0
    assert splits["c0"] == Split.TRAIN
    alone = assign_splits({"A": list(reversed(sites["A"]))}, seed=0)
    assert {p: alone[p] for p in sites["A"]} == {p: splits[p] for p in sites["A"]}
    tight = assign_splits({"S": ["x", "y"]}, val_fraction=0.45, test_fraction=0.45)
    assert sorted(tight.values()) == sorted([Split.TRAIN, Split.TEST])


@pytest.mark.parametrize(("val", "test", "problems"), [
    (-0.1, 0.1, ["'val_fraction' must be a finite number >= 0 and < 1, got -0.1 (float)"]),
    (0.1, 1.0, ["'test_fraction' must be a finite number >= 0 and < 1, got 1.0 (float)"]),
    (1, "x", ["'val_fraction' must be a finite number >= 0 and < 1, got 1 (int)",
              "'test_fraction' must be a finite number >= 0 and < 1, got 'x' (str)"]),
    (0.6, 0.5, ["'val_fraction' + 'test_fraction' must be < 1 so that some participants train, got 0.6 + 0.5"]),
])
def test_assign_splits_rejects_bad_fractions(val, test, problems):
    with pytest.raises(ConfigError) as info:
        assign_splits({"A": ["a"]}, val_fraction=val, test_fraction=test)
    assert info.value.problems == problems


def test_missing_participants_tsv(bids, tmp_path):
    (bids / "participants.tsv").unlink()
    message = error_of(bids, "scanner", tmp_path / "m.csv")
    assert f"{bids / 'participants.tsv'} not found" in message


def test_missing_site_column_lists_available(bids, tmp_path):
    message = error_of(bids, "site", tmp_path / "m.csv")
    assert "participants.tsv has no column 'site'; its columns are: participant_id, age, sex, scanner, handedness" \
        in message


def test_participant_without_images_and_image_without_participant(bids, tmp_path):
    save_t1w(bids / "sub-09" / "anat" / "sub-09_T1w.nii.gz")
    for path in (bids / "sub-03").rglob("*.nii.gz"):
        path.unlink()
    message = error_of(bids, "scanner", tmp_path / "m.csv")
    assert "2 problem(s)" in message
    assert f"{bids / 'sub-09' / 'anat' / 'sub-09_T1w.nii.gz'}: participant 'sub-09' has no row in " \
           f"{bids / 'participants.tsv'}" in message
    assert f"{bids / 'participants.tsv'} row 4 (sub-03): no T1w image found" in message
    assert not (tmp_path / "m.csv").exists()


def test_unknown_sex_and_bad_age_name_row_and_column(bids, tmp_path):
    rows = [list(r) for r in PARTICIPANTS]
    rows[1][2] = "other"
    rows[2][1] = "n/a"
    write_participants(bids, rows)
    message = error_of(bids, "scanner", tmp_path / "m.csv")
    tsv = bids / "participants.tsv"
    assert f"{tsv} row 3 (sub-02), column 'sex': 'other' is not a known sex value" in message
    assert f"{tsv} row 4 (sub-03), column 'age': 'n/a' is not an age in years" in message


def test_skip_invalid_leaves_out_bad_participants(bids, tmp_path, caplog):
    rows = [list(r) for r in PARTICIPANTS]
    rows[1][2] = "2"
    write_participants(bids, rows)
    with caplog.at_level(logging.WARNING, logger="harmonize.data.bids"):
        out = manifest_from_bids(bids, "scanner", tmp_path / "m.csv", skip_invalid=True)
    assert "sub-02" not in read_manifest(out)[Keys.SUBJECT_ID].tolist()
    assert "'2' is not a known sex value" in caplog.text
    frame = bids_manifest_frame(bids, "scanner", sex_map={"2": "F"})
    assert frame.loc[frame[Keys.SUBJECT_ID] == "sub-02", Keys.SEX].item() == "F"


def test_sex_map_documented_defaults_and_bad_override(bids):
    assert {k: SEX_MAP[k] for k in ("0", "1", "female", "male")} == {
        "0": Sex.FEMALE, "1": Sex.MALE, "female": Sex.FEMALE, "male": Sex.MALE}
    with pytest.raises(ConfigError, match="map every value to F or M"):
        bids_manifest_frame(bids, "scanner", sex_map={"2": "woman"})


def test_never_overwrites_without_flag(bids, tmp_path):
    out = tmp_path / "m.csv"
    out.write_text("keep me")
    with pytest.raises(OutputDirError, match="already exists; choose another output path or pass --overwrite"):
        manifest_from_bids(bids, "scanner", out)
    with pytest.raises(OutputDirError, match="holds 1 file.s. that harmonize did not write, where this run writes "
                                             "its outputs: m.csv"):
        manifest_from_bids(bids, "scanner", out, overwrite=True)  # the user's own file, not one harmonize wrote
    assert out.read_text() == "keep me"
    out.rename(tmp_path / "mine.csv")
    manifest_from_bids(bids, "scanner", out)
    manifest_from_bids(bids, "scanner", out, overwrite=True)  # harmonize's own: replaced
    assert out.read_text().startswith("subject_id,") and (tmp_path / "mine.csv").read_text() == "keep me"


def test_missing_bids_folder(tmp_path):
    assert "BIDS folder not found" in error_of(tmp_path / "nope", "scanner", tmp_path / "m.csv")


def write_sessions(root: Path, pid: str, rows: list[list[str]], header: tuple[str, ...] = ("session_id", "age",
                                                                                          "scanner")) -> Path:
    path = root / pid / f"{pid}_sessions.tsv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows([list(header), *rows])
    return path


def test_sessions_tsv_gives_each_session_its_age(bids):
    write_sessions(bids, "sub-04", [["ses-1", "60", "siteB"], ["ses-2", "64.5", "siteC"]])
    frame = bids_manifest_frame(bids, "scanner")
    ages = dict(zip(frame[Keys.SUBJECT_ID], frame[Keys.AGE]))
    assert ages == {"sub-01": 30.0, "sub-02": 40.5, "sub-03": 50.0, "sub-04_ses-1": 60.0, "sub-04_ses-2": 64.5}
    by_session = bids_manifest_frame(bids, site_from="sessions:scanner", skip_invalid=True)
    assert dict(zip(by_session[Keys.SUBJECT_ID], by_session[Keys.SITE])) == {
        "sub-04_ses-1": "siteB", "sub-04_ses-2": "siteC"}


def test_sessions_tsv_problems_name_the_file(bids):
    path = write_sessions(bids, "sub-04", [["1", "n/a", "siteB"]])  # the ses- prefix may be left out
    with pytest.raises(ManifestError) as info:
        bids_manifest_frame(bids, site_from="sessions:scanner")
    message = str(info.value)
    assert f"{path} row 2 (ses-1), column 'age': 'n/a' is not an age in years" in message
    assert f"{path}: no row for session 'ses-2' (needed for the age of " in message
    assert f"{bids / 'sub-01' / 'anat' / 'sub-01_T1w.nii.gz'}: has no session, so --site-from sessions:scanner " \
           "cannot give its site" in message
    write_sessions(bids, "sub-04", [["ses-1", "61"]], header=("session_id", "age"))
    with pytest.raises(ManifestError, match=r"sub-04_sessions.tsv has no column 'scanner'; its columns are: "
                                            r"session_id, age"):
        bids_manifest_frame(bids, site_from="sessions:scanner")


def test_site_from_sidecar_with_inheritance(bids):
    (bids / "T1w.json").write_text(json.dumps({"Manufacturer": "Siemens", "MagneticFieldStrength": 3}))
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_text(json.dumps({"ManufacturersModelName": "Prisma"}))
    (bids / "sub-03" / "anat" / "sub-03_T1w.json").write_text(json.dumps(
        {"Manufacturer": "GE", "ManufacturersModelName": "Discovery", "MagneticFieldStrength": 1.5}))
    (bids / "sub-04" / "ses-2" / "anat" / "sub-04_ses-2_T1w.json").write_text(json.dumps(
        {"ManufacturersModelName": "Skyra"}))
    (bids / "sub-04" / "sub-04_T1w.json").write_text("{}")  # applies to both sessions, adds nothing
    (bids / "sub-04" / "ses-1" / "anat" / "acq-x_T1w.json").write_text('{"ManufacturersModelName": "wrong"}')
    (bids / "sub-04" / "ses-1" / "ses-1_T1w.json").write_text('{"ManufacturersModelName": "Trio"}')
    frame = bids_manifest_frame(bids, site_from="sidecar:Manufacturer,MagneticFieldStrength")
    assert frame[Keys.SITE].tolist() == ["Siemens_3", "Siemens_3", "GE_1.5", "Siemens_3", "Siemens_3"]
    with pytest.raises(ManifestError) as info:
        bids_manifest_frame(bids, site_from="sidecar:Manufacturer,ManufacturersModelName")
    message = str(info.value)
    assert "1 problem(s)" in message
    assert f"{bids / 'T1w.json'}: no field 'ManufacturersModelName' for the site of " \
           f"{bids / 'sub-02' / 'anat' / 'sub-02_T1w.nii.gz'} (--site-from sidecar:Manufacturer," \
           "ManufacturersModelName); its fields are: MagneticFieldStrength, Manufacturer" in message
    write_participants(bids, PARTICIPANTS[:2])
    (bids / "sub-02" / "anat" / "sub-02_T1w.json").write_text(json.dumps({"ManufacturersModelName": "Prisma"}))
    for sub in ("sub-03", "sub-04"):
        for path in (bids / sub).rglob("*.nii.gz"):
            path.unlink()
    frame = bids_manifest_frame(bids, site_from="sidecar:Manufacturer,ManufacturersModelName")
    assert frame[Keys.SITE].tolist() == ["Siemens_Prisma", "Siemens_Prisma"]


def test_sidecar_missing_and_unreadable(bids, tmp_path):
    with pytest.raises(ManifestError) as info:
        bids_manifest_frame(bids, site_from="sidecar:Manufacturer")
    image = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    assert f"{image}: no JSON sidecar found for --site-from sidecar:Manufacturer (looked for sub-02_T1w.json " \
           "beside it and T1w.json files above it)" in str(info.value)
    assert f"{bids / 'sub-01' / 'anat' / 'sub-01_T1w.json'}: no field 'Manufacturer'" in str(info.value)
    (bids / "T1w.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match=r"T1w.json holds a list, not a JSON object"):
        sidecar_of(image, bids)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"site_from": "scanner"}, "--site-from 'scanner' is not SOURCE:FIELDS"),
    ({"site_from": "scanners:x"}, "--site-from source"),
    ({"site_from": "sidecar:"}, "name at least one field"),
    ({}, "give the site's source once"),
    ({"site_column": "scanner", "site_from": "participants:scanner"}, "got both"),
])
def test_site_from_bad_values(bids, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        bids_manifest_frame(bids, **kwargs)


def test_site_from_participants_joins_columns(bids):
    frame = bids_manifest_frame(bids, site_from=SiteFrom.parse("participants:scanner,handedness"),
                                skip_invalid=True)
    assert frame[Keys.SITE].tolist() == ["siteA_R", "siteB_L", "siteB_R", "siteB_R"]  # sub-02: handedness n/a
    assert bids_entities("sub-04_ses-1_run-2_T1w.nii.gz") == {"sub": "04", "ses": "1", "run": "2"}


def test_session_ages_need_no_baseline_age_and_skip_invalid_drops_one_scan(bids, caplog):
    rows = [list(r) for r in PARTICIPANTS]
    rows[3][1] = "n/a"  # sub-04's age is only in its sessions file
    write_participants(bids, rows)
    write_sessions(bids, "sub-04", [["ses-1", "60", "siteB"], ["ses-2", "n/a", "siteB"]])
    with caplog.at_level(logging.WARNING, logger="harmonize.data.bids"):
        frame = bids_manifest_frame(bids, "scanner", skip_invalid=True)
    assert dict(zip(frame[Keys.SUBJECT_ID], frame[Keys.AGE]))["sub-04_ses-1"] == 60.0
    assert "sub-04_ses-2" not in frame[Keys.SUBJECT_ID].tolist()
    assert "sub-04_sessions.tsv row 3 (ses-2), column 'age': 'n/a' is not an age in years" in caplog.text
    save_t1w(bids / "sub-04" / "anat" / "sub-04_T1w.nii.gz")  # a scan outside the sessions needs the baseline age
    with pytest.raises(ManifestError, match=r"participants.tsv row 5 \(sub-04\), column 'age': 'n/a' is not an age"):
        bids_manifest_frame(bids, "scanner")
