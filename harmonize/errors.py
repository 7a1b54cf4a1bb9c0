"""Errors for a user's mistakes, as opposed to bugs.

A :class:`HarmonizeError` carries a message written for the person who made the mistake: it names the file,
row, column or argument and says how to fix it. The CLI prints it without a traceback (unless ``--debug``)
and exits with status 1. Bugs raise ordinary exceptions and keep their tracebacks.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConfigError", "HarmonizeError", "ManifestError", "ResourceError", "check_option"]


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
