"""How the domain heads of :class:`~harmonize.handlers.DomainUnlearningHandler` are fitted (the adversary).

:class:`HeadSteps` is the paper's adversary: a few Adam steps of the heads on each batch's detached features.
:class:`~harmonize.handlers.head_refit.RefitHeads` adds a per-epoch re-fit from scratch. An adversary owns its
optimiser and its state; the heads' parameters stay in the handler's ``heads`` (one ``ModuleDict``, the place a
distributed run synchronises).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from harmonize import defaults
from harmonize.distributed import (
    any_process,
    average_buffers,
    average_gradients,
    is_distributed,
)
from harmonize.errors import integer_problem, number_problem, raise_problems
from harmonize.handlers.confound import MISSING

if TYPE_CHECKING:
    from harmonize.handlers.domain_unlearning import DomainUnlearningHandler

__all__ = ["HeadSteps"]


def loss_weight(unlearner: DomainUnlearningHandler, confound: Any) -> float:
    """The weight of this batch's samples in a confound's domain loss: their number, or their class weights' sum.

    A head's gradient under ``torch.distributed`` is the mean of the processes' gradients weighted by this.
    """
    target = unlearner.targets[confound.name]
    valid = target != MISSING
    weight = confound.domain_loss.weight
    if weight is None:
        return float(valid.sum())
    return float(weight.to(target.device)[target[valid]].sum())


class HeadSteps:
    """Per-batch adversary: the heads take ``steps`` Adam steps (learning rate ``lr``) on every batch.

    Args:
        lr: learning rate of the heads' Adam optimiser.
        steps: optimiser steps of the heads per batch (a stronger adversary makes stronger unlearning).
    """

    refits = False

    def __init__(self, lr: float = defaults.HEAD_LR, steps: int = defaults.HEAD_STEPS) -> None:
        raise_problems(type(self).__name__, [number_problem("head_lr", lr), integer_problem("head_steps", steps)])
        self.lr, self.steps = float(lr), int(steps)
        self.optimizer: torch.optim.Optimizer | None = None

    def bind(self, unlearner: DomainUnlearningHandler) -> None:
        """Make the heads' optimiser (one Adam over every head's parameters)."""
        self.optimizer = torch.optim.Adam(unlearner.heads.parameters(), lr=self.lr)

    def fit_batch(self, unlearner: DomainUnlearningHandler, features: torch.Tensor) -> None:
        """The heads learn their confounds from a batch's detached features (the extractor is not touched).

        Under ``torch.distributed`` a head steps when some process has samples of its confound (:meth:`step`).
        """
        local = [c for c in unlearner.confounds if bool((unlearner.targets[c.name] != MISSING).any())]
        active = any_process([any(c is d for d in local) for c in unlearner.confounds])
        for step in range(self.steps if any(active) else 0):
            self.optimizer.zero_grad(set_to_none=True)
            last = step == self.steps - 1
            if local:
                loss = sum(c.alpha * unlearner.domain_loss(c, c.head(features), unlearner.targets[c.name],
                                                           record=last) for c in local)
                loss.backward()
            self.step(unlearner)
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, unlearner: DomainUnlearningHandler) -> None:
        """One optimiser step of the heads, the same on every process of a ``torch.distributed`` run.

        Under ``torch.distributed`` each head's gradient is first averaged over the processes, weighted by the
        weight of their samples in its loss (:func:`loss_weight`): the gradient of the
        loss of the union of their batches. The heads' BatchNorm statistics are averaged too.
        """
        if is_distributed():
            average_gradients([(c.head.parameters(), loss_weight(unlearner, c)) for c in unlearner.confounds])
            average_buffers(unlearner.heads)
        self.optimizer.step()

    def epoch_started(self, unlearner: DomainUnlearningHandler, engine: Any) -> None:
        """Called at the start of every unlearning (not warm-up) epoch; nothing to do for a per-batch adversary."""

    def config(self) -> dict[str, Any]:
        """The adversary's settings (what rebuilds it)."""
        return {"lr": self.lr, "steps": self.steps}

    def state_dict(self) -> dict[str, Any]:
        return {"head_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["head_optimizer"])
