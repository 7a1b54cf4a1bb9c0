"""Machine unlearning as a MONAI engine handler: one fine-tuning stage of Xue et al.'s methods.

Xue et al., "Erase to Enhance: Data-Efficient Machine Unlearning in MRI Reconstruction" (MIDL 2024) adapt three
unlearning methods to image-to-image networks. Starting from the *original* model (trained on retain + forget),
each method runs a short fine-tuning stage:

- ``ft``: fine-tune on (a fraction of) the retain set only;
- ``ga``: gradient *ascent* on the forget set (the loss of forget samples is negated);
- ``ga_l1``: gradient ascent plus an L1 penalty on the weights (sparsity helps unlearning, Jia et al. 2023);
- ``nl``: noisy labels: train on forget inputs whose targets are replaced by (or mixed with) Gaussian noise.

The composite methods ``ga_l1_ft`` and ``nl_ft`` are two stages (``ga_l1`` or ``nl``, then ``ft``); see
:func:`harmonize.workflows.machine_unlearning.run_unlearning`.

:class:`MachineUnlearningHandler` turns an ordinary ``SupervisedTrainer`` into one such stage. It is
model-agnostic: it only needs a per-sample boolean ``forget`` flag in each batch dict, and it uses the trainer's
own network and loss function. It hooks three events of ``SupervisedTrainer._iteration``:

- ``ITERATION_STARTED`` (the batch dict is ``engine.state.batch``, read by the trainer right after): ``ft``
  drops forget samples, so they never reach the forward pass (nor normalisation statistics); ``nl`` replaces
  the targets of forget samples by noisy ones;
- ``LOSS_COMPLETED`` (the trainer back-propagates ``engine.state.output["loss"]`` right after): ``ga`` /
  ``ga_l1`` rewrite the loss as ``mean_i(w_i * loss_i)`` with ``w_i = -1`` for forget samples and
  ``retain_weight`` for retain samples, add the L1 penalty (``ga_l1``), and record the losses on
  ``engine.state`` (:class:`~harmonize.keys.StateKeys` ``forget_loss`` / ``retain_loss``).

Bounding gradient ascent: ascent has no minimum, so unbounded it drives the loss (and weights) to infinity.
Two bounds are offered: ``loss_ceiling`` clamps each forget sample's loss at the ceiling before negation, so a
sample whose loss is already above it contributes no gradient (with the SSIM loss, whose maximum is 2, a
ceiling of 1 means "stop pushing once SSIM is 0"); ``stop_forget_loss`` terminates the stage once the mean
forget loss of a batch reaches the bound (that batch's gradient is zeroed first).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, optional_import

from harmonize import defaults
from harmonize.errors import ConfigError, number_problem, option_problem, option_value, raise_problems
from harmonize.handlers._engine import require_optimizer, when_built
from harmonize.keys import Keys, NoiseMode, ReconMethod, StateKeys

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["STAGE_METHODS", "MachineUnlearningHandler", "stage_problems"]

logger = logging.getLogger(__name__)

#: Methods that are a single stage (what the handler runs).
STAGE_METHODS: tuple[ReconMethod, ...] = (ReconMethod.FT, ReconMethod.GA, ReconMethod.GA_L1, ReconMethod.NL)
#: Default weight of the L1 penalty of ``ga_l1`` (sum of absolute weights).
L1_PENALTY = defaults.RECON_L1_PENALTY
#: Default standard deviation of the noise of ``nl`` (targets are scaled to [0, 1]).
NOISE_STD = defaults.RECON_NOISE_STD
#: Tolerances of the check that one unreduced loss call gives the per-sample losses (float32 rounding).
BATCHED_RTOL = 1e-5
BATCHED_ATOL = 1e-6


def stage_problems(
    l1_penalty: object = L1_PENALTY,
    noise_std: object = NOISE_STD,
    loss_ceiling: object = None,
    stop_forget_loss: object = None,
    retain_weight: object = 1.0,
    noise_mode: object = NoiseMode.ADD,
) -> list[str]:
    """The problems with the loss settings of an unlearning stage, one line each (empty when all are valid).

    The handler and the settings that build it
    (:class:`~harmonize.workflows.machine_unlearning.MachineUnlearningSettings`,
    :class:`~harmonize.workflows.recon_settings.ReconStageSettings`) check them here, with one wording.
    """
    found = [number_problem("l1_penalty", l1_penalty, strict=False), number_problem("noise_std", noise_std),
             number_problem("loss_ceiling", loss_ceiling, optional=True),
             number_problem("stop_forget_loss", stop_forget_loss, optional=True),
             number_problem("retain_weight", retain_weight, strict=False),
             option_problem("noise_mode", noise_mode, NoiseMode)]
    return [p for p in found if p]


def _batch_size(batch: Mapping[str, Any], key: str) -> int:
    value = batch[key]
    return int(value.shape[0]) if isinstance(value, torch.Tensor) else len(value)


def _unreduced(loss_function: Any) -> Any:
    """A shallow copy of ``loss_function`` with ``reduction="none"``, or ``None`` if it has no ``reduction``."""
    if not isinstance(getattr(loss_function, "reduction", None), str):
        return None
    unreduced = copy.copy(loss_function)
    unreduced.reduction = "none"
    return unreduced


def _looped_losses(loss_function: Any, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``loss_function`` on each sample alone, averaged (one call per sample)."""
    return torch.stack([loss_function(pred[i : i + 1], target[i : i + 1]).mean() for i in range(pred.shape[0])])


def _per_sample_mean(losses: torch.Tensor, size: int) -> torch.Tensor | None:
    """Unreduced losses averaged over every dimension but the first (``None`` if that is not the batch's)."""
    if losses.ndim == 0 or losses.shape[0] != size:
        return None
    return losses.reshape(size, -1).mean(dim=1)


def _select(batch: Mapping[str, Any], keep: torch.Tensor, size: int) -> dict[str, Any]:
    """Keep the samples ``keep`` (bool, length ``size``) of every per-sample entry of a collated batch."""
    index = torch.nonzero(keep).flatten()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == size:
            out[key] = value[index.to(value.device)]
        elif isinstance(value, (list, tuple)) and len(value) == size:
            out[key] = type(value)(value[i] for i in index.tolist())
        else:
            out[key] = value
    return out


class MachineUnlearningHandler:
    """One unlearning stage (FT, GA, GA-L1 or NL) for an ordinary ``SupervisedTrainer``.

    Args:
        method: ``ft``, ``ga``, ``ga_l1`` or ``nl`` (:data:`STAGE_METHODS`).
        forget_key: batch key of the per-sample boolean forget flag.
        target_key: batch key of the targets (rewritten by ``nl``).
        id_key: batch key of the sample or volume id, recorded in :attr:`seen_ids` (``None`` to skip).
        l1_penalty: weight of the L1 weight penalty (``ga_l1`` only).
        noise_std: standard deviation of the ``nl`` noise.
        noise_mode: ``add`` (target + noise) or ``replace`` (noise only), :class:`~harmonize.keys.NoiseMode`.
        loss_ceiling: per-sample ceiling of the forget loss under gradient ascent (``None``: no ceiling).
        stop_forget_loss: end the stage once a batch's mean forget loss reaches this (``None``: never).
        retain_weight: weight of retain samples that share a batch with forget samples under ``ga``/``ga_l1``.
        seed: seed of the ``nl`` noise generator.

    Attributes:
        seen_ids: how many times each id went into a forward pass of this stage (an audit trail: after an
            ``ft`` stage it holds no forget id).
        num_seen: ``{"forget": n, "retain": n}`` samples that went into forward passes.
        num_dropped: forget samples that ``ft`` removed from batches.

    Raises:
        ConfigError: an unknown or composite method, or a setting out of range.
    """

    def __init__(
        self,
        method: ReconMethod | str,
        forget_key: str = Keys.FORGET,
        target_key: str = Keys.TARGET,
        id_key: str | None = Keys.VOLUME_ID,
        l1_penalty: float = L1_PENALTY,
        noise_std: float = NOISE_STD,
        noise_mode: NoiseMode | str = NoiseMode.ADD,
        loss_ceiling: float | None = None,
        stop_forget_loss: float | None = None,
        retain_weight: float = 1.0,
        seed: int = 0,
    ) -> None:
        method, problem = option_value("method", method, ReconMethod)
        if method is not None and method not in STAGE_METHODS:
            problem = (f"Argument 'method': {method!r} is not a single unlearning stage; the handler runs one of "
                       f"{[str(m) for m in STAGE_METHODS]}. Composite methods (ga_l1_ft, nl_ft) are two stages and "
                       "the oracle is training from scratch: use harmonize.workflows.machine_unlearning.run_unlearning.")
        problems = [problem] if problem else []
        problems += stage_problems(l1_penalty, noise_std, loss_ceiling, stop_forget_loss, retain_weight, noise_mode)
        raise_problems("MachineUnlearningHandler", problems)
        self.method = ReconMethod(method)
        self.forget_key = forget_key
        self.target_key = target_key
        self.id_key = id_key
        self.l1_penalty = float(l1_penalty)
        self.noise_std = float(noise_std)
        self.noise_mode = NoiseMode(option_value("noise_mode", noise_mode, NoiseMode)[0])  # checked above
        self.loss_ceiling = loss_ceiling
        self.stop_forget_loss = stop_forget_loss
        self.retain_weight = float(retain_weight)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.seen_ids: Counter[str] = Counter()
        self.num_seen = {"forget": 0, "retain": 0}
        self.num_dropped = 0
        self._forget: torch.Tensor | None = None
        self._checked_loss: Any = None  # the loss function whose batched call was checked
        self._batched: Any = None  # its unreduced copy, if that gives the per-sample losses

    # ------------------------------------------------------------------------------------------------ attach
    def attach(self, engine: Engine) -> None:
        """Register the stage's callbacks on a ``SupervisedTrainer`` (or any MONAI trainer firing its events).

        Raises:
            ConfigError: the engine has no optimizer (e.g. an evaluator): the stage would change nothing.
        """
        when_built(engine, lambda built: require_optimizer(built, type(self).__name__))
        engine.add_event_handler(Events.ITERATION_STARTED, self.prepare_batch)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.rewrite_loss)
        engine.add_event_handler(Events.COMPLETED, self.log_summary)

    # ------------------------------------------------------------------------------------------ batch stage
    def forget_flags(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's per-sample forget flags as a CPU bool tensor.

        A batch without ``forget_key`` counts as all-retain for ``ft`` and is an error otherwise.

        Raises:
            ConfigError: the key is missing (GA, NL) or its length does not match the batch.
        """
        if self.forget_key not in batch:
            sized = [k for k, v in batch.items() if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) > 0]
            if self.method == ReconMethod.FT and sized:
                return torch.zeros(_batch_size(batch, sized[0]), dtype=torch.bool)
            raise ConfigError(
                f"The batch has no '{self.forget_key}' key, which {self.method} needs to know which samples to "
                f"forget; add a per-sample boolean '{self.forget_key}' to each sample. Batch keys: {sorted(batch)}."
            )
        flags = torch.as_tensor(batch[self.forget_key]).flatten().bool().cpu()
        if self.target_key in batch and flags.numel() != _batch_size(batch, self.target_key):
            size = _batch_size(batch, self.target_key)
            raise ConfigError(f"'{self.forget_key}' has {flags.numel()} flags for a batch of {size} samples.")
        return flags

    def prepare_batch(self, engine: Engine) -> None:
        """``ITERATION_STARTED``: drop forget samples (``ft``) or give them noisy targets (``nl``)."""
        batch = engine.state.batch
        flags = self.forget_flags(batch)
        if self.method == ReconMethod.FT and bool(flags.any()):
            if bool(flags.all()):
                raise ConfigError(
                    "The ft stage got a batch made only of forget samples: fine-tuning must never see forget data. "
                    "Give the ft stage a loader over the retain set."
                )
            batch = _select(batch, ~flags, flags.numel())
            self.num_dropped += int(flags.sum())
            flags = flags[~flags]
        elif self.method == ReconMethod.NL and bool(flags.any()):
            batch = dict(batch)
            batch[self.target_key] = self.noisy_targets(batch[self.target_key], flags)
        engine.state.batch = batch
        self._forget = flags
        self.num_seen["forget"] += int(flags.sum())
        self.num_seen["retain"] += int((~flags).sum())
        if self.id_key is not None and self.id_key in batch:
            self.seen_ids.update(str(v) for v in batch[self.id_key])

    def noisy_targets(self, target: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """Targets with Gaussian noise added to (``add``) or replacing (``replace``) those of forget samples."""
        noise = torch.randn(target.shape, generator=self.generator, dtype=torch.float32).to(target)
        noise = noise * self.noise_std
        noisy = noise if self.noise_mode == NoiseMode.REPLACE else target + noise
        where = flags.to(target.device).view(-1, *([1] * (target.ndim - 1)))
        return torch.where(where, noisy, target)

    # ------------------------------------------------------------------------------------------- loss stage
    def per_sample_losses(self, engine: Engine) -> torch.Tensor:
        """Loss of each sample of the current batch, with the trainer's loss function (keeps the graph).

        Sample ``i``'s loss is ``loss_function(pred[i:i+1], target[i:i+1]).mean()``. A loss with a ``reduction``
        (MONAI and torch losses) gives all of them in one call with ``reduction="none"``, each averaged over its
        non-batch dimensions, once the first batch has shown that this equals the per-sample calls (it does not
        for a loss that normalises over the batch, e.g. class weights or ``batch=True``: those keep one call per
        sample).
        """
        pred, target = engine.state.output[CommonKeys.PRED], engine.state.output[CommonKeys.LABEL]
        size = pred.shape[0]
        if self._checked_loss is not engine.loss_function:  # first batch with this loss: check the batched call
            self._checked_loss, self._batched = engine.loss_function, None
            looped = _looped_losses(engine.loss_function, pred, target)
            unreduced = _unreduced(engine.loss_function)
            if unreduced is not None:
                with torch.no_grad():
                    batched = _per_sample_mean(unreduced(pred, target), size)
                if batched is not None and torch.allclose(batched, looped.detach(), BATCHED_RTOL, BATCHED_ATOL):
                    self._batched = unreduced
            return looped
        if self._batched is not None:
            batched = _per_sample_mean(self._batched(pred, target), size)
            if batched is not None:
                return batched
        return _looped_losses(engine.loss_function, pred, target)

    def weight_penalty(self, network: torch.nn.Module) -> torch.Tensor:
        """``l1_penalty`` times the sum of absolute values of the trainable weights."""
        params = [p for p in network.parameters() if p.requires_grad]
        return self.l1_penalty * torch.stack([p.abs().sum() for p in params]).sum()

    def rewrite_loss(self, engine: Engine) -> None:
        """``LOSS_COMPLETED``: negate forget losses (``ga``/``ga_l1``), add the L1 penalty, record losses."""
        output = engine.state.output
        flags = self._forget if self._forget is not None else torch.zeros(0, dtype=torch.bool)
        ascent = self.method in (ReconMethod.GA, ReconMethod.GA_L1)
        if not ascent or not bool(flags.any()):
            name = StateKeys.FORGET_LOSS if self.method == ReconMethod.NL else StateKeys.RETAIN_LOSS
            setattr(engine.state, name, float(output[CommonKeys.LOSS].detach()))
            if ascent and self.method == ReconMethod.GA_L1:
                output[CommonKeys.LOSS] = output[CommonKeys.LOSS] + self.weight_penalty(engine.network)
            return
        losses = self.per_sample_losses(engine)
        flags = flags.to(losses.device)
        forget_losses = losses[flags]
        forget_mean = float(forget_losses.detach().mean())
        setattr(engine.state, StateKeys.FORGET_LOSS, forget_mean)
        if bool((~flags).any()):
            setattr(engine.state, StateKeys.RETAIN_LOSS, float(losses[~flags].detach().mean()))
        capped = forget_losses.clamp(max=self.loss_ceiling) if self.loss_ceiling is not None else forget_losses
        total = (self.retain_weight * losses[~flags].sum() - capped.sum()) / losses.numel()
        if self.method == ReconMethod.GA_L1:
            total = total + self.weight_penalty(engine.network)
        if self.stop_forget_loss is not None and forget_mean >= self.stop_forget_loss:
            logger.info(
                "%s: forget loss %.4f reached the bound %.4f at iteration %d; stopping the stage",
                self.method, forget_mean, self.stop_forget_loss, engine.state.iteration,
            )
            total = total * 0.0
            engine.terminate()
        output[CommonKeys.LOSS] = total

    def log_summary(self, engine: Engine) -> None:
        """``COMPLETED``: log what the stage saw."""
        logger.info(
            "%s stage done after %d iterations: %d forget and %d retain samples seen, %d forget samples dropped",
            self.method, engine.state.iteration, self.num_seen["forget"], self.num_seen["retain"], self.num_dropped,
        )

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the noise generator, the audit counters."""
        return {
            "generator": self.generator.get_state(),
            "seen_ids": dict(self.seen_ids),
            "num_seen": dict(self.num_seen),
            "num_dropped": self.num_dropped,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
        self.seen_ids = Counter(state["seen_ids"])
        self.num_seen = dict(state["num_seen"])
        self.num_dropped = int(state["num_dropped"])
