"""Scanner (domain) unlearning as a MONAI engine handler.

Dinsdale, Jenkinson & Namburete, "Deep learning-based unlearning of dataset bias for MRI harmonisation and
confound removal", NeuroImage 2021. Per batch, three updates:

1. the task loss trains the feature extractor and the task head (the ``SupervisedTrainer`` does this);
2. each domain head learns to predict its confound from the *detached* features (cross-entropy);
3. a confusion loss (cross-entropy of the head's softmax against the uniform distribution, weight ``beta``)
   trains the feature extractor only, so the features stop carrying the confound.

Attach :class:`DomainUnlearningHandler` to an ordinary trainer and it adds steps 2 and 3; the trainer is not
subclassed or copied. The same handler also runs the DANN baseline (gradient reversal, Ganin & Lempitsky 2015).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from harmonize.errors import ConfigError, check_option
from harmonize.handlers.confound import MISSING, Confound
from harmonize.keys import StateKeys, UnlearningMode
from harmonize.losses import ConfusionLoss, DomainLoss, grad_reverse
from harmonize.networks.feature_taps import FeatureTaps

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    from monai.utils import optional_import

    Engine, _ = optional_import("ignite.engine", name="Engine")

__all__ = ["DomainUnlearningHandler"]

logger = logging.getLogger(__name__)

SampleMask = Callable[[Mapping[str, Any]], torch.Tensor]


class DomainUnlearningHandler:
    """Adds domain-head training and confusion (or gradient-reversal) updates to a ``SupervisedTrainer``.

    Modes (:class:`~harmonize.keys.UnlearningMode`):

    - ``fused`` (default, fast): the heads step on the detached features of the trainer's own forward pass,
      then ``beta * confusion`` is added to the task loss, so the trainer's backward pass and optimizer step
      carry the confusion gradient to the extractor. One forward and one backward pass per batch.
    - ``alternating`` (faithful to the paper): after the trainer's task step, the heads step on the detached
      features, then a second forward pass computes the confusion loss, whose gradient updates the extractor
      only, with an optimizer of its own. About twice the cost of a plain iteration.
    - ``dann``: the baseline. The heads read the features through a gradient-reversal layer; the domain loss
      is added to the task loss, so the heads learn the confound while the extractor is pushed the other way.

    A warm-up stage trains the heads on the detached features for the first ``warmup_epochs`` epochs without
    touching the extractor, as the paper pretrains its domain predictor before unlearning.

    Args:
        network: the trainer's network (the one whose features are unlearned).
        taps: names of the layers whose (pooled, concatenated) outputs the heads read, as in
            ``network.named_modules()``; several names give a multi-point head (e.g. bottleneck + final layer).
        confounds: the variables to unlearn, each with its head and weights (:class:`Confound`).
        mode: ``fused``, ``alternating`` or ``dann``.
        head_lr: learning rate of the heads' Adam optimizer (used when ``head_optimizer`` is not given).
        head_steps: optimizer steps of the heads per batch (a stronger adversary makes stronger unlearning).
        warmup_epochs: epochs at the start during which only the heads learn (no confusion update).
        extractor_lr: learning rate of the alternating mode's extractor optimizer; defaults to the trainer's.
        head_optimizer: optimizer over every head's parameters, if you want your own.
        sample_mask: function of the batch giving a per-sample bool tensor: only those samples enter the
            domain and confusion losses (e.g. :class:`~harmonize.handlers.LabelRangeMask` for biased data).

    Example::

        head = DomainHead(net.feature_dim, num_classes=4)
        unlearn = DomainUnlearningHandler(net, taps="encoder", confounds=[Confound(head, num_classes=4)])
        unlearn.attach(trainer)
        trainer.run()

    ``engine.state`` gains, per confound name, ``domain_loss_<name>``, ``domain_acc_<name>`` (head accuracy on
    the epoch so far) and ``confusion_loss_<name>``, plus ``task_loss`` and ``unlearning_phase``; list them
    with :attr:`state_attributes` for MONAI's ``StatsHandler``. Save :meth:`state_dict` with ``CheckpointSaver``.
    """

    def __init__(
        self,
        network: nn.Module,
        taps: str | Sequence[str],
        confounds: Confound | Sequence[Confound],
        mode: UnlearningMode | str = UnlearningMode.FUSED,
        head_lr: float = 1e-3,
        head_steps: int = 1,
        warmup_epochs: int = 0,
        extractor_lr: float | None = None,
        head_optimizer: torch.optim.Optimizer | None = None,
        sample_mask: SampleMask | None = None,
    ) -> None:
        self.mode = UnlearningMode(check_option("mode", mode, UnlearningMode))
        self.confounds = [confounds] if isinstance(confounds, Confound) else list(confounds)
        if not self.confounds:
            raise ConfigError("DomainUnlearningHandler needs at least one Confound in `confounds`.")
        names = [c.name for c in self.confounds]
        if len(set(names)) != len(names):
            raise ConfigError(f"Confound names must be unique, got {names}: give each a distinct `name`.")
        if head_steps < 1:
            raise ConfigError(f"head_steps must be at least 1, got {head_steps}.")
        if warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        for what, lr in (("head_lr", head_lr), ("extractor_lr", extractor_lr)):
            if lr is not None and not (lr > 0 and lr < float("inf")):
                raise ConfigError(f"{what} must be a positive number, got {lr}.")
        self.network = network
        self.taps = FeatureTaps(network, taps)
        self.heads = nn.ModuleDict({c.name: c.head for c in self.confounds})
        self.head_steps = head_steps
        self.warmup_epochs = warmup_epochs
        self.extractor_lr = extractor_lr
        self.sample_mask = sample_mask
        self.head_optimizer = head_optimizer or torch.optim.Adam(self.heads.parameters(), lr=head_lr)
        self.extractor_optimizer: torch.optim.Optimizer | None = None
        self.confusion_loss = ConfusionLoss(reduction="mean")
        self.domain_losses = {
            c.name: DomainLoss(weight=c.class_weights, reduction="mean") for c in self.confounds
        }
        self._inputs: torch.Tensor | None = None
        self._targets: dict[str, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self._totals: dict[str, list[float]] = {}
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------------------------------------- attach
    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on a ``SupervisedTrainer``'s iteration events.

        Raises:
            ConfigError: the engine is not a trainer of ``network``, or uses gradient accumulation.
        """
        from monai.engines.utils import IterationEvents
        from ignite.engine import Events

        if getattr(engine, "network", None) is not self.network:
            raise ConfigError(
                "DomainUnlearningHandler must be attached to the SupervisedTrainer that trains the network it was "
                "built with (engine.network is a different module)."
            )
        if getattr(engine, "accumulation_steps", 1) > 1:
            raise ConfigError("DomainUnlearningHandler does not support gradient accumulation (accumulation_steps > 1).")
        device = next(self.network.parameters()).device
        self.heads.to(device)
        if self.mode == UnlearningMode.ALTERNATING:
            lr = self.extractor_lr or engine.optimizer.param_groups[0]["lr"]
            # Over all network parameters: the confusion loss gives gradients to the extractor alone, and Adam skips
            # parameters whose gradient is None, so the task head is left as it is.
            self.extractor_optimizer = torch.optim.Adam(self.network.parameters(), lr=lr)
        for attr in self.state_attributes:
            setattr(engine.state, attr, None)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self._loss_completed)
        if self.mode == UnlearningMode.DANN:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._step_heads_after_backward)
        if self.mode == UnlearningMode.ALTERNATING:
            engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self._confusion_step)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    @property
    def state_attributes(self) -> list[str]:
        """Names of the ``engine.state`` attributes this handler sets (for ``StatsHandler(state_attributes=...)``)."""
        attrs = [StateKeys.TASK_LOSS.value, StateKeys.UNLEARNING_PHASE.value]
        per_confound = [StateKeys.DOMAIN_LOSS, StateKeys.DOMAIN_ACC]
        if self.mode != UnlearningMode.DANN:
            per_confound.append(StateKeys.CONFUSION_LOSS)
        for c in self.confounds:
            attrs += [f"{k}_{c.name}" for k in per_confound]
        return attrs

    def in_warmup(self, epoch: int) -> bool:
        """Whether an epoch (1-based) belongs to the heads' warm-up stage."""
        return epoch <= self.warmup_epochs

    # --------------------------------------------------------------------------------------------- callbacks
    def _epoch_started(self, engine: Engine) -> None:
        self._totals = {}
        phase = "warmup" if self.in_warmup(engine.state.epoch) else str(self.mode)
        setattr(engine.state, StateKeys.UNLEARNING_PHASE, phase)

    def _iteration_started(self, engine: Engine) -> None:
        batch = engine.state.batch
        if not isinstance(batch, Mapping):
            raise TypeError("DomainUnlearningHandler needs dictionary batches (MONAI style) holding the confound keys.")
        device = next(self.network.parameters()).device
        self._targets = {}
        for c in self.confounds:
            if c.key not in batch:
                raise KeyError(
                    f"Batch has no key '{c.key}' for confound '{c.name}'; batch keys: {sorted(map(str, batch))}."
                )
            values = torch.as_tensor(batch[c.key]).to(device)
            self._targets[c.name] = c.targets(values)
        self._mask = None
        if self.sample_mask is not None:
            self._mask = torch.as_tensor(self.sample_mask(batch)).to(device=device, dtype=torch.bool).reshape(-1)
        self.taps.clear()

    def _loss_completed(self, engine: Engine) -> None:
        from monai.utils import CommonKeys

        task_loss = engine.state.output[CommonKeys.LOSS]
        self._record(StateKeys.TASK_LOSS, float(task_loss.detach()))
        features = self.taps.features()
        warmup = self.in_warmup(engine.state.epoch)
        if self.mode == UnlearningMode.DANN and not warmup:
            engine.state.output[CommonKeys.LOSS] = task_loss + self._reversal_loss(features, engine.state.epoch)
            return
        self._train_heads(features.detach())
        if self.mode == UnlearningMode.FUSED and not warmup:
            engine.state.output[CommonKeys.LOSS] = task_loss + self._confusion(features, engine.state.epoch)
        elif self.mode == UnlearningMode.ALTERNATING:
            self._inputs = engine.state.output[CommonKeys.IMAGE]
        self.taps.clear()

    def _step_heads_after_backward(self, engine: Engine) -> None:
        if not self.in_warmup(engine.state.epoch):
            self.head_optimizer.step()

    def _confusion_step(self, engine: Engine) -> None:
        inputs, self._inputs = self._inputs, None
        if self.in_warmup(engine.state.epoch) or inputs is None:
            return
        self.extractor_optimizer.zero_grad(set_to_none=True)
        self.taps.clear()
        self.network(inputs)
        loss = self._confusion(self.taps.features(), engine.state.epoch)
        loss.backward()
        self.extractor_optimizer.step()
        self.extractor_optimizer.zero_grad(set_to_none=True)
        self.taps.clear()

    def _iteration_completed(self, engine: Engine) -> None:
        self.taps.clear()
        for name, values in self._totals.items():
            setattr(engine.state, name, sum(values) / len(values))

    def _epoch_completed(self, engine: Engine) -> None:
        summary = {"epoch": float(engine.state.epoch)}
        for name, values in self._totals.items():
            summary[name] = sum(values) / len(values)
        self.history.append(summary)
        logger.info(
            "epoch %d %s: %s",
            engine.state.epoch,
            getattr(engine.state, StateKeys.UNLEARNING_PHASE, ""),
            ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if k != "epoch"),
        )

    # ------------------------------------------------------------------------------------------------ pieces
    def _active(self) -> list[Confound]:
        """Confounds with at least one valid sample in this batch (the others' heads are left untouched)."""
        return [c for c in self.confounds if bool(self._valid(c).any())]

    def _train_heads(self, features: torch.Tensor) -> None:
        """Step 2: the heads learn their confounds from detached features (the extractor is not touched)."""
        active = self._active()
        for step in range(self.head_steps if active else 0):
            self.head_optimizer.zero_grad(set_to_none=True)
            last = step == self.head_steps - 1
            loss = sum(c.alpha * self._domain_loss(c, c.head(features), record=last) for c in active)
            loss.backward()
            self.head_optimizer.step()
        self.head_optimizer.zero_grad(set_to_none=True)

    def _reversal_loss(self, features: torch.Tensor, epoch: int) -> torch.Tensor:
        """DANN: domain losses through a gradient-reversal layer of strength ``beta`` (heads step after backward)."""
        self.head_optimizer.zero_grad(set_to_none=True)
        total = features.new_zeros(())
        for c in self._active():
            reversed_features = grad_reverse(features, c.beta_at(epoch))
            total = total + c.alpha * self._domain_loss(c, c.head(reversed_features), record=True)
        return total

    def _confusion(self, features: torch.Tensor, epoch: int) -> torch.Tensor:
        """Step 3's loss: ``sum beta * confusion`` through frozen heads (gradients reach the features only)."""
        total = features.new_zeros(())
        with _frozen(self.heads):
            for c in self.confounds:
                mask = self._valid(c)
                loss = self.confusion_loss(c.head(features), mask=mask)
                self._record(f"{StateKeys.CONFUSION_LOSS}_{c.name}", float(loss.detach()))
                total = total + c.beta_at(epoch) * loss
        return total

    def _domain_loss(self, confound: Confound, logits: torch.Tensor, record: bool) -> torch.Tensor:
        target = self._targets[confound.name]
        mask = self._valid(confound)
        loss = self.domain_losses[confound.name](logits, target, mask=mask)
        if record:
            self._record(f"{StateKeys.DOMAIN_LOSS}_{confound.name}", float(loss.detach()))
            hits = (logits.detach().argmax(dim=1) == target)[mask]
            if hits.numel():
                self._record(f"{StateKeys.DOMAIN_ACC}_{confound.name}", float(hits.float().mean()))
        return loss

    def _valid(self, confound: Confound) -> torch.Tensor:
        """Samples that enter a confound's losses: its value is known and the sample mask keeps them."""
        valid = self._targets[confound.name] != MISSING
        return valid if self._mask is None else valid & self._mask

    def _record(self, name: str, value: float) -> None:
        self._totals.setdefault(str(name), []).append(value)

    # ------------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Heads, optimizers and history, for MONAI's ``CheckpointSaver``."""
        state = {
            "heads": self.heads.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "history": list(self.history),
        }
        if self.extractor_optimizer is not None:
            state["extractor_optimizer"] = self.extractor_optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (attach the handler first in alternating mode)."""
        self.heads.load_state_dict(state["heads"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.history = list(state.get("history", []))
        if "extractor_optimizer" in state:
            if self.extractor_optimizer is None:
                raise ConfigError(
                    "The checkpoint holds an alternating-mode extractor optimizer: attach the handler to its trainer "
                    "(in alternating mode) before loading the checkpoint."
                )
            self.extractor_optimizer.load_state_dict(state["extractor_optimizer"])


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

