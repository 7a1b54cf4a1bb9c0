"""Fast resampling of volumes at voxel coordinates (torch ``grid_sample``; deterministic on CPU)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["sample_at", "upsample_field"]


def sample_at(volumes: np.ndarray, coords: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Sample every channel of ``volumes`` at voxel coordinates, with zeros outside.

    Args:
        volumes: ``(C, X, Y, Z)`` array.
        coords: ``(3, X', Y', Z')`` voxel coordinates (float) in ``volumes``.
        nearest: nearest-neighbour instead of trilinear interpolation.

    Returns:
        ``(C, X', Y', Z')`` array of the dtype of ``volumes``.
    """
    size = np.asarray(volumes.shape[1:], dtype=np.float32)
    scale = 2.0 / np.maximum(size - 1.0, 1.0)
    # grid_sample wants (x, y, z) = (last, middle, first) axis, normalised to [-1, 1] (align_corners=True).
    grid = np.stack([coords[axis] * scale[axis] - 1.0 for axis in (2, 1, 0)], axis=-1).astype(np.float32)
    source = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    sampled = F.grid_sample(
        source,
        torch.from_numpy(grid)[None],
        mode="nearest" if nearest else "bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[0].numpy()
    if np.issubdtype(volumes.dtype, np.integer):
        return np.rint(sampled).astype(volumes.dtype)
    return sampled.astype(volumes.dtype, copy=False)


def upsample_field(field: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinearly upsample a ``(C, x, y, z)`` field whose corners match the corners of ``shape``."""
    source = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]
    return F.interpolate(source, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True)[0].numpy()
