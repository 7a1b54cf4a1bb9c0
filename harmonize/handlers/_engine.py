"""The engine check shared by the handlers that train (private helper): they need a trainer's optimizer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from ignite.engine import Engine, Events

from harmonize.errors import ConfigError

__all__ = ["refuse_evaluator", "require_optimizer", "when_built"]


def require_optimizer(engine: Engine, who: str) -> torch.optim.Optimizer:
    """``engine.optimizer``, or a :class:`~harmonize.errors.ConfigError` when the engine trains nothing.

    Args:
        engine: the engine the handler is attached to.
        who: the handler, for the message.
    """
    optimizer = getattr(engine, "optimizer", None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        has = "no optimizer" if optimizer is None else f"a {type(optimizer).__name__} as optimizer"
        raise ConfigError(
            f"{who} changes the training of a network, so it must be attached to a trainer with an optimizer (e.g. "
            f"monai.engines.SupervisedTrainer); it was attached to a {type(engine).__name__}, which has {has} and "
            "would train nothing. Attach it to the trainer (train_handlers), not to an evaluator."
        )
    return optimizer


def when_built(engine: Engine, check: Callable[[Engine], None]) -> None:
    """Run ``check(engine)`` now if the engine holds its network, else when it starts.

    MONAI attaches a workflow's ``handlers`` in ``Workflow.__init__``, before the trainer sets its network and
    optimizer; the check then runs at ``Events.STARTED``.
    """
    if hasattr(engine, "network"):
        check(engine)
    else:
        engine.add_event_handler(Events.STARTED, check)


def refuse_evaluator(engine: Engine, who: str, why: str) -> None:
    """Raise a :class:`~harmonize.errors.ConfigError` when ``engine`` is a MONAI evaluator.

    Args:
        engine: the engine the handler is attached to.
        who: the handler, for the message.
        why: what it would do (or fail to do) on an evaluator, for the message.
    """
    from monai.engines import Evaluator

    if isinstance(engine, Evaluator):
        raise ConfigError(
            f"{who} is a training handler, but it was attached to a {type(engine).__name__}: {why}. Attach it to "
            "the trainer (train_handlers), not to an evaluator."
        )
