"""Tests of the reconstruction networks."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.keys import Keys
from harmonize.networks.reconstruction import ReconUNet, ReconVarNet


def test_default_unet_is_small_and_starts_as_identity() -> None:
    net = ReconUNet()
    assert 150_000 < sum(p.numel() for p in net.parameters()) < 300_000
    assert net.input_keys == (Keys.IMAGE,)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(net(x), x)  # zero-initialised head: output = zero-filled input
    with torch.no_grad():
        net.head.weight.fill_(0.1)
    assert not torch.allclose(net(x), x)


def test_reset_parameters_keeps_the_head_at_zero() -> None:
    net = ReconUNet(channels=(4, 8), strides=(2,))
    with torch.no_grad():
        net.head.weight.fill_(1.0)
    net.head.reset_parameters()
    assert float(net.head.weight.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("shape", [(1, 1, 30, 37), (2, 1, 16, 16), (1, 1, 9, 8), (1, 1, 1, 1), (1, 1, 8, 8)])
def test_any_size_is_padded_and_cropped_back(shape: tuple[int, ...]) -> None:
    net = ReconUNet(channels=(4, 8, 16), strides=(2, 2)).eval()
    with torch.no_grad():
        net.head.weight.fill_(0.1)
    out = net(torch.rand(shape))
    assert out.shape == shape


def test_padding_is_centred_replication_to_at_least_two_multiples() -> None:
    """30 x 37 is padded to 32 x 40 (1 + 1 rows, 1 + 2 columns); 5 to 8 (two multiples of 4), by replication."""
    net = ReconUNet(channels=(4, 8, 16), strides=(2, 2)).eval()
    seen: list[torch.Tensor] = []
    net.unet.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = torch.rand(1, 1, 30, 5)
    net(x)
    (padded,) = seen
    assert padded.shape == (1, 1, 32, 8)
    torch.testing.assert_close(padded[..., 1:31, 1:6], x, rtol=0, atol=0)
    torch.testing.assert_close(padded[..., 0, 1:6], x[..., 0, :], rtol=0, atol=0)  # replicated first row
    torch.testing.assert_close(padded[..., 1:31, 7], x[..., -1], rtol=0, atol=0)  # replicated last column
    assert net.multiple == 4


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 1, 30, 37)), (2, (1, 1, 16, 16)), (3, (1, 1, 9, 8, 12))])
def test_scripted_network_equals_eager_at_any_size(spatial_dims: int, shape: tuple[int, ...]) -> None:
    """TorchScript (what ckpt_export writes) computes the padding at run time: same output at every size."""
    torch.manual_seed(0)
    net = ReconUNet(spatial_dims=spatial_dims, channels=(4, 8, 16), strides=(2, 2)).eval()
    with torch.no_grad():
        net.head.weight.normal_()
    scripted = torch.jit.script(net)
    for size in (shape, (*shape[:2], *(s + 3 for s in shape[2:]))):  # one script, two sizes
        x = torch.rand(size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected, actual = net(x), scripted(x)
        assert actual.shape == size and float((expected - x).abs().max()) > 0.1  # not the identity
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_non_residual_and_3d() -> None:
    net = ReconUNet(spatial_dims=3, channels=(4, 8), strides=(2,), residual=False)
    assert net(torch.rand(1, 1, 8, 8, 8)).shape == (1, 1, 8, 8, 8)


def test_gradients_reach_the_unet() -> None:
    net = ReconUNet(channels=(4, 8), strides=(2,))
    with torch.no_grad():
        net.head.weight.fill_(0.1)
    net(torch.rand(2, 1, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match=r"'strides' must hold one stride per level transition, len\(channels\) - 1 = 2, "
                       r"got channels=\(4, 8, 16\) and strides=\(2,\)"):
        ReconUNet(channels=(4, 8, 16), strides=(2,))
    with pytest.raises(ConfigError, match=r"'spatial_dims' must be an integer >= 2 and <= 3, got 1 \(int\)"):
        ReconUNet(spatial_dims=1)
    with pytest.raises(ConfigError) as err:  # every bad argument at once
        ReconUNet(spatial_dims=4, channels=(16, -32), dropout=2.0)
    assert err.value.message == "ReconUNet: invalid arguments."
    assert err.value.problems == ["'spatial_dims' must be an integer >= 2 and <= 3, got 4 (int)",
                                  "'channels' must be a sequence of 2 or more integers >= 1, got (16, -32) (tuple)",
                                  "'dropout' must be a finite number >= 0 and < 1, got 2.0 (float)"]


def test_varnet_on_masked_kspace_with_different_masks() -> None:
    net = ReconVarNet(features=(4, 4, 8, 8, 16, 4), num_cascades=2)
    assert net.input_keys == (Keys.MASKED_KSPACE, Keys.SAMPLING_MASK)
    kspace = torch.randn(2, 1, 32, 32, 2)  # the complex U-Nets downsample 4 times: 32 is the smallest size
    mask = torch.zeros(2, 1, 1, 32, 1)
    mask[:, ..., 14:18, :] = 1  # fully sampled centre
    mask[0, ..., ::4, :] = 1
    mask[1, ..., 1::4, :] = 1
    out = net(kspace * mask, mask)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    single = net(kspace[:1] * mask[:1], mask[:1])
    torch.testing.assert_close(out[:1], single, atol=1e-5, rtol=1e-4)  # per-sample path = batched path
    cropped = ReconVarNet(features=(4, 4, 8, 8, 16, 4), num_cascades=1, crop=(8, 8))(kspace * mask[:1], mask[:1])
    assert cropped.shape == (2, 1, 8, 8)
