"""How ``harmonize forget`` makes a model forget: its settings, the unlearning stages they build, and the run.

:class:`ForgetSettings` names the method (:data:`FORGET_METHODS`) and its schedule; :meth:`ForgetSettings.stages`
turns them into the :class:`~harmonize.workflows.machine_unlearning.MachineUnlearningSettings` of
:func:`~harmonize.workflows.machine_unlearning.run_unlearning` (a ``SupervisedTrainer`` with a
:class:`~harmonize.handlers.MachineUnlearningHandler` per stage), with the model's task loss: the standardised
age error of a brain-age model (:class:`~harmonize.losses.StandardisedMSELoss`), MONAI's Dice + cross-entropy
(``DiceCELoss``, as the segmentation bundle trains) of a segmentation model. :func:`unlearn_model` runs them on a
copy of a trained model, then recomputes the BatchNorm statistics on the retained subjects only
(:func:`~harmonize.networks.recalibrate_batchnorm`); :func:`retrain_segmentation` is a segmentation model's oracle.
The measuring is :mod:`harmonize.workflows.forget_measure`, the command's workflow and report
:mod:`harmonize.workflows.forget`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
from monai.losses import DiceCELoss

from harmonize import defaults
from harmonize.data.dataset import make_dataloader, make_dataset
from harmonize.errors import (
    ConfigError,
    HarmonizeError,
    integer_problem,
    number_problem,
    option_value,
    raise_problems,
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
from harmonize.workflows.models import SegmentationModel

__all__ = [
    "FORGET_METHODS",
    "SEGMENTATION_FORGET_METHODS",
    "ForgetSettings",
    "ForgetTargetd",
    "retrain_segmentation",
    "segmentation_loss",
    "unlearn_brain_age",
    "unlearn_model",
]

logger = logging.getLogger(__name__)

#: The methods ``harmonize forget`` runs (the single stages and the two-stage methods of reconstruction).
FORGET_METHODS: tuple[ReconMethod, ...] = (
    ReconMethod.FT, ReconMethod.GA, ReconMethod.GA_L1, ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT,
)
#: Those a segmentation model can run: NL adds Gaussian noise to the targets, and a label map has no noisy version.
SEGMENTATION_FORGET_METHODS: tuple[ReconMethod, ...] = tuple(
    m for m in FORGET_METHODS if m not in (ReconMethod.NL, ReconMethod.NL_FT)
)


def segmentation_loss() -> DiceCELoss:
    """The loss a segmentation model forgets with and is audited on: Dice + cross-entropy of the label map.

    As the segmentation bundle trains (``DiceCELoss(to_onehot_y=True, softmax=True)`` on the logits and the
    ``(batch, 1, *spatial)`` label map).
    """
    return DiceCELoss(to_onehot_y=True, softmax=True)


@dataclass
class ForgetSettings:
    """How a model forgets (defaults: :mod:`harmonize.defaults`, measured on brain age in docs/forgetting.md).

    Attributes:
        method: ``ft``, ``ga``, ``ga_l1``, ``ga_l1_ft``, ``nl`` or ``nl_ft`` (:data:`FORGET_METHODS`; a segmentation
            model: :data:`SEGMENTATION_FORGET_METHODS`, no ``nl``).
        ft_epochs: epochs of the FT stage over the retained training subjects.
        forget_epochs: epochs of the GA / GA-L1 / NL stage over the withdrawn subjects.
        learning_rate: Adam learning rate of the FT and NL stages.
        ga_learning_rate: Adam learning rate of the GA stages.
        l1_penalty: GA-L1's weight penalty.
        noise_std: NL's noise, in units of the network's age scale (standard deviations of the training ages).
        loss_ceiling: a brain-age model's per-subject ceiling of the withdrawn subjects' loss under GA / GA-L1, in
            squared age standard deviations (0.1: an error of 0.32 standard deviations of the training ages): a
            subject whose loss reached it no longer pushes the ascent (``None``: no ceiling).
        segmentation_loss_ceiling: the same for a segmentation model, in units of its Dice + cross-entropy loss
            (:func:`segmentation_loss`; ``None``: no ceiling, the ascent is bounded by ``forget_epochs`` only).
        oracle_epochs: epochs of a segmentation model's oracle, trained from a fresh initialisation with Adam at
            :data:`~harmonize.defaults.LEARNING_RATE` (``None``:
            :data:`~harmonize.defaults.FORGET_SEGMENTATION_ORACLE_EPOCHS`, the segmentation bundle's ``max_epochs``);
            a brain-age oracle repeats the model's recorded training.
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
    segmentation_loss_ceiling: float | None = None
    oracle_epochs: int | None = None
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
        problems += [number_problem(n, getattr(self, n), optional=True)
                     for n in ("loss_ceiling", "segmentation_loss_ceiling")]
        if self.oracle_epochs is not None and (problem := integer_problem("oracle_epochs", self.oracle_epochs)):
            problems.append(f"{problem}; or None (the segmentation bundle's max_epochs)")
        if self.batch_size is not None and (problem := integer_problem("batch_size", self.batch_size)):
            problems.append(f"{problem}; or None (the training batch size)")
        problems += [integer_problem(n, getattr(self, n), minimum=0) for n in ("bootstrap", "permutations")]
        raise_problems("ForgetSettings", problems)

    def stages(self, model: BrainAgeModel | SegmentationModel) -> MachineUnlearningSettings:
        """The settings of :func:`~harmonize.workflows.machine_unlearning.run_unlearning` for ``model``.

        Raises:
            ConfigError: ``nl`` or ``nl_ft`` for a segmentation model, or settings of the other task
                (``oracle_epochs`` or ``segmentation_loss_ceiling`` for a brain-age model).
        """
        common = {
            "learning_rate": self.learning_rate, "ga_learning_rate": self.ga_learning_rate,
            "ft_epochs": self.ft_epochs, "ga_epochs": self.forget_epochs, "nl_epochs": self.forget_epochs,
            "l1_penalty": self.l1_penalty, "input_keys": (Keys.IMAGE,), "forget_key": Keys.FORGET,
            "id_key": Keys.SUBJECT_ID, "device": _device(model), "seed": self.seed,
        }
        if isinstance(model, BrainAgeModel):
            given = [n for n in ("segmentation_loss_ceiling", "oracle_epochs") if getattr(self, n) is not None]
            if given:
                raise ConfigError(f"ForgetSettings {given} are for segmentation models; a brain-age model's ascent is "
                                  "bounded by loss_ceiling, and its oracle repeats the model's recorded training.")
            scale = float(getattr(model.network, "age_scale", 1.0))
            return MachineUnlearningSettings(loss_function=StandardisedMSELoss(scale), noise_std=self.noise_std * scale,
                                             loss_ceiling=self.loss_ceiling, target_key=Keys.TARGET, **common)
        if self.method not in SEGMENTATION_FORGET_METHODS:
            raise ConfigError(
                f"Argument 'method': {self.method} trains on the withdrawn scans with noisy targets, and a label map "
                f"has no noisy version: a segmentation model forgets with one of "
                f"{[str(m) for m in SEGMENTATION_FORGET_METHODS]}."
            )
        epochs = self.oracle_epochs or defaults.FORGET_SEGMENTATION_ORACLE_EPOCHS
        return MachineUnlearningSettings(loss_function=segmentation_loss(), loss_ceiling=self.segmentation_loss_ceiling,
                                         target_key=Keys.LABEL, oracle_epochs=epochs, **common)


def _device(model: BrainAgeModel | SegmentationModel) -> str:
    """Where ``model`` runs."""
    return str(model.settings.device if isinstance(model, BrainAgeModel) else model.device)


def _batch_size(model: BrainAgeModel | SegmentationModel, settings: ForgetSettings) -> int:
    """Scans per batch: the settings', else the model's training batch size."""
    return settings.batch_size or (model.settings.batch_size if isinstance(model, BrainAgeModel) else model.batch_size)


class ForgetTargetd:
    """Dictionary transform: the subject's ``forget`` flag and, for brain age, the age as a one-element ``target``.

    Args:
        forget_ids: the withdrawn subjects' ids.
        before: a transform applied first (the model's preprocessing), or ``None``.
        age_target: write the ``target`` (a segmentation model's target is the ``label`` map, left as it is).
    """

    def __init__(self, forget_ids: set[str], before: Callable[[Mapping[Hashable, Any]], Any] | None = None,
                 age_target: bool = True) -> None:
        self.forget_ids = frozenset(map(str, forget_ids))
        self.before = before
        self.age_target = age_target

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(self.before(data) if self.before is not None else data)
        if self.age_target:
            out[Keys.TARGET.value] = torch.as_tensor(out[Keys.AGE.value], dtype=torch.float32).reshape(1)
        out[Keys.FORGET.value] = torch.tensor(str(out[Keys.SUBJECT_ID.value]) in self.forget_ids)
        return out


def _loader(model: BrainAgeModel | SegmentationModel, rows: pd.DataFrame, forget_ids: set[str], batch_size: int,
            shuffle: bool, seed: int) -> Any:
    transform = ForgetTargetd(forget_ids, model.transform, age_target=isinstance(model, BrainAgeModel))
    dataset = make_dataset(rows, site_index=model.site_index, transform=transform, cache=True)
    return make_dataloader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed)


def _timed_run(
    method: ReconMethod, model: BrainAgeModel | SegmentationModel, retain: Any, forget: Any, recalibration: Any,
    stages: MachineUnlearningSettings,
) -> tuple[torch.nn.Module, Stopwatch]:
    """``method``'s stages on a copy of ``model``'s network, then its BatchNorm statistics on ``recalibration``.

    Seeded with ``stages.seed`` (the global generator is left as it was); the network is returned in eval mode.

    Returns:
        ``(network, stopwatch)``: the stopwatch times the stages and the recalibration.
    """
    timed = Stopwatch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stages.seed)
        with timed:
            network, _ = run_unlearning(method, model.network, retain, forget, stages)
            recalibrate_batchnorm(network, recalibration, stages.device)
    return network.eval(), timed


def unlearn_model(
    model: BrainAgeModel | SegmentationModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> tuple[BrainAgeModel | SegmentationModel, Stopwatch]:
    """The unlearned copy of a brain-age or segmentation model and the time it took.

    Args:
        model: the trained model (not changed).
        frame: the manifest frame.
        flags: :func:`~harmonize.data.forget_list.forget_rows` of ``frame``.
        settings: the method and its schedule.

    Returns:
        ``(unlearned model, stopwatch)``: the :class:`~harmonize.workflows.machine_unlearning.Stopwatch` holds the
        wall and CPU seconds of the stages and the BatchNorm recalibration (reading the scans is not timed); the
        model's ``seconds`` are its wall seconds.

    Raises:
        ConfigError: a method the model's task cannot run (:meth:`ForgetSettings.stages`).
        HarmonizeError: the unlearned weights hold NaN or Inf.
    """
    stages = settings.stages(model)
    train = frame.loc[flags.index]
    forget_ids = set(train.loc[flags, Keys.SUBJECT_ID].astype(str))
    batch_size = _batch_size(model, settings)
    retain_rows, forget_rows_ = train.loc[~flags], train.loc[flags]
    retain = _loader(model, retain_rows, forget_ids, batch_size, True, settings.seed)
    forget = _loader(model, forget_rows_, forget_ids, min(batch_size, len(forget_rows_)), True, settings.seed + 1)
    recalibration = _loader(model, retain_rows, forget_ids, batch_size, False, settings.seed)
    network, timed = _timed_run(settings.method, model, retain, forget, recalibration, stages)
    bad = [n for n, p in network.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        ceiling = "--loss-ceiling" if isinstance(model, BrainAgeModel) else "--segmentation-loss-ceiling"
        raise HarmonizeError(
            f"Forgetting with {settings.method} diverged: parameters {bad[:5]} hold NaN or Inf. Lower the learning "
            f"rate of the forget stage (--ga-lr) or give a loss ceiling ({ceiling})."
        )
    unlearned = replace(model, network=network, seconds=timed.wall, history=list(model.history))
    logger.info("%s: forgot %d subject(s) in %.1f s (%.1f s CPU)", settings.method, len(forget_ids), timed.wall,
                timed.cpu)
    return unlearned, timed


#: The former name of :func:`unlearn_model`, from when it forgot from brain-age models only.
unlearn_brain_age = unlearn_model


def retrain_segmentation(
    model: SegmentationModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> tuple[SegmentationModel, Stopwatch]:
    """A segmentation model's oracle: its network trained from a fresh initialisation on the retained scans only.

    :func:`~harmonize.workflows.machine_unlearning.run_unlearning`'s oracle (an FT-handler stage from scratch, the
    segmentation loss, Adam at :data:`~harmonize.defaults.LEARNING_RATE` for ``settings.oracle_epochs``), then the
    BatchNorm statistics of the retained scans. The bundle's domain head is not retrained: the oracle is a plain
    segmenter.

    Returns:
        ``(oracle, stopwatch)``: the stopwatch times the training and the recalibration (not reading the scans).
    """
    stages = replace(replace(settings, method=ReconMethod.FT).stages(model), learning_rate=defaults.LEARNING_RATE)
    train = frame.loc[flags.index]
    retain_rows = train.loc[~flags]
    batch_size = _batch_size(model, settings)
    retain = _loader(model, retain_rows, set(), batch_size, True, settings.seed)
    recalibration = _loader(model, retain_rows, set(), batch_size, False, settings.seed)
    logger.info("oracle: training from scratch on %d of %d training scans (%d epochs)", len(retain_rows), len(train),
                stages.oracle_epochs)
    network, timed = _timed_run(ReconMethod.ORACLE, model, retain, None, recalibration, stages)
    return replace(model, network=network, seconds=timed.wall, history=[]), timed
