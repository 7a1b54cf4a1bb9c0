"""Tests of ``harmonize preprocess`` (harmonize.cli.preprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from datetime import datetime, timezone

import nibabel as nib
import pytest

from harmonize.cli.main import main
from harmonize.data.manifest import read_manifest
from harmonize.locks import LOCK_FILENAME, LockHolder

#: The tiny cohort is 24^3 voxels over a 200 mm field of view; 16^3 voxels of 12.5 mm cover the same.
ARGS = ["--spacing", "12.5", "--shape", "16", "16", "16", "--no-progress"]


def folder_hash(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_preprocess_then_again_is_fully_cached(tiny_cohort, tmp_path, capsys):
    before = folder_hash(tiny_cohort.parent)
    out = tmp_path / "pre"
    assert main(["preprocess", str(tiny_cohort), "--out", str(out), *ARGS]) == 0
    first = capsys.readouterr().err
    assert "scans: 18 (processed 18, cached 0)" in first
    assert f"preprocessed manifest: {out / 'manifest.csv'}" in first
    assert "landmarks: 3 site(s) from their training scans" in first
    frame = read_manifest(out / "manifest.csv")
    assert len(frame) == 18
    image = nib.load(frame["image"].iloc[0])
    assert image.shape == (16, 16, 16) and image.header.get_zooms() == (12.5, 12.5, 12.5)

    assert main(["preprocess", str(tiny_cohort), "--out", str(out), *ARGS]) == 0
    assert "scans: 18 (processed 0, cached 18)" in capsys.readouterr().err
    assert folder_hash(tiny_cohort.parent) == before  # the shared inputs are untouched


def test_changed_setting_is_reprocessed(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(["preprocess", str(tiny_cohort), "--out", str(out), *ARGS]) == 0
    capsys.readouterr()
    assert main(["preprocess", str(tiny_cohort), "--out", str(out), "--spacing", "12.5",
                 "--shape", "14", "14", "14", "--no-progress"]) == 0
    assert "(processed 18, cached 0)" in capsys.readouterr().err


def test_user_mistakes_exit_1_without_traceback(tiny_cohort, capsys):
    assert main(["preprocess", str(tiny_cohort), "--out", str(tiny_cohort.parent), *ARGS]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: The output folder") and "is the folder of the input manifest" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["preprocess", str(tiny_cohort)])  # --out is required
    assert exit_.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_output_folder_holding_inputs_or_foreign_files_is_refused(tiny_cohort, tmp_path, capsys):
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort.parent, cohort)
    manifest = cohort / tiny_cohort.name
    before = folder_hash(cohort)
    assert main(["preprocess", str(manifest), "--out", str(cohort / "images"), *ARGS]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: The output folder {cohort / 'images'} holds 18 of the input files")
    assert "Choose a folder outside the input data." in err and "Traceback" not in err
    # the cohort lies inside tmp_path: refused even with --overwrite
    assert main(["preprocess", str(manifest), "--out", str(tmp_path), *ARGS, "--overwrite"]) == 1
    assert "holds 37 of the input files" in capsys.readouterr().err  # the manifest, 18 images, 18 labels
    assert folder_hash(cohort) == before

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["preprocess", str(manifest), "--out", str(foreign), *ARGS]) == 1
    err = capsys.readouterr().err
    assert f"error: The output directory {foreign} is not empty: it holds 1 file(s) harmonize did not write (notes.txt)" in err
    assert "--overwrite" in err and "Traceback" not in err


def test_output_folder_problems_are_one_error_paragraph(tiny_cohort, tmp_path, capsys):
    (tmp_path / "results.txt").write_text("x")
    below_a_file = tmp_path / "results.txt" / "pre"
    assert main(["preprocess", str(tiny_cohort), "--out", str(below_a_file), *ARGS]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: The output folder {below_a_file} lies below {tmp_path / 'results.txt'}, which is a file, "
                   "not a folder. Choose an --out whose parents are folders.\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    holder = LockHolder(pid=os.getppid(), host=socket.gethostname(), command="harmonize preprocess",
                        started=since, token="t")  # a live process that started before it: this test's parent
    (locked / LOCK_FILENAME).write_text(json.dumps(holder.__dict__))
    assert main(["preprocess", str(tiny_cohort), "--out", str(locked), *ARGS]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: The output folder {locked} is in use by process {os.getppid()} on host "
                          f"{socket.gethostname()!r} ('harmonize preprocess', since {since}). "
                          "Wait for that run to finish, or choose another --out")
    assert sorted(p.name for p in locked.iterdir()) == [LOCK_FILENAME]  # nothing written, the lock kept


def test_a_job_array_fits_runs_its_shards_and_merges_what_one_run_writes(tiny_cohort, tmp_path, capsys):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert main(["preprocess", str(tiny_cohort), "--out", str(whole), *ARGS]) == 0
    assert main(["preprocess", str(tiny_cohort), "--out", str(sharded), "--fit-only", *ARGS]) == 0
    assert "fit: landmarks fitted; the shards may run now" in capsys.readouterr().err
    assert main(["preprocess", str(tiny_cohort), "--out", str(sharded), "--merge", *ARGS]) == 1
    assert "holds no shard: run the shards (--shard K/N) before --merge" in capsys.readouterr().err
    for k in (1, 2):
        assert main(["preprocess", str(tiny_cohort), "--out", str(sharded), "--shard", f"{k}/2", *ARGS]) == 0
        assert f"shard {k}/2 preprocessed manifest: {sharded / 'shards' / f'{k}-of-2' / 'manifest.csv'}" in (
            capsys.readouterr().err)
    assert main(["preprocess", str(tiny_cohort), "--out", str(sharded), "--merge", *ARGS]) == 0
    assert "merge preprocessed manifest" in capsys.readouterr().err
    assert (sharded / "manifest.csv").read_bytes() == (whole / "manifest.csv").read_bytes()


@pytest.mark.parametrize(("args", "message"), [
    (["--shard", "3/2"], "argument --shard: must be K/N with 1 <= K <= N, not 3/2"),
    (["--fit-only", "--merge"], "argument --merge: not allowed with argument --fit-only"),
    (["--jobs", "0"], "argument --jobs: must be an integer"),
])
def test_bad_step_options_are_usage_errors(tiny_cohort, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["preprocess", str(tiny_cohort), "--out", str(tmp_path / "out"), *args, *ARGS])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
