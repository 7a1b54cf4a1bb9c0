"""The per-epoch re-fit of the domain heads (an adversary of :class:`~harmonize.handlers.DomainUnlearningHandler`).

A head trained batch by batch is easily fooled while a fresh probe still reads the confound. :class:`RefitHeads`
re-initialises every head at the start of each unlearning epoch and fits it from scratch (full-batch Adam) on the
current features of all the training batches, so the confusion loss pushes against a head that has seen the
current features (:mod:`~harmonize.handlers.epoch_features` gathers them, from every process of a distributed
run). The measurements behind the recipe are in docs/unlearning.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from harmonize import defaults
from harmonize.distributed import broadcast_module
from harmonize.errors import integer_problem, number_problem, raise_problems
from harmonize.handlers.confound import MISSING
from harmonize.handlers.epoch_features import all_features, epoch_features
from harmonize.handlers.unlearning_adversary import HeadSteps
from harmonize.keys import StateKeys

if TYPE_CHECKING:
    from harmonize.handlers.domain_unlearning import DomainUnlearningHandler

__all__ = ["RefitHeads"]


class RefitHeads(HeadSteps):
    """Per-epoch adversary: the heads are re-fitted from scratch on all training features every unlearning epoch.

    Between re-fits the heads still take :class:`HeadSteps` on every batch (``lr``, ``steps``).

    Args:
        refit_steps: full-batch Adam steps of each re-fit.
        refit_lr: learning rate of the re-fit.
        lr: learning rate of the per-batch steps between re-fits.
        steps: per-batch steps between re-fits.
    """

    refits = True

    def __init__(self, refit_steps: int = defaults.REFIT_STEPS, refit_lr: float = defaults.HEAD_REFIT_LR,
                 lr: float = defaults.REFIT_HEAD_LR, steps: int = 1) -> None:
        super().__init__(lr, steps)
        raise_problems(type(self).__name__, [integer_problem("head_refit_steps", refit_steps),
                                             number_problem("head_refit_lr", refit_lr)])
        self.refit_steps, self.refit_lr = int(refit_steps), float(refit_lr)

    def epoch_started(self, unlearner: DomainUnlearningHandler, engine: Any) -> None:
        """Re-fit the heads on the trainer's training batches of this epoch, as its ``prepare_batch`` gives them."""
        gathered = epoch_features(unlearner, engine)
        if gathered is not None:
            self.fit(unlearner, *gathered[:2])

    def refit(self, unlearner: DomainUnlearningHandler, loader: Any, inputs: Any = None,
              epoch: int | None = None) -> dict[str, float]:
        """Re-initialise every head and fit it on the current features of all of ``loader``'s batches (those of
        ``epoch``, 0-based, when its sampler is a harmonize sampler).

        Returns:
            Each head's training accuracy after the fit (``refit_acc_<name>``), also recorded for the epoch.
        """
        features, targets, _ = all_features(unlearner, loader, inputs, epoch)
        return self.fit(unlearner, features, targets)

    def fit(self, unlearner: DomainUnlearningHandler, features: torch.Tensor,
            targets: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Re-initialise every head and fit it on ``features`` and its confound's ``targets`` (see :meth:`refit`)."""
        accuracy = {}
        for c in unlearner.confounds:
            valid = targets[c.name] != MISSING
            if not bool(valid.any()):
                continue
            x, y = features[valid], targets[c.name][valid]
            for module in c.head.modules():
                if module is not c.head and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                if hasattr(module, "reset_running_stats"):
                    module.reset_running_stats()
            broadcast_module(c.head)  # every process fits the same head on the same rows
            optimizer = torch.optim.Adam(c.head.parameters(), lr=self.refit_lr)
            loss_fn = c.domain_loss
            c.head.train()
            for _ in range(self.refit_steps):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(c.head(x), y).backward()
                optimizer.step()
            broadcast_module(c.head)  # rank 0's fit, should another process's kernels round differently
            with torch.no_grad():
                accuracy[f"{StateKeys.REFIT_ACC}_{c.name}"] = float((c.head(x).argmax(dim=1) == y).float().mean())
        self.optimizer.state.clear()  # the per-batch optimiser's moments belonged to the old weights
        for name, value in accuracy.items():
            unlearner.record(name, value)
        return accuracy

    def config(self) -> dict[str, Any]:
        return {**super().config(), "refit_steps": self.refit_steps, "refit_lr": self.refit_lr}
