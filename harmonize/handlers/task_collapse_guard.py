"""Undo an unlearning epoch that lost the task, in :class:`~harmonize.handlers.DomainUnlearningHandler`.

An adversary can win against the task after the warm-up: the extractor makes its features uninformative of the
site by making them uninformative of everything, and once the features have collapsed the task does not come
back, even when the confusion weight falls to almost nothing (docs/unlearning.md, session 10). The guard keeps a
copy of the network and its optimiser (in CPU memory) at the end of every epoch that ends with the task learnt; when
an unlearning epoch ends with the task lost, it puts that copy back and lowers every confound's weight.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch

from harmonize import defaults
from harmonize.errors import number_problem, raise_problems

__all__ = ["TaskCollapseGuard"]

logger = logging.getLogger(__name__)


class TaskCollapseGuard:
    """Goes back to the last epoch with the task learnt when an unlearning epoch loses it.

    The weight scales are checkpointed with the handler (:meth:`state_dict`); the kept copy is not, so a resumed run
    keeps a new one at its next epoch with the task learnt.

    Args:
        learnt_loss: an epoch whose mean task loss is below this ends with the task learnt (its state is kept);
            None: the guard does nothing.
        collapse_loss: an unlearning epoch whose mean task loss is at or above this has lost the task.
        factor: what each confound's weight (:attr:`~harmonize.handlers.Confound.weight_scale`) is multiplied by
            at each undo.

    Raises:
        ConfigError: every setting out of range at once.
    """

    def __init__(self, learnt_loss: float | None, collapse_loss: float = defaults.TASK_NOT_LEARNT_LOSS,
                 factor: float = defaults.COLLAPSE_WEIGHT_FACTOR) -> None:
        raise_problems(type(self).__name__, [number_problem("learnt_loss", learnt_loss, optional=True),
                                             number_problem("collapse_loss", collapse_loss),
                                             number_problem("factor", factor, maximum=1.0)])
        self.learnt_loss = None if learnt_loss is None else float(learnt_loss)
        self.collapse_loss, self.factor = float(collapse_loss), float(factor)
        self._kept: tuple[dict[str, Any], dict[str, Any]] | None = None

    def epoch_completed(self, unlearning: Any, engine: Any, task_loss: float | None) -> None:
        """Keep the state after an epoch with the task learnt; undo an unlearning epoch that lost it (a task never
        learnt is the warm-up's business: :class:`~harmonize.handlers.HeadWarmup`).

        Args:
            unlearning: the :class:`~harmonize.handlers.DomainUnlearningHandler` (its network, confounds, warm-up).
            engine: the trainer (its epoch and optimiser).
            task_loss: the epoch's mean task loss (the same on every process under ``torch.distributed``).
        """
        if self.learnt_loss is None or task_loss is None:
            return
        if task_loss < self.learnt_loss:
            self._kept = (_cpu_copy(unlearning.network.state_dict()), _cpu_copy(engine.optimizer.state_dict()))
        elif (self._kept is not None and task_loss >= self.collapse_loss
              and not unlearning.warmup.covers(engine.state.epoch)):
            unlearning.network.load_state_dict(self._kept[0])
            engine.optimizer.load_state_dict(self._kept[1])
            for confound in unlearning.confounds:
                confound.weight_scale *= self.factor
            logger.warning("epoch %d: the task loss %.3g is at or above %.3g: the adversary has taken the task; the "
                           "network goes back to the last epoch with the task learnt and the confusion weights are "
                           "scaled by %g (now %s)", engine.state.epoch, task_loss, self.collapse_loss, self.factor,
                           ", ".join(f"{c.name}: x{c.weight_scale:g}" for c in unlearning.confounds))

    @staticmethod
    def state_dict(unlearning: Any) -> dict[str, Any]:
        """Each confound's weight scale (``weight_scales``), for the handler's checkpoint."""
        return {"weight_scales": {c.name: c.weight_scale for c in unlearning.confounds}}

    @staticmethod
    def load_state_dict(unlearning: Any, state: Mapping[str, Any]) -> None:
        """Restore the confounds' weight scales (1 where a checkpoint has none)."""
        for confound in unlearning.confounds:
            confound.weight_scale = float(state.get("weight_scales", {}).get(confound.name, 1.0))


def _cpu_copy(state: Any) -> Any:
    """A copy of a state dict whose tensors are on the CPU (``load_state_dict`` moves them back)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, Mapping):
        return type(state)((k, _cpu_copy(v)) for k, v in state.items())
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(v) for v in state)
    return copy.deepcopy(state)
