"""The transforms' arguments as numbers, once :mod:`harmonize.errors`' checks have passed (private helper).

Each transform lists every problem of its arguments at once (:func:`~harmonize.errors.raise_problems` with
:func:`~harmonize.errors.number_problem`, :func:`~harmonize.errors.numbers_problem`,
:func:`~harmonize.errors.range_problem`, ...), then reads the values with these helpers.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["as_floats", "as_range", "is_number"]


def is_number(value: object) -> bool:
    """True for one real number (not a bool), as opposed to a sequence."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_floats(value: Any, length: int | None = None) -> list[float]:
    """A sequence (list, tuple, array or tensor) as floats, or ``length`` copies of one number."""
    if is_number(value):
        return [float(value)] * (length or 1)
    return [float(v) for v in value]


def as_range(value: Any) -> tuple[float, float]:
    """``(low, high)`` as floats from a pair, or ``(v, v)`` from one number ``v``."""
    low, high = as_floats(value, 2)
    return low, high
