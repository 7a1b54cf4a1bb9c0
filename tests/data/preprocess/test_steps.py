"""Tests of harmonize.data.preprocess.steps: the mask, and the per-scan checks that fail a scan by name."""

from __future__ import annotations

import gzip
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from skimage.filters import threshold_otsu

from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess import PreprocessConfig, foreground_mask
from harmonize.data.preprocess.steps import intensity_steps
from harmonize.errors import HarmonizeError

from .conftest import rewrite, run


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

    rewrite(spiked, spike)
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
    rewrite(manifest.parent / "img" / "siteB-01_T1w.nii.gz", change)
    with pytest.raises(HarmonizeError, match=r"1 scan\(s\) of .* could not be preprocessed") as err:
        run(manifest, tmp_path / "out")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("row 5 (subject 'siteB-01'): ") and message in err.value.problems[0]
    if case == "nan voxel":
        assert "has 1 NaN or infinite voxel(s) of 8000; replace them (e.g. with 0) first" in err.value.problems[0]


def test_preprocess_refuses_bad_labels_and_missing_geometry_by_row(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=1)
    label = manifest.parent / "img" / "siteA-01_dseg.nii.gz"
    rewrite(label, lambda data: np.where(data == 2, 7, data).astype(np.uint8))
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


def test_the_standardised_bytes_do_not_depend_on_the_torch_threads():
    """48^3 heads: a mean over their ~80,000 voxels sums differently on 1 and 2 torch threads (about one volume in two
    here), so the z-normalisation must take it on one thread."""
    before = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    try:
        for _ in range(6):
            image = torch.rand(1, 48, 48, 48, generator=g) * 5
            results = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                subject = tio.Subject(image=tio.ScalarImage(tensor=image.clone()),
                                      mask=tio.LabelMap(tensor=(image > 1).to(torch.uint8)))
                results.append(intensity_steps(subject, None, PreprocessConfig(), "scan").data)
                assert torch.get_num_threads() == threads  # restored after the step
            assert torch.equal(*results)
    finally:
        torch.set_num_threads(before)
