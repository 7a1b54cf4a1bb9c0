"""SegmentationWriter: argmax label maps as uint8 NIfTI with the input file's affine."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.transforms import LoadImage

from harmonize.bundle import SegmentationWriter
from harmonize.bundle.segmentation_writer import image_affine


def test_written_labels_overlay_the_input(tiny_cohort, tmp_path):
    label_file = min((tiny_cohort.parent / "labels").iterdir())
    image_file = tiny_cohort.parent / "images" / label_file.name
    image = LoadImage(image_only=True, ensure_channel_first=True)(str(image_file))
    truth = torch.as_tensor(np.asarray(nib.load(label_file).dataobj), dtype=torch.int64)
    logits = torch.nn.functional.one_hot(truth, 4).permute(3, 0, 1, 2).float() * 5.0  # argmax = the true labels

    def step(engine, batch):
        return [{"pred": logits}]

    engine = Engine(step)
    writer = SegmentationWriter(tmp_path / "segs")
    writer.attach(engine)
    engine.run([[{"subject_id": "sub-a", "image": image}]], max_epochs=1)
    assert writer.written == [tmp_path / "segs" / "sub-a_seg.nii.gz"]
    written = nib.load(writer.written[0])
    source = nib.load(image_file)
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), truth.numpy())  # same voxel order as the input


def test_index_lists_the_files_and_a_prediction_off_the_input_grid_is_refused(tiny_cohort, tmp_path):
    image_file = min((tiny_cohort.parent / "images").iterdir())
    image = LoadImage(image_only=True, ensure_channel_first=True)(str(image_file))
    logits = torch.zeros(4, 24, 24, 24)
    engine = Engine(lambda engine, batch: [{"pred": logits}])
    writer = SegmentationWriter(tmp_path / "segs", index_file=tmp_path / "segs" / "index.csv",
                                extra_keys=["intensity_reference"])
    writer.attach(engine)
    engine.run([[{"subject_id": "sub-a", "image": image, "intensity_reference": "site site0"}]], max_epochs=1)
    assert (tmp_path / "segs" / "index.csv").read_text().splitlines() == [
        "subject_id,image,segmentation,intensity_reference",
        f"sub-a,{image_file},{tmp_path / 'segs' / 'sub-a_seg.nii.gz'},site site0"]
    small = Engine(lambda engine, batch: [{"pred": torch.zeros(4, 16, 16, 16)}])
    SegmentationWriter(tmp_path / "other").attach(small)
    with pytest.raises(ValueError, match=r"shape \(16, 16, 16\) is not the input's \(24, 24, 24\).*Invertd"):
        small.run([[{"subject_id": "sub-a", "image": image}]], max_epochs=1)


def test_affine_prefers_the_original_file_affine():
    original = np.diag([2.0, 2.0, 2.0, 1.0])
    image = MetaTensor(torch.zeros(1, 2, 2, 2), meta={"original_affine": original})
    np.testing.assert_array_equal(image_affine(image), original)
    with pytest.raises(ValueError, match="no affine"):
        image_affine(torch.zeros(1, 2, 2, 2))
