"""Draw a random amount of brain atrophy, then apply it with :class:`Atrophy`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torchio as tio

from harmonize.errors import integers_problem, raise_problems, range_problem
from harmonize.keys import Keys

from ._checks import as_range
from ._seeding import SeededRandomTransform, seed_problem
from .atrophy import VENTRICLE_SMOOTHING_MM, Atrophy

__all__ = ["RandomAtrophy"]

DEFAULT_GM_THINNING = (0.0, 0.4)
DEFAULT_VENTRICLE_DILATION_MM = (0.0, 4.0)


class RandomAtrophy(SeededRandomTransform):
    """Thin the cortex and enlarge the ventricles by random amounts drawn uniformly from their ranges.

    Args:
        gm_thinning: range of the fraction of pial-side grey matter turned into CSF, within [0, 1).
        ventricle_dilation_mm: range of the ventricle-wall displacement in mm, within [0, 6].
        tissues_key: name of the partial-volume tissue maps in the subject.
        channels: indices of the CSF, GM and WM channels.
        seed: seed of the transform's own generator; ``None`` follows torch's global generator.
        **kwargs: see :class:`torchio.transforms.Transform`.
    """

    def __init__(
        self,
        gm_thinning: float | Sequence[float] = DEFAULT_GM_THINNING,
        ventricle_dilation_mm: float | Sequence[float] = DEFAULT_VENTRICLE_DILATION_MM,
        tissues_key: str = Keys.TISSUES,
        channels: Sequence[int] = (0, 1, 2),
        seed: int | None = None,
        **kwargs,
    ) -> None:
        problems = [range_problem("gm_thinning", gm_thinning, minimum=0, maximum=1, strict_maximum=True, scalar=True),
                    range_problem("ventricle_dilation_mm", ventricle_dilation_mm, minimum=0,
                                  maximum=VENTRICLE_SMOOTHING_MM, scalar=True),
                    integers_problem("channels", channels, length=3, distinct=True), seed_problem(seed)]
        if problems[1]:
            problems[1] += " (larger warps may fold)"
        raise_problems(type(self).__name__, problems)
        super().__init__(seed=seed, **kwargs)
        self.gm_thinning_range = as_range(gm_thinning)
        self.ventricle_dilation_mm_range = as_range(ventricle_dilation_mm)
        self.tissues_key = str(tissues_key)
        self.channels = [int(c) for c in channels]

    def get_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw ``gm_thinning`` and ``ventricle_dilation_mm`` (keyword arguments of :class:`Atrophy`)."""
        return {
            "gm_thinning": float(rng.uniform(*self.gm_thinning_range)),
            "ventricle_dilation_mm": float(rng.uniform(*self.ventricle_dilation_mm_range)),
        }

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        transform = Atrophy(
            **self.get_params(self.next_generator()),
            tissues_key=self.tissues_key,
            channels=self.channels,
            **self._get_base_args(),
        )
        return transform(subject)
