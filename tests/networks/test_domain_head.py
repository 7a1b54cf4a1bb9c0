"""Tests of harmonize.networks.DomainHead."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harmonize.errors import ConfigError
from harmonize.losses import DomainLoss
from harmonize.networks import DomainHead


@pytest.mark.parametrize("num_classes", [2, 32, 64])
def test_paper_head_shapes_and_parameter_count(num_classes: int) -> None:
    head = DomainHead(96, num_classes)
    out = head(torch.randn(5, 96))
    assert out.shape == (5, num_classes)
    # 96-32-n: (96 * 32 + 32) + (32 * n + n) parameters
    assert sum(p.numel() for p in head.parameters()) == 96 * 32 + 32 + 32 * num_classes + num_classes
    assert [m.p for m in head.modules() if isinstance(m, nn.Dropout)] == [0.2]


@pytest.mark.parametrize("num_classes", [32, 64])
def test_head_learns_many_separable_domains(num_classes: int) -> None:
    gen = torch.Generator().manual_seed(num_classes)
    centres = 3.0 * torch.randn(num_classes, 16, generator=gen)
    site = torch.arange(num_classes).repeat(4)
    features = centres[site] + 0.1 * torch.randn(len(site), 16, generator=gen)
    torch.manual_seed(0)
    head = DomainHead(16, num_classes, hidden=64, dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    loss_fn = DomainLoss()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(head(features), site)
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((head(features).argmax(1) == site).float().mean())
    assert accuracy == 1.0


def test_hidden_widths_and_linear_head() -> None:
    deep = DomainHead(10, 4, hidden=(20, 8))
    assert [(m.in_features, m.out_features) for m in deep.modules() if isinstance(m, nn.Linear)] == [
        (10, 20), (20, 8), (8, 4)
    ]
    linear = DomainHead(10, 4, hidden=())
    assert [(m.in_features, m.out_features) for m in linear.modules() if isinstance(m, nn.Linear)] == [(10, 4)]
    assert linear(torch.ones(2, 10)).shape == (2, 4)


def test_layer_norm_makes_head_invariant_to_feature_scale_and_shift() -> None:
    torch.manual_seed(0)
    head = DomainHead(12, 3, normalize_input=True).eval()
    assert isinstance(head.layers.norm, nn.LayerNorm)
    x = torch.randn(4, 12)
    with torch.no_grad():
        torch.testing.assert_close(head(5.0 * x + 3.0), head(x), rtol=1e-4, atol=1e-5)
    assert isinstance(DomainHead(12, 3).layers.norm, nn.Identity)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    head = DomainHead(8, 2, hidden=256, dropout=0.5)
    x = torch.randn(3, 8)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    assert not torch.equal(head(x), head(x))


def test_wrong_features_name_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected features of shape \(batch, 96\), got \(2, 96, 3, 3, 3\)"):
        DomainHead(96, 4)(torch.zeros(2, 96, 3, 3, 3))
    with pytest.raises(ValueError, match=r"expected features of shape \(batch, 96\), got \(2, 64\)"):
        DomainHead(96, 4)(torch.zeros(2, 64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, r"'num_classes' must be an integer >= 2, got 1 \(int\)"),
        ({"in_features": 0}, r"'in_features' must be an integer >= 1, got 0 \(int\)"),
        ({"in_features": "96"}, r"'in_features' must be an integer >= 1, got '96' \(str\)"),
        ({"hidden": (32, 0)}, r"'hidden' must be an integer >= 1 or a sequence of them, got \(32, 0\)"),
        ({"dropout": 1.0}, r"'dropout' must be a finite number >= 0 and < 1, got 1.0 \(float\)"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    args = {"in_features": 96, "num_classes": 4} | kwargs
    with pytest.raises(ConfigError, match=message):
        DomainHead(**args)


def test_bad_arguments_are_all_named_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        DomainHead(0, 1, hidden=2.5, normalize_input=True, standardize_input=True)
    assert err.value.message == "DomainHead: invalid arguments."
    assert err.value.problems == ["'in_features' must be an integer >= 1, got 0 (int)",
                                  "'num_classes' must be an integer >= 2, got 1 (int)",
                                  "'hidden' must be an integer >= 1 or a sequence of them, got 2.5",
                                  "choose one of normalize_input (LayerNorm) and standardize_input (BatchNorm1d)"]
