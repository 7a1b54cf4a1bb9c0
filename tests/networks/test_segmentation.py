"""Tests of harmonize.networks.TissueSegmenter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harmonize.errors import ConfigError
from harmonize.networks import FeatureTaps, TissueSegmenter


def _run_with_taps(net: TissueSegmenter, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    modules = dict(net.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = [
        modules[module].register_forward_hook(lambda m, a, out, tap=tap: store.__setitem__(tap, out))
        for tap, module in net.TAPS.items()
    ]
    try:
        out = net(x)
    finally:
        for h in handles:
            h.remove()
    return out, store


@pytest.mark.parametrize(
    ("spatial_dims", "size"), [(3, (24, 24, 24)), (3, (25, 23, 30)), (2, (24, 24)), (2, (31, 17))]
)
def test_output_and_tap_shapes(spatial_dims: int, size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = TissueSegmenter(spatial_dims=spatial_dims)
    assert net.tap_channels == {"bottleneck": 64, "final": 8} and net.min_input_size == 8
    out, taps = _run_with_taps(net, torch.randn(2, 1, *size))
    assert out.shape == (2, 4, *size)
    assert taps["bottleneck"].shape == (2, 64, *(s // 8 for s in size))
    assert taps["final"].shape == (2, 8, *size)
    # the output is the 1x1 convolution of the `final` features
    torch.testing.assert_close(net.output(taps["final"]), out)


def test_tap_modules_are_top_level_names() -> None:
    net = TissueSegmenter()
    names = [n for n, _ in net.named_children()]
    assert names == ["stem", "encoder", "bottleneck", "decoder", "final", "output"]
    modules = dict(net.named_modules())
    assert modules["bottleneck"] is net.bottleneck and modules["final"] is net.final
    assert isinstance(net.output, nn.Conv3d) and net.output.out_channels == 4 and net.output.kernel_size == (1, 1, 1)


def test_feature_taps_pool_and_concatenate() -> None:
    net = TissueSegmenter(spatial_dims=2)
    taps = FeatureTaps(net, list(net.TAPS.values()))
    try:
        x = torch.randn(3, 1, 16, 16)
        net(x)
        features = taps.features()
    finally:
        taps.remove()
    assert features.shape == (3, sum(net.tap_channels.values()))


def test_deeper_network_and_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = TissueSegmenter(spatial_dims=3, in_channels=2, out_channels=3, channels=(4, 8, 8, 16, 16))
    assert net.min_input_size == 16 and net.tap_channels == {"bottleneck": 16, "final": 4}
    assert len(net.encoder) == 3 and len(net.decoder) == 3
    out, taps = _run_with_taps(net, torch.randn(2, 2, 32, 32, 32))
    assert out.shape == (2, 3, 32, 32, 32) and taps["bottleneck"].shape == (2, 16, 2, 2, 2)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_tiny_segmentation_overfits() -> None:
    torch.manual_seed(0)
    net = TissueSegmenter(spatial_dims=2)
    x = torch.randn(2, 1, 16, 16)
    labels = (x > 0.5).long() + (x > 1.0).long() + (x < -1.0).long() * 3  # a voxel-wise rule with 4 classes
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), labels.squeeze(1))
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == labels.squeeze(1)).float().mean())
    assert accuracy > 0.95


def test_bad_input_is_named() -> None:
    net = TissueSegmenter()
    with pytest.raises(ValueError, match=r"must be >= 8 voxels for 4 levels, got input \(1, 1, 8, 7, 8\)"):
        net(torch.zeros(1, 1, 8, 7, 8))
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, size, size, size\), got \(1, 1, 16, 16\)"):
        net(torch.zeros(1, 1, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 1}, r"'spatial_dims' must be an integer >= 2 and <= 3, got 1 \(int\)"),
        ({"channels": (8,)}, r"'channels' must be a sequence of 2 or more integers >= 1, got \(8,\) \(tuple\)"),
        ({"out_channels": 1}, r"'out_channels' must be an integer >= 2, got 1 \(int\): the classes, background"),
        ({"dropout": -0.1}, r"'dropout' must be a finite number >= 0 and < 1, got -0.1 \(float\)"),
        ({"upsample": "bilinear"},
         r"'upsample' must be one of \['deconv', 'pixelshuffle', 'nontrainable'\], got 'bilinear'"),
        ({"norm": ("group", {"num_groups": 3})}, r"does not fit channels=\(8, 16, 32, 64\)"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TissueSegmenter(**kwargs)


def test_bad_arguments_are_all_named_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        TissueSegmenter(in_channels=0, out_channels=2.0, dropout=1)
    assert err.value.message == "TissueSegmenter: invalid arguments."
    assert err.value.problems == ["'in_channels' must be an integer >= 1, got 0 (int)",
                                  "'out_channels' must be an integer >= 2, got 2.0 (float): the classes, background "
                                  "included",
                                  "'dropout' must be a finite number >= 0 and < 1, got 1 (int)"]


@pytest.mark.parametrize("dims", [2, 3])
def test_torchscript_gives_the_eager_outputs(dims):
    net = TissueSegmenter(spatial_dims=dims, channels=(4, 8, 8)).eval()
    x = torch.randn(1, 1, *([16] * dims))
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))
