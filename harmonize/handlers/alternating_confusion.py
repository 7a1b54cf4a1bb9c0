"""The paper's alternating loop as an objective of :class:`~harmonize.handlers.DomainUnlearningHandler`.

Dinsdale et al. (2021) update three times per batch: the task step (the trainer's), the heads on the detached
features (the adversary), then a second forward pass whose confusion loss updates the feature extractor only, with
an optimiser of its own. That second pass and optimiser live here; the confusion loss is
:class:`~harmonize.handlers.unlearning_objective.ConfusionObjective`'s. About twice the cost of a fused iteration.
Under ``torch.distributed`` the second pass's gradients are averaged over the processes before its step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from harmonize.distributed import average_gradients, is_distributed
from harmonize.errors import ConfigError, number_problem
from harmonize.handlers.unlearning_objective import ConfusionObjective
from harmonize.networks.unwrap_network import unwrap_network

if TYPE_CHECKING:
    from harmonize.handlers.domain_unlearning import DomainUnlearningHandler

__all__ = ["AlternatingConfusion"]


class AlternatingConfusion(ConfusionObjective):
    """The paper's loop: a second forward pass after the task step; its confusion updates the extractor only.

    Args:
        extractor_lr: learning rate of the extractor's own Adam optimiser (default: the trainer's).
    """

    phase = "alternating"

    def __init__(self, extractor_lr: float | None = None) -> None:
        super().__init__()
        if extractor_lr is not None and (problem := number_problem("extractor_lr", extractor_lr)):
            raise ConfigError(f"AlternatingConfusion: {problem}.")
        self.extractor_lr = extractor_lr
        self.optimizer: torch.optim.Optimizer | None = None
        self._inputs: torch.Tensor | None = None

    def attach(self, engine: Any, unlearner: DomainUnlearningHandler) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self._step, unlearner)

    def bind(self, network: nn.Module, trainer_lr: float) -> None:
        """Make the extractor's optimiser (over every parameter: the confusion reaches the extractor alone)."""
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(network.parameters(), lr=self.extractor_lr or trainer_lr)

    def penalty(self, unlearner: DomainUnlearningHandler, features: torch.Tensor, epoch: int,
                engine: Any) -> torch.Tensor | None:
        from monai.utils import CommonKeys

        self._inputs = engine.state.output[CommonKeys.IMAGE]
        return None

    def _step(self, engine: Any, unlearner: DomainUnlearningHandler) -> None:
        inputs, self._inputs = self._inputs, None
        if unlearner.warmup.covers(engine.state.epoch) or inputs is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        unlearner.taps.clear()
        distributed = is_distributed()
        # Under torch.distributed the pass skips DDP (whose reduction expects every parameter of its forward to get
        # a gradient, while the confusion reaches the extractor alone) and averages the gradients itself.
        (unwrap_network(unlearner.network)[0] if distributed else unlearner.network)(inputs)
        self.confusion(unlearner, unlearner.taps.features(), engine.state.epoch).backward()
        if distributed:
            average_gradients([(unlearner.network.parameters(), 1.0)])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        unlearner.taps.clear()

    def config(self) -> dict[str, Any]:
        return {"extractor_lr": self.extractor_lr}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.optimizer is None else {"extractor_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the extractor optimiser (the handler binds it first; its learning rate comes with the state)."""
        if "extractor_optimizer" in state:
            self.optimizer.load_state_dict(state["extractor_optimizer"])
