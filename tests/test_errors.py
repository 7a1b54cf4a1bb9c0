"""The shared checks of a setting's value: one message shape, naming the setting, the value and its type."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harmonize.errors import ConfigError, check_option, integer_problem, number_problem, option_problem
from harmonize.keys import NoiseMode


@pytest.mark.parametrize(("value", "minimum", "expected"), [
    (1, 1, None), (np.int64(3), 1, None), (0, 0, None),
    (0, 1, "'n' must be an integer >= 1, got 0 (int)"),
    (-1, 0, "'n' must be an integer >= 0, got -1 (int)"),
    ("two", 1, "'n' must be an integer >= 1, got 'two' (str)"),
    (True, 1, "'n' must be an integer >= 1, got True (bool)"),
    (2.0, 1, "'n' must be an integer >= 1, got 2.0 (float)"),
    (None, 1, "'n' must be an integer >= 1, got None (NoneType)"),
])
def test_integer_problem(value, minimum, expected):
    assert integer_problem("n", value, minimum) == expected


@pytest.mark.parametrize(("value", "strict", "expected"), [
    (0.5, True, None), (1, True, None), (np.float32(2.0), True, None), (0.0, False, None),
    (0.0, True, "'lr' must be a finite number > 0, got 0.0 (float)"),
    (-1, False, "'lr' must be a finite number >= 0, got -1 (int)"),
    (float("inf"), True, "'lr' must be a finite number > 0, got inf (float)"),
    (float("nan"), False, "'lr' must be a finite number >= 0, got nan (float)"),
    ("fast", True, "'lr' must be a finite number > 0, got 'fast' (str)"),
    (False, False, "'lr' must be a finite number >= 0, got False (bool)"),
])
def test_number_problem(value, strict, expected):
    assert number_problem("lr", value, strict=strict) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (2, None), (64, None),
    (65, "'n_sites' must be an integer >= 2 and <= 64, got 65 (int)"),
    (1, "'n_sites' must be an integer >= 2 and <= 64, got 1 (int)"),
])
def test_integer_problem_maximum(value, expected):
    assert integer_problem("n_sites", value, 2, maximum=64) == expected


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    (0.0, {"strict": False, "maximum": 1, "strict_maximum": True}, None),
    (1.0, {"strict": False, "maximum": 1, "strict_maximum": True},
     "'p' must be a finite number >= 0 and < 1, got 1.0 (float)"),
    (1, {"maximum": 1}, None),
    (1.5, {"maximum": 1}, "'p' must be a finite number > 0 and <= 1, got 1.5 (float)"),
    (-1e9, {"minimum": -math.inf}, None),
    (float("nan"), {"minimum": -math.inf}, "'p' must be a finite number, got nan (float)"),
    (None, {"optional": True}, None),
    (-1, {"optional": True}, "'p' must be a finite number > 0 or None, got -1 (int)"),
    (None, {}, "'p' must be a finite number > 0, got None (NoneType)"),
])
def test_number_problem_bounds(value, kwargs, expected):
    assert number_problem("p", value, **kwargs) == expected


def test_option_problem_is_check_options_message():
    assert option_problem("noise_mode", "add", NoiseMode) is None
    problem = option_problem("noise_mode", "ad", NoiseMode)
    with pytest.raises(ConfigError) as info:
        check_option("noise_mode", "ad", NoiseMode)
    assert problem == str(info.value) and problem.startswith("Argument 'noise_mode': ")
