"""Tests of ``harmonize manifest from-bids`` and ``harmonize manifest schema``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from harmonize.cli.main import main
from harmonize.data.manifest import read_manifest, schema_path
from harmonize.keys import Keys

PARTICIPANTS = "participant_id\tage\tsex\tscanner\nsub-01\t30\tM\tA\nsub-02\t41\tF\tA\nsub-03\t52\t2\tB\n"


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    (root / "sub-03" / "ses-1" / "anat").mkdir(parents=True)
    (root / "participants.tsv").write_text(PARTICIPANTS)
    paths = [root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", root / "sub-02" / "anat" / "sub-02_T1w.nii.gz",
             root / "sub-03" / "ses-1" / "anat" / "sub-03_ses-1_T1w.nii.gz",
             root / "sub-03" / "ses-2" / "anat" / "sub-03_ses-2_T1w.nii.gz"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(path))
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["manifest", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out, captured.err


def test_from_bids_writes_manifest(bids, tmp_path, capsys):
    out = tmp_path / "manifest.csv"
    status, stdout, _ = run_cli(capsys, "from-bids", str(bids), "--site-column", "scanner", "--out", str(out),
                                "--sex-map", "2=F", "--seed", "1", "--val-fraction", "0", "--test-fraction", "0.5")
    assert status == 0
    assert stdout.strip() == str(out)
    frame = read_manifest(out)
    assert frame[Keys.SUBJECT_ID].tolist() == ["sub-01", "sub-02", "sub-03_ses-1", "sub-03_ses-2"]
    assert frame[Keys.SEX].tolist() == ["M", "F", "F", "F"]
    assert frame.groupby(Keys.SITE.value)[Keys.SPLIT.value].apply(sorted).to_dict() == {
        "A": ["test", "train"], "B": ["train", "train"]}


def test_from_bids_unknown_sex_exits_1_naming_row(bids, tmp_path, capsys):
    out = tmp_path / "manifest.csv"
    status, _, stderr = run_cli(capsys, "from-bids", str(bids), "--site-column", "scanner", "--out", str(out))
    assert status == 1
    assert f"{bids / 'participants.tsv'} row 4 (sub-03), column 'sex': '2' is not a known sex value" in stderr
    assert not out.exists()


def test_from_bids_missing_site_column_lists_columns(bids, tmp_path, capsys):
    status, _, stderr = run_cli(capsys, "from-bids", str(bids), "--site-column", "site", "--out",
                                str(tmp_path / "m.csv"))
    assert status == 1
    assert "has no column 'site'; its columns are: participant_id, age, sex, scanner" in stderr


def test_from_bids_never_overwrites_without_flag(bids, tmp_path, capsys):
    out = tmp_path / "manifest.csv"
    out.write_text("my own notes\n")
    argv = ["from-bids", str(bids), "--site-column", "scanner", "--out", str(out), "--sex-map", "2=F"]
    status, _, stderr = run_cli(capsys, *argv)
    assert status == 1 and "already exists" in stderr and "--overwrite" in stderr
    assert out.read_text() == "my own notes\n"
    # --overwrite replaces only a manifest harmonize wrote (the folder's record lists it): the user's own is kept
    status, _, stderr = run_cli(capsys, *argv, "--overwrite")
    assert status == 1 and stderr == (
        f"error: The output directory {tmp_path} holds 1 file(s) that harmonize did not write, where this run "
        "writes its outputs: manifest.csv. --overwrite replaces only files harmonize wrote (listed in "
        ".harmonize-outputs.json); move these away, or choose another --out.\n")
    assert out.read_text() == "my own notes\n"
    out.unlink()
    (tmp_path / "notes.txt").write_text("the user's\n")
    assert run_cli(capsys, *argv)[0] == 0
    first = out.read_text()
    out.write_text(first + "an edit\n")
    assert run_cli(capsys, *argv, "--overwrite")[0] == 0
    assert out.read_text() == first  # the manifest harmonize wrote is replaced
    assert (tmp_path / "notes.txt").read_text() == "the user's\n"  # the folder's other files are the user's
    assert json.loads((tmp_path / ".harmonize-outputs.json").read_text())["files"] == ["manifest.csv"]


def test_from_bids_bad_sex_map_and_fraction(bids, tmp_path, capsys):
    base = ["from-bids", str(bids), "--site-column", "scanner", "--out", str(tmp_path / "m.csv")]
    status, _, stderr = run_cli(capsys, *base, "--sex-map", "2")
    assert status == 1 and "--sex-map: '2' is not VALUE=F or VALUE=M" in stderr
    status, _, stderr = run_cli(capsys, *base, "--sex-map", "2=F", "--test-fraction", "1.5")
    assert status == 1 and "'test_fraction' must be a finite number >= 0 and < 1, got 1.5 (float)" in stderr


def test_schema_prints_path_and_columns(capsys):
    status, stdout, _ = run_cli(capsys, "schema")
    assert status == 0
    assert stdout.startswith(f"Manifest schema: {schema_path()}")
    for column in (Keys.SUBJECT_ID, Keys.IMAGE, Keys.SITE, Keys.LABEL, Keys.AGE, Keys.SEX, Keys.SPLIT, Keys.FORGET):
        assert f"\n  {column.value:<11} " in stdout


def test_manifest_without_action_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["manifest"])
    assert info.value.code == 2
    assert "required: ACTION" in capsys.readouterr().err


def test_console_script_participant_without_image(bids, tmp_path):
    for path in (bids / "sub-02").rglob("*.nii.gz"):
        path.unlink()
    done = subprocess.run([sys.executable, "-m", "harmonize.cli.main", "manifest", "from-bids", str(bids),
                           "--site-column", "scanner", "--out", str(tmp_path / "m.csv"), "--sex-map", "2=F"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"{bids / 'participants.tsv'} row 3 (sub-02): no T1w image found" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_from_bids_other_column_names_and_copied_columns(bids, tmp_path, capsys):
    (bids / "participants.tsv").write_text("participant_id\tAGE_AT_SCAN\tgender\tscanner\tfield\n"
                                           "sub-01\t30\tm\tA\t3T\nsub-02\t41\tf\tA\t3T\nsub-03\t52\tF\tB\t1.5T\n")
    out = tmp_path / "m.csv"
    status, _, _ = run_cli(capsys, "from-bids", str(bids), "--site-column", "scanner", "--out", str(out),
                           "--age-column", "AGE_AT_SCAN", "--sex-column", "gender", "--columns", "field")
    assert status == 0
    frame = read_manifest(out, confounds=["field"])
    assert frame[Keys.AGE].tolist() == [30.0, 41.0, 52.0, 52.0]
    assert frame[Keys.SEX].tolist() == ["M", "F", "F", "F"]
    assert frame["field"].tolist() == ["3T", "3T", "1.5T", "1.5T"]


def test_from_bids_site_from_sessions_and_sidecar(bids, tmp_path, capsys):
    (bids / "sub-03" / "sub-03_sessions.tsv").write_text("session_id\tage\tscanner\nses-1\t52\tB1\nses-2\t55.5\tB2\n")
    out = tmp_path / "m.csv"
    base = ["from-bids", str(bids), "--out", str(out), "--sex-map", "2=F", "--overwrite"]
    status, _, stderr = run_cli(capsys, *base, "--site-from", "sessions:scanner")
    assert status == 1
    assert f"{bids / 'sub-01' / 'anat' / 'sub-01_T1w.nii.gz'}: has no session" in stderr
    (bids / "T1w.json").write_text('{"Manufacturer": "Siemens"}')
    status, _, _ = run_cli(capsys, *base, "--site-from", "sidecar:Manufacturer")
    assert status == 0
    frame = read_manifest(out)
    assert frame[Keys.SITE].tolist() == ["Siemens"] * 4
    assert frame[Keys.AGE].tolist() == [30.0, 41.0, 52.0, 55.5]
    with pytest.raises(SystemExit) as info:
        main(["manifest", *base, "--site-from", "sidecar:Manufacturer", "--site-column", "scanner"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
