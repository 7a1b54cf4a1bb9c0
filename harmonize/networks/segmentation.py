"""U-Net for CSF/GM/WM tissue segmentation with named tap points for domain unlearning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv

# TwoConv, Down and UpCat are the building blocks of monai.networks.nets.BasicUNet (MONAI 1.4-1.6); UpCat pads
# odd sizes, so inputs need not be divisible by a power of two.
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

from harmonize import defaults
from harmonize.errors import ConfigError, integer_problem, raise_problems
from harmonize.networks._arguments import channels_problem, dropout_problem, spatial_dims_problem
from harmonize.networks._input import check_image_input

__all__ = ["TissueSegmenter"]

#: The ``upsample`` choices of MONAI's ``UpCat``.
UPSAMPLE_MODES = ("deconv", "pixelshuffle", "nontrainable")


class TissueSegmenter(nn.Module):
    """A 2D/3D U-Net built from MONAI's BasicUNet blocks, with its tap points as top-level submodules.

    The segmentation network of Dinsdale et al. (MIUA 2020; NeuroImage 2021) is a U-Net whose domain head
    reads the bottleneck and/or the last decoder features ("unlearning points"). Here these are named
    submodules, so ``dict(net.named_modules())[name]`` finds them:

    - ``bottleneck``: the deepest block (max-pooling and two convolutions), ``channels[-1]`` channels at
      ``1 / 2 ** (len(channels) - 1)`` of the input size;
    - ``final``: the last decoder block (upsampling, skip concatenation, two convolutions) at full resolution
      with ``channels[0]`` channels: the features *before* the 1x1 output convolution (richer than the
      ``out_channels`` logits, and the place the original code unlearned at);
    - ``output``: the 1x1 convolution to the ``out_channels`` logits (no softmax).

    Other submodules: ``stem`` (first two convolutions), ``encoder`` (a ``ModuleList`` of downsampling
    blocks), ``decoder`` (a ``ModuleList`` of upsampling blocks, deepest first, without ``final``).
    :attr:`tap_channels` maps each tap to its channel count. Activations are not in place, so a forward hook
    on a tap sees the tensor the next layer reads.

    Every spatial axis must be at least :attr:`min_input_size` ``= 2 ** (len(channels) - 1)`` voxels (8 for
    the default four levels); with InstanceNorm the bottleneck also needs more than one voxel while training,
    so use at least twice that (16 for the defaults). Odd sizes are fine.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes, including background (4 for background/CSF/GM/WM).
        channels: features at each level, shallow to deep (two levels or more).
        norm: MONAI normalisation spec; InstanceNorm by default (batch-size independent, no running statistics
            that pool sites).
        act: MONAI activation spec.
        dropout: dropout probability in the convolutions.
        upsample: ``"deconv"`` (transposed convolution), ``"pixelshuffle"`` or ``"nontrainable"``.

    Raises:
        ConfigError: (a ``ValueError``) an argument outside its range (the argument is named).
    """

    #: Tap name -> name of the submodule whose output is the tapped feature map.
    TAPS: dict[str, str] = {"bottleneck": "bottleneck", "final": "final"}

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = defaults.SEG_CLASSES,
        channels: Sequence[int] = defaults.SEG_CHANNELS,
        norm: str | tuple = ("instance", {"affine": True}),
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.1, "inplace": False}),
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        problems = [spatial_dims_problem(spatial_dims), channels_problem(channels),
                    integer_problem("in_channels", in_channels)]
        if problem := integer_problem("out_channels", out_channels, minimum=2):
            problems.append(f"{problem}: the classes, background included")
        problems.append(dropout_problem(dropout))
        if upsample not in UPSAMPLE_MODES:
            problems.append(f"'upsample' must be one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
        raise_problems(name, problems)
        channels = tuple(int(c) for c in channels)

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        #: Smallest size of every spatial axis of the input.
        self.min_input_size = 2 ** (len(channels) - 1)
        #: Tap name -> channels of the tapped feature map.
        self.tap_channels: dict[str, int] = {"bottleneck": channels[-1], "final": channels[0]}

        block = dict(act=act, norm=norm, bias=True, dropout=dropout)
        try:
            self.stem = TwoConv(spatial_dims, in_channels, channels[0], **block)
            self.encoder = nn.ModuleList(
                Down(spatial_dims, channels[i - 1], channels[i], **block) for i in range(1, len(channels) - 1)
            )
            self.bottleneck = Down(spatial_dims, channels[-2], channels[-1], **block)
            # UpCat(in, cat, out): upsample `in` to `in // 2` channels, concatenate the skip (`cat`), two convs.
            self.decoder = nn.ModuleList(
                UpCat(spatial_dims, channels[i + 1], channels[i], channels[i], upsample=upsample, halves=True, **block)
                for i in range(len(channels) - 2, 0, -1)
            )
            self.final = UpCat(spatial_dims, channels[1], channels[0], channels[0], upsample=upsample, halves=True,
                               **block)
        except ValueError as err:  # e.g. GroupNorm: channels not divisible by num_groups
            raise ConfigError(f"{name}: norm={norm!r} does not fit channels={channels!r}: {err}") from err
        self.output = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: images ``(batch, in_channels, *spatial)``, every spatial axis >= :attr:`min_input_size`.

        Returns:
            Logits ``(batch, out_channels, *spatial)``.

        Raises:
            ValueError: the input's shape does not fit (the shape and the requirement are named).
        """
        if not torch.jit.is_scripting():  # the check is Python only; TorchScript skips it
            check_image_input(self, x, "levels")
        skips = [self.stem(x)]
        for down in self.encoder:
            skips.append(down(skips[-1]))
        y = self.bottleneck(skips[-1])
        for i, up in enumerate(self.decoder):  # deepest skip first (indexing keeps it TorchScript-friendly)
            y = up(y, skips[len(skips) - 1 - i])
        y = self.final(y, skips[0])
        return self.output(y)
