"""Random scanner-like changes of intensity (contrast, bias field, blur, noise) of every training batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from harmonize import defaults
from harmonize.errors import ConfigError
from harmonize.handlers._engine import refuse_evaluator
from harmonize.keys import Keys

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["IntensityParameters", "RandomIntensityAugmentation", "intensity_jitter"]


@dataclass
class IntensityParameters:
    """Per-sample parameters of :func:`intensity_jitter` (``B`` samples).

    Attributes:
        log_gamma: ``(B,)`` natural log of the contrast exponent applied to the foreground rescaled to ``[0, 1]``.
        bias: ``(B, T)`` coefficients of the log bias field on the ``T`` polynomial terms of :func:`_basis`.
        blur: ``(B,)`` standard deviation of the Gaussian blur, in voxels (0: none).
        noise: ``(B,)`` standard deviation of the added Gaussian noise, as a fraction of the foreground's range.
        noise_seed: seed of the noise.
    """

    log_gamma: torch.Tensor
    bias: torch.Tensor
    blur: torch.Tensor
    noise: torch.Tensor
    noise_seed: int


def _basis(spatial: Sequence[int], order: int) -> torch.Tensor:
    """``(T, *spatial)`` products of powers of the normalised coordinates whose degrees sum to ``1..order``."""
    axes = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial], indexing="ij")
    terms = []
    for degrees in np.ndindex(*([order + 1] * len(spatial))):
        if 0 < sum(degrees) <= order:
            term = torch.ones(tuple(spatial))
            for axis, degree in zip(axes, degrees):
                term = term * axis**degree
            terms.append(term)
    return torch.stack(terms)


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each sample with its own ``sigma`` (voxels; 0 leaves the sample as it is)."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigma.clamp_min(1e-3).view(-1, 1)
    kernels = torch.exp(-0.5 * (offsets / safe) ** 2)
    kernels = torch.where(sigma.view(-1, 1) > 0, kernels, (offsets == 0).float())
    kernels = kernels / kernels.sum(1, keepdim=True)
    batch, channels = images.shape[:2]
    spatial = images.shape[2:]
    out = images.reshape(1, batch * channels, *spatial)
    weight = kernels.repeat_interleave(channels, 0)
    conv = F.conv3d if len(spatial) == 3 else F.conv2d
    for axis in range(len(spatial)):
        shape = [batch * channels, 1] + [1] * len(spatial)
        shape[2 + axis] = offsets.numel()
        padding = [0] * len(spatial)
        padding[axis] = radius
        out = conv(out, weight.view(shape), padding=tuple(padding), groups=batch * channels)
    return out.reshape(images.shape)


def intensity_jitter(images: torch.Tensor, params: IntensityParameters, order: int) -> torch.Tensor:
    """Change each scan's contrast, bias field, sharpness and noise, keeping its background and normalisation.

    The foreground is the scan's non-zero voxels (``harmonize preprocess`` sets the background to 0). Each scan's
    foreground is rescaled to ``[0, 1]``, raised to ``exp(log_gamma)``, multiplied by ``exp(bias field)``, blurred,
    given noise and z-normalised again, so the result has the statistics the network was preprocessed for.

    Args:
        images: ``(B, C, *spatial)`` with 2 or 3 spatial dimensions.
        params: one set of parameters per sample.
        order: degree of the bias field's polynomial (the length of ``params.bias`` depends on it).

    Returns:
        The changed batch, same shape, dtype and device; background voxels stay 0.
    """
    x = images.float().cpu()
    batch = x.shape[0]
    mask = x != 0
    flat = x.reshape(batch, -1)
    fmask = mask.reshape(batch, -1)
    big = torch.finfo(x.dtype).max
    low = torch.where(fmask, flat, big).amin(1).view(-1, *[1] * (x.ndim - 1))
    high = torch.where(fmask, flat, -big).amax(1).view(-1, *[1] * (x.ndim - 1))
    unit = ((x - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    gamma = params.log_gamma.exp().view(-1, *[1] * (x.ndim - 1))
    out = unit.clamp_min(1e-6) ** gamma
    basis = _basis(x.shape[2:], order)
    field = torch.einsum("bt,t...->b...", params.bias.float(), basis).unsqueeze(1)
    out = _blur(out * field.exp(), params.blur.float())
    generator = torch.Generator().manual_seed(int(params.noise_seed))
    out = out + torch.randn(out.shape, generator=generator) * params.noise.view(-1, *[1] * (x.ndim - 1))
    out = torch.where(mask, out, torch.zeros(()))
    count = mask.reshape(batch, -1).sum(1).clamp_min(1).view(-1, *[1] * (x.ndim - 1))
    mean = out.reshape(batch, -1).sum(1).view_as(count) / count
    centred = torch.where(mask, out - mean, torch.zeros(()))
    std = (centred.reshape(batch, -1).pow(2).sum(1).view_as(count) / count).sqrt().clamp_min(1e-6)
    return (centred / std).to(device=images.device, dtype=images.dtype)


class RandomIntensityAugmentation:
    """Give each training scan a random contrast, bias field, blur and noise, as another scanner would.

    Scanners differ in contrast, receive profile, resolution and noise, and these differences survive
    preprocessing into the network's features (docs/unlearning.md). Drawing them at random for every batch makes
    them useless to the task, so the network, and the unlearning with it, learns features that hold for any of
    them, including a scanner it has not seen. The draws of iteration ``i`` are a function of ``(seed, i)``
    only, so a resumed run changes its batches as an uninterrupted run would.

    Attach it to the trainer (``augmentation.attach(trainer)``); at ``ITERATION_STARTED`` it replaces
    ``engine.state.batch`` with a copy whose images are changed (attach it after a spatial augmentation, so that
    the bias field is in scanner coordinates).

    Args:
        image_keys: batch keys of the z-normalised intensity images with a background of 0.
        max_log_gamma: the contrast exponent's log is drawn uniformly in ``[-max, max]``.
        max_bias: each coefficient of the log bias field is drawn uniformly in ``[-max, max]``.
        bias_order: degree of the bias field's polynomial.
        max_blur: the blur's standard deviation is drawn uniformly in ``[0, max]`` voxels.
        max_noise: the noise's standard deviation is drawn uniformly in ``[0, max]`` (fraction of the foreground's range).
        seed: seed of the draws.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = (Keys.IMAGE,),
        max_log_gamma: float = defaults.AUGMENT_LOG_GAMMA,
        max_bias: float = defaults.AUGMENT_BIAS,
        bias_order: int = defaults.AUGMENT_BIAS_ORDER,
        max_blur: float = defaults.AUGMENT_BLUR_VOXELS,
        max_noise: float = defaults.AUGMENT_NOISE,
        seed: int = defaults.SEED,
    ) -> None:
        for name, value in (
            ("max_log_gamma", max_log_gamma), ("max_bias", max_bias), ("max_blur", max_blur), ("max_noise", max_noise)
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"RandomIntensityAugmentation: {name} must be a finite number >= 0, got {value}.")
        if isinstance(bias_order, bool) or not isinstance(bias_order, int) or bias_order < 1:
            raise ConfigError(f"RandomIntensityAugmentation: bias_order must be an integer >= 1, got {bias_order!r}.")
        if not image_keys:
            raise ConfigError("RandomIntensityAugmentation: image_keys is empty; name at least one batch key.")
        self.image_keys = [str(k) for k in image_keys]
        self.max_log_gamma = float(max_log_gamma)
        self.max_bias = float(max_bias)
        self.bias_order = bias_order
        self.max_blur = float(max_blur)
        self.max_noise = float(max_noise)
        self.seed = int(seed)

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ``ITERATION_STARTED`` event.

        Raises:
            ConfigError: the engine is an evaluator (its scans would be changed at random, and its metrics with them).
        """
        from ignite.engine import Events

        refuse_evaluator(engine, type(self).__name__, "it would change the evaluated scans at random")
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def sample(self, batch_size: int, dims: int, iteration: int) -> IntensityParameters:
        """The parameters of one iteration's batch: a pure function of ``(seed, iteration)``."""
        state = np.random.SeedSequence([self.seed, int(iteration), 1]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]))
        terms = sum(1 for d in np.ndindex(*([self.bias_order + 1] * dims)) if 0 < sum(d) <= self.bias_order)
        uniform = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
        return IntensityParameters(
            log_gamma=(uniform(batch_size) * 2 - 1) * self.max_log_gamma,
            bias=(uniform(batch_size, terms) * 2 - 1) * self.max_bias,
            blur=uniform(batch_size) * self.max_blur,
            noise=uniform(batch_size) * self.max_noise,
            noise_seed=int(state[1]),
        )

    def __call__(self, engine: Engine) -> None:
        batch: dict[str, Any] = engine.state.batch
        missing = [k for k in self.image_keys if k not in batch]
        if missing:
            keys = sorted(map(str, batch))
            raise KeyError(f"RandomIntensityAugmentation: the batch has no {missing}; batch keys: {keys}.")
        first = torch.as_tensor(batch[self.image_keys[0]])
        if first.ndim not in (4, 5):
            raise ConfigError(
                f"RandomIntensityAugmentation: batch['{self.image_keys[0]}'] has shape {tuple(first.shape)}; expected "
                "(batch, channels, *spatial) with 2 or 3 spatial dimensions."
            )
        params = self.sample(first.shape[0], first.ndim - 2, engine.state.iteration)
        changed = dict(batch)  # a new dictionary: the loader's own batch is left as it was
        for key in self.image_keys:
            plain = torch.as_tensor(batch[key]).as_subclass(torch.Tensor)
            changed[key] = intensity_jitter(plain, params, self.bias_order)
        engine.state.batch = changed
