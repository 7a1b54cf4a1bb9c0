"""Tests of the SSIM + L1 reconstruction loss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import SSIMLoss
from monai.utils import LossReduction

from harmonize.errors import ConfigError
from harmonize.losses.ssim_l1 import SSIML1Loss


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 16, 16, generator=g)
    return target + 0.1 * torch.rand(3, 1, 16, 16, generator=g), target


@pytest.mark.parametrize("l1_weight", [0.0, 1e-5, 1.0])
def test_identical_images_give_zero(l1_weight: float) -> None:
    x = torch.rand(2, 1, 16, 16)
    assert float(SSIML1Loss(l1_weight=l1_weight)(x, x.clone())) == pytest.approx(0.0, abs=1e-6)


def test_terms_match_monai_ssim_loss_and_the_mean_absolute_error(images) -> None:
    pred, target = images
    ssim = SSIMLoss(spatial_dims=2, kernel_type="uniform", win_size=7, reduction="none")(pred, target)
    l1 = (pred - target).abs().mean(dim=(1, 2, 3)).view(-1, 1)
    torch.testing.assert_close(SSIML1Loss(l1_weight=0.0, reduction="none")(pred, target), ssim)
    torch.testing.assert_close(SSIML1Loss(l1_weight=2.0, reduction="none")(pred, target), ssim + 2.0 * l1)
    torch.testing.assert_close(SSIML1Loss(l1_weight=2.0)(pred, target), (ssim + 2.0 * l1).mean())
    torch.testing.assert_close(SSIML1Loss(l1_weight=2.0, reduction="sum")(pred, target), (ssim + 2.0 * l1).sum())


def test_constant_offset_l1_term() -> None:
    target = torch.rand(1, 1, 16, 16)
    loss = SSIML1Loss(l1_weight=1.0)
    ssim_only = SSIML1Loss(l1_weight=0.0)
    assert float(loss(target + 0.25, target) - ssim_only(target + 0.25, target)) == pytest.approx(0.25, abs=1e-6)


def test_loss_is_differentiable(images) -> None:
    pred, target = images
    pred.requires_grad_(True)
    SSIML1Loss()(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) > 0


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"'l1_weight' must be a finite number >= 0, got -1 \(int\)"):
        SSIML1Loss(l1_weight=-1)
    with pytest.raises(ConfigError, match="'win_size' must be an odd integer >= 3 .* got 6"):
        SSIML1Loss(win_size=6)
    with pytest.raises(ConfigError) as err:  # every bad argument at once, each named with its value
        SSIML1Loss(l1_weight="tiny", data_range=0, win_size=(7, 4), kernel_type="box")
    assert err.value.message == "SSIML1Loss: invalid arguments."
    assert err.value.problems[:3] == [
        "'l1_weight' must be a finite number >= 0, got 'tiny' (str)",
        "'data_range' must be a finite number > 0, got 0 (int)",
        "'win_size' must be an odd integer >= 3 (or one per axis; the paper uses 7), got (7, 4)",
    ]
    assert err.value.problems[3].startswith("Argument 'kernel_type'")
    with pytest.raises(ConfigError) as err:  # both choices, with the other problems
        SSIML1Loss(data_range=-1.0, reduction="median", kernel_type="box")
    assert [p.split(" ")[:2] for p in err.value.problems] == [["'data_range'", "must"], ["Argument", "'reduction':"],
                                                              ["Argument", "'kernel_type':"]]
    assert SSIML1Loss(reduction=LossReduction.SUM, kernel_type="gaussian").reduction == "sum"
    with pytest.raises(ConfigError, match="Argument 'kernel_type'"):
        SSIML1Loss(kernel_type="box")
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 8, 8\) and \(1, 1, 8, 9\)"):
        SSIML1Loss()(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
