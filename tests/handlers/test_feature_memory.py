"""FeatureMemory: first in, first out, detached, checked shapes, and a state that round-trips."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.handlers.feature_memory import FeatureMemory


def _batch(start: int, n: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.arange(start, start + n)
    return ids.float().view(-1, 1).repeat(1, 2), {"site": ids % 2, "sex": ids % 3}


def test_keeps_the_last_capacity_samples_oldest_first():
    memory = FeatureMemory(5)
    assert len(memory) == 0
    for start in (0, 3, 6):
        memory.push(*_batch(start))
    features, targets = memory.contents()
    assert len(memory) == 5
    assert features[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert targets["site"].tolist() == [0, 1, 0, 1, 0] and targets["sex"].tolist() == [1, 2, 0, 1, 2]


def test_a_batch_larger_than_the_capacity_keeps_its_last_samples():
    memory = FeatureMemory(2)
    memory.push(*_batch(0, n=4))
    assert memory.contents()[0][:, 0].tolist() == [2.0, 3.0]


def test_stores_detached_copies():
    memory = FeatureMemory(4)
    features = torch.ones(2, 3, requires_grad=True)
    memory.push(features * 2, {"site": torch.tensor([0, 1])})
    stored = memory.contents()[0]
    assert not stored.requires_grad
    with torch.no_grad():
        features.add_(1.0)
    assert torch.equal(stored, torch.full((2, 3), 2.0))


def test_other_feature_size_or_confounds_are_refused():
    memory = FeatureMemory(4)
    memory.push(*_batch(0))
    with pytest.raises(ValueError, match=r"shape \(2,\) for confounds \['sex', 'site'\]; got \(3,\)"):
        memory.push(torch.zeros(1, 3), {"site": torch.tensor([0]), "sex": torch.tensor([0])})
    with pytest.raises(ValueError, match=r"got \(2,\) for \['site'\]"):
        memory.push(torch.zeros(1, 2), {"site": torch.tensor([0])})


def test_state_round_trip_and_clear():
    memory = FeatureMemory(4)
    memory.push(*_batch(0))
    other = FeatureMemory(4)
    other.load_state_dict(memory.state_dict())
    assert torch.equal(other.contents()[0], memory.contents()[0])
    assert torch.equal(other.contents()[1]["sex"], memory.contents()[1]["sex"])
    memory.clear()
    assert len(memory) == 0
    with pytest.raises(RuntimeError, match="empty"):
        memory.contents()
    other.load_state_dict(memory.state_dict())
    assert len(other) == 0


@pytest.mark.parametrize("capacity", [0, -3, 2.5])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(ConfigError, match="head_memory .* must be a positive integer"):
        FeatureMemory(capacity)


def test_monai_meta_tensors_are_stored_as_plain_tensors():
    from monai.data import MetaTensor

    memory = FeatureMemory(3)
    for start in (0, 2):
        features, targets = _batch(start, n=2)
        memory.push(MetaTensor(features, meta={"filename_or_obj": ["a", "b"]}), targets)
    stored = memory.contents()[0]
    assert type(stored) is torch.Tensor and stored[:, 0].tolist() == [1.0, 2.0, 3.0]
