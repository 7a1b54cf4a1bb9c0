"""Tests of harmonize.networks.BrainAgeRegressor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harmonize.errors import ConfigError
from harmonize.networks import BrainAgeRegressor, FeatureTaps

SMALL = (8, 8, 16)  # three blocks: minimum input 4 per axis



def _captured(net: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``net`` on ``x`` and return its output and the output of submodule ``name`` (by forward hook)."""
    store: dict[str, torch.Tensor] = {}
    handle = dict(net.named_modules())[name].register_forward_hook(lambda m, a, out: store.__setitem__("out", out))
    try:
        out = net(x)
    finally:
        handle.remove()
    return out, store["out"]


def test_default_network_follows_the_paper() -> None:
    net = BrainAgeRegressor()
    assert net.channels == (32, 64, 64, 96, 96, 96) and net.feature_dim == 96 and net.min_input_size == 32
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 64, 64] + [96] * 9  # 2, 2, 2, 3, 3, 3 convs
    linears = [(m.in_features, m.out_features) for m in net.regressor.modules() if isinstance(m, nn.Linear)]
    assert linears == [(96, 32), (32, 1)]
    assert net.TAPS == {"encoder": "encoder", "final": "regressor.act"}
    assert net.tap_channels == {"encoder": 96, "final": 32}

    torch.manual_seed(0)
    out, features = _captured(net, "encoder", torch.randn(2, 1, 32, 32, 32))
    assert out.shape == (2, 1) and features.shape == (2, 96)
    # leaky ReLU by default: with ReLU, 1 seed in ~12 lost every unit of the regressor and stayed at the mean age
    assert isinstance(net.encoder.embed_act, nn.LeakyReLU) and isinstance(net.regressor.act, nn.LeakyReLU)
    assert float(features.detach().min()) < 0.0
    original = BrainAgeRegressor(act="relu")
    assert isinstance(original.encoder.embed_act, nn.ReLU) and isinstance(original.regressor.act, nn.ReLU)
    assert float(_captured(original, "encoder", torch.randn(2, 1, 32, 32, 32))[1].detach().min()) >= 0.0


@pytest.mark.parametrize(
    ("spatial_dims", "shape"), [(3, (3, 1, 4, 4, 4)), (3, (3, 1, 9, 12, 17)), (2, (3, 1, 4, 4)), (2, (3, 1, 31, 20))]
)
def test_any_input_size_from_the_minimum(spatial_dims: int, shape: tuple[int, ...]) -> None:
    net = BrainAgeRegressor(spatial_dims=spatial_dims, channels=SMALL, feature_dim=12)
    assert net.min_input_size == 4
    out, features = _captured(net, "encoder", torch.randn(shape))
    assert out.shape == (3, 1) and features.shape == (3, 12) and net.tap_channels["encoder"] == 12


def test_the_default_taps_give_what_the_age_head_reads() -> None:
    """Both taps together: the feature vector and the hidden layer, sized by ``tap_channels``."""
    net = BrainAgeRegressor(channels=SMALL, feature_dim=12, hidden=5).eval()
    x = torch.randn(3, 1, 8, 8, 8)
    taps = FeatureTaps(net, list(net.TAPS.values()))
    try:
        net(x)
        features = taps.features()
    finally:
        taps.remove()
    assert features.shape == (3, 12 + 5) and sum(net.tap_channels.values()) == 17
    with torch.no_grad():
        encoded = net.encoder(x)
        hidden = net.regressor.act(net.regressor.fc(encoded))
    torch.testing.assert_close(features, torch.cat([encoded, hidden], dim=1))


def test_too_small_or_wrong_input_is_named() -> None:
    net = BrainAgeRegressor(channels=SMALL)
    with pytest.raises(ValueError, match=r"must be >= 4 voxels for 3 blocks, got input \(1, 1, 4, 3, 4\)"):
        net(torch.zeros(1, 1, 4, 3, 4))
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, size, size, size\), got \(1, 2, 8, 8, 8\)"):
        net(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match=r"got \(1, 1, 8, 8\)"):
        net(torch.zeros(1, 1, 8, 8))


def test_age_offset_and_scale_map_raw_output_to_years() -> None:
    torch.manual_seed(0)
    raw = BrainAgeRegressor(spatial_dims=2, channels=SMALL).eval()
    scaled = BrainAgeRegressor(spatial_dims=2, channels=SMALL, age_offset=60.0, age_scale=12.5).eval()
    state = raw.state_dict()
    state.update(age_offset=torch.tensor(60.0), age_scale=torch.tensor(12.5))
    scaled.load_state_dict(state)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), raw(x) * 12.5 + 60.0)
    assert float(scaled.state_dict()["age_offset"]) == 60.0


def test_batch_of_one_trains_and_overfits() -> None:
    torch.manual_seed(0)
    net = BrainAgeRegressor(spatial_dims=2, channels=SMALL, age_offset=50.0, age_scale=10.0)
    x, age = torch.randn(1, 1, 16, 16), torch.tensor([[71.0]])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), age)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert first > 300.0  # starts near the offset: (50 - 71)^2 = 441
    assert float(loss.detach()) < 0.01 * first


@pytest.mark.parametrize("norm", ["batch", ("instance", {"affine": True})])
def test_other_normalisations(norm: str | tuple) -> None:
    net = BrainAgeRegressor(spatial_dims=2, channels=SMALL, norm=norm)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 1)


def test_convs_per_block() -> None:
    net = BrainAgeRegressor(spatial_dims=2, channels=SMALL, convs_per_block=1)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 3
    net = BrainAgeRegressor(spatial_dims=2, channels=SMALL, convs_per_block=(1, 2, 4))
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 1}, r"'spatial_dims' must be an integer >= 2 and <= 3, got 1 \(int\)"),
        ({"channels": (32,)}, r"'channels' must be a sequence of 2 or more integers >= 1, got \(32,\) \(tuple\)"),
        ({"feature_dim": 0}, r"'feature_dim' must be an integer >= 1, got 0 \(int\)"),
        ({"hidden": 8.5}, r"'hidden' must be an integer >= 1, got 8.5 \(float\)"),
        ({"dropout": 1.0}, r"'dropout' must be a finite number >= 0 and < 1, got 1.0 \(float\)"),
        ({"age_scale": 0.0}, r"'age_scale' must be a finite number > 0, got 0.0 \(float\)"),
        ({"age_offset": float("nan")}, r"'age_offset' must be a finite number, got nan \(float\)"),
        ({"convs_per_block": (2, 2)}, r"'convs_per_block' must be an integer >= 1 or one per block \(6 blocks\), got \(2, 2\)"),
        ({"channels": (12, 20), "norm": ("group", {"num_groups": 8})}, r"norm=\('group', \{'num_groups': 8\}\) does not fit channels=\(12, 20\)"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrainAgeRegressor(**kwargs)


def test_bad_arguments_are_all_named_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        BrainAgeRegressor(spatial_dims=4, channels=(8, 0), dropout=-0.5)
    assert err.value.message == "BrainAgeRegressor: invalid arguments."
    assert err.value.problems == ["'spatial_dims' must be an integer >= 2 and <= 3, got 4 (int)",
                                  "'channels' must be a sequence of 2 or more integers >= 1, got (8, 0) (tuple)",
                                  "'dropout' must be a finite number >= 0 and < 1, got -0.5 (float)"]


def test_torchscript_gives_the_eager_outputs():
    net = BrainAgeRegressor(channels=(4, 8), feature_dim=8).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))
