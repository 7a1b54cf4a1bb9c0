"""Tests of harmonize.losses.DomainLoss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harmonize.errors import ConfigError
from harmonize.losses import DomainLoss


def _batch(batch: int = 7, num_classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(batch, num_classes, generator=gen), torch.randint(0, num_classes, (batch,), generator=gen)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 0.0]])
def test_matches_torch_cross_entropy(reduction: str, weight: list[float] | None) -> None:
    logits, target = _batch()
    w = None if weight is None else torch.tensor(weight)
    expected = F.cross_entropy(logits, target, weight=w, reduction=reduction)
    torch.testing.assert_close(DomainLoss(weight=weight, reduction=reduction)(logits, target), expected)


def test_known_value() -> None:
    # softmax of (0, log 3) is (1/4, 3/4); class 0 costs log 4.
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0)).item()]])
    assert float(DomainLoss()(logits, torch.tensor([0]))) == pytest.approx(1.3862944, rel=1e-6)


def test_target_shapes_and_float_indices() -> None:
    logits, target = _batch()
    expected = F.cross_entropy(logits, target)
    torch.testing.assert_close(DomainLoss()(logits, target.unsqueeze(1)), expected)
    torch.testing.assert_close(DomainLoss()(logits, target.float()), expected)


def test_from_counts_gives_inverse_frequency_weights() -> None:
    loss = DomainLoss.from_counts([10, 30, 60])
    # total / (N * count) = 100 / (3 * count)
    torch.testing.assert_close(loss.weight, torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    torch.testing.assert_close(DomainLoss.from_counts([5, 5, 5, 5]).weight, torch.ones(4))
    logits, target = _batch(num_classes=3, seed=3)
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target, weight=loss.weight))


def test_class_weights_rebalance_two_sites() -> None:
    # 3 samples of site 0 and 1 of site 1, with per-sample losses a (site 0) and b (site 1):
    # inverse-frequency weights make the mean (a + b) / 2 instead of (3a + b) / 4.
    logits = torch.tensor([[2.0, 0.0]] * 3 + [[0.0, 1.0]])
    target = torch.tensor([0, 0, 0, 1])
    a = float(F.cross_entropy(logits[:1], target[:1]))
    b = float(F.cross_entropy(logits[3:], target[3:]))
    assert float(DomainLoss()(logits, target)) == pytest.approx((3 * a + b) / 4, rel=1e-6)
    assert float(DomainLoss.from_counts([3, 1])(logits, target)) == pytest.approx((a + b) / 2, rel=1e-6)


def test_mask_equals_subset_and_ignores_masked_targets() -> None:
    logits, target = _batch(batch=6)
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    target_with_unknown = torch.where(mask, target, torch.full_like(target, -1))  # unknown sites: -1, never read
    for weight in (None, [1.0, 2.0, 0.5, 3.0]):
        w = None if weight is None else torch.tensor(weight)
        for reduction in ("mean", "sum"):
            expected = F.cross_entropy(logits[mask], target[mask], weight=w, reduction=reduction)
            got = DomainLoss(weight=weight, reduction=reduction)(logits, target_with_unknown, mask)
            torch.testing.assert_close(got, expected)
    per_sample = DomainLoss(reduction="none")(logits, target_with_unknown, mask)
    assert per_sample[~mask].tolist() == [0.0, 0.0]


def test_float_mask_weights_samples() -> None:
    logits, target = _batch(batch=3)
    weights = torch.tensor([1.0, 0.25, 0.0])
    per_sample = F.cross_entropy(logits, target, reduction="none")
    expected = float((per_sample * weights).sum() / weights.sum())
    assert float(DomainLoss()(logits, target, weights)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_masked_gives_zero_with_finite_gradient(reduction: str) -> None:
    logits = torch.full((3, 4), float("nan"), requires_grad=True)
    loss = DomainLoss(weight=[1.0, 1.0, 2.0, 1.0], reduction=reduction)(
        logits, torch.tensor([-1, 9, 2]), torch.zeros(3, dtype=torch.bool)
    )
    assert float(loss.detach().abs().sum()) == 0.0
    loss.sum().backward()
    assert bool(torch.isfinite(logits.grad).all()) and float(logits.grad.abs().max()) == 0.0


def test_extreme_logits_are_finite() -> None:
    logits = torch.tensor([[1e4, -1e4], [1e4, -1e4]], requires_grad=True)
    per_sample = DomainLoss(reduction="none")(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(per_sample, torch.tensor([0.0, 2e4]))
    per_sample.sum().backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[0.0, 0.0], [1.0, -1.0]]))

    half = torch.tensor([[65504.0, -65504.0]], dtype=torch.float16)
    loss = DomainLoss()(half, torch.tensor([1]))
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx(131008.0)


def test_target_out_of_range_is_named() -> None:
    logits, _ = _batch(batch=3, num_classes=4)
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\) .* got \[4, 7\]"):
        DomainLoss()(logits, torch.tensor([4, 0, 7]))
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        DomainLoss()(logits, torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match="whole domain indices"):
        DomainLoss()(logits, torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="whole domain indices"):
        DomainLoss()(logits, torch.tensor([float("nan"), 1.0, 2.0]))


def test_shape_errors_name_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"target has shape \(2,\) and logits have shape \(3, 4\)"):
        DomainLoss()(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target has shape \(3, 4\)"):
        DomainLoss()(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(3,\)"):
        DomainLoss()(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"3 class weights but logits have 4 classes \(shape \(2, 4\)\)"):
        DomainLoss(weight=[1.0, 1.0, 1.0])(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask has shape \(3,\) and the input has shape \(2, 4\)"):
        DomainLoss()(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("weight", [[1.0, -1.0], [1.0, float("nan")], [0.0, 0.0], [1.0], [[1.0, 2.0]]])
def test_bad_weight_raises_in_init(weight: list) -> None:
    with pytest.raises(ConfigError, match="weight must be one non-negative finite number per domain"):
        DomainLoss(weight=weight)


def test_bad_options_raise_in_init() -> None:
    with pytest.raises(ValueError, match="Argument 'reduction': By 'avg', did you mean"):
        DomainLoss(reduction="avg")
    with pytest.raises(ConfigError, match=r"counts must be one positive count per domain .* got \[4, 0\]"):
        DomainLoss.from_counts([4, 0])


def test_weight_moves_with_the_module() -> None:
    loss = DomainLoss(weight=[1.0, 3.0]).double()
    assert loss.weight.dtype == torch.float64 and "weight" in loss.state_dict()
    logits = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert float(loss(logits, torch.tensor([0, 1]))) == pytest.approx(
        float(F.cross_entropy(logits, torch.tensor([0, 1]), weight=torch.tensor([1.0, 3.0], dtype=torch.float64)))
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_single_site_batch_with_extreme_logits_is_finite(reduction: str) -> None:
    """A batch from one site only (every target the same class), logits of +-1e4, class weights: all finite."""
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, 1e4]], requires_grad=True)
    loss = DomainLoss(weight=[1.0, 3.0, 0.5], reduction=reduction)(logits, torch.tensor([1, 1, 1]))
    loss.sum().backward()
    # -log softmax: 2e4 for the wrong confident sample, 0 for the right one, log 3 for equal logits (weight 3 each)
    expected = torch.tensor([3 * 2e4, 0.0, 3 * math.log(3.0)])
    want = {"none": expected, "sum": expected.sum(), "mean": expected.sum() / 9.0}[reduction]
    torch.testing.assert_close(loss.detach(), want)
    assert bool(torch.isfinite(logits.grad).all())


def test_empty_batch_is_zero_with_finite_gradient() -> None:
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = DomainLoss()(logits, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad.shape == (0, 3)
