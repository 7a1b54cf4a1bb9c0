"""The shared checks of a setting's value: one message shape, naming the setting, the value and its type."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonize.errors import (
    ConfigError,
    check_option,
    integer_problem,
    integers_problem,
    number_problem,
    numbers_problem,
    option_problem,
    option_value,
    raise_problems,
    range_problem,
)
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


def test_a_large_integer_bound_is_written_in_full():
    assert integer_problem("start_batch", 2_000_000, 0, maximum=1_999_999) == (
        "'start_batch' must be an integer >= 0 and <= 1999999, got 2000000 (int)")


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


def test_option_value_gives_the_normalised_choice_or_the_problem():
    assert option_value("noise_mode", NoiseMode.ADD, NoiseMode) == ("add", None)
    value, problem = option_value("noise_mode", "ad", NoiseMode)
    assert value is None and problem == option_problem("noise_mode", "ad", NoiseMode)


def test_raise_problems_lists_every_problem_and_drops_the_nones():
    raise_problems("f", [None, None])
    with pytest.raises(ConfigError) as info:
        raise_problems("f", ["'a' is wrong", None, "'b' is wrong"])
    assert info.value.message == "f: invalid arguments." and info.value.problems == ["'a' is wrong", "'b' is wrong"]


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    ([0.1, 2], {"least": 1, "minimum": 0}, None), (np.zeros(3), {"length": 3}, None),
    (torch.ones(3), {"length": 3, "minimum": 0, "strict": True}, None), ((), {}, None), (0.5, {"scalar": True}, None),
    ((), {"least": 1}, "'v' must be a sequence of 1 or more finite numbers, got () (tuple)"),
    ([1.0, float("nan")], {}, "'v' must be a sequence of finite numbers, got [1.0, nan] (list)"),
    ("12", {}, "'v' must be a sequence of finite numbers, got '12' (str)"),
    (0.5, {"length": 3}, "'v' must be a sequence of 3 finite numbers, got 0.5 (float)"),
    ([1, 2], {"length": 3, "minimum": 0, "scalar": True},
     "'v' must be one finite number >= 0 or a sequence of 3 of them, got [1, 2] (list)"),
    ([True, 1.0], {}, "'v' must be a sequence of finite numbers, got [True, 1.0] (list)"),
    ([0.5, 1.0], {"minimum": 0, "maximum": 1, "strict_maximum": True},
     "'v' must be a sequence of finite numbers >= 0 and < 1, got [0.5, 1.0] (list)"),
])
def test_numbers_problem(value, kwargs, expected):
    assert numbers_problem("v", value, **kwargs) == expected


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    ((0, 2, 1), {"length": 3, "distinct": True}, None), (np.array([1, 2]), {"least": 2, "minimum": 1}, None),
    ((), {"maximum": 2}, None),
    ((0, 0, 1), {"length": 3, "distinct": True},
     "'i' must be a sequence of 3 distinct integers >= 0, got (0, 0, 1) (tuple)"),
    ((8,), {"least": 2, "minimum": 1}, "'i' must be a sequence of 2 or more integers >= 1, got (8,) (tuple)"),
    ((0, 3), {"maximum": 2}, "'i' must be a sequence of integers >= 0 and <= 2, got (0, 3) (tuple)"),
    ((1.0,), {}, "'i' must be a sequence of integers >= 0, got (1.0,) (tuple)"),
    (2, {}, "'i' must be a sequence of integers >= 0, got 2 (int)"),
])
def test_integers_problem(value, kwargs, expected):
    assert integers_problem("i", value, **kwargs) == expected


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    ((1, 2), {}, None), ([2.0, 2.0], {"minimum": 0}, None), (0.3, {"scalar": True}, None),
    (np.array([0.1, 0.2]), {"maximum": 1}, None),
    ((2.0, 2.0), {"strict_order": True},
     "'r' must be a (low, high) pair of finite numbers with low < high, got (2.0, 2.0) (tuple)"),
    ((3, 1), {"minimum": 0},
     "'r' must be a (low, high) pair of finite numbers >= 0 with low <= high, got (3, 1) (tuple)"),
    (0.3, {}, "'r' must be a (low, high) pair of finite numbers with low <= high, got 0.3 (float)"),
    ((0, 1), {"minimum": 0, "strict": True, "scalar": True},
     "'r' must be one finite number > 0 or a (low, high) pair of them with low <= high, got (0, 1) (tuple)"),
    ((1, 2, 3), {}, "'r' must be a (low, high) pair of finite numbers with low <= high, got (1, 2, 3) (tuple)"),
])
def test_range_problem(value, kwargs, expected):
    assert range_problem("r", value, **kwargs) == expected
