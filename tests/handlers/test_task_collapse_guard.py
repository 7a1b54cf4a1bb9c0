"""TaskCollapseGuard: an unlearning epoch that lost the task is undone, and the confusion weights are lowered."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.handlers import Confound, DomainUnlearningHandler, HeadWarmup, TaskCollapseGuard
from harmonize.networks import DomainHead

from .conftest import TinyNet


def _setup(until: float | None = 0.7):
    torch.manual_seed(0)
    net = TinyNet()
    handler = DomainUnlearningHandler(net, "encoder", Confound(DomainHead(4, 2, hidden=8), 2, beta=2.0),
                                      warmup=HeadWarmup(1, until_loss=until))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    engine = SimpleNamespace(optimizer=optimizer, state=SimpleNamespace(epoch=1))
    return net, handler, engine


def _step(net: TinyNet, optimizer: torch.optim.Optimizer) -> None:
    """One optimiser step, so that the weights and the optimiser's state both change."""
    optimizer.zero_grad()
    net(torch.randn(2, 1, 8, 8, 8)).sum().backward()
    optimizer.step()


def _epoch(handler, engine, epoch: int, loss: float) -> None:
    engine.state.epoch = epoch
    handler.guard.epoch_completed(handler, engine, loss)


def test_an_unlearning_epoch_that_loses_the_task_goes_back_to_the_last_epoch_with_it():
    net, handler, engine = _setup()
    _step(net, engine.optimizer)
    _epoch(handler, engine, 1, 0.5)  # warm-up, task learnt: kept
    _step(net, engine.optimizer)
    _epoch(handler, engine, 2, 0.6)  # unlearning, task learnt: kept
    kept, kept_optimizer = copy.deepcopy(net.state_dict()), copy.deepcopy(engine.optimizer.state_dict())
    _step(net, engine.optimizer)
    _epoch(handler, engine, 3, 0.8)  # worse, but not lost: neither kept nor undone
    assert not torch.equal(net.head.weight, kept["head.weight"])
    _step(net, engine.optimizer)
    _epoch(handler, engine, 4, 1.0)  # lost: back to epoch 2, the weight halved
    assert all(torch.equal(v, kept[k]) for k, v in net.state_dict().items())
    assert engine.optimizer.state_dict()["state"][0]["step"] == kept_optimizer["state"][0]["step"]
    confound = handler.confounds[0]
    assert confound.weight_scale == 0.5 and confound.beta_at(5) == 1.0
    _epoch(handler, engine, 5, 0.95)  # lost again: halved again
    assert confound.weight_scale == 0.25


def _step_then_epoch(until: float | None, epoch: int, loss: float) -> tuple[bool, float]:
    """A step, then an epoch ending at ``loss``: whether the weights stayed as stepped, and the weight scale."""
    net, handler, engine = _setup(until)
    _step(net, engine.optimizer)
    stepped = copy.deepcopy(net.state_dict())
    _epoch(handler, engine, epoch, loss)
    return torch.equal(net.head.weight, stepped["head.weight"]), handler.confounds[0].weight_scale


def test_the_warm_up_and_a_guard_without_a_threshold_undo_nothing():
    assert _step_then_epoch(0.7, 1, 1.0) == (True, 1.0)  # a warm-up epoch: the warm-up decides
    assert _step_then_epoch(None, 3, 1.0) == (True, 1.0)


def test_a_task_never_learnt_is_left_to_the_warm_up():
    assert _step_then_epoch(0.7, 2, 0.99) == (True, 1.0)


def test_the_lowered_weights_are_saved_and_restored_with_the_handler():
    net, handler, engine = _setup()
    _epoch(handler, engine, 1, 0.5)
    _epoch(handler, engine, 2, 1.0)
    state = handler.state_dict()
    assert state["weight_scales"] == {"site": 0.5}
    _, fresh, _ = _setup()
    fresh.load_state_dict(state)
    assert fresh.confounds[0].weight_scale == 0.5
    legacy = {k: v for k, v in state.items() if k != "weight_scales"}  # a checkpoint written before the guard
    fresh.load_state_dict(legacy)
    assert fresh.confounds[0].weight_scale == 1.0


def test_bad_settings_are_named_at_once():
    with pytest.raises(ConfigError) as info:
        TaskCollapseGuard(-1.0, collapse_loss=float("nan"), factor=2.0)
    text = str(info.value)
    assert "'learnt_loss'" in text and "'collapse_loss'" in text and "'factor'" in text
