"""Tests of harmonize.losses.ConfusionLoss."""

from __future__ import annotations

import math
import re

import pytest
import torch
from monai.utils import LossReduction

from harmonize.errors import ConfigError
from harmonize.losses import ConfusionLoss

BATCH = 5


def _reference(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample loss straight from the definition, in float64: -(1/N) sum_k log softmax_k."""
    p = torch.softmax(logits.double(), dim=1)
    return -(p.log().sum(dim=1) / logits.shape[1])


@pytest.mark.parametrize("num_classes", [2, 4, 32, 64])
@pytest.mark.parametrize("offset", [0.0, 7.5, -300.0])
def test_uniform_logits_give_log_n(num_classes: int, offset: float) -> None:
    logits = torch.full((BATCH, num_classes), offset)
    expected = math.log(num_classes)
    assert float(ConfusionLoss()(logits)) == pytest.approx(expected, rel=1e-6)
    assert float(ConfusionLoss("sum")(logits)) == pytest.approx(BATCH * expected, rel=1e-6)
    per_sample = ConfusionLoss("none")(logits)
    assert per_sample.shape == (BATCH,)
    torch.testing.assert_close(per_sample, torch.full((BATCH,), expected), rtol=1e-6, atol=0)


@pytest.mark.parametrize("num_classes", [2, 4, 32, 64])
def test_matches_definition_and_is_at_least_log_n(num_classes: int) -> None:
    gen = torch.Generator().manual_seed(num_classes)
    logits = 3.0 * torch.randn(BATCH, num_classes, generator=gen)
    per_sample = ConfusionLoss("none")(logits)
    torch.testing.assert_close(per_sample.double(), _reference(logits), rtol=1e-5, atol=1e-6)
    # L = log N + KL(uniform || softmax) > log N away from the uniform softmax.
    assert bool((per_sample > math.log(num_classes)).all())


def test_known_value() -> None:
    # softmax = (1/4, 3/4): L = -(log 1/4 + log 3/4) / 2
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(math.log(0.25) + math.log(0.75)) / 2
    assert float(ConfusionLoss()(logits)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.8369882, rel=1e-6)


def test_gradient_is_softmax_minus_uniform_and_zero_at_uniform() -> None:
    num_classes = 4
    uniform = torch.full((BATCH, num_classes), 2.0, requires_grad=True)
    ConfusionLoss()(uniform).backward()
    assert float(uniform.grad.abs().max()) == 0.0

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, num_classes, generator=gen, requires_grad=True)
    ConfusionLoss("sum")(logits).backward()
    expected = torch.softmax(logits.detach(), dim=1) - 1.0 / num_classes
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-7)


def test_extreme_float32_logits_are_finite() -> None:
    logits = torch.tensor([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4]], requires_grad=True)
    per_sample = ConfusionLoss("none")(logits)
    # log_softmax of (1e4, -1e4) is (0, -2e4): L = 1e4; equal logits give log 2.
    torch.testing.assert_close(per_sample, torch.tensor([1e4, 1e4, math.log(2.0)]))
    per_sample.sum().backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[0.5, -0.5], [-0.5, 0.5], [0.0, 0.0]]))


@pytest.mark.parametrize(("dtype", "big"), [(torch.float16, torch.finfo(torch.float16).max), (torch.bfloat16, 1e30)])
def test_half_precision_extremes_are_finite(dtype: torch.dtype, big: float) -> None:
    big = float(torch.tensor(big, dtype=dtype))
    logits = torch.tensor([[big, -big, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    loss = ConfusionLoss()(logits)
    assert loss.dtype == torch.float32
    # log_softmax = (0, -2 big, -big, -big): L = 4 big / 4 = big (computed in float32).
    assert float(loss.detach()) == pytest.approx(big, rel=1e-6)
    loss.backward()
    assert bool(torch.isfinite(logits.grad.float()).all())


def test_bool_mask_equals_loss_on_subset() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=gen)
    mask = torch.tensor([True, False, True, True, False, False])
    loss = ConfusionLoss()
    assert float(loss(logits, mask)) == pytest.approx(float(loss(logits[mask])), rel=1e-6)
    assert float(ConfusionLoss("sum")(logits, mask)) == pytest.approx(float(ConfusionLoss("sum")(logits[mask])))
    per_sample = ConfusionLoss("none")(logits, mask)
    assert per_sample[~mask].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(per_sample[mask], ConfusionLoss("none")(logits[mask]))
    # a (batch, 1) mask and a 0/1 integer mask mean the same
    assert float(loss(logits, mask.unsqueeze(1))) == pytest.approx(float(loss(logits[mask])), rel=1e-6)
    assert float(loss(logits, mask.long())) == pytest.approx(float(loss(logits[mask])), rel=1e-6)


def test_masked_samples_do_not_reach_the_gradient_even_if_not_finite() -> None:
    logits = torch.tensor([[0.3, -1.2, 2.0], [float("nan"), 1.0, 0.0], [float("inf"), 0.0, 0.0]])
    logits.requires_grad_(True)
    mask = torch.tensor([True, False, False])
    loss = ConfusionLoss()(logits, mask)
    assert float(loss.detach()) == pytest.approx(float(_reference(logits.detach()[:1])[0]), rel=1e-6)
    loss.backward()
    assert bool(torch.isfinite(logits.grad).all())
    assert logits.grad[1:].abs().max().item() == 0.0


def test_float_mask_weights_samples() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, generator=gen)
    weights = torch.tensor([0.5, 0.0, 2.0])
    per_sample = _reference(logits)
    expected = float((per_sample * weights.double()).sum() / weights.sum())
    assert float(ConfusionLoss()(logits, weights)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_masked_gives_zero_with_finite_gradient(reduction: str) -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    loss = ConfusionLoss(reduction)(logits, torch.zeros(4, dtype=torch.bool))
    assert bool(torch.isfinite(loss).all()) and float(loss.detach().abs().sum()) == 0.0
    loss.sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().max()) == 0.0


def test_empty_batch_mean_is_zero() -> None:
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = ConfusionLoss()(logits)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 4)


def test_reduction_accepts_enum_and_rejects_unknown() -> None:
    assert ConfusionLoss(LossReduction.SUM).reduction == LossReduction.SUM
    assert ConfusionLoss(" none ").reduction == LossReduction.NONE
    with pytest.raises(ValueError, match="ConfusionLoss: invalid arguments.\n  - Argument 'reduction': .*'average'") as info:
        ConfusionLoss("average")
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("shape", [(4,), (4, 1), (2, 3, 4)])
def test_bad_logit_shape_is_named(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"num_classes >= 2\), got " + re.escape(str(shape))):
        ConfusionLoss()(torch.zeros(shape))


def test_bad_mask_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"mask has shape \(3,\) and the input has shape \(4, 2\)"):
        ConfusionLoss()(torch.zeros(4, 2), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask has shape \(4, 2\)"):
        ConfusionLoss()(torch.zeros(4, 2), torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-negative finite weights"):
        ConfusionLoss()(torch.zeros(2, 2), torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_single_site_batch_with_extreme_logits_is_finite(reduction: str) -> None:
    """Every sample of a one-site batch confidently classified (+-1e4): the largest confusion, still finite."""
    logits = torch.tensor([[1e4, -1e4, 0.0]] * 4, requires_grad=True)
    loss = ConfusionLoss(reduction=reduction)(logits, mask=torch.tensor([True, True, True, False]))
    loss.sum().backward()
    # -(1/3) (log p0 + log p1 + log p2) = -(1/3) (0 - 2e4 - 1e4) = 1e4 per kept sample, 0 for the masked one
    want = {"none": torch.tensor([1e4, 1e4, 1e4, 0.0]), "sum": torch.tensor(3e4), "mean": torch.tensor(1e4)}[reduction]
    torch.testing.assert_close(loss.detach(), want)
    assert bool(torch.isfinite(logits.grad).all()) and float(logits.grad[3].abs().sum()) == 0.0


def test_target_gives_cross_entropy_with_minimum_at_the_target() -> None:
    target = torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    at_target = ConfusionLoss(reduction="none")(target.log(), target=target)
    entropy = -(target * target.log()).sum(dim=1)
    torch.testing.assert_close(at_target, entropy)
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.0, 0.0, -1.0]], requires_grad=True)
    loss = ConfusionLoss(reduction="sum")(logits, target=target)
    loss.backward()
    torch.testing.assert_close(logits.grad, torch.softmax(logits, dim=1).detach() - target)
    assert bool((ConfusionLoss(reduction="none")(logits, target=target) > entropy).all())


def test_uniform_target_equals_default() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ConfusionLoss()(logits, target=torch.full((5, 4), 0.25)), ConfusionLoss()(logits))


def test_bad_target_shape_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"target must have the logits' shape \(2, 3\), got \(2, 2\)"):
        ConfusionLoss()(torch.zeros(2, 3), target=torch.full((2, 2), 0.5))
