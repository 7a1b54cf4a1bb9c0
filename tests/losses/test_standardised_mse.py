"""StandardisedMSELoss: the MSE in units of a scale, its reductions and its checked arguments."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.losses.standardised_mse import StandardisedMSELoss


def test_the_loss_is_in_units_of_the_scale():
    pred, target = torch.tensor([12.0, 8.0]), torch.tensor([10.0, 10.0])
    assert StandardisedMSELoss(scale=2.0)(pred, target).item() == pytest.approx(1.0)
    assert StandardisedMSELoss(scale=2.0, reduction="sum")(pred, target).item() == pytest.approx(2.0)
    assert StandardisedMSELoss(scale=4.0, reduction="none")(pred, target).tolist() == [0.25, 0.25]


def test_every_bad_argument_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        StandardisedMSELoss(scale=0.0, reduction="avg")
    assert err.value.message == "StandardisedMSELoss: invalid arguments."
    assert err.value.problems[0] == "'scale' must be a finite number > 0, got 0.0 (float)"
    assert err.value.problems[1].startswith("Argument 'reduction': By 'avg', did you mean")
