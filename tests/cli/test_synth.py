"""``harmonize synth``: writes a cohort, refuses a non-empty directory, reports bad arguments."""

from __future__ import annotations

import csv
import json

import pytest

from harmonize.cli.main import build_parser, main

ARGS = ["--sites", "2", "--subjects-per-site", "3", "--shape", "16", "--seed", "5"]


def test_synth_writes_the_manifest_and_sidecar(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["-q", "synth", "--out", str(out), *ARGS]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv", newline="")))
    assert len(rows) == 6 and {r["site"] for r in rows} == {"site0", "site1"}
    assert all((out / r["image"]).is_file() and (out / r["label"]).is_file() for r in rows)
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["seed"] == 5 and cohort["config"]["shape"] == 16 and not cohort["config"]["biased"]
    assert capsys.readouterr().err == ""  # -q: no progress bar, no summary


def test_biased_flag_reaches_the_cohort(tmp_path):
    assert main(["-q", "synth", "--out", str(tmp_path), *ARGS, "--biased"]) == 0
    cohort = json.loads((tmp_path / "cohort.json").read_text())
    assert cohort["config"]["biased"] and [s["age_range"] for s in cohort["sites"]] == [[20.0, 63.33], [41.67, 85.0]]


def test_a_non_empty_directory_is_refused_then_accepted_with_overwrite(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path), *ARGS]) == 1
    err = capsys.readouterr().err
    assert f"error: The output directory {tmp_path} is not empty" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert main(["-q", "synth", "--out", str(tmp_path), *ARGS, "--overwrite"]) == 0
    assert (tmp_path / "manifest.csv").is_file() and (tmp_path / "keep.txt").read_text() == "x"


def test_bad_numbers_are_reported_without_a_traceback(tmp_path, capsys):
    """Numeric options follow the CLI's one range rule (harmonize.cli.options): a usage error naming the range."""
    for option, value, expected in (("--sites", "65", "must be an integer from 2 to 64, got '65'"),
                                    ("--subjects-per-site", "2", "must be an integer from 3 to 100000, got '2'")):
        with pytest.raises(SystemExit) as info:
            main(["synth", "--out", str(tmp_path), option, value])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}: {expected}" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_help_lists_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["synth"]
    text = sub.format_help()
    for option in ("--out", "--sites", "--subjects-per-site", "--shape", "--seed", "--biased", "--overwrite"):
        assert option in text


def test_overwrite_never_replaces_the_users_own_manifest_or_images(tmp_path, capsys):
    """Issue 17: `synth --overwrite` replaced a user's manifest.csv and images/ silently."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "sub-01_T1w.nii.gz").write_bytes(b"the user's scan")
    (tmp_path / "manifest.csv").write_text("the user's manifest\n")
    assert main(["-q", "synth", "--out", str(tmp_path), *ARGS, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: The output directory {tmp_path} holds 2 file(s) that harmonize did not write, where "
                   "this run writes its outputs: images/sub-01_T1w.nii.gz, manifest.csv. --overwrite replaces only "
                   "files harmonize wrote (listed in .harmonize-outputs.json); move these away, or choose another "
                   "--out.\n")
    assert (tmp_path / "manifest.csv").read_text() == "the user's manifest\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["images", "manifest.csv", "sub-01_T1w.nii.gz"]
    # a cohort harmonize wrote is replaced by --overwrite, with nothing of the old one left stale
    out = tmp_path / "cohort"
    assert main(["-q", "synth", "--out", str(out), "--sites", "2", "--subjects-per-site", "4", "--shape", "16"]) == 0
    assert main(["-q", "synth", "--out", str(out), *ARGS, "--overwrite"]) == 0
    assert len(list((out / "images").iterdir())) == 6 and len(list((out / "labels").iterdir())) == 6
