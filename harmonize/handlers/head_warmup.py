"""The domain heads' warm-up in :class:`~harmonize.handlers.DomainUnlearningHandler`: the first epochs, when only the
heads learn (the paper pretrains its domain head), and the rule that lengthens it while the task is not yet learnt."""

from __future__ import annotations

import logging
from typing import Any

from harmonize.errors import integer_problem, number_problem, raise_problems

__all__ = ["HeadWarmup"]

logger = logging.getLogger(__name__)


class HeadWarmup:
    """The epochs at the start of a run during which only the domain heads learn.

    Args:
        epochs: the warm-up's epochs (0: none); :attr:`epochs` is the last warm-up epoch, as lengthened.
        until_loss: if given, the warm-up goes on past ``epochs``, one epoch at a time, while the epoch's mean task
            loss is at or above this, up to half of the run's epochs: an adversary that starts before the task is
            learnt can win for good.

    Raises:
        ConfigError: every setting out of range at once (:meth:`problems`).
    """

    def __init__(self, epochs: int = 0, until_loss: float | None = None) -> None:
        raise_problems(type(self).__name__, self.problems(epochs, until_loss))
        self.epochs, self.until_loss = int(epochs), until_loss

    @staticmethod
    def problems(epochs: Any, until_loss: Any) -> list[str | None]:
        """The problems of the settings, named as the handler's arguments (``warmup_epochs``, ``warmup_until_loss``)."""
        return [integer_problem("warmup_epochs", epochs, minimum=0),
                number_problem("warmup_until_loss", until_loss, optional=True)]

    def covers(self, epoch: int) -> bool:
        """Whether an epoch (1-based) belongs to the warm-up."""
        return epoch <= self.epochs

    def epoch_completed(self, epoch: int, task_loss: float | None, max_epochs: int) -> None:
        """Lengthen the warm-up by one epoch when its last epoch ended with the task loss at or above ``until_loss``."""
        if (self.until_loss is not None and epoch == self.epochs and task_loss is not None
                and task_loss >= self.until_loss and epoch < max_epochs // 2):
            self.epochs += 1
            logger.info("epoch %d: task loss %.3g >= %.3g, the warm-up goes on for another epoch", epoch, task_loss,
                        self.until_loss)

    def config(self) -> dict[str, Any]:
        """The settings that rebuild the warm-up (``epochs`` as given, or as lengthened so far)."""
        return {"epochs": self.epochs, "until_loss": self.until_loss}
