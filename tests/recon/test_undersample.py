"""Tests of Cartesian undersampling with MONAI's mask transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.keys import Keys, MaskType
from harmonize.recon.kspace import image_to_kspace, kspace_to_image
from harmonize.recon.undersample import (
    RestoreScaled,
    UndersampleKspaced,
    UndersampleVolumed,
    apply_kspace_mask,
)

COLUMNS = 64
CASES = [(4.0, 0.08), (8.0, 0.04)]



def _kspace(columns: int = COLUMNS) -> torch.Tensor:
    return image_to_kspace(torch.rand(1, 32, columns, generator=torch.Generator().manual_seed(0)))


def _mask(mask_type: MaskType, acceleration: float, center_fraction: float, seed: int) -> np.ndarray:
    t = UndersampleKspaced(mask_type=mask_type, acceleration=acceleration, center_fraction=center_fraction)
    out = t.set_random_state(seed=seed)({Keys.KSPACE: _kspace()})
    assert out[Keys.SAMPLING_MASK].shape == (1, 1, COLUMNS, 1)
    return out[Keys.SAMPLING_MASK].flatten().numpy().astype(bool)


def _centre(center_fraction: float) -> range:
    low = round(COLUMNS * center_fraction)
    start = (COLUMNS - low + 1) // 2
    return range(start, start + low)


@pytest.mark.parametrize(("acceleration", "center_fraction"), CASES)
def test_equispaced_mask_properties(acceleration: float, center_fraction: float) -> None:
    mask = _mask(MaskType.EQUISPACED, acceleration, center_fraction, seed=3)
    assert abs(mask.mean() - 1 / acceleration) <= 0.03  # ~ W / R lines
    assert mask[list(_centre(center_fraction))].all()  # fully sampled centre
    outside = np.array([i for i in np.flatnonzero(mask) if i not in _centre(center_fraction)])
    low = round(COLUMNS * center_fraction)
    adjusted = acceleration * (low - COLUMNS) / (low * acceleration - COLUMNS)  # MONAI's spacing
    gaps = np.diff(outside)
    gaps = gaps[gaps < 2 * adjusted]  # the jump over the centre is not a spacing
    assert set(gaps.tolist()) <= {int(np.floor(adjusted)), int(np.ceil(adjusted))}


@pytest.mark.parametrize(("acceleration", "center_fraction"), CASES)
def test_random_mask_properties(acceleration: float, center_fraction: float) -> None:
    masks = np.stack([_mask(MaskType.RANDOM, acceleration, center_fraction, seed=s) for s in range(200)])
    assert abs(masks.mean() - 1 / acceleration) <= 0.01  # expected fraction is exactly 1/R
    assert masks[:, list(_centre(center_fraction))].all()
    assert len({m.tobytes() for m in masks}) > 150  # the lines really are random


def test_masked_kspace_and_zero_filled_image() -> None:
    kspace = _kspace()
    out = UndersampleKspaced().set_random_state(seed=0)({Keys.KSPACE: kspace})
    mask = out[Keys.SAMPLING_MASK].flatten().bool()
    masked = out[Keys.MASKED_KSPACE]
    torch.testing.assert_close(masked[:, :, mask], kspace[:, :, mask])  # sampled lines kept as they are
    assert float(masked[:, :, ~mask].abs().max()) == 0.0  # skipped lines zero
    assert out[Keys.IMAGE].shape == (1, 32, COLUMNS)
    torch.testing.assert_close(out[Keys.IMAGE], kspace_to_image(masked), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[Keys.KSPACE], kspace)  # the fully sampled k-space is kept


def test_seed_reproduces_the_mask() -> None:
    a = _mask(MaskType.RANDOM, 4.0, 0.08, seed=11)
    assert (a == _mask(MaskType.RANDOM, 4.0, 0.08, seed=11)).all()
    assert not (a == _mask(MaskType.RANDOM, 4.0, 0.08, seed=12)).all()


def test_apply_given_mask() -> None:
    kspace = _kspace(8)
    line_mask = np.array([0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
    masked, mask = apply_kspace_mask(kspace, line_mask)
    assert mask.shape == (1, 1, 8, 1)
    torch.testing.assert_close(masked[:, :, 1], kspace[:, :, 1])
    assert float(masked[:, :, 0].abs().max()) == 0.0
    with pytest.raises(ValueError, match="line_mask has 3 entries but k-space has 8 columns"):
        apply_kspace_mask(kspace, np.ones(3))


def test_bad_settings_are_all_reported() -> None:
    with pytest.raises(ConfigError) as err:
        UndersampleKspaced(acceleration=1.0, center_fraction=1.5)
    assert err.value.problems == [
        "'acceleration' must be a finite number > 1, got 1.0 (float); e.g. 4 or 8",
        "'center_fraction' must be a finite number > 0 and < 1, got 1.5 (float); fastMRI uses 0.08 at R=4, 0.04 at R=8",
    ]
    with pytest.raises(ConfigError, match=r"'center_fraction' x 'acceleration' must be < 1.*got 0.3 x 4"):
        UndersampleKspaced(acceleration=4, center_fraction=0.3)
    with pytest.raises(ConfigError, match="Argument 'mask_type'.*spiral"):
        UndersampleKspaced(mask_type="spiral")
    with pytest.raises(ConfigError) as err:  # every bad argument at once, text named with its type
        UndersampleVolumed(acceleration="four", mask_type="spiral")
    assert err.value.problems[0] == "'acceleration' must be a finite number > 1, got 'four' (str); e.g. 4 or 8"
    assert err.value.problems[1].startswith("Argument 'mask_type'")


def _volume(shape: tuple[int, ...] = (1, 30, 37, 3)) -> torch.Tensor:
    return 50 * torch.rand(shape, generator=torch.Generator().manual_seed(2))


def test_undersample_volume_matches_the_slice_transform_and_restores_scale() -> None:
    """Each slice is undersampled as UndersampleKspaced does (same seed, same mask sequence), after scaling to max 1."""
    volume = _volume()
    out = UndersampleVolumed(acceleration=4.0, center_fraction=0.08, seed=5)({Keys.IMAGE: volume})
    scale = float(volume.max())
    assert float(out[Keys.SCALE]) == pytest.approx(scale)
    torch.testing.assert_close(out[Keys.TARGET], volume / scale)
    single = UndersampleKspaced(acceleration=4.0, center_fraction=0.08).set_random_state(seed=5)
    for s in range(volume.shape[-1]):
        expected = single({Keys.KSPACE: image_to_kspace(volume[..., s] / scale)})[Keys.IMAGE]
        torch.testing.assert_close(out[Keys.IMAGE][..., s], expected)
    assert out[Keys.IMAGE].shape == volume.shape and out[Keys.IMAGE].dtype == torch.float32
    error = float((out[Keys.IMAGE] - out[Keys.TARGET]).abs().mean())
    assert 0.01 < error < 0.5  # undersampled: not the target, but close to it
    # the same volume gives the same masks whatever was transformed before
    transform = UndersampleVolumed(seed=5)
    transform({Keys.IMAGE: _volume((1, 16, 16, 2))})
    torch.testing.assert_close(transform({Keys.IMAGE: volume})[Keys.IMAGE], out[Keys.IMAGE])
    restored = RestoreScaled(keys="pred")({"pred": out[Keys.TARGET], Keys.SCALE: out[Keys.SCALE]})
    torch.testing.assert_close(restored["pred"], volume)


def test_undersample_volume_keeps_metadata_and_rejects_bad_settings() -> None:
    from monai.data import MetaTensor

    volume = MetaTensor(_volume(), meta={"filename_or_obj": "scan.nii.gz"})
    out = UndersampleVolumed(target_key=None)({Keys.IMAGE: volume})
    assert isinstance(out[Keys.IMAGE], MetaTensor) and out[Keys.IMAGE].meta["filename_or_obj"] == "scan.nii.gz"
    assert Keys.TARGET not in out
    with pytest.raises(ValueError, match=r"expects \(1, H, W, slices\), got shape \(1, 30, 37\)"):
        UndersampleVolumed()({Keys.IMAGE: volume[..., 0]})
    with pytest.raises(ConfigError, match="takes one image key"):
        UndersampleVolumed(keys=["a", "b"])
    with pytest.raises(ConfigError, match=r"'acceleration' must be a finite number > 1, got 1.0 \(float\)"):
        UndersampleVolumed(acceleration=1.0)
