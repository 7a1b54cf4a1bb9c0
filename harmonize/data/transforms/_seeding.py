"""Random state for the random transforms: an explicit seed, or TorchIO's global torch generator."""

from __future__ import annotations

import numpy as np
from torchio.transforms.augmentation import RandomTransform

from harmonize.errors import integer_problem, raise_problems

__all__ = ["SeededRandomTransform", "seed_problem"]


def seed_problem(seed: object) -> str | None:
    """The problem with a transform's ``seed`` (None, or an integer >= 0), or None when it is valid."""
    return None if seed is None else integer_problem("seed", seed, minimum=0)


class SeededRandomTransform(RandomTransform):
    """A TorchIO random transform whose parameters are drawn from a :class:`numpy.random.Generator`.

    With ``seed=None`` each call draws a fresh seed from torch's global generator, as TorchIO's own random
    transforms do (so ``torch.manual_seed`` and per-worker seeding of a DataLoader apply). With an integer seed
    the transform owns a generator and successive calls continue its stream, reproducibly.

    A subclass lists :func:`seed_problem` with its own arguments' problems, so that all are named at once.

    Args:
        seed: seed of the transform's own generator, or ``None`` to follow torch's global generator.
        **kwargs: see :class:`torchio.transforms.Transform`.
    """

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        raise_problems(type(self).__name__, [seed_problem(seed)])
        super().__init__(**kwargs)
        self.seed = None if seed is None else int(seed)
        self._generator = None if self.seed is None else np.random.default_rng(self.seed)

    def next_generator(self) -> np.random.Generator:
        """Return the generator for the next call (the transform's own, or one seeded from torch)."""
        if self._generator is not None:
            return self._generator
        return np.random.default_rng(self._get_random_seed())
