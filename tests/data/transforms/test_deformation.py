"""Deformation: a global scale plus the exponential of a smooth velocity field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from scipy import ndimage

from harmonize.data.transforms import Deformation
from harmonize.errors import ConfigError
from harmonize.keys import Keys


def sphere(shape: int = 32, radius: float = 8.0) -> np.ndarray:
    grid = np.indices((shape,) * 3) - (shape - 1) / 2
    return (np.sqrt((grid**2).sum(0)) < radius).astype(np.float32)


def test_identity_leaves_the_subject_unchanged(make_subject):
    subject = make_subject()
    out = Deformation()(subject)
    np.testing.assert_allclose(out[Keys.TISSUES].numpy(), subject[Keys.TISSUES].numpy(), atol=1e-6)


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_scale_changes_volume_by_its_cube(scale):
    image = tio.ScalarImage(tensor=torch.from_numpy(sphere()[None]))
    out = Deformation(scale=scale)(image)
    assert out.data.sum().item() / image.data.sum().item() == pytest.approx(scale**3, rel=0.04)


def test_large_warps_stay_invertible_and_exp_of_minus_v_undoes_exp_of_v(jacobian_determinant):
    # 2 mm per control point 7.75 mm apart: far rougher than the cohort's 3 mm per 50 mm, still invertible
    velocity = np.random.default_rng(0).normal(0, 2.0, (3, 5, 5, 5))
    shape, spacing = (32, 32, 32), (1.0, 1.0, 1.0)
    forward = Deformation(velocity_mm=velocity).sampling_coordinates(shape, spacing)
    assert np.abs(forward - np.indices(shape)).max() > 4  # it really moves voxels
    assert jacobian_determinant(forward).min() > 0
    # phi_v(phi_-v(x)) = x: sample the forward map at the backward map's points (away from the border).
    backward = Deformation(velocity_mm=-velocity).sampling_coordinates(shape, spacing)
    composed = np.stack([ndimage.map_coordinates(forward[c], backward, order=1, mode="nearest") for c in range(3)])
    inner = (slice(None),) + (slice(8, -8),) * 3
    assert np.abs(composed - np.indices(shape))[inner].max() < 0.5


def test_float_label_maps_are_interpolated_and_integer_ones_keep_their_labels():
    labels = (sphere() * 3).astype(np.int64)
    subject = tio.Subject(
        seg=tio.LabelMap(tensor=torch.from_numpy(labels[None])),
        prob=tio.LabelMap(tensor=torch.from_numpy(sphere()[None])),
    )
    out = Deformation(scale=1.07, velocity_mm=np.full((3, 3, 3, 3), 0.7))(subject)
    assert set(np.unique(out["seg"].numpy())) == {0, 3}
    assert out["seg"].data.dtype == torch.int64
    fractional = out["prob"].numpy()
    assert ((fractional > 0.01) & (fractional < 0.99)).any()


def test_the_same_parameters_give_the_same_output_on_every_image(make_subject):
    velocity = np.random.default_rng(1).normal(0, 4.0, (3, 4, 4, 4))
    subject = make_subject()
    tissues = subject[Keys.TISSUES]
    subject.add_image(tio.ScalarImage(tensor=tissues.data[1:2].clone(), affine=tissues.affine), "gm")
    out = Deformation(scale=1.02, velocity_mm=velocity)(subject)
    np.testing.assert_array_equal(out["gm"].numpy()[0], out[Keys.TISSUES].numpy()[1])


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"velocity_mm": np.zeros((3, 1, 4, 4))}, "'velocity_mm' must have shape (3, nx, ny, nz) with every n >= 2, "
                                              "got (3, 1, 4, 4)"),
    ({"velocity_mm": np.full((3, 2, 2, 2), np.nan)}, "'velocity_mm' must be finite"),
    ({"scale": (1.0, 0.0, 1.0)}, "'scale' must be one finite number > 0 or a sequence of 3 of them, got (1.0, 0.0, "
                                 "1.0) (tuple)"),
    ({"integration_steps": -1}, "'integration_steps' must be an integer >= 0, got -1 (int)"),
])
def test_bad_arguments_are_named(kwargs, problem):
    with pytest.raises(ConfigError) as info:
        Deformation(**kwargs)
    assert info.value.message == "Deformation: invalid arguments." and info.value.problems == [problem]


def test_every_bad_argument_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        Deformation(scale=0, velocity_mm=np.zeros((2, 4, 4, 4)), integration_steps=2.5)
    assert [p.split(" must ")[0] for p in info.value.problems] == ["'scale'", "'velocity_mm'", "'integration_steps'"]
