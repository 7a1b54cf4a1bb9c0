"""state_mismatches: every missing, unexpected and mis-shaped tensor, with nested states flattened."""

from __future__ import annotations

import torch
from torch import nn

from harmonize.networks.state_mismatch import state_mismatches


def test_a_fitting_state_has_no_mismatch():
    net = nn.Linear(3, 2)
    assert state_mismatches(net.state_dict(), net.state_dict()) == []


def test_missing_unexpected_and_shape_are_named():
    expected = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1)).state_dict()
    saved = dict(nn.Sequential(nn.Linear(3, 4)).state_dict(), extra=torch.zeros(1))
    problems = state_mismatches(expected, saved, source="file")
    assert "missing in the file: 1.weight" in problems and "missing in the file: 1.bias" in problems
    assert "unexpected in the file: extra" in problems
    assert "shape mismatch for 0.weight: file [4, 3], this network [2, 3]" in problems


def test_nested_states_are_compared_by_dotted_name_and_integer_levels_skipped():
    expected = {"heads": {"site": {"w": torch.zeros(2, 2)}}, "optimizer": {"state": {0: {"m": torch.zeros(5)}}}}
    saved = {"heads": {"site": {"w": torch.zeros(3, 2)}}, "optimizer": {"state": {}}}
    assert state_mismatches(expected, saved, prefix="unlearning") == [
        "shape mismatch for unlearning.heads.site.w: checkpoint [3, 2], this network [2, 2]"]
