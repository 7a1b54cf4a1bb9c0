"""Tests of harmonize.losses.MomentMatchingLoss."""

from __future__ import annotations

import math
import re

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.losses import MomentMatchingLoss

CLASSES = 4


def _shifted(shift: float, n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal features (3 columns) whose first column's mean is ``shift * class``; balanced classes."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    x = torch.randn(n, 3, generator=gen)
    x[:, 0] += shift * labels.float()
    return x, labels


def _eta_squared(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Between-class variance over (mean within + between), averaged over columns: the mean term's definition."""
    means = torch.stack([x[labels == k].mean(0) for k in range(CLASSES)])
    within = torch.stack([x[labels == k].var(0, unbiased=False) for k in range(CLASSES)]).mean(0)
    between = means.var(0, unbiased=False)
    return float((between / (within + between)).mean())


def test_mean_term_is_the_between_class_fraction_of_variance() -> None:
    x, y = _shifted(2.0)
    loss = MomentMatchingLoss(CLASSES, 3, momentum=0.0, variance_weight=0.0)
    value = float(loss(x, y))
    assert value == pytest.approx(_eta_squared(x, y), rel=1e-5)
    # Class means 0, 2, 4, 6 on unit-variance noise: between 5, within ~1, so column 0 gives ~5/6, the others ~0.
    assert value == pytest.approx((5 / 6) / 3, abs=0.02)


def test_zero_when_classes_share_their_moments_and_scale_free() -> None:
    x = torch.randn(8, 5)
    labels = torch.arange(8) % CLASSES
    same = x[:2].repeat(4, 1)  # every class holds the same two vectors: identical means and variances
    same_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = MomentMatchingLoss(CLASSES, 5, momentum=0.0)
    assert float(loss(same[[0, 1, 0, 1, 0, 1, 0, 1]], same_labels)) == pytest.approx(0.0, abs=1e-6)
    a = float(MomentMatchingLoss(CLASSES, 5, momentum=0.0)(x, labels))
    b = float(MomentMatchingLoss(CLASSES, 5, momentum=0.0)(1e3 * x + 7.0, labels))
    assert a > 0.1
    assert b == pytest.approx(a, rel=1e-4)


def test_variance_term_sees_unequal_spread() -> None:
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(400) % 2
    x = torch.randn(400, 1, generator=gen) * torch.where(labels == 1, 3.0, 1.0).unsqueeze(1)
    means_only = float(MomentMatchingLoss(2, 1, momentum=0.0, variance_weight=0.0)(x, labels))
    both = float(MomentMatchingLoss(2, 1, momentum=0.0, variance_weight=1.0)(x, labels))
    # variances 1 and 9 about their mean 5, in units of the overall variance 5: (4 / 5)^2 each.
    assert both - means_only == pytest.approx(0.64, rel=0.15)
    assert means_only < 0.02


def test_running_statistics_blend_batches_and_only_the_batch_carries_gradient() -> None:
    loss = MomentMatchingLoss(2, 1, momentum=0.75, variance_weight=0.0)
    first = torch.tensor([[0.0], [2.0]])
    labels = torch.tensor([0, 1])
    loss(first, labels)
    torch.testing.assert_close(loss.class_mean, torch.tensor([[0.0], [2.0]]))
    second = torch.tensor([[4.0], [2.0]], requires_grad=True)
    value = loss(second, labels)
    # class 0: 0.75 * 0 + 0.25 * 4 = 1; class 1 stays 2.
    torch.testing.assert_close(loss.class_mean, torch.tensor([[1.0], [2.0]]))
    value.backward()
    assert second.grad is not None and float(second.grad.abs().sum()) > 0
    # eval mode reads the running statistics without changing them
    loss.eval()
    loss(torch.tensor([[100.0], [-100.0]]), labels)
    torch.testing.assert_close(loss.class_mean, torch.tensor([[1.0], [2.0]]))


def test_masked_and_unknown_samples_are_left_out() -> None:
    x, y = _shifted(2.0, n=16)
    reference = float(MomentMatchingLoss(CLASSES, 3, momentum=0.0)(x[:8], y[:8]))
    padded = torch.cat([x[:8], 1e6 * torch.ones(4, 3)])
    labels = torch.cat([y[:8], torch.tensor([-1, -1, 0, 1])])
    mask = torch.tensor([True] * 8 + [True, True, False, False])
    assert float(MomentMatchingLoss(CLASSES, 3, momentum=0.0)(padded, labels, mask=mask)) == pytest.approx(reference)


def test_fewer_than_two_classes_give_zero_with_a_gradient_path() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    value = MomentMatchingLoss(CLASSES, 2)(x, torch.zeros(3, dtype=torch.long))
    assert float(value.detach()) == 0.0
    value.backward()
    assert float(x.grad.abs().sum()) == 0.0


def test_lazy_size_and_state_dict_round_trip() -> None:
    x, y = _shifted(1.0, n=32)
    loss = MomentMatchingLoss(CLASSES)
    loss(x, y)
    assert loss.num_features == 3 and loss.class_mean.shape == (CLASSES, 3)
    restored = MomentMatchingLoss(CLASSES)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.class_mean, loss.class_mean)
    assert bool(restored.seen.all())
    torch.testing.assert_close(restored.eval()(x, y), loss.eval()(x, y))


def test_extreme_features_stay_finite() -> None:
    x = torch.tensor([[1e30, -1e30], [1e30, 1e30], [-1e30, 0.0], [0.0, 0.0]], dtype=torch.float32)
    value = MomentMatchingLoss(2, 2, momentum=0.0)(x.double(), torch.tensor([0, 0, 1, 1]))
    assert math.isfinite(float(value))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        MomentMatchingLoss(1, 0, momentum=1.0, variance_weight=-1.0, ridge=0.0)
    text = str(err.value) + " ".join(getattr(err.value, "problems", []))
    for name in ("num_classes", "num_features", "momentum", "variance_weight", "ridge"):
        assert name in text


def test_bad_shapes_and_labels_are_named() -> None:
    loss = MomentMatchingLoss(CLASSES, 3)
    with pytest.raises(ValueError, match=re.escape("(batch, 3), got (4, 2)")):
        loss(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="labels have shape"):
        loss(torch.zeros(4, 3), torch.zeros(5))
    with pytest.raises(ValueError, match=re.escape("labels [7] are outside 0..3")):
        loss(torch.zeros(2, 3), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="mask has shape"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]), mask=torch.ones(3, dtype=torch.bool))


def test_whitened_term_reads_a_difference_along_a_direction_of_little_variance() -> None:
    """Two nearly equal features whose difference carries the class: invisible per feature, plain when whitened."""
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(400) % CLASSES
    x = torch.randn(400, 3, generator=gen)
    x[:, 1] = x[:, 0] + 0.05 * torch.randn(400, generator=gen) + 0.1 * labels.float()
    diagonal = float(MomentMatchingLoss(CLASSES, 3, momentum=0.0, variance_weight=0.0)(x, labels))
    whitened = float(MomentMatchingLoss(CLASSES, 3, momentum=0.0, variance_weight=0.0, whiten=True, ridge=0.01)(x, labels))
    assert diagonal < 0.05
    assert whitened > 5 * diagonal
    # at most K - 1 (a Pillai trace), and ~0 when the classes share their means
    assert whitened < CLASSES - 1
    same = MomentMatchingLoss(CLASSES, 3, momentum=0.0, variance_weight=0.0, whiten=True)
    assert float(same(torch.randn(400, 3, generator=gen), labels)) < 0.05


def test_whitened_term_is_finite_with_dead_features_and_checkpointed() -> None:
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(8) % CLASSES
    loss = MomentMatchingLoss(CLASSES, momentum=0.9, variance_weight=0.0, whiten=True)
    for _ in range(5):
        x = torch.randn(8, 16, generator=gen).relu()
        x[:, :4] = 0.0  # channels that never fire
        x.requires_grad_(True)
        value = loss(x, labels)
        value.backward()
        assert math.isfinite(float(value.detach())) and bool(torch.isfinite(x.grad).all())
    assert loss.cross.shape == (16, 16)
    restored = MomentMatchingLoss(CLASSES, momentum=0.9, variance_weight=0.0, whiten=True)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.cross, loss.cross)
