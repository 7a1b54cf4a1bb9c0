"""Reconstruction networks for undersampled MRI (plain PyTorch + MONAI).

- :class:`ReconUNet` (default): MONAI's residual :class:`~monai.networks.nets.UNet` applied to the zero-filled
  magnitude, with a global residual connection (the network learns the aliasing to remove). About 0.2M
  parameters by default: small enough to train on CPU at 64 x 64.
- :class:`ReconVarNet`: MONAI's end-to-end variational network
  (:class:`~monai.apps.reconstruction.networks.nets.VariationalNetworkModel`, Sriram et al. 2020) on the
  undersampled k-space, as in Xue et al.; much slower on CPU.

Each network names the sample keys it reads in ``input_keys`` (the first is the positional input, the others
follow as extra arguments), so one ``prepare_batch`` serves both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.apps.reconstruction.networks.nets.coil_sensitivity_model import (
    CoilSensitivityModel,
)
from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet
from monai.apps.reconstruction.networks.nets.varnet import VariationalNetworkModel
from monai.networks.layers import Norm
from monai.networks.nets import UNet
from monai.transforms import CenterSpatialCrop
from torch import Tensor, nn

from harmonize.errors import raise_problems
from harmonize.keys import Keys
from harmonize.networks._arguments import channels_problem, dropout_problem, spatial_dims_problem

__all__ = ["ReconUNet", "ReconVarNet"]

#: Default U-Net channels and strides (about 0.2M parameters with one residual unit per level).
UNET_CHANNELS = (16, 32, 64, 128)
UNET_STRIDES = (2, 2, 2)
#: Default features of VarNet's complex U-Nets (refinement and coil sensitivities) and its cascades.
VARNET_FEATURES = (8, 8, 16, 32, 64, 8)
VARNET_CASCADES = 4


class _ZeroConv2d(nn.Conv2d):
    """A convolution initialised (and re-initialised) to zero: the residual network starts as the identity."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class _ZeroConv3d(nn.Conv3d):
    """3D version of :class:`_ZeroConv2d`."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


_ZERO_CONV = {2: _ZeroConv2d, 3: _ZeroConv3d}


class ReconUNet(nn.Module):
    """A small U-Net on the zero-filled magnitude image, with a global residual connection.

    ``out = x + head(unet(x))`` (or without ``x`` when ``residual`` is false). MONAI's ``UNet`` returns
    ``channels[0]`` feature maps and a 1x1 convolution ``head`` maps them to the correction; with ``residual``
    the head starts at zero, so the network starts as the identity (the zero-filled image) and the SSIM loss
    does not start saturated on a dark background. Inputs whose size is not a multiple of the total stride
    (:attr:`multiple`, 8 by default), or smaller than twice it, are padded (by replication) and the output is cropped
    back; at least two multiples leave the deepest level more than one pixel, which instance normalisation needs.

    The network is TorchScript-scriptable (``torch.jit.script``, as ``monai.bundle ckpt_export`` does by default):
    the padding is computed from the input's shape at run time, so an exported model takes any image size. A
    traced model would instead freeze the padding of the example it was traced with.

    Args:
        spatial_dims: 2 for slices.
        channels: channels per level of MONAI's ``UNet``.
        strides: downsampling per level (one fewer than ``channels``).
        num_res_units: residual units per level.
        norm: normalisation layer (instance normalisation by default, as in fastMRI's U-Net).
        dropout: dropout probability.
        residual: add the input to the output.

    Raises:
        ConfigError: an argument out of range, e.g. ``strides`` without ``len(channels) - 1`` entries (every problem
            listed at once).
    """

    input_keys: tuple[str, ...] = (Keys.IMAGE,)

    def __init__(
        self,
        spatial_dims: int = 2,
        channels: Sequence[int] = UNET_CHANNELS,
        strides: Sequence[int] = UNET_STRIDES,
        num_res_units: int = 1,
        norm: str | tuple = Norm.INSTANCE,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        problems = [spatial_dims_problem(spatial_dims), channels_problem(channels),
                    channels_problem(strides, name="strides", least=1), dropout_problem(dropout)]
        if not any(problems[1:3]) and len(strides) != len(channels) - 1:
            problems.append(f"'strides' must hold one stride per level transition, len(channels) - 1 = "
                            f"{len(channels) - 1}, got channels={tuple(channels)} and strides={tuple(strides)}")
        raise_problems(type(self).__name__, problems)
        self.residual = residual
        self.multiple = math.prod(strides)
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=1,
            out_channels=channels[0],
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        head = _ZERO_CONV[spatial_dims] if residual else (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)
        self.head = head(channels[0], 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Refine zero-filled magnitudes ``(B, 1, *spatial)`` into reconstructions of the same shape."""
        spatial = x.shape[2:]
        pads: list[int] = []  # F.pad order: last dimension first, (before, after) each
        needed = False
        for size in spatial:
            total = max((self.multiple - size % self.multiple) % self.multiple, 2 * self.multiple - size)
            pads = [total // 2, total - total // 2] + pads
            needed = needed or total > 0
        if needed:
            out = self.head(self.unet(F.pad(x, pads, mode="replicate")))
            for dim, size in enumerate(spatial):  # crop back: pads[-2 - 2 * dim] is the dim's "before" pad
                out = out.narrow(dim + 2, pads[len(pads) - 2 - 2 * dim], size)
        else:
            out = self.head(self.unet(x))
        return x + out if self.residual else out


class ReconVarNet(nn.Module):
    """End-to-end VarNet (MONAI) from undersampled k-space to a magnitude image ``(B, 1, H, W)``.

    MONAI's VarNet finds the fully sampled centre from a single mask, so a batch whose samples carry different
    masks runs sample by sample.

    Args:
        features: six feature counts of the complex U-Nets (refinement and coil sensitivity).
        num_cascades: number of unrolled cascades.
        crop: optional ``(h, w)`` centre crop of the output (fastMRI targets are 320 x 320).
    """

    input_keys: tuple[str, ...] = (Keys.MASKED_KSPACE, Keys.SAMPLING_MASK)

    def __init__(
        self,
        features: Sequence[int] = VARNET_FEATURES,
        num_cascades: int = VARNET_CASCADES,
        crop: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.varnet = VariationalNetworkModel(
            coil_sensitivity_model=CoilSensitivityModel(spatial_dims=2, features=tuple(features)),
            refinement_model=ComplexUnet(spatial_dims=2, features=tuple(features)),
            num_cascades=num_cascades,
            spatial_dims=2,
        )
        self.crop = crop

    def forward(self, masked_kspace: Tensor, mask: Tensor) -> Tensor:
        """Reconstruct ``(B, coils, H, W, 2)`` k-space sampled by ``mask`` (``(B, 1, 1, W, 1)`` or shared)."""
        mask = mask.bool()  # VarNet's data-consistency step needs a boolean mask
        if mask.shape[0] == 1 or bool((mask == mask[:1]).all()):
            image = self.varnet(masked_kspace, mask[:1])
        else:
            image = torch.cat([self.varnet(masked_kspace[b : b + 1], mask[b : b + 1]) for b in range(mask.shape[0])])
        image = image.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
        if self.crop is not None:
            image = torch.stack([torch.as_tensor(CenterSpatialCrop(self.crop)(im)) for im in image])
        return image
