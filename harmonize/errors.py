"""Errors for a user's mistakes, as opposed to bugs.

A :class:`HarmonizeError` carries a message written for the person who made the mistake: it names the file,
row, column or argument and says how to fix it. The CLI prints it without a traceback (unless ``--debug``)
and exits with status 1. Bugs raise ordinary exceptions and keep their tracebacks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "HarmonizeError",
    "ManifestError",
    "ResourceError",
    "check_option",
    "integer_problem",
    "is_integer",
    "number_problem",
]


class HarmonizeError(Exception):
    """A problem with what the user gave (a file, a row, an argument), with every problem listed.

    Args:
        message: one paragraph: what is wrong, where, and how to fix it.
        problems: further problems of the same kind, one line each (e.g. one per manifest row).
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.message = message
        self.problems = list(problems)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class ManifestError(HarmonizeError, ValueError):
    """A manifest (CSV of scans) that cannot be used as it is."""


class ConfigError(HarmonizeError, ValueError):
    """An argument, setting or bundle override that is out of range or inconsistent."""


class ResourceError(HarmonizeError):
    """A run that asks for more of the machine (memory) than it has; the message says how much, and how to ask less."""


def check_option(name: str, value: object, choices: type) -> str:
    """Check a user's choice against an enum of valid values, suggesting the nearest one.

    Args:
        name: the argument's name, used in the message.
        value: what the user gave.
        choices: a ``StrEnum`` of valid values (from :mod:`harmonize.keys`).

    Returns:
        The valid value as a string.

    Raises:
        ConfigError: naming the argument, the value, and the valid choices.
    """
    from monai.utils import look_up_option

    try:
        return str(look_up_option(str(value), choices))
    except ValueError as err:
        raise ConfigError(f"Argument '{name}': {err}") from None


def option_problem(name: str, value: object, choices: type) -> str | None:
    """The problem with a choice, or None when it is one of ``choices`` (:func:`check_option`'s message)."""
    try:
        check_option(name, value, choices)
    except ConfigError as err:
        return str(err)
    return None


def is_integer(value: object) -> bool:
    """True for an ``int`` or a NumPy integer; False for a bool, a float (even ``2.0``) and text."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer_problem(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> str | None:
    """The problem with an integer setting, or None when ``value`` is an integer in ``[minimum, maximum]``.

    A bundle override or a JSON file may bring text (``--max_epochs two``), a bool or a float: each is named, not
    a ``TypeError`` deep in a training loop.

    Args:
        name: the setting's name, quoted in the message.
        value: what the user gave.
        minimum: the smallest value allowed.
        maximum: the largest value allowed (None: no bound).

    Returns:
        ``"'name' must be an integer >= minimum, got value (type)"`` (``... and <= maximum`` with a maximum), or None.
    """
    if is_integer(value) and value >= minimum and (maximum is None or value <= maximum):
        return None
    bound = f">= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    return f"'{name}' must be an integer {bound}, got {value!r} ({type(value).__name__})"


def number_problem(
    name: str,
    value: object,
    minimum: float = 0.0,
    strict: bool = True,
    maximum: float | None = None,
    strict_maximum: bool = False,
    optional: bool = False,
) -> str | None:
    """The problem with a real-valued setting, or None when ``value`` is a finite number within its bounds.

    Args:
        name: the setting's name, quoted in the message.
        value: what the user gave (an int or a float; a bool or text is refused).
        minimum: the lower bound (``-math.inf``: none, only finiteness is required).
        strict: the value must be > ``minimum`` (True) or may equal it (False).
        maximum: the upper bound (None: none).
        strict_maximum: the value must be < ``maximum`` (True) or may equal it (False).
        optional: None is allowed too (the message then says ``or None``).

    Returns:
        ``"'name' must be a finite number > minimum, got value (type)"`` (``>=`` when not strict; ``and <= maximum``
        (or ``<``) with a maximum; ``or None`` when optional), or None.
    """
    if optional and value is None:
        return None
    real = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if real:
        above = minimum == -math.inf or (value > minimum if strict else value >= minimum)
        below = maximum is None or (value < maximum if strict_maximum else value <= maximum)
        if above and below:
            return None
    bounds = [] if minimum == -math.inf else [f"{'>' if strict else '>='} {minimum:g}"]
    if maximum is not None:
        bounds.append(f"{'<' if strict_maximum else '<='} {maximum:g}")
    bound = "".join(f" {b}" for b in bounds[:1]) + "".join(f" and {b}" for b in bounds[1:])
    bound += " or None" if optional else ""
    return f"'{name}' must be a finite number{bound}, got {value!r} ({type(value).__name__})"
