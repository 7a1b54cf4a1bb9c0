"""Atrophy: cortical thinning (GM to CSF on the pial side) and ventricular enlargement (a smooth warp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from scipy import ndimage

from harmonize.data.transforms import Atrophy
from harmonize.data.transforms.atrophy import VENTRICLE_DEPTH_MM
from harmonize.errors import ConfigError
from harmonize.keys import Keys

CSF, GM, WM = 0, 1, 2


def interior_csf(tissues: np.ndarray, spacing: float) -> float:
    """CSF volume (voxels) deeper than the ventricle depth below the brain's surface."""
    depth = ndimage.distance_transform_edt(tissues.sum(0) > 0.5) * spacing
    return float(tissues[CSF][depth > VENTRICLE_DEPTH_MM].sum())


def test_zero_atrophy_is_the_identity(make_subject):
    subject = make_subject()
    out = Atrophy()(subject)
    np.testing.assert_array_equal(out[Keys.TISSUES].numpy(), subject[Keys.TISSUES].numpy())


@pytest.mark.parametrize("thinning", [0.1, 0.3, 0.6])
def test_thinning_moves_pial_grey_matter_to_csf_and_spares_white_matter(make_subject, thinning):
    before = make_subject()[Keys.TISSUES].numpy()
    after = Atrophy(gm_thinning=thinning)(make_subject())[Keys.TISSUES].numpy()
    lost = before[GM].sum() - after[GM].sum()
    # Only the pial-side share of the grey matter goes: between 30% and 100% of the nominal fraction.
    assert 0.3 * thinning * before[GM].sum() < lost < thinning * before[GM].sum()
    assert after[CSF].sum() - before[CSF].sum() == pytest.approx(lost, rel=1e-4)
    np.testing.assert_array_equal(after[WM], before[WM])
    np.testing.assert_allclose(after.sum(0), before.sum(0), atol=1e-5)


def test_more_thinning_loses_more_grey_matter(make_subject):
    volumes = [Atrophy(gm_thinning=t)(make_subject())[Keys.TISSUES].numpy()[GM].sum() for t in (0.0, 0.2, 0.4)]
    assert volumes[0] > volumes[1] > volumes[2]


def test_ventricle_dilation_enlarges_interior_csf_with_an_invertible_warp(make_subject, jacobian_determinant):
    subject = make_subject()
    spacing = subject[Keys.TISSUES].spacing[0]
    before = subject[Keys.TISSUES].numpy()
    volumes = []
    for dilation in (2.0, 4.0, 6.0):
        transform = Atrophy(ventricle_dilation_mm=dilation)
        after = transform(subject)[Keys.TISSUES].numpy()
        volumes.append(interior_csf(after, spacing))
        coords = transform.ventricle_sampling_coordinates(before, subject[Keys.TISSUES].spacing)
        moved_mm = np.sqrt(((coords - np.indices(before.shape[1:])) ** 2).sum(0)) * spacing
        assert moved_mm.max() == pytest.approx(dilation, rel=1e-4)
        assert jacobian_determinant(coords).min() > 0
    base = interior_csf(before, spacing)
    assert base < volumes[0] < volumes[1] < volumes[2]
    assert volumes[2] > 1.2 * base  # 6 mm is under one 8.3 mm voxel


def test_channels_select_the_tissues_of_other_layouts(make_subject):
    tissues = make_subject()[Keys.TISSUES].data
    background = 1 - tissues.sum(0, keepdim=True)
    affine = make_subject()[Keys.TISSUES].affine
    subject = tio.Subject(maps=tio.LabelMap(tensor=torch.cat([background, tissues]), affine=affine))
    out = Atrophy(0.3, 3.0, tissues_key="maps", channels=(1, 2, 3))(subject)["maps"].numpy()
    expected = Atrophy(0.3, 3.0)(make_subject())[Keys.TISSUES].numpy()
    np.testing.assert_allclose(out[1:], expected, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"gm_thinning": 1.0}, "'gm_thinning' must be a finite number >= 0 and < 1, got 1.0 (float)"),
    ({"ventricle_dilation_mm": 7}, "'ventricle_dilation_mm' must be a finite number >= 0 and <= 6, got 7 (int) "
                                   "(larger warps may fold)"),
    ({"channels": (0, 0, 1)}, "'channels' must be a sequence of 3 distinct integers >= 0, got (0, 0, 1) (tuple)"),
])
def test_bad_arguments_are_named(kwargs, problem):
    with pytest.raises(ConfigError) as info:
        Atrophy(**kwargs)
    assert info.value.message == "Atrophy: invalid arguments." and info.value.problems == [problem]


def test_every_bad_argument_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        Atrophy(gm_thinning=-0.1, ventricle_dilation_mm="3", channels=(0, 1))
    assert [p.split(" must ")[0] for p in info.value.problems] == ["'gm_thinning'", "'ventricle_dilation_mm'",
                                                                   "'channels'"]


def test_missing_tissues_are_named():
    with pytest.raises(KeyError, match="Atrophy needs tissue maps under 'tissues'"):
        Atrophy(gm_thinning=0.1)(tio.Subject(t1=tio.ScalarImage(tensor=torch.zeros(1, 4, 4, 4))))
