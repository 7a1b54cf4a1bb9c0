"""How ``harmonize forget`` makes a model forget: its settings, the unlearning stages they build, and the run.

:class:`ForgetSettings` names the method (:data:`FORGET_METHODS`) and its schedule; :meth:`ForgetSettings.stages`
turns them into the :class:`~harmonize.workflows.machine_unlearning.MachineUnlearningSettings` of
:func:`~harmonize.workflows.machine_unlearning.run_unlearning` (a ``SupervisedTrainer`` with a
:class:`~harmonize.handlers.MachineUnlearningHandler` per stage). :func:`unlearn_brain_age` runs them on a copy of
a trained model, then recomputes the BatchNorm statistics on the retained subjects only
(:func:`~harmonize.networks.recalibrate_batchnorm`). The measuring is :mod:`harmonize.workflows.forget_measure`,
the command's workflow and report :mod:`harmonize.workflows.forget`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch

from harmonize import defaults
from harmonize.data.dataset import make_dataloader, make_dataset
from harmonize.errors import (
    ConfigError,
    HarmonizeError,
    integer_problem,
    number_problem,
    option_value,
)
from harmonize.keys import Keys, ReconMethod
from harmonize.losses import StandardisedMSELoss
from harmonize.networks import recalibrate_batchnorm
from harmonize.workflows.brain_age import BrainAgeModel
from harmonize.workflows.machine_unlearning import (
    MachineUnlearningSettings,
    Stopwatch,
    run_unlearning,
)

__all__ = ["FORGET_METHODS", "ForgetSettings", "ForgetTargetd", "unlearn_brain_age"]

logger = logging.getLogger(__name__)

#: The methods ``harmonize forget`` runs (the single stages and the two-stage methods of reconstruction).
FORGET_METHODS: tuple[ReconMethod, ...] = (
    ReconMethod.FT, ReconMethod.GA, ReconMethod.GA_L1, ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT,
)


@dataclass
class ForgetSettings:
    """How a brain-age model forgets (defaults: :mod:`harmonize.defaults`, measured in docs/forgetting.md).

    Attributes:
        method: ``ft``, ``ga``, ``ga_l1``, ``ga_l1_ft``, ``nl`` or ``nl_ft`` (:data:`FORGET_METHODS`).
        ft_epochs: epochs of the FT stage over the retained training subjects.
        forget_epochs: epochs of the GA / GA-L1 / NL stage over the withdrawn subjects.
        learning_rate: Adam learning rate of the FT and NL stages.
        ga_learning_rate: Adam learning rate of the GA stages.
        l1_penalty: GA-L1's weight penalty.
        noise_std: NL's noise, in units of the network's age scale (standard deviations of the training ages).
        loss_ceiling: per-subject ceiling of the withdrawn subjects' loss under GA / GA-L1, in squared age standard
            deviations (0.1: an error of 0.32 standard deviations of the training ages): a subject whose loss
            reached it no longer pushes the ascent (``None``: no ceiling).
        batch_size: scans per batch (``None``: the model's training batch size).
        oracle: also retrain from scratch without the withdrawn subjects (the reference; slow).
        bootstrap: bootstrap replicates of the membership-inference interval.
        permutations: label permutations of the site probe's p-value (0: none).
        seed: seed of the batch order, the noise, the oracle and the bootstrap.
        device: where to run (``None``: the model's device).
    """

    method: ReconMethod | str = defaults.FORGET_METHOD
    ft_epochs: int = defaults.FORGET_FT_EPOCHS
    forget_epochs: int = defaults.FORGET_FORGET_EPOCHS
    learning_rate: float = defaults.FORGET_LEARNING_RATE
    ga_learning_rate: float = defaults.FORGET_GA_LEARNING_RATE
    l1_penalty: float = defaults.RECON_L1_PENALTY
    noise_std: float = 1.0
    loss_ceiling: float | None = defaults.FORGET_LOSS_CEILING
    batch_size: int | None = None
    oracle: bool = False
    bootstrap: int = defaults.MIA_BOOTSTRAP
    permutations: int = 0
    seed: int = defaults.SEED
    device: str | None = None

    def __post_init__(self) -> None:
        method, problem = option_value("method", self.method, ReconMethod)
        if method is not None and ReconMethod(method) not in FORGET_METHODS:
            problem = (f"Argument 'method': '{method}' is not a forgetting method; choose one of "
                       f"{[str(m) for m in FORGET_METHODS]} (the oracle is asked for with oracle=True / --oracle).")
        self.method = ReconMethod(method) if method is not None else self.method
        problems = [problem] + [integer_problem(n, getattr(self, n)) for n in ("ft_epochs", "forget_epochs")]
        problems += [number_problem(n, getattr(self, n)) for n in ("learning_rate", "ga_learning_rate", "noise_std")]
        problems.append(number_problem("loss_ceiling", self.loss_ceiling, optional=True))
        if self.batch_size is not None and (problem := integer_problem("batch_size", self.batch_size)):
            problems.append(f"{problem}; or None (the training batch size)")
        problems += [integer_problem(n, getattr(self, n), minimum=0) for n in ("bootstrap", "permutations")]
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("Invalid ForgetSettings.", problems=problems)

    def stages(self, model: BrainAgeModel) -> MachineUnlearningSettings:
        """The settings of :func:`~harmonize.workflows.machine_unlearning.run_unlearning` for ``model``."""
        scale = float(getattr(model.network, "age_scale", 1.0))
        return MachineUnlearningSettings(
            loss_function=StandardisedMSELoss(scale),
            learning_rate=self.learning_rate,
            ga_learning_rate=self.ga_learning_rate,
            ft_epochs=self.ft_epochs,
            ga_epochs=self.forget_epochs,
            nl_epochs=self.forget_epochs,
            l1_penalty=self.l1_penalty,
            noise_std=self.noise_std * scale,
            loss_ceiling=self.loss_ceiling,
            input_keys=(Keys.IMAGE,),
            target_key=Keys.TARGET,
            forget_key=Keys.FORGET,
            id_key=Keys.SUBJECT_ID,
            device=str(model.settings.device),
            seed=self.seed,
        )


class ForgetTargetd:
    """Dictionary transform: the age as a one-element ``target`` and the subject's ``forget`` flag.

    Args:
        forget_ids: the withdrawn subjects' ids.
        before: a transform applied first (the model's preprocessing), or ``None``.
    """

    def __init__(self, forget_ids: set[str], before: Callable[[Mapping[Hashable, Any]], Any] | None = None) -> None:
        self.forget_ids = frozenset(map(str, forget_ids))
        self.before = before

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(self.before(data) if self.before is not None else data)
        out[Keys.TARGET.value] = torch.as_tensor(out[Keys.AGE.value], dtype=torch.float32).reshape(1)
        out[Keys.FORGET.value] = torch.tensor(str(out[Keys.SUBJECT_ID.value]) in self.forget_ids)
        return out


def _loader(model: BrainAgeModel, rows: pd.DataFrame, forget_ids: set[str], batch_size: int, shuffle: bool,
            seed: int) -> Any:
    dataset = make_dataset(rows, site_index=model.site_index, transform=ForgetTargetd(forget_ids, model.transform),
                           cache=True)
    return make_dataloader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed)


def unlearn_brain_age(
    model: BrainAgeModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> tuple[BrainAgeModel, Stopwatch]:
    """The unlearned copy of ``model`` and the time it took.

    Args:
        model: the trained model (not changed).
        frame: the manifest frame.
        flags: :func:`~harmonize.data.forget_list.forget_rows` of ``frame``.
        settings: the method and its schedule.

    Returns:
        ``(unlearned model, stopwatch)``: the :class:`~harmonize.workflows.machine_unlearning.Stopwatch` holds the
        wall and CPU seconds of the stages and the BatchNorm recalibration (reading the scans is not timed); the
        model's ``seconds`` are its wall seconds.
    """
    train = frame.loc[flags.index]
    forget_ids = set(train.loc[flags, Keys.SUBJECT_ID].astype(str))
    batch_size = settings.batch_size or model.settings.batch_size
    retain_rows, forget_rows_ = train.loc[~flags], train.loc[flags]
    retain = _loader(model, retain_rows, forget_ids, batch_size, True, settings.seed)
    forget = _loader(model, forget_rows_, forget_ids, min(batch_size, len(forget_rows_)), True, settings.seed + 1)
    recalibration = _loader(model, retain_rows, forget_ids, batch_size, False, settings.seed)
    stages = settings.stages(model)
    timed = Stopwatch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        with timed:
            network, _ = run_unlearning(settings.method, model.network, retain, forget, stages)
            recalibrate_batchnorm(network, recalibration, stages.device)
    network.eval()
    bad = [n for n, p in network.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise HarmonizeError(
            f"Forgetting with {settings.method} diverged: parameters {bad[:5]} hold NaN or Inf. Lower the learning "
            "rate of the forget stage (--ga-lr) or give a loss ceiling (--loss-ceiling)."
        )
    unlearned = replace(model, network=network, seconds=timed.wall, history=list(model.history))
    logger.info("%s: forgot %d subject(s) in %.1f s (%.1f s CPU)", settings.method, len(forget_ids), timed.wall,
                timed.cpu)
    return unlearned, timed

