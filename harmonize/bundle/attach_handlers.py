"""Attach a bundle's handlers to its trainer in order, once the trainer exists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["attach_handlers"]


def attach_handlers(engine: Engine, handlers: Iterable[Any | None]) -> Engine:
    """Call ``handler.attach(engine)`` for each handler in order, skipping ``None`` (a disabled handler).

    :class:`~harmonize.handlers.DomainUnlearningHandler` checks, when attached, that the engine trains *its*
    network, and reads the trainer's optimizer in alternating mode; ``SupervisedTrainer`` sets both only after it
    has attached its ``train_handlers``, so the bundles build the trainer without handlers and attach them here:
    the unlearning handler first, so that its per-epoch figures are on ``engine.state`` (and in its history)
    before ``StatsHandler`` logs them and ``CheckpointSaver`` saves them.

    Returns:
        The engine.
    """
    for handler in handlers:
        if handler is not None:
            handler.attach(engine)
    return engine
