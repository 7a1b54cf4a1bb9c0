"""The MNI templates from nilearn: location, derived CSF, resampling, caching and errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from harmonize.data import templates as templates_module
from harmonize.data.templates import (
    TEMPLATE_FOV_MM,
    derive_csf,
    find_template_files,
    load_templates,
)
from harmonize.errors import ConfigError, HarmonizeError


def test_the_templates_are_found_inside_nilearn():
    paths = find_template_files()
    assert set(paths) == {"t1", "gm", "wm"}
    assert all(path.is_file() and "nilearn" in path.parts for path in paths.values())


@pytest.mark.parametrize("shape", [24, 32])
def test_load_gives_cubic_maps_on_a_matching_affine(shape):
    t = load_templates(shape)
    voxel = TEMPLATE_FOV_MM / shape
    assert t.shape == (shape,) * 3 and t.voxel_size == pytest.approx(voxel)
    np.testing.assert_allclose(t.affine[:3, :3], np.eye(3) * voxel)
    centre = t.affine @ np.array([(shape - 1) / 2] * 3 + [1.0])
    np.testing.assert_allclose(centre[:3], [0.0, -17.0, 5.0], atol=0.01)  # the brain's bounding-box centre (MNI mm)
    for name in ("t1", "csf", "gm", "wm"):
        array = getattr(t, name)
        assert array.dtype == np.float32 and array.min() >= 0 and array.max() <= 1
        assert not array.flags.writeable
    assert (t.csf + t.gm + t.wm).max() <= 1 + 1e-5
    # Tissue volumes (ml) of the ICBM152 2009a maps survive the resampling; CSF is derived (about 356 ml).
    ml = voxel**3 / 1000
    assert t.gm.sum() * ml == pytest.approx(1008, rel=0.02)
    assert t.wm.sum() * ml == pytest.approx(670, rel=0.02)
    assert t.csf.sum() * ml == pytest.approx(356, rel=0.05)


def test_the_ventricles_are_csf_and_the_t1_is_dark_there():
    t = load_templates(32)
    ventricles = t.csf > 0.6
    deep = np.zeros_like(ventricles)
    deep[10:22, 10:22, 10:22] = True  # the middle of the brain
    assert (ventricles & deep).sum() >= 8
    assert t.t1[ventricles & deep].mean() < 0.6 * t.t1[t.wm > 0.8].mean()


def test_templates_are_cached_per_shape():
    assert load_templates(24) is load_templates(24)
    assert load_templates(24) is not load_templates(32)


def test_derive_csf_is_the_envelope_minus_grey_and_white_matter():
    grid = np.indices((20, 20, 20)) - 9.5
    radius = np.sqrt((grid**2).sum(0))
    brain = radius < 8
    wm = (radius < 4).astype(np.float32)
    gm = ((radius >= 4) & (radius < 6)).astype(np.float32)
    csf = derive_csf(gm, wm, brain, smoothing_voxels=0)
    np.testing.assert_array_equal(csf, ((radius >= 6) & (radius < 8)).astype(np.float32))
    grown = derive_csf(gm, wm, brain, smoothing_voxels=0, margin_voxels=1)
    assert grown.sum() > csf.sum() and (grown >= csf).all()


@pytest.mark.parametrize("shape", [4, 24.5, True])
def test_bad_shape_is_refused(shape):
    with pytest.raises(ConfigError, match=rf"'shape' must be an integer >= 8, got {shape!r} \({type(shape).__name__}\)"):
        load_templates(shape)


def test_bad_shape_and_field_of_view_are_named_at_once():
    with pytest.raises(ConfigError) as err:
        load_templates(4, fov_mm=-200.0)
    assert err.value.problems == ["'shape' must be an integer >= 8, got 4 (int)",
                                  "'fov_mm' must be a finite number > 0, got -200.0 (float)"]


def test_missing_nilearn_or_files_give_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HarmonizeError, match="nilearn package, which is not installed: run `pip install nilearn`"):
        find_template_files()
    monkeypatch.undo()
    files = {**templates_module.TEMPLATE_FILES, "gm": "no_such_template.nii.gz"}
    monkeypatch.setattr(templates_module, "TEMPLATE_FILES", files)
    with pytest.raises(HarmonizeError, match="lacks the MNI ICBM152 2009 templates") as err:
        find_template_files()
    assert "no_such_template.nii.gz" in str(err.value)
