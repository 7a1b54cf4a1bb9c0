"""LinearRamp: a confusion weight that rises after the warm-up."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.handlers import Confound, LinearRamp


def test_ramp_rises_from_zero_after_its_start_then_stays():
    ramp = LinearRamp(2.0, start=4, epochs=4)
    assert [ramp(e) for e in range(1, 11)] == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    confound = Confound(torch.nn.Linear(3, 2), 2, beta=ramp)
    assert confound.beta_at(6) == 1.0


def test_bad_ramp_names_every_argument():
    with pytest.raises(ConfigError) as info:
        LinearRamp(-1.0, start=-2, epochs=0)
    message = str(info.value)
    assert "'value'" in message and "-1.0" in message
    assert "'start'" in message and "-2" in message
    assert "'epochs'" in message and "got 0" in message
