"""Tests of the handler that writes each reconstructed volume as NIfTI on the input file's grid."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from harmonize.bundle.reconstruction_writer import (
    FastMRIReconstructionWriter,
    ReconstructionWriter,
    output_stem,
)
from harmonize.errors import HarmonizeError
from harmonize.io import TMP_GLOB

AFFINE = np.array([[2.0, 0, 0, -10], [0, -1.5, 0, 20], [0, 0, 3, 5], [0, 0, 0, 1]])


def _input(source: str, spatial_shape: tuple[int, ...]) -> MetaTensor:
    return MetaTensor(torch.zeros(1, 2, 2, 2), meta={
        "filename_or_obj": source, "original_affine": torch.as_tensor(AFFINE), "spatial_shape": spatial_shape})


def _engine(sources: list[str], preds: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> SimpleNamespace:
    batch = [{"image": _input(s, shape)} for s, shape in zip(sources, shapes, strict=True)]
    return SimpleNamespace(state=SimpleNamespace(batch=batch, output=[{"pred": p} for p in preds]))


def test_output_stem() -> None:
    assert output_stem("/data/sub-01_T1w.nii.gz") == "sub-01_T1w"
    assert output_stem("scan.NII") == "scan" and output_stem("a.b.img") == "a.b"
    assert output_stem("/fastmri/file1000.h5") == "file1000"


def test_writes_float32_volumes_with_the_input_affine_and_shape(tmp_path: Path) -> None:
    writer = ReconstructionWriter(tmp_path / "out")
    volume = torch.arange(24, dtype=torch.float64).reshape(1, 2, 3, 4)
    flat = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3, 1)  # a 2D input's one-slice stack
    writer.write_batch(_engine(["/d/vol.nii.gz", "/d/slice.nii"], [volume, flat], [(2, 3, 4), (2, 3)]))
    written = nib.load(tmp_path / "out" / "vol_recon.nii.gz")
    assert written.get_data_dtype() == np.float32 and written.shape == (2, 3, 4)
    np.testing.assert_allclose(written.get_fdata(), volume[0].numpy())
    np.testing.assert_allclose(written.affine, AFFINE)
    two_d = nib.load(tmp_path / "out" / "slice_recon.nii.gz")
    assert two_d.shape == (2, 3) and float(two_d.get_fdata()[1, 2]) == 5.0
    assert sorted(writer.written) == [tmp_path / "out" / "slice_recon.nii.gz", tmp_path / "out" / "vol_recon.nii.gz"]
    assert not list((tmp_path / "out").glob(TMP_GLOB))


def test_never_overwrites_another_output_of_the_run(tmp_path: Path) -> None:
    writer = ReconstructionWriter(tmp_path, postfix="rec")
    first = writer.write("/a/sub.nii.gz", np.zeros((2, 2)), AFFINE)
    with pytest.raises(HarmonizeError, match=r"/a/sub.nii.gz and /b/sub.nii have the same name, so both"):
        writer.write("/b/sub.nii", np.ones((2, 2)), AFFINE)
    assert float(nib.load(first).get_fdata().max()) == 0.0
    writer.reset()
    assert writer.write("/b/sub.nii", np.ones((2, 2)), AFFINE) == first == tmp_path / "sub_rec.nii.gz"


def test_fastmri_writer_gathers_slices_in_order_per_file(tmp_path: Path) -> None:
    writer = FastMRIReconstructionWriter(tmp_path / "out")
    preds = [torch.full((1, 3, 2), float(i)) for i in range(3)]
    batch = [{"volume_id": "file2", "slice_index": 1}, {"volume_id": "file1", "slice_index": 0},
             {"volume_id": "file2", "slice_index": 0}]
    writer.gather_batch(SimpleNamespace(state=SimpleNamespace(batch=batch, output=[{"pred": p} for p in preds])))
    assert writer.path_of("/data/file2.h5") == tmp_path / "out" / "file2.h5"
    assert writer.write_all() == [tmp_path / "out" / "file2.h5", tmp_path / "out" / "file1.h5"]
    with h5py.File(tmp_path / "out" / "file2.h5", "r") as f:
        volume = f["reconstruction"][()]
    assert volume.dtype == np.float32 and volume.shape == (2, 3, 2)
    assert volume[:, 0, 0].tolist() == [2.0, 0.0]  # slice 0 (third sample), then slice 1 (first sample)
    assert not list((tmp_path / "out").glob(TMP_GLOB))
    writer.reset()
    assert writer.slices == {} and writer.written == []
