"""What the feature extractor of :class:`~harmonize.handlers.DomainUnlearningHandler` is trained against.

- :class:`ConfusionObjective` (Dinsdale et al. 2021, fused): ``sum beta * confusion`` through frozen heads is
  added to the task loss, so the trainer's own backward pass and step carry it. The confusion loss pulls each
  head's softmax to its target (uniform, or a confound's ``prior``).
- :class:`~harmonize.handlers.alternating_confusion.AlternatingConfusion` (the paper's loop, its own module).
- :class:`GradientReversalObjective` (DANN, Ganin & Lempitsky 2015): the heads read the features through a
  gradient-reversal layer of strength ``reversal_weight * beta``; their loss is added to the task loss, and the
  heads step after the trainer's backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from harmonize.errors import ConfigError, number_problem
from harmonize.keys import StateKeys
from harmonize.losses import ConfusionLoss, grad_reverse

if TYPE_CHECKING:
    from harmonize.handlers.domain_unlearning import DomainUnlearningHandler

__all__ = ["ConfusionObjective", "GradientReversalObjective"]


class ConfusionObjective:
    """Fused confusion: the heads step first on the detached features, then the confusion joins the task loss."""

    trains_heads = True  # the adversary fits the heads on every batch, not only during the warm-up
    records_confusion = True
    phase = "fused"

    def __init__(self) -> None:
        self.loss = ConfusionLoss(reduction="mean")

    def attach(self, engine: Any, unlearner: DomainUnlearningHandler) -> None:
        """Register the objective's own events (none: the handler adds :meth:`penalty` to the task loss)."""

    def bind(self, network: nn.Module, trainer_lr: float) -> None:
        """Make what the objective needs once the trainer is known (nothing here)."""

    def penalty(self, unlearner: DomainUnlearningHandler, features: torch.Tensor, epoch: int,
                engine: Any) -> torch.Tensor | None:
        """What the handler adds to the task loss after the warm-up."""
        return self.confusion(unlearner, features, epoch)

    def confusion(self, unlearner: DomainUnlearningHandler, features: torch.Tensor, epoch: int) -> torch.Tensor:
        """``sum beta * confusion`` through frozen heads (gradients reach the features only)."""
        total = features.new_zeros(())
        with _frozen(unlearner.heads):
            for c in unlearner.confounds:
                loss = self.loss(c.head(features), mask=unlearner.valid(c), target=unlearner.priors.get(c.name))
                unlearner.record(f"{StateKeys.CONFUSION_LOSS}_{c.name}", float(loss.detach()))
                total = total + c.beta_at(epoch) * loss
        return total

    def config(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""


class GradientReversalObjective:
    """DANN: each head's loss, through a gradient-reversal layer, joins the task loss; the heads step after backward.

    Args:
        reversal_weight: strength of the reversal layer (times each confound's ``beta``, a schedule or a number).
    """

    trains_heads = False  # after the warm-up the heads learn through the reversed loss alone
    records_confusion = False
    phase = "dann"

    def __init__(self, reversal_weight: float = 1.0) -> None:
        if problem := number_problem("reversal_weight", reversal_weight, strict=False):
            raise ConfigError(f"GradientReversalObjective: {problem}.")
        self.reversal_weight = float(reversal_weight)

    def attach(self, engine: Any, unlearner: DomainUnlearningHandler) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._step_heads, unlearner)

    def bind(self, network: nn.Module, trainer_lr: float) -> None:
        """Nothing to make: the heads step with the adversary's optimiser."""

    def penalty(self, unlearner: DomainUnlearningHandler, features: torch.Tensor, epoch: int,
                engine: Any) -> torch.Tensor:
        """The heads' domain losses through the reversal layer."""
        optimizer = unlearner.adversary.optimizer
        optimizer.zero_grad(set_to_none=True)
        total = features.new_zeros(())
        for c in unlearner.confounds:
            if not bool(unlearner.valid(c).any()):
                continue
            logits = c.head(grad_reverse(features, self.reversal_weight * c.beta_at(epoch)))
            total = total + c.alpha * unlearner.domain_loss(c, logits, unlearner.targets[c.name], record=True)
        return total

    def _step_heads(self, engine: Any, unlearner: DomainUnlearningHandler) -> None:
        if not unlearner.warmup.covers(engine.state.epoch):
            unlearner.adversary.step(unlearner)

    def config(self) -> dict[str, Any]:
        return {"reversal_weight": self.reversal_weight}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""


class _frozen:
    """Context manager that turns off ``requires_grad`` of a module's parameters and restores it."""

    def __init__(self, module: nn.Module) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)
