"""Tests of harmonize.losses.gradient_reversal (the DANN layer)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from harmonize.errors import ConfigError
from harmonize.losses import GradientReversal, dann_lambda, grad_reverse

LAMBDAS = [0.0, 0.5, 1.0, 2.3]


def _downstream(y: torch.Tensor) -> torch.Tensor:
    return (torch.sin(y) * y**2).sum()


def _plain_grad(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    _downstream(x).backward()
    return x.grad


@pytest.mark.parametrize("lambda_", LAMBDAS)
def test_forward_is_identity_and_backward_is_minus_lambda_times_gradient(lambda_: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=gen, requires_grad=True)
    layer = GradientReversal(lambda_)
    y = layer(x)
    assert torch.equal(y, x) and y.shape == x.shape
    _downstream(y).backward()
    assert torch.equal(x.grad, _plain_grad(x) * (-lambda_))


@pytest.mark.parametrize("lambda_", LAMBDAS)
def test_functional_form_matches_module(lambda_: float) -> None:
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    _downstream(grad_reverse(x, lambda_)).backward()
    assert torch.equal(x.grad, _plain_grad(x) * (-lambda_))


def test_lambda_is_settable_for_schedules() -> None:
    x = torch.ones(3, requires_grad=True)
    layer = GradientReversal()
    assert layer.lambda_ == 1.0
    layer.lambda_ = 0.25
    (layer(x) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-0.25, -0.5, -0.75]
    assert "lambda_=0.25" in repr(layer)


def test_dann_update_trains_head_normally_and_reverses_extractor() -> None:
    torch.manual_seed(0)
    extractor, head = nn.Linear(5, 3), nn.Linear(3, 2)
    plain_extractor, plain_head = copy.deepcopy(extractor), copy.deepcopy(head)
    x, y = torch.randn(8, 5), torch.randint(0, 2, (8,))
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(head(GradientReversal(0.5)(extractor(x))), y).backward()
    loss_fn(plain_head(plain_extractor(x)), y).backward()
    for p, q in zip(head.parameters(), plain_head.parameters()):
        assert torch.equal(p.grad, q.grad)
    for p, q in zip(extractor.parameters(), plain_extractor.parameters()):
        torch.testing.assert_close(p.grad, -0.5 * q.grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "strong"])
def test_bad_lambda_raises(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"GradientReversal: invalid argument.\n  - 'lambda_' must be a finite number >= 0, got "):
        GradientReversal(bad)  # type: ignore[arg-type]
    layer = GradientReversal()
    with pytest.raises(ValueError, match="'lambda_' must be a finite number >= 0"):
        layer.lambda_ = bad  # type: ignore[assignment]
    assert layer.lambda_ == 1.0
    with pytest.raises(ValueError, match=f"grad_reverse: invalid argument.\n  - 'lambda_' must be a finite number >= 0, got {bad!r}"):
        grad_reverse(torch.ones(2), bad)  # type: ignore[arg-type]


def test_dann_schedule_values() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(0.9999092, rel=1e-6)
    assert dann_lambda(1.0, gamma=1.0, max_lambda=2.0) == pytest.approx(2 * (2 / (1 + math.exp(-1)) - 1))
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)
    with pytest.raises(ConfigError, match=r"'progress' must be a finite number >= 0 and <= 1, got 1.5 \(float\)"):
        dann_lambda(1.5)
    with pytest.raises(ConfigError, match=r"'gamma' must be a finite number > 0, got 0 \(int\)"):
        dann_lambda(0.5, gamma=0)
    with pytest.raises(ConfigError, match=r"'max_lambda' must be a finite number >= 0, got -1.0 \(float\)"):
        dann_lambda(0.5, max_lambda=-1.0)
    with pytest.raises(ConfigError) as err:  # every bad argument at once
        dann_lambda(-0.5, gamma=float("nan"), max_lambda="one")
    assert err.value.problems == ["'progress' must be a finite number >= 0 and <= 1, got -0.5 (float)",
                                  "'gamma' must be a finite number > 0, got nan (float)",
                                  "'max_lambda' must be a finite number >= 0, got 'one' (str)"]
