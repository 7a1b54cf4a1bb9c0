"""Argument checks shared by the transforms (TypeError for a wrong type, ConfigError for a wrong value)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from harmonize.errors import ConfigError

__all__ = ["check_non_negative", "check_positive", "check_seed", "check_sequence", "parse_range", "parse_triplet"]


def check_sequence(value: object, name: str) -> list[float]:
    """Check a sequence (list, tuple, array or tensor) of finite numbers and return it as floats."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a sequence of numbers, not {type(value).__name__}")
    values = [float(v) for v in value]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name} must be finite numbers, got {list(value)!r}")
    return values


def check_positive(value: float, name: str) -> float:
    """Check a finite number > 0."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return value


def check_non_negative(value: float, name: str) -> float:
    """Check a finite number >= 0."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return value


def parse_triplet(value: float | Sequence[float], name: str) -> list[float]:
    """Parse one non-negative number (used for all three axes) or three of them."""
    values = [float(value)] * 3 if isinstance(value, (int, float, np.number)) else list(check_sequence(value, name))
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"{name} must be one non-negative number or three (one per axis), got {value!r}")
    return values


def parse_range(value: float | Sequence[float], name: str, minimum: float | None = None) -> tuple[float, float]:
    """Parse ``(low, high)`` or one number ``v`` (meaning ``(v, v)``), checking ``minimum <= low <= high``."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        low = high = float(value)
    else:
        values = check_sequence(value, name)
        if len(values) != 2:
            raise ConfigError(f"{name} must be one number or a (low, high) pair, got {value!r}")
        low, high = values
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"{name} must be a finite (low, high) pair with low <= high, got {value!r}")
    if minimum is not None and low < minimum:
        raise ConfigError(f"{name} must not go below {minimum}, got {value!r}")
    return low, high


def check_seed(value: object, name: str) -> int:
    """Check a non-negative integer seed."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise TypeError(f"{name} must be a non-negative int, not {value!r}")
    return int(value)
