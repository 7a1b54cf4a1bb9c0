"""Stop training at the first NaN or Inf loss, with a message that says where and what to do.

Ignite's ``TerminateOnNan`` stops the engine quietly after the optimizer step has already written NaN into the
weights. :class:`StopOnNonFiniteLoss` checks the loss as soon as it is computed (MONAI's ``LOSS_COMPLETED``,
before the backward pass and the optimizer step) and raises a :class:`~harmonize.errors.HarmonizeError`, so the
weights (and any checkpoint written after, see :class:`~harmonize.handlers.TrainingCheckpoint`) stay finite.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from harmonize.errors import HarmonizeError
from harmonize.handlers._engine import refuse_evaluator
from harmonize.keys import Keys

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["StopOnNonFiniteLoss"]

logger = logging.getLogger(__name__)

#: How many subject ids of the offending batch the message names.
_SHOWN_SUBJECTS = 8


class StopOnNonFiniteLoss:
    """Raise a clear error when a trainer's loss is NaN or Inf, before it is back-propagated.

    Attach it before handlers that add to the loss (e.g. ``DomainUnlearningHandler``) to check the task loss
    alone. The message names the epoch, the iteration, the batch's subjects, and whether the batch's inputs or
    targets hold non-finite values, with the usual fixes (lower the learning rate, check the inputs).

    Args:
        loss_key: key of the loss in ``engine.state.output`` (MONAI's ``CommonKeys.LOSS``).
        what: how the message calls the loss.
    """

    def __init__(self, loss_key: str = "loss", what: str = "task loss") -> None:
        self.loss_key = loss_key
        self.what = what

    def attach(self, engine: Engine) -> None:
        """Check the loss at every ``IterationEvents.LOSS_COMPLETED`` of a MONAI trainer.

        Raises:
            ConfigError: the engine is an evaluator, which computes no loss (the check would never run).
        """
        from monai.engines.utils import IterationEvents

        refuse_evaluator(engine, type(self).__name__, "an evaluator computes no loss, so nothing would be checked")
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Raise :class:`~harmonize.errors.HarmonizeError` if the loss is not finite.

        Raises:
            HarmonizeError: naming the iteration, the epoch, the batch's subjects and the likely cause.
        """
        output = engine.state.output
        loss = output.get(self.loss_key) if isinstance(output, Mapping) else None
        if loss is None or bool(torch.isfinite(torch.as_tensor(loss).detach()).all()):
            return
        state = engine.state
        length = state.epoch_length
        in_epoch = state.iteration - (state.epoch - 1) * length if length else state.iteration
        value = float(torch.as_tensor(loss).detach().float().mean())
        message = (
            f"The {self.what} is {value} at iteration {state.iteration} (epoch {state.epoch}, batch {in_epoch} of "
            f"{length}); training stopped before back-propagating it, so no checkpoint is written after it."
        )
        subjects = _subjects(getattr(state, "batch", None))
        if subjects:
            message += f" Subjects of the batch: {subjects}."
        raise HarmonizeError(message + _advice(output, engine))


def _advice(output: Mapping[str, Any], engine: Engine) -> str:
    """The likely cause of a non-finite loss and what to do about it."""
    causes = []
    if _non_finite(output.get("image")):
        causes.append("the batch's images hold NaN or Inf voxels")
    label = output.get("label")
    if torch.is_tensor(label) and label.is_floating_point() and bool(torch.isinf(label).any()):
        causes.append("the batch's targets hold Inf")  # NaN targets are unlabelled samples, which are masked
    if causes:
        return f" Cause found: {'; '.join(causes)}: check those scans (harmonize validate) and preprocess them again."
    network = getattr(engine, "network", None)
    diverged = network is not None and any(not bool(torch.isfinite(p).all()) for p in network.parameters())
    lr = _learning_rate(engine)
    return (
        (" The network's weights already hold NaN or Inf (the previous step diverged)" if diverged
         else " The inputs are finite, so the training diverged")
        + ": lower the learning rate" + (f" (now {lr:g})" if lr is not None else "")
        + " or beta, or check the inputs' intensity range."
    )


def _non_finite(value: Any) -> bool:
    if not torch.is_tensor(value) or not value.is_floating_point():
        return False
    return not bool(torch.isfinite(value.detach()).all())


def _subjects(batch: Any) -> list[str]:
    if not isinstance(batch, Mapping):
        return []
    ids = batch.get(Keys.SUBJECT_ID.value)
    return [str(s) for s in ids][:_SHOWN_SUBJECTS] if isinstance(ids, (list, tuple)) else []


def _learning_rate(engine: Engine) -> float | None:
    optimizer = getattr(engine, "optimizer", None)
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups else None
