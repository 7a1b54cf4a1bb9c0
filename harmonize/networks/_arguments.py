"""The argument checks shared by the package's networks (private helper), in the wording of :mod:`harmonize.errors`."""

from __future__ import annotations

from harmonize.errors import integer_problem, integers_problem, number_problem

__all__ = ["channels_problem", "dropout_problem", "spatial_dims_problem"]


def spatial_dims_problem(value: object) -> str | None:
    """``spatial_dims`` must be 2 or 3."""
    return integer_problem("spatial_dims", value, minimum=2, maximum=3)


def channels_problem(value: object, name: str = "channels", least: int = 2) -> str | None:
    """``channels`` must hold ``least`` or more integers >= 1 (one per level or block)."""
    return integers_problem(name, value, least=least, minimum=1)


def dropout_problem(value: object) -> str | None:
    """``dropout`` must be a probability in [0, 1)."""
    return number_problem("dropout", value, strict=False, maximum=1, strict_maximum=True)
