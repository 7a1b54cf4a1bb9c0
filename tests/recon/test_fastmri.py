"""Tests of the fastMRI HDF5 loader on small files written in the fastMRI layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.blocks.fft_utils_t import fftn_centered_t

from harmonize.errors import HarmonizeError, ManifestError
from harmonize.keys import Keys
from harmonize.recon.fastmri import (
    FastMRISliceDataset,
    fastmri_splits,
    read_fastmri_volume,
)
from harmonize.recon.kspace import kspace_to_image
from harmonize.recon.slices import KspaceSettings

SLICES, HEIGHT, WIDTH, CROP = 3, 24, 20, 16



def _kspace_of(images: np.ndarray) -> np.ndarray:
    """Complex k-space (..., H, W) of complex images, with MONAI's centred FFT (the fastMRI convention)."""
    stacked = torch.view_as_real(torch.from_numpy(images.astype(np.complex64)))
    return torch.view_as_complex(fftn_centered_t(stacked, spatial_dims=2).contiguous()).numpy()


def _crop(x: np.ndarray) -> np.ndarray:
    top, left = (HEIGHT - CROP) // 2, (WIDTH - CROP) // 2
    return x[..., top : top + CROP, left : left + CROP]


def write_singlecoil(path: Path, seed: int = 0) -> np.ndarray:
    """A single-coil file; returns the target (esc) volume."""
    rng = np.random.default_rng(seed)
    images = rng.random((SLICES, HEIGHT, WIDTH)) * np.exp(1j * rng.random((SLICES, HEIGHT, WIDTH)))
    target = _crop(np.abs(images)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_kspace_of(images))
        f.create_dataset("reconstruction_esc", data=target)
        f.attrs["max"] = float(target.max())
        f.attrs["norm"] = float(np.linalg.norm(target))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["patient_id"] = "p0"
    return target


def test_singlecoil_file(tmp_path: Path) -> None:
    path = tmp_path / "file1000.h5"
    target = write_singlecoil(path)
    dataset = FastMRISliceDataset([path], forget=True, seed=3)
    assert len(dataset) == SLICES
    sample = dataset[1]
    assert sample[Keys.IMAGE].shape == sample[Keys.TARGET].shape == (1, CROP, CROP)  # cropped to the target
    np.testing.assert_allclose(sample[Keys.TARGET][0].numpy(), target[1] / target.max(), atol=1e-6)
    assert float(sample[Keys.TARGET].max()) <= 1.0
    assert sample[Keys.KSPACE].shape == (1, HEIGHT, WIDTH, 2)
    assert sample[Keys.SAMPLING_MASK].shape == (1, 1, WIDTH, 1)
    assert bool(sample[Keys.FORGET]) and sample[Keys.VOLUME_ID] == "file1000" and sample[Keys.SLICE_INDEX] == 1
    # the zero-filled input is the masked k-space's magnitude, cropped and scaled like the target
    zero_filled = kspace_to_image(sample[Keys.MASKED_KSPACE])[0].numpy()
    np.testing.assert_allclose(sample[Keys.IMAGE][0].numpy(), _crop(zero_filled) / target.max(), atol=1e-5)
    # a fully sampled centre-cropped image would equal the target: the loader's k-space is the file's
    full = kspace_to_image(sample[Keys.KSPACE])[0].numpy()
    np.testing.assert_allclose(_crop(full), target[1], atol=1e-5)
    # masks are reproducible per (seed, file, slice)
    again = FastMRISliceDataset([path], forget=True, seed=3)[1]
    torch.testing.assert_close(again[Keys.SAMPLING_MASK], sample[Keys.SAMPLING_MASK])


def test_attrs_max_sets_the_scale_else_the_target_maximum(tmp_path: Path) -> None:
    path = tmp_path / "file2.h5"
    target = write_singlecoil(path)
    with h5py.File(path, "a") as f:
        f.attrs["max"] = 2 * float(target.max())  # the file's own peak, as fastMRI stores it
    scaled = FastMRISliceDataset([path])[1]
    np.testing.assert_allclose(scaled[Keys.TARGET][0].numpy(), target[1] / (2 * target.max()), atol=1e-6)
    with h5py.File(path, "a") as f:
        del f.attrs["max"]
    plain = FastMRISliceDataset([path])[1]  # no 'max': the target's own maximum
    np.testing.assert_allclose(plain[Keys.TARGET][0].numpy(), target[1] / target.max(), atol=1e-6)
    torch.testing.assert_close(2 * scaled[Keys.IMAGE], plain[Keys.IMAGE])  # input and target share the scale


def test_multicoil_test_file_uses_its_own_mask(tmp_path: Path) -> None:
    path = tmp_path / "brain_test.h5"
    rng = np.random.default_rng(1)
    images = rng.random((2, 4, HEIGHT, WIDTH)).astype(np.complex64)
    line_mask = np.zeros(WIDTH, dtype=bool)
    line_mask[::3] = True
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_kspace_of(images) * line_mask)
        f.create_dataset("mask", data=line_mask)
        f.attrs["acquisition"] = "AXT2"
    dataset = FastMRISliceDataset([path], kspace=KspaceSettings(keep_kspace=False), crop=(CROP, CROP))
    sample = dataset[0]
    np.testing.assert_array_equal(sample[Keys.SAMPLING_MASK].flatten().numpy().astype(bool), line_mask)
    assert Keys.TARGET not in sample and Keys.MASKED_KSPACE not in sample  # a test file has no target
    assert sample[Keys.IMAGE].shape == (1, CROP, CROP)


def test_read_fastmri_volume(tmp_path: Path) -> None:
    path = tmp_path / "file1.h5"
    target = write_singlecoil(path)
    volume = read_fastmri_volume(path)
    assert volume["kspace"].shape == (SLICES, HEIGHT, WIDTH) and np.iscomplexobj(volume["kspace"])
    np.testing.assert_allclose(volume["reconstruction_esc"], target)
    assert volume["acquisition"] == "CORPD_FBK" and volume["max"] == pytest.approx(target.max())
    with pytest.raises(HarmonizeError, match="is not a fastMRI file: expected an HDF5 file ending in .h5"):
        read_fastmri_volume(tmp_path / "scan.nii.gz")
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("image", data=np.zeros(3))
    with pytest.raises(HarmonizeError, match=r"has no 'kspace' dataset; found \['filename', 'image'\]"):
        read_fastmri_volume(empty)
    with pytest.raises(HarmonizeError, match="has no 'kspace' dataset"):
        FastMRISliceDataset([empty])


def test_dataset_argument_checks(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    write_singlecoil(path)
    with pytest.raises(ManifestError) as err:
        FastMRISliceDataset([path], forget=[True, False], extra=[])
    assert "'forget' has 2 flags for 1 files." in str(err.value)
    assert "'extra' has 0 mappings for 1 files." in str(err.value)
    assert len(FastMRISliceDataset([path], slices=slice(1, None))) == SLICES - 1


def test_fastmri_splits_from_a_manifest(tmp_path: Path) -> None:
    rows = []
    for i, (site, split) in enumerate([("A", "train"), ("A", "test"), ("B", "train"), ("B", "test")]):
        path = tmp_path / f"v{i}.h5"
        write_singlecoil(path, seed=i)
        rows.append({Keys.SUBJECT_ID: f"s{i}", Keys.IMAGE: str(path), Keys.SITE: site, Keys.SPLIT: split})
    frame = pd.DataFrame(rows)
    splits = fastmri_splits(frame, forget_site="B")
    assert set(splits.sizes().values()) == {SLICES}
    sample = splits.forget_train[0]
    assert bool(sample[Keys.FORGET]) and sample[Keys.SITE] == "B" and sample[Keys.SUBJECT_ID] == "s2"
    assert Keys.KSPACE not in sample  # k-space dropped by default for manifests of real data
    frame.loc[0, Keys.IMAGE] = str(tmp_path / "v0.nii.gz")
    with pytest.raises(ManifestError, match=r"(?s)list .h5 files in the 'image' column.*row 0: .*v0.nii.gz"):
        fastmri_splits(frame, forget_site="B")
