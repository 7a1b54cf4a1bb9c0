"""Tests of harmonize.data.preprocess: the per-site TorchIO pipeline and its cache."""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torchio as tio
from skimage.filters import threshold_otsu

from harmonize.data import preprocess
from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess import (
    MANIFEST_FILENAME,
    PreprocessConfig,
    foreground_mask,
    preprocess_manifest,
)
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.io import TMP_TAG, OutputWriteError
from harmonize.locks import FolderLockedError

#: 16^3 voxels of 1.5 mm cover the 24 mm of the 20^3 x 1.2 mm inputs.
CONFIG = PreprocessConfig(target_spacing=1.5, target_shape=(16, 16, 16))


def run(manifest: Path, out: Path, config: PreprocessConfig = CONFIG, **kwargs) -> preprocess.PreprocessResult:
    return preprocess_manifest(manifest, out, config, progress=False, **kwargs)


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_outputs_are_ras_resampled_cropped_and_normalised_per_site(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=3)
    result = run(manifest, tmp_path / "out")
    assert (result.processed, result.cached) == (6, 0)
    out = read_manifest(result.manifest)
    source = read_manifest(manifest)
    assert list(out.columns) == list(source.columns) and list(out.index) == list(source.index)
    assert out.drop(columns=["image", "label"]).equals(source.drop(columns=["image", "label"]))
    assert result.manifest.read_text().splitlines()[1].startswith("siteA-00,images/siteA-00.nii.gz,labels/")
    tissue_means = {}
    for sid, image_path, label_path in zip(out["subject_id"], out["image"], out["label"]):
        image = nib.load(image_path)
        assert image.shape == (16, 16, 16)
        np.testing.assert_allclose(image.header.get_zooms(), (1.5, 1.5, 1.5))
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert image.get_data_dtype() == np.float32
        data = image.get_fdata()
        mask = nib.load(tmp_path / "out" / "masks" / f"{sid}.nii.gz").get_fdata() > 0
        assert 0.1 < mask.mean() < 0.4
        assert abs(data[mask].mean()) < 1e-4 and abs(data[mask].std() - 1) < 1e-2
        assert np.all(data[~mask] == 0)
        label = nib.load(label_path)
        assert label.get_data_dtype() == np.uint8 and np.allclose(label.affine, image.affine)
        labels = np.asarray(label.dataobj)
        assert set(np.unique(labels)) == {0, 1, 2}
        tissue_means[sid] = data[labels == 1].mean() - data[labels == 2].mean()
    # the label followed the image (siteB was stored LAS): inner tissue is brighter after preprocessing
    assert min(tissue_means.values()) > 1.5
    # per-site standardisation removed the 2.5x intensity scaling of siteB: tissue contrast matches within 10%
    assert tissue_means["siteB-00"] == pytest.approx(tissue_means["siteA-00"], rel=0.1)


def test_second_run_is_cached_and_inputs_untouched(make_cohort, tmp_path):
    manifest = make_cohort(per_site=3)
    inputs_before = tree_hashes(manifest.parent)
    run(manifest, tmp_path / "out")
    written = mtimes(tmp_path / "out" / "images")
    again = run(manifest, tmp_path / "out")
    assert (again.processed, again.cached) == (0, 6)
    assert mtimes(tmp_path / "out" / "images") == written  # nothing rewritten
    assert tree_hashes(manifest.parent) == inputs_before


def test_landmarks_come_from_the_sites_training_rows_only(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=4, n_train=2)
    first = run(manifest, tmp_path / "out")
    landmarks_a = np.load(first.landmarks["siteA"])
    landmarks_b = np.load(first.landmarks["siteB"])
    assert first.landmarks["siteA"].name == "site-siteA.npy" and not np.allclose(landmarks_a, landmarks_b)

    rows = read_manifest(manifest)
    test_image = rows[(rows["site"] == "siteA") & (rows["split"] == "test")]["image"].iloc[0]
    train_image = rows[(rows["site"] == "siteA") & (rows["split"] == "train")]["image"].iloc[0]
    image = nib.load(test_image)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) ** 1.5, image.affine), test_image)
    second = run(manifest, tmp_path / "out")
    assert second.processed == 1  # only the changed scan
    np.testing.assert_array_equal(np.load(second.landmarks["siteA"]), landmarks_a)

    image = nib.load(train_image)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) ** 1.5, image.affine), train_image)
    third = run(manifest, tmp_path / "out")
    assert third.processed == 4  # siteA's landmarks changed, so all siteA scans are redone
    assert not np.allclose(np.load(third.landmarks["siteA"]), landmarks_a)
    np.testing.assert_array_equal(np.load(third.landmarks["siteB"]), landmarks_b)


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


def test_overwrite_recomputes_everything(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=2)
    run(manifest, tmp_path / "out")
    result = run(manifest, tmp_path / "out", overwrite=True)
    assert (result.processed, result.cached) == (4, 0)


def test_unseen_site_gets_pooled_landmarks_with_a_warning(make_cohort, tmp_path, caplog):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=2, n_train=2, unseen=("siteD",))
    with caplog.at_level(logging.WARNING, logger="harmonize.data.preprocess"):
        result = run(manifest, tmp_path / "out")
    assert result.pooled_sites == ("siteD",)
    assert result.landmarks["siteD"].name == "pooled.npy"
    assert "['siteD'] have no training scans" in caplog.text and "pooled over the 4 training scans" in caplog.text
    image = nib.load(tmp_path / "out" / "images" / "siteD-00.nii.gz").get_fdata()
    mask = nib.load(tmp_path / "out" / "masks" / "siteD-00.nii.gz").get_fdata() > 0
    assert abs(image[mask].mean()) < 1e-4 and abs(image[mask].std() - 1) < 1e-2


def test_out_dir_in_the_input_folder_is_refused(make_cohort, tmp_path):
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(HarmonizeError, match="is the folder of the input manifest") as err:
        run(manifest, manifest.parent)
    assert "cohort_preprocessed" in str(err.value)
    with pytest.raises(HarmonizeError, match=r"holds 5 of the input files .*Choose a folder outside"):
        run(manifest, tmp_path)  # the cohort lies inside it
    subfolder = manifest.parent / "derivatives"  # inside the input tree but holding no input: allowed
    assert run(manifest, subfolder).processed == 2


def test_foreign_non_empty_folder_needs_overwrite(make_cohort, tmp_path):
    manifest = make_cohort(per_site=1, n_train=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HarmonizeError, match=r"not empty: it holds 1 file\(s\) harmonize did not write \(notes.txt\).*--overwrite"):
        run(manifest, out)
    assert run(manifest, out, overwrite=True).processed == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / MANIFEST_FILENAME).is_file()


def test_crash_between_file_and_record_is_not_trusted(make_cohort, tmp_path, monkeypatch):
    manifest = make_cohort(per_site=3, n_train=2)
    real = preprocess._intensity_stage
    calls = []

    def crash_after_writing(scan, *args):
        files = real(scan, *args)  # the output file is complete on disk ...
        calls.append(scan.subject_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # ... but the run dies before its cache record is written
        return files

    monkeypatch.setattr(preprocess, "_intensity_stage", crash_after_writing)
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
    real = preprocess.atomic_write
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

    monkeypatch.setattr(preprocess, "atomic_write", killed_while_writing)
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


def test_corrupted_output_is_redone(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=2)
    run(manifest, tmp_path / "out")
    with open(tmp_path / "out" / "images" / "siteB-01.nii.gz", "ab") as handle:
        handle.write(b"garbage")
    result = run(manifest, tmp_path / "out")
    assert (result.processed, result.cached) == (1, 3)


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


def test_no_training_rows_is_an_error(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=0)
    with pytest.raises(HarmonizeError, match="no training rows"):
        run(manifest, tmp_path / "out")


def test_foreground_mask_fills_holes_and_drops_specks():
    volume = np.zeros((20, 20, 20), dtype=np.float32)
    volume[4:16, 4:16, 4:16] = 100.0
    volume[8:12, 8:12, 8:12] = 5.0  # dark "ventricle" inside the head
    volume[0, 0, 0] = 100.0  # a bright speck of noise outside
    mask = foreground_mask(volume)
    assert mask.sum() == 12**3 and not mask[0, 0, 0] and mask[10, 10, 10]
    assert foreground_mask(volume[None]).shape == (1, 20, 20, 20)
    assert not foreground_mask(np.ones((4, 4, 4))).any()
    assert foreground_mask(volume, "nonzero").sum() == 12**3 + 1


def test_config_is_checked():
    assert CONFIG.target_spacing == (1.5, 1.5, 1.5) and CONFIG.mask_method == "otsu"
    with pytest.raises(ConfigError) as err:
        PreprocessConfig(target_spacing=-1, target_shape=(16, 16), landmarks_cutoff=(0.9, 0.1))
    assert len(err.value.problems) == 3
    assert "target_spacing must be one positive number or three, not -1" in err.value.problems
    with pytest.raises(ConfigError, match="Argument 'mask_method'"):
        PreprocessConfig(mask_method="otsuu")


# --- issue 17: outliers, self-checked outputs, a scan listed twice, a full disk ---------------------------------
def _rewrite(path: Path, change) -> None:
    """Rewrite a NIfTI file with ``change(data)`` applied to its voxels (same affine)."""
    image = nib.load(path)
    data = np.asarray(image.get_fdata(), dtype=np.float32)
    nib.save(nib.Nifti1Image(change(data), image.affine), path)


@pytest.mark.parametrize("kind, factor, word", [("bright", 50, "brighter"), ("dark", -50, "darker")])
def test_one_bright_voxel_in_a_training_scan_keeps_the_head_mask_and_finite_landmarks(make_cohort, tmp_path, caplog,
                                                                                      kind, factor, word):
    """One voxel 50x the image maximum, or -50x it (a dark, negative spike): the same clipping mechanism."""
    manifest = make_cohort(per_site=3, n_train=2)
    spiked = manifest.parent / "img" / "siteA-00_T1w.nii.gz"
    clean = nib.load(spiked).get_fdata()
    before = run(manifest, tmp_path / "clean")

    def spike(data: np.ndarray) -> np.ndarray:
        data[10, 10, 10] = factor * data.max()  # one voxel 50x (or -50x) the image maximum
        return data

    _rewrite(spiked, spike)
    # the failure it guards against: Otsu's threshold of the raw volume lies above every other voxel (bright), or
    # below every other voxel (dark: the whole volume would be "head")
    raw = nib.load(spiked).get_fdata()
    assert (raw > threshold_otsu(raw)).sum() == (1 if kind == "bright" else raw.size - 1)
    assert (foreground_mask(clean, "otsu") != foreground_mask(raw, "otsu")).sum() <= 1  # clipped: the same mask
    with caplog.at_level(logging.WARNING, logger="harmonize.data.preprocess"):
        result = run(manifest, tmp_path / "out")
    assert "row 2 (subject 'siteA-00'): " in caplog.text and f"siteA-00_T1w.nii.gz: 1 voxel(s) are {word}" in caplog.text
    assert "were clipped to it" in caplog.text
    masks = {p.stem.split(".")[0]: nib.load(p).get_fdata() > 0 for p in (tmp_path / "out" / "masks").iterdir()}
    assert masks["siteA-00"].sum() == pytest.approx(masks["siteA-01"].sum(), rel=0.05)
    landmarks = np.load(result.landmarks["siteA"])
    assert np.all(np.isfinite(landmarks)) and np.all(np.diff(landmarks) > 0)
    # of 0-100; the largest difference: 0.59 for the dark spike (resampling spreads it to neighbours the clip
    # leaves), under 0.5 for the bright one
    np.testing.assert_allclose(landmarks, np.load(before.landmarks["siteA"]), atol=0.75)
    for path in read_manifest(result.manifest)["image"]:
        assert np.all(np.isfinite(nib.load(path).get_fdata()))
    # the spiked scan keeps its contrast: 0.067 mean difference from its clean run here for the bright spike
    # (unclipped, the spike takes most of the z-normalisation's variance: 0.62 on a like phantom); the site's
    # other scans: 0.0002
    for sid, tolerance in (("siteA-00", 0.15), ("siteA-01", 0.01)):
        new, old = (nib.load(folder / "images" / f"{sid}.nii.gz").get_fdata() for folder in (tmp_path / "out",
                                                                                            tmp_path / "clean"))
        head = masks[sid] & (np.abs(new) < 5)
        assert np.abs(new - old)[head].mean() < tolerance


def _one_voxel(data: np.ndarray) -> np.ndarray:
    out = np.zeros_like(data)
    out[5, 5, 5] = 100.0
    return out


def _nan_voxel(data: np.ndarray) -> np.ndarray:
    data[3, 3, 3] = np.nan
    return data


@pytest.mark.parametrize(("case", "change", "message"), [
    ("one voxel mask", _one_voxel, "its foreground mask has 1 voxel(s) (fewer than 27)"),
    ("nan voxel", _nan_voxel, "siteB-01_T1w.nii.gz: the image has"),
])
def test_a_scan_with_a_bad_output_fails_by_name(make_cohort, tmp_path, case, change, message):
    manifest = make_cohort(per_site=2, n_train=1)
    _rewrite(manifest.parent / "img" / "siteB-01_T1w.nii.gz", change)
    with pytest.raises(HarmonizeError, match=r"1 scan\(s\) of .* could not be preprocessed") as err:
        run(manifest, tmp_path / "out")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("row 5 (subject 'siteB-01'): ") and message in err.value.problems[0]
    if case == "nan voxel":
        assert "has 1 NaN or infinite voxel(s) of 8000; replace them (e.g. with 0) first" in err.value.problems[0]


def test_preprocess_refuses_bad_labels_and_missing_geometry_by_row(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=1)
    label = manifest.parent / "img" / "siteA-01_dseg.nii.gz"
    _rewrite(label, lambda data: np.where(data == 2, 7, data).astype(np.uint8))
    image = nib.load(manifest.parent / "img" / "siteB-00_T1w.nii.gz")
    header = image.header.copy()
    header.set_qform(None, code=0)
    header.set_sform(None, code=0)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), manifest.parent / "img" / "siteB-00_T1w.nii.gz")
    big = manifest.parent / "img" / "siteA-00_T1w.nii.gz"  # its header claims 800^3 voxels: no 2 GB read
    content = bytearray(gzip.decompress(big.read_bytes()))
    content[42:48] = np.array([800, 800, 800], "<i2").tobytes()
    big.write_bytes(gzip.compress(bytes(content)))
    shifted = manifest.parent / "img" / "siteB-01_dseg.nii.gz"  # a label off the image's grid by 5 mm
    label_image = nib.load(shifted)
    affine = label_image.affine.copy()
    affine[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(label_image.dataobj), affine), shifted)
    with pytest.raises(HarmonizeError, match=r"4 scan\(s\)") as err:
        run(manifest, tmp_path / "out")
    claims, first, second, off_grid = err.value.problems
    assert off_grid == (f"row 5 (subject 'siteB-01'): the affine of its label {shifted} differs from the image's "
                        "(largest difference 5); resample the label onto the image's grid.")
    assert claims.startswith("row 2 (subject 'siteA-00'): cannot read its image or label: ")
    assert "its header claims 512000000 voxels (shape (800, 800, 800), 2048000000 bytes)" in claims
    assert first.startswith("row 3 (subject 'siteA-01'): its label map") and "outside the tissue classes 0-3 (7)" in first
    assert second.startswith("row 4 (subject 'siteB-00'): unusable input: ") and "has no orientation" in second


def test_an_image_listed_twice_is_refused_before_any_output(make_cohort, tmp_path):
    manifest = make_cohort(per_site=3, n_train=2)
    rows = manifest.read_text().splitlines()
    # the test row (row 4) points at the image of the training row 2: a leak
    rows[3] = rows[3].replace("siteA-02_T1w", "siteA-00_T1w")
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(HarmonizeError, match=r"lists 1 image\(s\) twice.*leaks the test set") as err:
        run(manifest, tmp_path / "out")
    assert err.value.problems == [f"row 4 (split 'val'): the same image as row 2 (split 'train'), "
                                  f"{manifest.parent / 'img' / 'siteA-00_T1w.nii.gz'}"]
    assert not (tmp_path / "out").exists()


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


#: A second `preprocess` process that stops before its first scan until the file argv[4] exists.
PAUSED_RUN = """
import sys, time
from pathlib import Path
from harmonize.data import preprocess
real = preprocess._spatial_stage
def paused(scan, config, out):
    Path(sys.argv[3]).touch()
    while not Path(sys.argv[4]).exists():
        time.sleep(0.05)
    return real(scan, config, out)
preprocess._spatial_stage = paused
config = preprocess.PreprocessConfig(target_spacing=1.5, target_shape=(16, 16, 16))
print(preprocess.preprocess_manifest(sys.argv[1], sys.argv[2], config, progress=False).processed)
"""


def test_two_concurrent_runs_into_one_folder_never_both_succeed(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=1)
    out, started, go = tmp_path / "out", tmp_path / "started", tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    first = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, str(manifest), str(out), str(started), str(go)],
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True)
    try:
        while not started.exists():  # the first run holds the folder and is about to write
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        other_shape = PreprocessConfig(target_spacing=1.5, target_shape=(12, 12, 12))
        for config in (CONFIG, other_shape):  # the same settings or others: refused at once, nothing touched
            with pytest.raises(FolderLockedError, match=rf"{out} is in use by process {first.pid} on host .*"
                                                        r"'harmonize preprocess'.*Wait for that run to finish"):
                run(manifest, out, config)
            with pytest.raises(FolderLockedError):
                run(manifest, out, config, overwrite=True)
    finally:
        go.touch()
        stdout, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and stdout.strip() == "4"
    for path in read_manifest(out / MANIFEST_FILENAME)["image"]:
        assert nib.load(path).shape == (16, 16, 16)
    assert run(manifest, out).cached == 4  # once the first run is done, the folder is free (and its cache valid)
