"""The input check shared by the package's image networks (private helper)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_image_input"]


@torch.jit.unused
def check_image_input(net: nn.Module, x: torch.Tensor, stages: str) -> None:
    """Raise a ValueError naming both shapes when ``x`` does not fit ``net``.

    ``net`` has ``spatial_dims``, ``in_channels``, ``channels`` and ``min_input_size``; ``stages`` names what
    halves the size (``"blocks"``, ``"levels"``), for the message.
    """
    name = type(net).__name__
    if x.ndim != net.spatial_dims + 2 or x.shape[1] != net.in_channels:
        raise ValueError(
            f"{name}: expected input (batch, {net.in_channels}, {', '.join(['size'] * net.spatial_dims)}), "
            f"got {tuple(x.shape)}."
        )
    if min(x.shape[2:]) < net.min_input_size:
        raise ValueError(
            f"{name}: every spatial axis must be >= {net.min_input_size} voxels for {len(net.channels)} "
            f"{stages}, got input {tuple(x.shape)}."
        )
