"""The argument checks shared by the package's networks (private helper), in the wording of :mod:`harmonize.errors`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from harmonize.errors import ConfigError, integer_problem, is_integer, number_problem

__all__ = ["channels_problem", "dropout_problem", "raise_problems", "spatial_dims_problem"]


def spatial_dims_problem(value: object) -> str | None:
    """``spatial_dims`` must be 2 or 3."""
    return integer_problem("spatial_dims", value, minimum=2, maximum=3)


def channels_problem(value: object, name: str = "channels", least: int = 2) -> str | None:
    """``channels`` must hold ``least`` or more integers >= 1 (one per level or block)."""
    items = tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else ()
    if len(items) >= least and all(is_integer(c) and c >= 1 for c in items):
        return None
    return f"'{name}' must hold {least} or more integers >= 1, got {value!r}"


def dropout_problem(value: object) -> str | None:
    """``dropout`` must be a probability in [0, 1)."""
    return number_problem("dropout", value, strict=False, maximum=1, strict_maximum=True)


def raise_problems(owner: str, problems: Sequence[str | None]) -> None:
    """Raise one :class:`~harmonize.errors.ConfigError` listing every problem (the Nones dropped), if any."""
    if found := [p for p in problems if p]:
        raise ConfigError(f"{owner}: invalid arguments.", problems=found)
