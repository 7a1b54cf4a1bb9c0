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
    "integers_problem",
    "is_integer",
    "number_problem",
    "numbers_problem",
    "option_problem",
    "option_value",
    "raise_problems",
    "range_problem",
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


def option_value(name: str, value: object, choices: type) -> tuple[str | None, str | None]:
    """A user's choice checked against an enum of valid values: ``(the valid value, None)`` or ``(None, problem)``.

    The form for a settings class that keeps the normalised value and lists every problem at once;
    :func:`check_option` raises the problem, :func:`option_problem` returns only the problem.

    Args:
        name: the argument's name, used in the message.
        value: what the user gave.
        choices: a ``StrEnum`` of valid values (from :mod:`harmonize.keys`).

    Returns:
        The valid value as a string and None, or None and ``"Argument 'name': ..."`` naming the value and the valid
        choices (MONAI's ``look_up_option`` message, which suggests the nearest one).
    """
    from monai.utils import look_up_option

    try:
        return str(look_up_option(str(value), choices)), None
    except ValueError as err:
        return None, f"Argument '{name}': {err}"


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
    option, problem = option_value(name, value, choices)
    if problem:
        raise ConfigError(problem)
    return option


def option_problem(name: str, value: object, choices: type) -> str | None:
    """The problem with a choice, or None when it is one of ``choices`` (:func:`check_option`'s message)."""
    return option_value(name, value, choices)[1]


def raise_problems(owner: str, problems: Sequence[str | None]) -> None:
    """Raise one :class:`ConfigError` listing every problem (the Nones dropped), if any.

    Args:
        owner: what was given the arguments (a class or function name), opening the message.
        problems: what the ``*_problem`` checks returned, one entry per setting.

    Raises:
        ConfigError: ``"<owner>: invalid arguments."`` with every problem, one line each.
    """
    if found := [p for p in problems if p]:
        raise ConfigError(f"{owner}: invalid arguments.", problems=found)


def is_integer(value: object) -> bool:
    """True for an ``int`` or a NumPy integer; False for a bool, a float (even ``2.0``) and text."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """True for a finite real number (an int, a float or a NumPy number); False for a bool, text, inf and nan."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _within(value: float, minimum: float, strict: bool, maximum: float | None, strict_maximum: bool) -> bool:
    above = minimum == -math.inf or (value > minimum if strict else value >= minimum)
    below = maximum is None or (value < maximum if strict_maximum else value <= maximum)
    return above and below


def _bounds(minimum: float, strict: bool, maximum: float | None, strict_maximum: bool) -> str:
    """``" > 0 and <= 1"``: the bounds as a message states them (empty without any)."""
    def shown(bound: float) -> str:  # an integer in full (a batch index), a float as briefly as it reads
        return str(bound) if isinstance(bound, numbers.Integral) else f"{bound:g}"

    bounds = [] if minimum == -math.inf else [f"{'>' if strict else '>='} {shown(minimum)}"]
    if maximum is not None:
        bounds.append(f"{'<' if strict_maximum else '<='} {shown(maximum)}")
    return "".join(f" {b}" for b in bounds[:1]) + "".join(f" and {b}" for b in bounds[1:])


def _items(value: object) -> list | None:
    """The items of a list, tuple, NumPy array or tensor (None for anything else: a number, text, a dict)."""
    if hasattr(value, "tolist") and hasattr(value, "shape"):
        items = value.tolist()
        return items if isinstance(items, list) else None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return None


def _count(length: int | None, least: int) -> str:
    if length is not None:
        return f"{length} "
    return f"{least} or more " if least else ""


def _got(value: object) -> str:
    return f"got {value!r} ({type(value).__name__})"


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
    if is_integer(value) and _within(value, minimum, False, maximum, False):
        return None
    return f"'{name}' must be an integer{_bounds(minimum, False, maximum, False)}, {_got(value)}"


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
    if _is_number(value) and _within(value, minimum, strict, maximum, strict_maximum):
        return None
    bound = _bounds(minimum, strict, maximum, strict_maximum) + (" or None" if optional else "")
    return f"'{name}' must be a finite number{bound}, {_got(value)}"


def numbers_problem(
    name: str,
    value: object,
    length: int | None = None,
    least: int = 0,
    minimum: float = -math.inf,
    strict: bool = False,
    maximum: float | None = None,
    strict_maximum: bool = False,
    scalar: bool = False,
) -> str | None:
    """The problem with a sequence of real numbers, or None when it holds enough finite numbers within the bounds.

    Args:
        name: the setting's name, quoted in the message.
        value: what the user gave: a list, tuple, NumPy array or tensor (text is refused).
        length: the exact number of values (None: any number from ``least``).
        least: the fewest values allowed when ``length`` is None.
        minimum, strict, maximum, strict_maximum: every value's bounds, as in :func:`number_problem` (default: none).
        scalar: one number is allowed too (it stands for every value, e.g. one per axis).

    Returns:
        ``"'name' must be a sequence of <length> finite numbers <bounds>, got value (type)"`` (``one finite number
        <bounds> or a sequence of <length> of them`` with ``scalar``), or None.
    """
    bounds = (minimum, strict, maximum, strict_maximum)
    items = _items(value)
    if items is None:
        if scalar and _is_number(value) and _within(value, *bounds):
            return None
    elif (len(items) == length if length is not None else len(items) >= least) and all(
        _is_number(v) and _within(v, *bounds) for v in items
    ):
        return None
    numbers_text = f"finite numbers{_bounds(*bounds)}"
    what = f"a sequence of {_count(length, least)}{numbers_text}"
    if scalar:
        what = f"one finite number{_bounds(*bounds)} or a sequence of {_count(length, least)}of them"
    return f"'{name}' must be {what}, {_got(value)}"


def integers_problem(
    name: str,
    value: object,
    length: int | None = None,
    least: int = 0,
    minimum: int = 0,
    maximum: int | None = None,
    distinct: bool = False,
) -> str | None:
    """The problem with a sequence of integers (indices, axes, channel counts), or None when it is valid.

    Args:
        name: the setting's name, quoted in the message.
        value: what the user gave: a list, tuple, NumPy array or tensor.
        length: the exact number of values (None: any number from ``least``).
        least: the fewest values allowed when ``length`` is None.
        minimum: every value's smallest allowed value.
        maximum: every value's largest allowed value (None: no bound).
        distinct: no value may repeat.

    Returns:
        ``"'name' must be a sequence of <length> [distinct ]integers >= minimum, got value (type)"``, or None.
    """
    items = _items(value)
    if (
        items is not None
        and (len(items) == length if length is not None else len(items) >= least)
        and all(is_integer(v) and _within(v, minimum, False, maximum, False) for v in items)
        and (not distinct or len(set(items)) == len(items))
    ):
        return None
    kind = "distinct integers" if distinct else "integers"
    return f"'{name}' must be a sequence of {_count(length, least)}{kind}{_bounds(minimum, False, maximum, False)}, " \
           f"{_got(value)}"


def range_problem(
    name: str,
    value: object,
    minimum: float = -math.inf,
    strict: bool = False,
    maximum: float | None = None,
    strict_maximum: bool = False,
    scalar: bool = False,
    strict_order: bool = False,
) -> str | None:
    """The problem with a ``(low, high)`` range, or None when both are finite numbers within the bounds, low <= high.

    Args:
        name: the setting's name, quoted in the message.
        value: what the user gave: a pair (list, tuple, array or tensor).
        minimum, strict, maximum, strict_maximum: the bounds of both ends, as in :func:`number_problem` (default:
            none).
        scalar: one number ``v`` is allowed too (it means ``(v, v)``).
        strict_order: low must be < high (an empty range is refused).

    Returns:
        ``"'name' must be a (low, high) pair of finite numbers <bounds> with low <= high, got value (type)"`` (``one
        finite number <bounds> or a (low, high) pair of them`` with ``scalar``; ``low < high`` with ``strict_order``),
        or None.
    """
    if numbers_problem(name, value, length=2, minimum=minimum, strict=strict, maximum=maximum,
                       strict_maximum=strict_maximum, scalar=scalar) is None:
        items = _items(value)
        if items is None or (items[0] < items[1] if strict_order else items[0] <= items[1]):
            return None
    bound = _bounds(minimum, strict, maximum, strict_maximum)
    what = f"one finite number{bound} or a (low, high) pair of them" if scalar else \
        f"a (low, high) pair of finite numbers{bound}"
    return f"'{name}' must be {what} with low {'<' if strict_order else '<='} high, {_got(value)}"

