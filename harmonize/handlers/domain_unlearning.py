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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from harmonize import defaults
from harmonize.errors import ConfigError, check_option
from harmonize.handlers._engine import require_optimizer, when_built
from harmonize.handlers.confound import MISSING, Confound
from harmonize.handlers.feature_memory import FeatureMemory
from harmonize.keys import StateKeys, UnlearningMode
from harmonize.losses import ConfusionLoss, DomainLoss, MomentMatchingLoss, grad_reverse
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

    A head trained batch by batch is easily fooled while a fresh probe still reads the confound. Two options aim
    at the probe instead (docs/unlearning.md, "Does it work?"; on the embedded cohort only the first did):

    - ``head_refit_steps=n`` re-fits every head from scratch at the start of each unlearning epoch, with ``n``
      full-batch Adam steps on the features of *all* the trainer's training batches, so the confusion loss
      pushes against a head that has seen the current features rather than one the extractor has learned to
      fool (``UnlearningSettings.refit_adversary()`` is the measured recipe);
    - ``Confound(..., moment_weight=w)`` adds ``w *`` :class:`~harmonize.losses.MomentMatchingLoss` (the spread of
      the per-class feature means and variances, from running statistics) to the confusion loss. It removes the
      differences from the training scans, but with a few dozen scans per site it over-fits them.

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
        moment_momentum: weight of the running statistics in the moment-matching penalty's estimates
            (confounds with ``moment_weight > 0``).
        moment_variance_weight: weight of the variance term of the moment-matching penalty (``0``: means only).
        moment_whiten: measure the per-class mean differences in the metric of the features' running correlation
            matrix (squared Mahalanobis distances, what a linear discriminant reads) rather than feature by feature.
        moment_ridge: ridge added to that correlation matrix.
        head_refit_steps: if > 0, at the start of each unlearning epoch every head is re-initialised and fitted
            with this many full-batch Adam steps on the detached features of all the trainer's training batches.
        head_refit_lr: learning rate of that re-fit.
        head_memory: if > 0, the heads train at every iteration on the detached features of the last this many
            samples (a :class:`~harmonize.handlers.feature_memory.FeatureMemory`, e.g. the training set's size)
            instead of the current batch alone: a head close to the best read-out of the current training
            features, at no extra forward pass.

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
        moment_momentum: float = defaults.MOMENT_MOMENTUM,
        moment_variance_weight: float = defaults.MOMENT_VARIANCE_WEIGHT,
        moment_whiten: bool = False,
        moment_ridge: float = defaults.MOMENT_RIDGE,
        head_refit_steps: int = 0,
        head_refit_lr: float = defaults.HEAD_REFIT_LR,
        head_memory: int = 0,
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
        if head_memory < 0:
            raise ConfigError(f"head_memory must be >= 0 (0 trains the heads on each batch alone), got {head_memory}.")
        if head_refit_steps < 0:
            raise ConfigError(f"head_refit_steps must be >= 0 (0 turns the re-fit off), got {head_refit_steps}.")
        for what, lr in (("head_lr", head_lr), ("extractor_lr", extractor_lr), ("head_refit_lr", head_refit_lr)):
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
        self.memory = FeatureMemory(head_memory) if head_memory else None
        self.extractor_optimizer: torch.optim.Optimizer | None = None
        self.confusion_loss = ConfusionLoss(reduction="mean")
        self.domain_losses = {
            c.name: DomainLoss(weight=c.class_weights, reduction="mean") for c in self.confounds
        }
        self.moment_losses = nn.ModuleDict(
            {
                c.name: MomentMatchingLoss(
                    c.num_classes,
                    momentum=moment_momentum,
                    variance_weight=moment_variance_weight,
                    whiten=moment_whiten,
                    ridge=moment_ridge,
                )
                for c in self.confounds
                if c.moment_weight > 0
            }
        )
        self.head_refit_steps = int(head_refit_steps)
        self.head_refit_lr = float(head_refit_lr)
        self._inputs: torch.Tensor | None = None
        self._targets: dict[str, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self._priors: dict[str, torch.Tensor] = {}
        self._totals: dict[str, list[float]] = {}
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------------------------------------- attach
    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on a ``SupervisedTrainer``'s iteration events.

        Attach it to a built trainer (``handler.attach(trainer)``), or list it in the trainer's ``train_handlers``:
        MONAI attaches those before the trainer holds its network, so the checks then run when training starts.

        Raises:
            ConfigError: the engine is not a trainer of ``network`` (e.g. an evaluator, which has no optimizer), or
                uses gradient accumulation.
        """
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        when_built(engine, self._bind)
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

    def _bind(self, engine: Engine) -> None:
        """Check that ``engine`` trains ``network``, move the heads to its device, make the extractor optimizer."""
        if getattr(engine, "network", None) is not self.network:
            raise ConfigError(
                "DomainUnlearningHandler must be attached to the SupervisedTrainer that trains the network it was "
                "built with (engine.network is a different module)."
            )
        require_optimizer(engine, type(self).__name__)
        if getattr(engine, "accumulation_steps", 1) > 1:
            raise ConfigError("DomainUnlearningHandler does not support gradient accumulation (accumulation_steps > 1).")
        device = next(self.network.parameters()).device
        self.heads.to(device)
        self.moment_losses.to(device)
        if self.mode == UnlearningMode.ALTERNATING and self.extractor_optimizer is None:
            self._make_extractor_optimizer(self.extractor_lr or engine.optimizer.param_groups[0]["lr"])

    def _make_extractor_optimizer(self, lr: float) -> None:
        # Over all network parameters: the confusion loss gives gradients to the extractor alone, and Adam skips
        # parameters whose gradient is None, so the task head is left as it is.
        self.extractor_optimizer = torch.optim.Adam(self.network.parameters(), lr=lr)

    @property
    def state_attributes(self) -> list[str]:
        """Names of the ``engine.state`` attributes this handler sets (for ``StatsHandler(state_attributes=...)``)."""
        attrs = [StateKeys.TASK_LOSS.value, StateKeys.UNLEARNING_PHASE.value]
        per_confound = [StateKeys.DOMAIN_LOSS, StateKeys.DOMAIN_ACC]
        if self.mode != UnlearningMode.DANN:
            per_confound.append(StateKeys.CONFUSION_LOSS)
        for c in self.confounds:
            attrs += [f"{k}_{c.name}" for k in per_confound]
            if c.name in self.moment_losses:
                attrs.append(f"{StateKeys.MOMENT_LOSS}_{c.name}")
            if self.head_refit_steps:
                attrs.append(f"{StateKeys.REFIT_ACC}_{c.name}")
        return attrs

    def in_warmup(self, epoch: int) -> bool:
        """Whether an epoch (1-based) belongs to the heads' warm-up stage."""
        return epoch <= self.warmup_epochs

    # --------------------------------------------------------------------------------------------- callbacks
    def _epoch_started(self, engine: Engine) -> None:
        self._totals = {}
        phase = "warmup" if self.in_warmup(engine.state.epoch) else str(self.mode)
        setattr(engine.state, StateKeys.UNLEARNING_PHASE, phase)
        if self.head_refit_steps and not self.in_warmup(engine.state.epoch):
            device = next(self.network.parameters()).device

            def inputs(batch: Mapping[str, Any]) -> torch.Tensor:
                return engine.prepare_batch(batch, device, engine.non_blocking)[0]

            self.refit_heads(engine.data_loader, inputs)

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
            self._targets[c.name] = c.targets(batch[c.key]).to(device)
        self._mask = None
        if self.sample_mask is not None:
            self._mask = torch.as_tensor(self.sample_mask(batch)).to(device=device, dtype=torch.bool).reshape(-1)
        self._priors = {c.name: torch.as_tensor(c.prior(batch)).to(device) for c in self.confounds if c.prior}
        self.taps.clear()

    def _loss_completed(self, engine: Engine) -> None:
        from monai.utils import CommonKeys

        task_loss = engine.state.output[CommonKeys.LOSS]
        self._record(StateKeys.TASK_LOSS, float(task_loss.detach()))
        features = self.taps.features()
        warmup = self.in_warmup(engine.state.epoch)
        if self.mode == UnlearningMode.DANN and not warmup:
            penalty = self._reversal_loss(features, engine.state.epoch) + self._moments(features)
            engine.state.output[CommonKeys.LOSS] = task_loss + penalty
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
        """Step 2: the heads learn their confounds from detached features (the extractor is not touched).

        With a memory, they learn from the memory's samples, this batch's included.
        """
        targets = {c.name: self._masked_targets(c) for c in self.confounds}
        if self.memory is not None:
            self.memory.push(features, targets)
            features, targets = self.memory.contents()
        active = [c for c in self.confounds if bool((targets[c.name] != MISSING).any())]
        for step in range(self.head_steps if active else 0):
            self.head_optimizer.zero_grad(set_to_none=True)
            last = step == self.head_steps - 1
            loss = sum(c.alpha * self._domain_loss(c, c.head(features), targets[c.name], record=last) for c in active)
            loss.backward()
            self.head_optimizer.step()
        self.head_optimizer.zero_grad(set_to_none=True)

    def _reversal_loss(self, features: torch.Tensor, epoch: int) -> torch.Tensor:
        """DANN: domain losses through a gradient-reversal layer of strength ``beta`` (heads step after backward)."""
        self.head_optimizer.zero_grad(set_to_none=True)
        total = features.new_zeros(())
        for c in self._active():
            reversed_features = grad_reverse(features, c.beta_at(epoch))
            logits = c.head(reversed_features)
            total = total + c.alpha * self._domain_loss(c, logits, self._masked_targets(c), record=True)
        return total

    def _confusion(self, features: torch.Tensor, epoch: int) -> torch.Tensor:
        """Step 3's loss: ``sum beta * confusion`` through frozen heads (gradients reach the features only)."""
        total = features.new_zeros(())
        with _frozen(self.heads):
            for c in self.confounds:
                mask = self._valid(c)
                loss = self.confusion_loss(c.head(features), mask=mask, target=self._priors.get(c.name))
                self._record(f"{StateKeys.CONFUSION_LOSS}_{c.name}", float(loss.detach()))
                total = total + c.beta_at(epoch) * loss
        return total + self._moments(features)

    def _moments(self, features: torch.Tensor) -> torch.Tensor:
        """``sum moment_weight * MomentMatchingLoss`` over the confounds that have one (0 otherwise)."""
        total = features.new_zeros(())
        for c in self.confounds:
            if c.name not in self.moment_losses:
                continue
            loss = self.moment_losses[c.name](features, self._targets[c.name], mask=self._valid(c))
            self._record(f"{StateKeys.MOMENT_LOSS}_{c.name}", float(loss.detach()))
            total = total + c.moment_weight * loss
        return total

    @torch.no_grad()
    def _all_features(
        self, loader: Iterable[Mapping[str, Any]], inputs: Callable[[Mapping[str, Any]], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Detached features and valid targets of every batch of ``loader``, as the training forward pass sees them.

        The network runs in training mode (BatchNorm on batch statistics, as during the task step); its buffers
        (BatchNorm running statistics) are restored afterwards, so this pass leaves the network as it was.
        """
        from monai.utils import CommonKeys

        device = next(self.network.parameters()).device
        buffers = {name: b.clone() for name, b in self.network.named_buffers()}
        features, targets = [], {c.name: [] for c in self.confounds}
        try:
            for batch in loader:
                self._targets = {
                    c.name: c.targets(batch[c.key]).to(device) for c in self.confounds
                }
                self._mask = None
                if self.sample_mask is not None:
                    self._mask = torch.as_tensor(self.sample_mask(batch)).to(device=device, dtype=torch.bool).reshape(-1)
                self.taps.clear()
                image = inputs(batch) if inputs is not None else torch.as_tensor(batch[CommonKeys.IMAGE])
                self.network(image.to(device))
                features.append(self.taps.features().detach())
                for c in self.confounds:
                    targets[c.name].append(self._masked_targets(c))
        finally:
            self.taps.clear()
            for name, b in self.network.named_buffers():
                b.copy_(buffers[name])
        if not features:
            raise ConfigError("head_refit_steps > 0 needs a training loader with at least one batch.")
        return torch.cat(features), {name: torch.cat(t) for name, t in targets.items()}

    def refit_heads(
        self, loader: Iterable[Mapping[str, Any]], inputs: Callable[[Mapping[str, Any]], torch.Tensor] | None = None
    ) -> dict[str, float]:
        """Re-initialise every head and fit it on the current features of all of ``loader``'s batches.

        Full-batch Adam (``head_refit_lr``, ``head_refit_steps`` steps) on the detached features; the extractor is
        not touched. The head optimizer's moments are reset, since they belonged to the old weights.

        Args:
            loader: the training batches (dictionaries holding the image and the confound keys).
            inputs: function from a batch to the network's input (default: its ``image`` entry); the handler
                passes the trainer's ``prepare_batch``.

        Returns:
            Each head's training accuracy after the fit (``refit_acc_<name>``), also recorded in that
            epoch's summary in :attr:`history` and on ``engine.state``.
        """
        features, targets = self._all_features(loader, inputs)
        accuracy = {}
        for c in self.confounds:
            valid = targets[c.name] != MISSING
            if not bool(valid.any()):
                continue
            x, y = features[valid], targets[c.name][valid]
            for module in c.head.modules():
                if module is not c.head and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                if hasattr(module, "reset_running_stats"):
                    module.reset_running_stats()
            optimizer = torch.optim.Adam(c.head.parameters(), lr=self.head_refit_lr)
            loss_fn = self.domain_losses[c.name]
            c.head.train()
            for _ in range(self.head_refit_steps):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(c.head(x), y).backward()
                optimizer.step()
            with torch.no_grad():
                accuracy[f"{StateKeys.REFIT_ACC}_{c.name}"] = float((c.head(x).argmax(dim=1) == y).float().mean())
        self.head_optimizer.state.clear()
        for name, value in accuracy.items():
            self._record(name, value)
        return accuracy

    def _domain_loss(self, confound: Confound, logits: torch.Tensor, target: torch.Tensor, record: bool) -> torch.Tensor:
        """A head's cross-entropy on the samples whose target is not :data:`MISSING` (recording loss and accuracy)."""
        mask = target != MISSING
        loss = self.domain_losses[confound.name](logits, target, mask=mask)
        if record:
            self._record(f"{StateKeys.DOMAIN_LOSS}_{confound.name}", float(loss.detach()))
            hits = (logits.detach().argmax(dim=1) == target)[mask]
            if hits.numel():
                self._record(f"{StateKeys.DOMAIN_ACC}_{confound.name}", float(hits.float().mean()))
        return loss

    def _masked_targets(self, confound: Confound) -> torch.Tensor:
        """This batch's targets of a confound, :data:`MISSING` where a sample does not enter its losses."""
        t = self._targets[confound.name]
        return torch.where(self._valid(confound), t, torch.full_like(t, MISSING))

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
            "moments": self.moment_losses.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "history": list(self.history),
        }
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        if self.extractor_optimizer is not None:
            state["extractor_optimizer"] = self.extractor_optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.heads.load_state_dict(state["heads"])
        if "moments" in state:
            self.moment_losses.load_state_dict(state["moments"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.history = list(state.get("history", []))
        if self.memory is not None and "memory" in state:
            self.memory.load_state_dict(state["memory"])
        if "extractor_optimizer" in state:
            if self.mode != UnlearningMode.ALTERNATING:
                raise ConfigError(
                    f"The checkpoint holds an alternating-mode extractor optimizer, but this handler's mode is "
                    f"'{self.mode}': build the handler with mode='alternating' to resume that run."
                )
            if self.extractor_optimizer is None:  # its learning rate comes back with the saved state
                self._make_extractor_optimizer(self.extractor_lr or 1e-3)
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

