"""TensorBoard for the bundles: whether it is installed, and an epoch writer that skips unset state values."""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EpochScalarWriter", "tensorboard_available"]


def tensorboard_available() -> bool:
    """True when the ``tensorboard`` package is installed, so MONAI's ``TensorBoardStatsHandler`` can write.

    The bundles disable their TensorBoard handler without it (``pip install tensorboard`` turns it on).
    """
    return importlib.util.find_spec("tensorboard") is not None


class EpochScalarWriter:
    """``epoch_event_writer`` of MONAI's ``TensorBoardStatsHandler``: the epoch's metrics and the numeric
    ``engine.state`` attributes named, skipping the ones that are unset or not numbers.

    The unlearning handler's attributes are ``None`` until first recorded (e.g. the confusion loss during the
    heads' warm-up) and its phase is a string; MONAI's default writer fails on both.

    Args:
        state_attributes: names of ``engine.state`` attributes to write, when they hold a finite number.
    """

    def __init__(self, state_attributes: Sequence[str] = ()) -> None:
        self.state_attributes = list(state_attributes)

    @staticmethod
    def _number(value: Any) -> float | None:
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None

    def __call__(self, engine: Engine, writer: Any) -> None:
        epoch = engine.state.epoch
        items = list(engine.state.metrics.items())
        items += [(name, getattr(engine.state, name, None)) for name in self.state_attributes]
        for name, value in items:
            number = self._number(value)
            if number is not None:
                writer.add_scalar(name, number, epoch)
        writer.flush()
