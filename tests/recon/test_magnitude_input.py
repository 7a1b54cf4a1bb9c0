"""Tests of the checks of a user's magnitude image before reconstruction-bundle inference."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from harmonize.errors import HarmonizeError
from harmonize.keys import Keys
from harmonize.recon.magnitude_input import CheckMagnitudeImaged, source_name


def _image(*shape: int, fill: float | None = None) -> MetaTensor:
    data = torch.rand(shape, generator=torch.Generator().manual_seed(0)) if fill is None else torch.full(shape, fill)
    return MetaTensor(data, meta={"filename_or_obj": "/data/sub-01.nii.gz"})


def test_a_3d_volume_passes_unchanged_and_a_2d_slice_gets_a_slice_axis() -> None:
    volume = _image(1, 6, 7, 3)
    out = CheckMagnitudeImaged()({Keys.IMAGE: volume})[Keys.IMAGE]
    torch.testing.assert_close(out, volume, rtol=0, atol=0)
    flat = CheckMagnitudeImaged()({Keys.IMAGE: _image(1, 6, 7)})[Keys.IMAGE]
    assert flat.shape == (1, 6, 7, 1) and source_name(flat) == "/data/sub-01.nii.gz"


def test_small_negative_values_are_clipped() -> None:
    image = _image(1, 4, 4, 2)
    image[0, 0, 0, 0] = -0.04 * float(image.max())
    out = CheckMagnitudeImaged.check(image)
    assert float(out.min()) == 0.0 and float(out[0, 1, 1, 1]) == float(image[0, 1, 1, 1])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (_image(3, 4, 4, 2), "expected one magnitude image, got 3 channels or volumes"),
        (_image(1, 4, 4, 2, 2), "expected a 2D slice or a 3D volume, got 4 spatial dimension"),
        (_image(1, 8), "expected a 2D slice or a 3D volume, got 1 spatial dimension"),
        (_image(1, 0, 4, 2), r"the image has no voxels \(shape \(0, 4, 2\)\)"),
        (_image(1, 4, 4, 2, fill=0.0), r"the image is empty \(maximum 0\)"),
        (_image(1, 4, 4, 2, fill=float("nan")), "32 voxel\\(s\\) are NaN or infinite"),
        (_image(1, 4, 4, 2, fill=-1000.0), "a magnitude MR image is non-negative"),
    ],
)
def test_what_the_network_cannot_take_is_refused_naming_the_file(image: MetaTensor, message: str) -> None:
    with pytest.raises(HarmonizeError, match=message) as err:
        CheckMagnitudeImaged()({Keys.IMAGE: image})
    assert str(err.value).startswith("/data/sub-01.nii.gz: ")


def test_ct_like_range_is_refused_with_its_range() -> None:
    image = _image(1, 4, 4, 2)
    image[0, 0] = -1000.0
    with pytest.raises(HarmonizeError, match=r"values range from -1000 to 0\.9\d+.*a CT \(Hounsfield units\)"):
        CheckMagnitudeImaged.check(image)
    assert source_name(torch.zeros(1)) == "<in memory>"
