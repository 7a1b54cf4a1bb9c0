"""Tests of harmonize.output_dir: --overwrite removes only what harmonize wrote; bad output paths are named."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from harmonize.locks import LOCK_FILENAME, FolderLock, FolderLockedError
from harmonize.output_dir import (
    RECORD_FILENAME,
    OutputDir,
    OutputDirError,
    hold_output_dir,
    releases_output_dirs,
)

#: A name no file system can hold.
NUL_NAME = "a\x00b"


def write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)


def record(folder: Path) -> dict:
    return json.loads((folder / RECORD_FILENAME).read_text())


def test_a_run_records_what_it_wrote_and_overwrite_removes_only_that(tmp_path):
    out = tmp_path / "out"
    with OutputDir(out, "harmonize synth", reserved=("images", "manifest.csv")):
        assert (out / LOCK_FILENAME).exists() and record(out)["complete"] is False
        write(out, "manifest.csv", "images/a.nii.gz", "images/b.nii.gz")
    assert record(out)["files"] == ["images/a.nii.gz", "images/b.nii.gz", "manifest.csv"] and record(out)["complete"]
    assert not (out / LOCK_FILENAME).exists()
    write(out, "notes.txt")  # the user's, where the run does not write: kept
    with pytest.raises(OutputDirError, match=r"not empty: it holds 1 file\(s\) harmonize did not write \(notes.txt\)"):
        OutputDir(out, "harmonize synth", reserved=("images", "manifest.csv")).claim()
    with OutputDir(out, "harmonize synth", overwrite=True, reserved=("images", "manifest.csv")):
        assert sorted(p.name for p in out.iterdir()) == [RECORD_FILENAME, LOCK_FILENAME, "notes.txt"]
        write(out, "manifest.csv")
    assert record(out)["files"] == ["manifest.csv"] and (out / "notes.txt").read_text() == "notes.txt"


def test_files_harmonize_did_not_write_where_the_run_writes_are_refused_by_name(tmp_path):
    write(tmp_path, "manifest.csv", "images/mine.nii.gz", "notes.txt")
    with pytest.raises(OutputDirError) as err:
        OutputDir(tmp_path, "harmonize synth", overwrite=True, reserved=("images", "manifest.csv")).claim()
    assert str(err.value) == (
        f"The output directory {tmp_path} holds 2 file(s) that harmonize did not write, where this run writes its "
        "outputs: images/mine.nii.gz, manifest.csv. --overwrite replaces only files harmonize wrote (listed in "
        f"{RECORD_FILENAME}); move these away, or choose another --out.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "manifest.csv", "notes.txt"]  # untouched
    with pytest.raises(OutputDirError, match="holds 3 file"):  # without `reserved` every such file is refused
        OutputDir(tmp_path, "harmonize audit", overwrite=True).claim()


def test_a_killed_runs_files_count_as_harmonize_s(tmp_path):
    """A killed run leaves its record incomplete: every file but those kept when it started is its output."""
    write(tmp_path, "notes.txt", "images/a.nii.gz", "images/.b.nii.gz.tmp-0123456789ab.nii.gz")
    (tmp_path / RECORD_FILENAME).write_text(json.dumps(
        {"tool": "harmonize", "command": "harmonize synth", "complete": False, "files": [], "kept": ["notes.txt"]}))
    with OutputDir(tmp_path, "harmonize synth", overwrite=True, reserved=("images",)):
        assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILENAME, LOCK_FILENAME, "notes.txt"]


def test_inputs_are_never_removed_and_never_the_output_folder(tmp_path):
    with OutputDir(tmp_path / "out", "harmonize synth"):
        write(tmp_path / "out", "cohort/manifest.csv", "cohort/images/a.nii.gz", "metrics.json")
    given = tmp_path / "out" / "cohort" / "manifest.csv"
    with OutputDir(tmp_path / "out", "harmonize compare", overwrite=True, inputs=[given]):
        pass
    # the input's folder (the scans its manifest names) is kept whole; the earlier output beside it is replaced
    assert given.exists() and (tmp_path / "out" / "cohort" / "images" / "a.nii.gz").exists()
    assert not (tmp_path / "out" / "metrics.json").exists()
    with pytest.raises(OutputDirError, match=f"Output directory {given.parent} holds the input {given}"):
        OutputDir(given.parent, "harmonize compare", overwrite=True, inputs=[given]).claim()


def test_a_nested_claim_in_the_same_process_keeps_the_outer_lock(tmp_path):
    @releases_output_dirs
    def outer() -> None:
        hold_output_dir(tmp_path, "harmonize demo")
        write(tmp_path, "cohort/a.txt")
        hold_output_dir(tmp_path, "harmonize compare", overwrite=True)  # demo runs compare into its own folder
        assert (tmp_path / "cohort" / "a.txt").exists()  # the nested claim removed nothing
        with pytest.raises(FolderLockedError, match="harmonize demo"):
            FolderLock(tmp_path, "another process").acquire()
        write(tmp_path, "metrics.json")

    outer()
    assert record(tmp_path)["files"] == ["cohort/a.txt", "metrics.json"] and not (tmp_path / LOCK_FILENAME).exists()


@pytest.mark.parametrize("case", ["a file", "below a file", "cannot create", "not writable", "nul byte"])
def test_bad_output_paths_are_named(tmp_path, monkeypatch, case):
    write(tmp_path, "data.csv")
    out, message = {
        "a file": (tmp_path / "data.csv", f"The output path {tmp_path / 'data.csv'} is a file, not a folder"),
        "below a file": (tmp_path / "data.csv" / "out",
                         f"The output folder {tmp_path / 'data.csv' / 'out'} lies below {tmp_path / 'data.csv'}, "
                         "which is a file"),
        "cannot create": (tmp_path / "ro" / "out", f"Cannot create the output folder {tmp_path / 'ro' / 'out'}: "
                                                   "Permission denied"),
        "not writable": (tmp_path, f"No permission to write into the output folder {tmp_path}"),
        "nul byte": (tmp_path / NUL_NAME, f"The output path {str(tmp_path / NUL_NAME)!r} holds a NUL byte"),
    }[case]
    if case == "cannot create":
        def refuse(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        monkeypatch.setattr(Path, "mkdir", refuse)
    if case == "not writable":  # tests may run as root, whom chmod does not stop
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputDirError, match="Choose") as err:
        OutputDir(out, "harmonize synth").claim()
    assert str(err.value).startswith(message)


def test_a_failed_run_with_discard_on_error_leaves_nothing(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(OSError, match="No space"):
        with OutputDir(out, "harmonize synth", discard_on_error=True):
            write(out, "images/a.nii.gz")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not out.exists()


def test_a_run_that_fails_before_writing_leaves_no_folder_it_created(tmp_path):
    """E.g. ``harmonize audit --out o`` given a manifest that does not exist: no empty ``o`` is left behind."""
    out = tmp_path / "new"
    with pytest.raises(ValueError, match="bad input"):
        with OutputDir(out, "harmonize audit"):
            raise ValueError("bad input")
    assert not out.exists()
    (tmp_path / "old").mkdir()  # a folder that was there before the run stays
    with pytest.raises(ValueError, match="bad input"):
        with OutputDir(tmp_path / "old", "harmonize audit"):
            raise ValueError("bad input")
    assert (tmp_path / "old").is_dir() and list((tmp_path / "old").iterdir()) == []
    from harmonize.cli.main import main

    assert main(["audit", "--checkpoint", str(tmp_path / "none.pt"), "--manifest", str(tmp_path / "gone.csv"),
                 "--out", str(out)]) == 1
    assert not out.exists()


def test_the_users_folders_where_the_run_does_not_write_are_kept_whole_and_not_walked(tmp_path):
    write(tmp_path, "data/sub-01/anat/sub-01_T1w.nii.gz", "data/participants.tsv", "notes.txt")
    with OutputDir(tmp_path, "harmonize synth", overwrite=True, reserved=("images", "manifest.csv")):
        assert record(tmp_path)["kept"] == ["data", "notes.txt"]  # by top-level name: a home folder stays cheap
        write(tmp_path, "manifest.csv", "images/a.nii.gz")
    assert record(tmp_path)["files"] == ["images/a.nii.gz", "manifest.csv"]
    with OutputDir(tmp_path, "harmonize synth", overwrite=True, reserved=("images", "manifest.csv")):
        assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILENAME, LOCK_FILENAME, "data", "notes.txt"]
    assert (tmp_path / "data" / "sub-01" / "anat" / "sub-01_T1w.nii.gz").exists()
    with pytest.raises(OutputDirError, match=r"it holds 2 file\(s\) harmonize did not write \(data/, notes.txt\)"):
        OutputDir(tmp_path, "harmonize synth", reserved=("images", "manifest.csv")).claim()
