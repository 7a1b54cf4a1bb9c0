"""Tests of harmonize.data.preprocess.stages: the per-scan cache, and runs killed or starved of disk mid-write."""

from __future__ import annotations

import errno
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torchio as tio

from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess import PreprocessConfig, stages
from harmonize.errors import HarmonizeError
from harmonize.io import TMP_TAG, OutputWriteError

from .conftest import mtimes, run, tree_hashes


def test_second_run_is_cached_and_inputs_untouched(make_cohort, tmp_path):
    manifest = make_cohort(per_site=3)
    inputs_before = tree_hashes(manifest.parent)
    run(manifest, tmp_path / "out")
    written = mtimes(tmp_path / "out" / "images")
    again = run(manifest, tmp_path / "out")
    assert (again.processed, again.cached) == (0, 6)
    assert mtimes(tmp_path / "out" / "images") == written  # nothing rewritten
    assert tree_hashes(manifest.parent) == inputs_before


def test_changing_a_setting_invalidates_only_what_depends_on_it(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=2)
    out = tmp_path / "out"
    run(manifest, out)
    spatial = mtimes(out / "spatial")
    intensity_only = PreprocessConfig(target_spacing=1.5, target_shape=(16, 16, 16), landmarks_cutoff=(0.02, 0.98))
    result = run(manifest, out, intensity_only)
    assert (result.processed, result.cached) == (4, 0)
    assert mtimes(out / "spatial") == spatial  # resampling was reused
    smaller = PreprocessConfig(target_spacing=1.5, target_shape=(12, 12, 12), landmarks_cutoff=(0.02, 0.98))
    result = run(manifest, out, smaller)
    assert (result.processed, result.cached) == (4, 0)
    assert nib.load(read_manifest(result.manifest)["image"].iloc[0]).shape == (12, 12, 12)
    assert mtimes(out / "spatial") != spatial


def test_corrupted_output_is_redone(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=2)
    run(manifest, tmp_path / "out")
    with open(tmp_path / "out" / "images" / "siteB-01.nii.gz", "ab") as handle:
        handle.write(b"garbage")
    result = run(manifest, tmp_path / "out")
    assert (result.processed, result.cached) == (1, 3)


def test_crash_between_file_and_record_is_not_trusted(make_cohort, tmp_path, monkeypatch):
    manifest = make_cohort(per_site=3, n_train=2)
    real = stages.intensity_stage
    calls = []

    def crash_after_writing(scan, *args):
        files = real(scan, *args)  # the output file is complete on disk ...
        calls.append(scan.subject_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # ... but the run dies before its cache record is written
        return files

    monkeypatch.setattr(stages, "intensity_stage", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        run(manifest, tmp_path / "out")
    monkeypatch.undo()
    assert (tmp_path / "out" / "images" / f"{calls[2]}.nii.gz").is_file()
    result = run(manifest, tmp_path / "out")
    assert (result.processed, result.cached) == (4, 2)  # the third scan is redone, not trusted


def test_crash_while_writing_leaves_no_partial_file(make_cohort, tmp_path, monkeypatch):
    manifest = make_cohort(per_site=2, n_train=2)
    real_save = tio.ScalarImage.save

    def half_write(self, path, squeeze=None):
        if "images" in Path(path).parts:
            Path(path).write_bytes(b"\x1f\x8b half a file")
            raise OSError(28, "No space left on device")
        return real_save(self, path, squeeze=squeeze)

    monkeypatch.setattr(tio.ScalarImage, "save", half_write)
    with pytest.raises(OSError, match="No space left"):
        run(manifest, tmp_path / "out")
    monkeypatch.undo()
    assert list((tmp_path / "out" / "images").iterdir()) == []  # neither a partial output nor a temporary file
    result = run(manifest, tmp_path / "out")
    assert (result.processed, result.cached) == (4, 0)
    for path in read_manifest(result.manifest)["image"]:
        assert nib.load(path).shape == (16, 16, 16)


def test_run_killed_mid_write_is_redone_and_its_temporary_removed(make_cohort, tmp_path, monkeypatch):
    """A SIGKILL while an output is written leaves a partial temporary file (no cleanup runs) and a stale record.

    The next run removes the temporary file, trusts the scan finished before the kill, and redoes the scan being
    written (its old output and record are from other settings) and the ones not reached.
    """
    manifest = make_cohort(per_site=2, n_train=2)
    out = tmp_path / "out"
    run(manifest, out)
    changed = PreprocessConfig(target_spacing=1.5, target_shape=(16, 16, 16), histogram_standardisation=False)
    real = stages.atomic_write
    finished = []

    def killed_while_writing(path, write):
        path = Path(path)
        if path.parent.name != "images":
            return real(path, write)
        if finished:  # the second final image: half of it reaches the disk, then the process dies
            full = tmp_path / "full.nii.gz"
            write(full)
            partial = path.with_name(f".{path.name}{TMP_TAG}0123456789ab.nii.gz")
            partial.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
            raise KeyboardInterrupt  # like SIGKILL, nothing after this line runs for that file
        finished.append(path.name)
        return real(path, write)

    monkeypatch.setattr(stages, "atomic_write", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        run(manifest, out, changed)
    monkeypatch.undo()
    assert len(list((out / "images").glob(f"*{TMP_TAG}*"))) == 1  # the partial file of the killed write
    result = run(manifest, out, changed)
    assert (result.processed, result.cached) == (3, 1)  # only the scan finished before the kill is trusted
    assert list((out / "images").glob(f"*{TMP_TAG}*")) == []
    fresh = run(manifest, tmp_path / "fresh", changed)
    for done, clean in zip(read_manifest(result.manifest)["image"], read_manifest(fresh.manifest)["image"]):
        np.testing.assert_array_equal(nib.load(done).get_fdata(), nib.load(clean).get_fdata())


@pytest.mark.filterwarnings("ignore:Error loading image with SimpleITK")
def test_unreadable_scans_are_all_listed(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=2)
    (manifest.parent / "img" / "siteA-01_T1w.nii.gz").unlink()
    (manifest.parent / "img" / "siteB-00_T1w.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(HarmonizeError, match="2 scan") as err:
        run(manifest, tmp_path / "out")
    problems = "\n".join(err.value.problems)
    assert "row 3 (subject 'siteA-01'): cannot read" in problems and "siteA-01_T1w.nii.gz" in problems
    assert "row 4 (subject 'siteB-00'): cannot read its image or label" in problems


def test_a_full_disk_names_the_file_and_leaves_no_partial_output(make_cohort, tmp_path, monkeypatch):
    manifest = make_cohort(per_site=2, n_train=1)
    real_save = tio.ScalarImage.save
    calls = []

    def full_disk(self, path, squeeze=None):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"\x1f\x8b half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, path, squeeze=squeeze)

    monkeypatch.setattr(tio.ScalarImage, "save", full_disk)
    with pytest.raises(OutputWriteError) as err:
        run(manifest, tmp_path / "out")
    assert len(calls) == 3  # the run stopped at the first failed write
    target = tmp_path / "out" / "spatial" / "siteB-00.nii.gz"  # images 1-2 were siteA-00 and siteA-01
    assert str(err.value).startswith(f"Cannot write {target}: No space left on device (the disk is full")
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list((tmp_path / "out").rglob(f"*{TMP_TAG}*")) == [] and not target.exists()

