"""The numeric ids of a bundle, checked when the config starts (``python -m monai.bundle run`` overrides too).

``harmonize bundle run`` checks each override against the type of the value it replaces
(:func:`~harmonize.bundle.check_overrides`); ``python -m monai.bundle run --max_epochs two`` merges the text
into the config unchecked, and the run failed deep in the training loop with a ``TypeError`` traceback. The
configs' ``initialize`` therefore calls :func:`check_settings` on their numeric ids: a wrong one is a
:class:`~harmonize.errors.ConfigError` naming the id, which the bundle's error hook prints as one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harmonize.errors import ConfigError, integer_problem, number_problem

__all__ = ["check_settings"]


def check_settings(
    positive_integers: Mapping[str, Any] | None = None,
    non_negative_integers: Mapping[str, Any] | None = None,
    positive_numbers: Mapping[str, Any] | None = None,
) -> None:
    """Refuse bundle ids that are not numbers of the kind the config needs, naming each and the override to give.

    Args:
        positive_integers: ids that must be integers >= 1 (``max_epochs``, ``batch_size``, ``val_interval``).
        non_negative_integers: ids that must be integers >= 0 (``seed``).
        positive_numbers: ids that must be finite numbers > 0 (``learning_rate``).

    Raises:
        ConfigError: listing every id that is wrong, with its value and type.
    """
    rules = (
        (positive_integers, lambda n, v: integer_problem(n, v, minimum=1), "2"),
        (non_negative_integers, lambda n, v: integer_problem(n, v, minimum=0), "0"),
        (positive_numbers, number_problem, "0.001"),
    )
    problems = [
        f"{problem}; e.g. --{name} {example}"
        for values, check, example in rules
        for name, value in (values or {}).items()
        if (problem := check(name, value))
    ]
    if problems:
        raise ConfigError(f"{len(problems)} bundle setting(s) are not valid. Fix the override(s):", problems=problems)
