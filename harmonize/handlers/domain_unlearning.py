"""Scanner (domain) unlearning as a MONAI engine handler (Dinsdale, Jenkinson & Namburete, NeuroImage 2021).

Per batch the task loss trains the network, the domain heads learn each confound from the detached features (the
*adversary*: ``unlearning_adversary``, ``head_refit``) and the extractor is trained against them (the *objective*:
``unlearning_objective``, ``alternating_confusion``), in :meth:`DomainUnlearningHandler._loss_completed`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from harmonize.distributed import broadcast_module, is_main_process, mean_over_processes
from harmonize.errors import ConfigError, integer_problem, raise_problems
from harmonize.handlers._engine import require_optimizer, when_built
from harmonize.handlers.confound import MISSING, Confound, SampleMask, batch_targets
from harmonize.handlers.evidence_gate import EvidenceGate
from harmonize.handlers.head_warmup import HeadWarmup
from harmonize.handlers.task_collapse_guard import TaskCollapseGuard
from harmonize.handlers.unlearning_adversary import HeadSteps
from harmonize.handlers.unlearning_objective import ConfusionObjective
from harmonize.keys import StateKeys
from harmonize.networks.feature_taps import FeatureTaps

__all__ = ["DomainUnlearningHandler"]

logger = logging.getLogger(__name__)


class DomainUnlearningHandler:
    """Adds domain-head training and an unlearning objective to a ``SupervisedTrainer``.

    ``engine.state`` gains :attr:`state_attributes` (for ``StatsHandler``); save :meth:`state_dict` with
    ``CheckpointSaver``. Under ``amp`` the heads and their losses stay in float32. Under ``torch.distributed`` the heads
    start from rank 0's, every step averages their gradients and :attr:`history` holds each epoch's mean over processes.

    Args:
        network: the trainer's network (the one whose features are unlearned).
        taps: names of the layers whose (pooled, concatenated) outputs the heads read (``network.named_modules()``).
        confounds: the variables to unlearn, each with its head and weights (:class:`Confound`).
        objective: what the extractor is trained with (default :class:`ConfusionObjective`, fused).
        adversary: how the heads are fitted (default :class:`HeadSteps`, one Adam step per batch).
        warmup: epochs at the start during which only the heads learn, or a :class:`HeadWarmup` (with ``until_loss``
            it goes on while the task loss is high, and :class:`TaskCollapseGuard` undoes an epoch that loses the task).
        sample_mask: function of the batch giving a per-sample bool tensor: only those samples enter the domain
            and confusion losses (e.g. :class:`~harmonize.handlers.LabelRangeMask` for biased data).
        gate: switches off, at the first unlearning epoch, the confounds the features do not carry
            (:class:`EvidenceGate`); ``None``: every confound is unlearned.

    Example: ``DomainUnlearningHandler(net, "encoder", Confound(DomainHead(96, 4), num_classes=4)).attach(trainer)``
    """

    def __init__(self, network: nn.Module, taps: str | Sequence[str], confounds: Confound | Sequence[Confound],
                 objective: Any = None, adversary: HeadSteps | None = None, warmup: int | HeadWarmup = 0,
                 sample_mask: SampleMask | None = None, gate: EvidenceGate | None = None) -> None:
        self.confounds = [confounds] if isinstance(confounds, Confound) else list(confounds)
        self.objective = objective if objective is not None else ConfusionObjective()
        self.adversary = adversary if adversary is not None else HeadSteps()
        names = [c.name for c in self.confounds]
        problems = [None if isinstance(warmup, HeadWarmup) else integer_problem("warmup", warmup, minimum=0)]
        if not self.confounds:
            problems.append("confounds: give at least one Confound")
        if len(set(names)) != len(names):
            problems.append(f"confounds: names must be unique, got {names}; give each a distinct `name`")
        if self.adversary.refits and not self.objective.trains_heads:
            problems.append("a re-fitting adversary would reset the heads that gradient reversal trains every "
                            "epoch: use HeadSteps with GradientReversalObjective")
        raise_problems("DomainUnlearningHandler", problems)
        self.network = network
        self.taps = FeatureTaps(network, taps)
        self.heads = nn.ModuleDict({c.name: c.head for c in self.confounds})
        self.warmup = warmup if isinstance(warmup, HeadWarmup) else HeadWarmup(warmup)
        self.guard = TaskCollapseGuard(self.warmup.until_loss)
        self.sample_mask, self.gate = sample_mask, gate
        self.adversary.bind(self)
        self.targets, self.priors = {}, {}  # this batch's targets (MISSING: left out) and confusion targets
        self._totals: dict[str, list[float]] = {}
        self._unlearns = False  # this epoch: past the warm-up, with a confound left to unlearn
        self.history: list[dict[str, float]] = []

    def attach(self, engine: Any) -> None:
        """Register the callbacks on a ``SupervisedTrainer`` (built, or listed in its ``train_handlers``).

        Raises:
            ConfigError: the engine is not a trainer of ``network`` (e.g. an evaluator), or accumulates gradients.
        """
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        when_built(engine, self._bind)
        for attr in self.state_attributes:
            setattr(engine.state, attr, None)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self._loss_completed)
        self.objective.attach(engine, self)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _bind(self, engine: Any) -> None:
        if getattr(engine, "network", None) is not self.network:
            raise ConfigError("DomainUnlearningHandler must be attached to the SupervisedTrainer that trains the "
                              "network it was built with (engine.network is a different module).")
        optimizer = require_optimizer(engine, type(self).__name__)
        if getattr(engine, "accumulation_steps", 1) > 1:
            raise ConfigError("DomainUnlearningHandler does not support gradient accumulation (accumulation_steps > 1).")
        self.heads.to(next(self.network.parameters()).device)
        broadcast_module(self.heads)  # under torch.distributed every process starts from rank 0's heads, as DDP does
        self.objective.bind(self.network, optimizer.param_groups[0]["lr"])

    @property
    def state_attributes(self) -> list[str]:
        """The ``engine.state`` attributes this handler sets: the task loss, the phase, ``<figure>_<confound>``."""
        keys = [StateKeys.DOMAIN_LOSS, StateKeys.DOMAIN_ACC]
        keys += [StateKeys.CONFUSION_LOSS] if self.objective.records_confusion else []
        keys += [StateKeys.REFIT_ACC] if self.adversary.refits else []
        return [StateKeys.TASK_LOSS.value, StateKeys.UNLEARNING_PHASE.value] + [
            f"{k}_{c.name}" for c in self.confounds for k in keys]

    def _epoch_started(self, engine: Any) -> None:
        self._totals = {}
        warmup = self.warmup.covers(engine.state.epoch)
        setattr(engine.state, StateKeys.UNLEARNING_PHASE, "warmup" if warmup else self.objective.phase)
        if not warmup and self.gate is not None:
            self.gate.epoch_started(self, engine)  # may switch off the confounds the features do not carry
        self._unlearns = not warmup and any(c.weight_scale > 0 for c in self.confounds)
        if self._unlearns:
            self.adversary.epoch_started(self, engine)

    def _iteration_started(self, engine: Any) -> None:
        self.targets, self.priors = batch_targets(self.confounds, engine.state.batch, self.sample_mask,
                                                  next(self.network.parameters()).device)
        self.taps.clear()

    def _loss_completed(self, engine: Any) -> None:
        from monai.utils import CommonKeys

        task_loss = engine.state.output[CommonKeys.LOSS]
        self.record(StateKeys.TASK_LOSS, float(task_loss.detach()))
        warmup = self.warmup.covers(engine.state.epoch)
        with torch.autocast(task_loss.device.type, enabled=False):  # mixed precision: heads and losses in float32
            features = self.taps.features().float()
            if warmup or (self._unlearns and self.objective.trains_heads):
                self.adversary.fit_batch(self, features.detach())
            penalty = self.objective.penalty(self, features, engine.state.epoch, engine) if self._unlearns else None
        if penalty is not None:
            engine.state.output[CommonKeys.LOSS] = task_loss + penalty

    def _iteration_completed(self, engine: Any) -> None:
        self.taps.clear()
        for name, values in self._totals.items():
            setattr(engine.state, name, sum(values) / len(values))

    def _epoch_completed(self, engine: Any) -> None:
        totals = {name: sum(values) / len(values) for name, values in self._totals.items()}
        summary = mean_over_processes({"epoch": float(engine.state.epoch), **totals})
        self.history.append(summary)
        self.guard.epoch_completed(self, engine, summary.get(StateKeys.TASK_LOSS))
        self.warmup.epoch_completed(engine.state.epoch, summary.get(StateKeys.TASK_LOSS), engine.state.max_epochs)
        if is_main_process():
            logger.info("epoch %d %s: %s", engine.state.epoch, getattr(engine.state, StateKeys.UNLEARNING_PHASE, ""),
                        ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if k != "epoch"))

    def valid(self, confound: Confound) -> torch.Tensor:
        """This batch's samples that enter a confound's losses."""
        return self.targets[confound.name] != MISSING

    def domain_loss(self, confound: Confound, logits: torch.Tensor, target: torch.Tensor, record: bool) -> torch.Tensor:
        """A head's cross-entropy on the samples whose target is not :data:`MISSING` (recording loss and accuracy)."""
        mask = target != MISSING
        loss = confound.domain_loss(logits, target, mask=mask)
        if record:
            self.record(f"{StateKeys.DOMAIN_LOSS}_{confound.name}", float(loss.detach()))
            hits = (logits.detach().argmax(dim=1) == target)[mask]
            if hits.numel():
                self.record(f"{StateKeys.DOMAIN_ACC}_{confound.name}", float(hits.float().mean()))
        return loss

    def record(self, name: str, value: float) -> None:
        """Add a value to this epoch's running mean of ``name`` (set on ``engine.state`` and in :attr:`history`)."""
        self._totals.setdefault(str(name), []).append(value)

    def state_dict(self) -> dict[str, Any]:
        """Heads, the adversary's and the objective's optimisers, and the history (for ``CheckpointSaver``)."""
        return {"heads": self.heads.state_dict(), **self.adversary.state_dict(), **self.objective.state_dict(),
                "history": list(self.history), "warmup_epochs": self.warmup.epochs, **self.guard.state_dict(self)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.heads.load_state_dict(state["heads"])
        self.adversary.load_state_dict(state)
        self.objective.bind(self.network, 1e-3)  # a saved optimiser brings its own learning rate
        self.objective.load_state_dict(state)
        self.history = list(state.get("history", []))
        self.warmup.epochs = int(state.get("warmup_epochs", self.warmup.epochs))
        self.guard.load_state_dict(self, state)
