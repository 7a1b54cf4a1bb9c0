"""Random flips, rotations and shifts of every training batch, drawn so that a resumed run draws the same ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from harmonize import defaults
from harmonize.errors import ConfigError, number_problem, raise_problems
from harmonize.handlers._engine import refuse_evaluator
from harmonize.keys import Keys

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["RandomRigidAugmentation", "RigidParameters", "rigid_warp"]


@dataclass
class RigidParameters:
    """Per-sample parameters of :func:`rigid_warp` (``B`` samples, ``D`` spatial dimensions).

    Attributes:
        flips: ``(B, D)`` bool, the spatial axes each sample is mirrored along (before rotating).
        angles: ``(B, 3)`` radians about the first, second and third spatial axes (``(B, 1)`` in 2D).
        shifts: ``(B, D)`` voxels along each spatial axis.
    """

    flips: torch.Tensor
    angles: torch.Tensor
    shifts: torch.Tensor


def _rotation(angles: torch.Tensor, dims: int) -> torch.Tensor:
    """``(B, dims, dims)`` rotation matrices, in the array's axis order, from per-axis angles."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    if dims == 2:
        c, s = cos[:, 0], sin[:, 0]
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    rotation = torch.eye(3, dtype=angles.dtype).repeat(len(angles), 1, 1)
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        step = torch.eye(3, dtype=angles.dtype).repeat(len(angles), 1, 1)
        step[:, i, i], step[:, i, j] = cos[:, axis], -sin[:, axis]
        step[:, j, i], step[:, j, j] = sin[:, axis], cos[:, axis]
        rotation = step @ rotation
    return rotation


def rigid_warp(images: torch.Tensor, params: RigidParameters, mode: str = "bilinear") -> torch.Tensor:
    """Mirror, rotate about the centre and shift a batch.

    The rotation is in voxel units, so a non-cubic grid is not sheared; voxels are taken as isotropic (as after
    ``harmonize preprocess``).

    Args:
        images: ``(B, C, *spatial)`` with 2 or 3 spatial dimensions.
        params: one set of parameters per sample.
        mode: ``bilinear`` for intensities, ``nearest`` for label maps. Voxels from outside the image take the
            nearest border value for ``bilinear`` and 0 (background) for ``nearest``.

    Returns:
        The warped batch, same shape, dtype and device.
    """
    spatial = images.shape[2:]
    dims = len(spatial)
    flips = params.flips.to(images.device)
    out = images
    for axis in range(dims):
        if not bool(flips[:, axis].any()):
            continue
        mirrored = flips[:, axis].view(-1, *([1] * (images.ndim - 1)))
        out = torch.where(mirrored, out.flip(2 + axis), out)
    # affine_grid works in normalised (-1..1) coordinates listed last axis first; rotate in voxel units.
    half = torch.tensor([s / 2 for s in reversed(spatial)], dtype=torch.float64)
    order = list(reversed(range(dims)))
    rotation = _rotation(params.angles.double(), dims)[:, order][:, :, order]
    matrix = torch.diag(1 / half) @ rotation @ torch.diag(half)
    shift = (params.shifts.double()[:, order] / half).unsqueeze(-1)
    theta = torch.cat([matrix, shift], dim=-1).to(device=images.device, dtype=torch.float32)
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    padding = "zeros" if mode == "nearest" else "border"
    warped = F.grid_sample(out.float(), grid, mode=mode, padding_mode=padding, align_corners=False)
    return warped.to(images.dtype)


class RandomRigidAugmentation:
    """Mirror, rotate and shift each training batch at random before the trainer's forward pass.

    With a few dozen scans per site, a network can make its training scans look alike to the domain head while
    new scans of the same sites still differ (the extractor memorises); random rigid moves make every epoch's scans
    new views of the same anatomy, so what is learned, the task and the unlearning alike, has to hold for scans
    it has not seen (docs/unlearning.md, "Does it work?"). The draws of iteration ``i`` are a function of
    ``(seed, i)`` only, so a run resumed from a checkpoint augments its batches as an uninterrupted run would.

    Attach it to the trainer (``augmentation.attach(trainer)``); at ``ITERATION_STARTED``, before ``prepare_batch``
    reads the batch, it replaces ``engine.state.batch`` with a copy whose images are moved.

    Args:
        image_keys: batch keys of intensity images (linear interpolation).
        label_keys: batch keys of label maps moved with them (nearest neighbour).
        flip_axes: spatial axes mirrored with probability 1/2 each (axis 0 is left-right in RAS-oriented scans,
            the brain's near-symmetry).
        max_rotation_deg: rotations about each axis are drawn uniformly in ``[-max, max]`` degrees.
        max_shift_voxels: shifts along each axis are drawn uniformly in ``[-max, max]`` voxels.
        seed: seed of the draws.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = (Keys.IMAGE,),
        label_keys: Sequence[str] = (),
        flip_axes: Sequence[int] = defaults.AUGMENT_FLIP_AXES,
        max_rotation_deg: float = defaults.AUGMENT_ROTATION_DEG,
        max_shift_voxels: float = defaults.AUGMENT_SHIFT_VOXELS,
        seed: int = defaults.SEED,
    ) -> None:
        problems = [number_problem("max_rotation_deg", max_rotation_deg, strict=False),
                    number_problem("max_shift_voxels", max_shift_voxels, strict=False)]
        if not image_keys:
            problems.append("'image_keys' is empty; name at least one batch key to augment")
        raise_problems(type(self).__name__, problems)
        self.image_keys = [str(k) for k in image_keys]
        self.label_keys = [str(k) for k in label_keys]
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.max_rotation = math.radians(max_rotation_deg)
        self.max_shift = float(max_shift_voxels)
        self.seed = int(seed)

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ``ITERATION_STARTED`` event.

        Raises:
            ConfigError: the engine is an evaluator (its scans would be moved at random, and its metrics with them).
        """
        from ignite.engine import Events

        refuse_evaluator(engine, type(self).__name__, "it would move the evaluated scans at random")
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def sample(self, batch_size: int, dims: int, iteration: int) -> RigidParameters:
        """The parameters of one iteration's batch: a pure function of ``(seed, iteration)``."""
        bad = [a for a in self.flip_axes if not 0 <= a < dims]
        if bad:
            raise ConfigError(f"RandomRigidAugmentation: flip_axes {bad} are not spatial axes of {dims}-D images.")
        state = np.random.SeedSequence([self.seed, int(iteration)]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        mirror = torch.rand(batch_size, dims, generator=generator) < 0.5
        flips = torch.zeros(batch_size, dims, dtype=torch.bool)
        flips[:, list(self.flip_axes)] = mirror[:, list(self.flip_axes)]
        angles = (torch.rand(batch_size, 3 if dims == 3 else 1, generator=generator) * 2 - 1) * self.max_rotation
        shifts = (torch.rand(batch_size, dims, generator=generator) * 2 - 1) * self.max_shift
        return RigidParameters(flips, angles, shifts)

    def __call__(self, engine: Engine) -> None:
        batch: dict[str, Any] = engine.state.batch
        missing = [k for k in self.image_keys + self.label_keys if k not in batch]
        if missing:
            keys = sorted(map(str, batch))
            raise KeyError(f"RandomRigidAugmentation: the batch has no {missing}; batch keys: {keys}.")
        first = torch.as_tensor(batch[self.image_keys[0]])
        if first.ndim not in (4, 5):
            raise ConfigError(
                f"RandomRigidAugmentation: batch['{self.image_keys[0]}'] has shape {tuple(first.shape)}; expected "
                "(batch, channels, *spatial) with 2 or 3 spatial dimensions."
            )
        params = self.sample(first.shape[0], first.ndim - 2, engine.state.iteration)
        moved = dict(batch)  # a new dictionary: the loader's own batch is left as it was
        for key, mode in [(k, "bilinear") for k in self.image_keys] + [(k, "nearest") for k in self.label_keys]:
            plain = torch.as_tensor(batch[key]).as_subclass(torch.Tensor)
            moved[key] = rigid_warp(plain, params, mode=mode)
        engine.state.batch = moved
