"""Machine-unlearning methods as sequences of ``SupervisedTrainer`` stages (Xue et al., "Erase to Enhance").

Every method starts from the *original* model (trained on retain + forget) and leaves it untouched: it works on
a copy. Each stage is an ordinary MONAI ``SupervisedTrainer`` with a
:class:`~harmonize.handlers.machine_unlearning.MachineUnlearningHandler`:

========== ==============================================================================
method     stages
========== ==============================================================================
ft         FT on the retain loader (``ft_epochs``)
ga         GA on the forget loader (``ga_epochs``)
ga_l1      GA-L1 on the forget loader (``ga_epochs``)
ga_l1_ft   GA-L1 on the forget loader, then FT on the retain loader
nl         NL on the forget loader (``nl_epochs``)
nl_ft      NL on the forget loader, then FT on the retain loader
oracle     a freshly initialised model trained on the retain loader (``oracle_epochs``), FT handler as audit
========== ==============================================================================

The FT variants use whatever retain loader they are given: pass a loader over a fraction of the retain set to
reproduce the paper's data-efficient setting (10 %). The functions are model-agnostic: any network, any loss.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatch
from torch import nn

from harmonize.devices import resolve_device
from harmonize.errors import ConfigError, check_option, integer_problem, number_problem, raise_problems
from harmonize.handlers.machine_unlearning import (
    L1_PENALTY,
    NOISE_STD,
    MachineUnlearningHandler,
    stage_problems,
)
from harmonize.keys import Keys, NoiseMode, ReconMethod
from harmonize.progress import ProgressHandler

__all__ = [
    "METHOD_STAGES",
    "MachineUnlearningSettings",
    "PrepareBatchKeys",
    "Stopwatch",
    "load_model",
    "method_iterations",
    "reinitialised_copy",
    "run_unlearning",
    "train_stage",
]

logger = logging.getLogger(__name__)

#: The stages of each method (the oracle is special: a fresh model trained with an FT-handler stage).
METHOD_STAGES: dict[ReconMethod, tuple[ReconMethod, ...]] = {
    ReconMethod.FT: (ReconMethod.FT,),
    ReconMethod.GA: (ReconMethod.GA,),
    ReconMethod.GA_L1: (ReconMethod.GA_L1,),
    ReconMethod.GA_L1_FT: (ReconMethod.GA_L1, ReconMethod.FT),
    ReconMethod.NL: (ReconMethod.NL,),
    ReconMethod.NL_FT: (ReconMethod.NL, ReconMethod.FT),
    ReconMethod.ORACLE: (ReconMethod.FT,),
}


class PrepareBatchKeys(PrepareBatch):
    """``prepare_batch`` for a ``SupervisedTrainer`` that reads named keys of a batch dict.

    The first input key is the network's positional input; further input keys are passed as extra positional
    arguments (e.g. VarNet's ``(masked_kspace, mask)``).

    Args:
        input_keys: batch keys of the network inputs, in call order.
        target_key: batch key of the target (``None`` for none).
    """

    def __init__(self, input_keys: Sequence[str] = (Keys.IMAGE,), target_key: str | None = Keys.TARGET) -> None:
        if not input_keys:
            raise ConfigError("PrepareBatchKeys needs at least one input key.")
        self.input_keys = tuple(input_keys)
        self.target_key = target_key

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, tuple, dict]:
        missing = [k for k in (*self.input_keys, self.target_key) if k is not None and k not in batchdata]
        if missing:
            raise ConfigError(f"The batch lacks key(s) {missing}; it has {sorted(batchdata)}.")
        def move(key: str) -> torch.Tensor:
            return torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)

        inputs = [move(k) for k in self.input_keys]
        target = move(self.target_key) if self.target_key is not None else None
        if len(inputs) == 1:
            return inputs[0], target
        return inputs[0], target, tuple(inputs[1:]), {}


@dataclass
class Stopwatch:
    """Wall and CPU seconds of the work timed under it, summed over its ``with`` blocks.

    CPU seconds are the process's (``time.process_time``: every thread, user and system), so they do not grow
    while other jobs hold the cores, as wall seconds do; with several torch threads they add up the threads.

    Attributes:
        wall: wall-clock seconds.
        cpu: CPU seconds of this process.
    """

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall, cpu = self._started
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu

    def add(self, other: Stopwatch) -> None:
        """Add ``other``'s seconds to these."""
        self.wall += other.wall
        self.cpu += other.cpu


@dataclass
class MachineUnlearningSettings:
    """Settings of the unlearning stages (Xue et al.: Adam 1e-3, 5 unlearning epochs, FT on 10 % of retain).

    Attributes:
        loss_function: the training loss (default: ``nn.MSELoss()``; reconstruction uses
            :class:`~harmonize.losses.SSIML1Loss`).
        learning_rate: Adam learning rate of FT and NL stages and of the oracle.
        ga_learning_rate: Adam learning rate of GA stages (``None``: ``learning_rate``).
        ft_epochs: epochs of an FT stage (over the retain loader it is given).
        ga_epochs: epochs of a GA / GA-L1 stage (over the forget loader).
        nl_epochs: epochs of an NL stage (over the forget loader).
        oracle_epochs: epochs of the oracle (training from scratch on the retain loader).
        l1_penalty: L1 weight penalty of GA-L1.
        noise_std: noise of NL.
        noise_mode: ``add`` or ``replace`` (:class:`~harmonize.keys.NoiseMode`).
        loss_ceiling: per-sample ceiling of forget losses under GA (see the handler).
        retain_weight: weight of retain samples that share a batch with forget samples in a GA stage (a forget
            loader that also yields retain samples makes GA descend on them while it ascends on the forget ones).
        stop_forget_loss: stop a GA stage when a batch's forget loss reaches this.
        input_keys: batch keys of the network inputs (default: the network's ``input_keys`` or ``(image,)``).
        target_key: batch key of the targets.
        forget_key: batch key of the forget flags.
        id_key: batch key of ids recorded by the handler.
        network_factory: builds a fresh network (needed when the checkpoint is a path or state dict).
        device: torch device.
        seed: seed of the oracle's initialisation and of the NL noise.
        progress: show progress per stage (a bar on a terminal, else a line per epoch: :mod:`harmonize.progress`).
    """

    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    learning_rate: float = 1e-3
    ga_learning_rate: float | None = None
    ft_epochs: int = 5
    ga_epochs: int = 5
    nl_epochs: int = 5
    oracle_epochs: int = 20
    l1_penalty: float = L1_PENALTY
    noise_std: float = NOISE_STD
    noise_mode: NoiseMode | str = NoiseMode.ADD
    loss_ceiling: float | None = None
    retain_weight: float = 1.0
    stop_forget_loss: float | None = None
    input_keys: Sequence[str] | None = None
    target_key: str = Keys.TARGET
    forget_key: str = Keys.FORGET
    id_key: str | None = Keys.VOLUME_ID
    network_factory: Callable[[], nn.Module] | None = None
    device: str = "cpu"
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`~harmonize.errors.ConfigError` listing every setting out of range (run on construction)."""
        problems = [integer_problem(name, getattr(self, name))
                    for name in ("ft_epochs", "ga_epochs", "nl_epochs", "oracle_epochs")]
        problems += [number_problem("learning_rate", self.learning_rate),
                     number_problem("ga_learning_rate", self.ga_learning_rate, optional=True)]
        problems = [p for p in problems if p]
        problems += stage_problems(self.l1_penalty, self.noise_std, self.loss_ceiling, self.stop_forget_loss,
                                   self.retain_weight, self.noise_mode)
        raise_problems("MachineUnlearningSettings", problems)

    def handler(self, stage: ReconMethod) -> MachineUnlearningHandler:
        """A handler for one stage with these settings."""
        return MachineUnlearningHandler(
            stage,
            forget_key=self.forget_key,
            target_key=self.target_key,
            id_key=self.id_key,
            l1_penalty=self.l1_penalty,
            noise_std=self.noise_std,
            noise_mode=self.noise_mode,
            loss_ceiling=self.loss_ceiling,
            stop_forget_loss=self.stop_forget_loss,
            retain_weight=self.retain_weight,
            seed=self.seed,
        )


def load_model(
    model_ckpt: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike,
    network_factory: Callable[[], nn.Module] | None = None,
) -> nn.Module:
    """A fresh copy of a model given as a module (deep-copied), a state dict or a checkpoint path.

    Raises:
        ConfigError: a state dict or path without ``network_factory``, or a checkpoint that does not load.
    """
    if isinstance(model_ckpt, nn.Module):
        return copy.deepcopy(model_ckpt)
    if network_factory is None:
        raise ConfigError(
            "A checkpoint path or state dict needs settings.network_factory (a callable that builds the network)."
        )
    state = model_ckpt
    if isinstance(model_ckpt, (str, os.PathLike)):
        try:
            state = torch.load(model_ckpt, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"Cannot load checkpoint {model_ckpt}: {err}") from err
    model = network_factory()
    try:
        model.load_state_dict(state)  # type: ignore[arg-type]
    except RuntimeError as err:
        raise ConfigError(f"The checkpoint does not fit the network built by network_factory: {err}") from err
    return model


def reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every ``reset_parameters()`` re-run under ``seed`` (global RNG left untouched)."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


def train_stage(
    model: nn.Module,
    loader: Iterable,
    epochs: int,
    settings: MachineUnlearningSettings,
    stage: ReconMethod | None = None,
    learning_rate: float | None = None,
    stopwatch: Stopwatch | None = None,
) -> tuple[MachineUnlearningHandler | None, float]:
    """Train ``model`` in place for ``epochs`` with a ``SupervisedTrainer`` (+ the stage's handler).

    Args:
        model: the network (changed in place).
        loader: the batches (dicts).
        epochs: epochs over ``loader``.
        settings: loss, keys, device, handler settings.
        stage: the unlearning stage (``ft``, ``ga``, ``ga_l1``, ``nl``) or ``None`` for plain training.
        learning_rate: Adam learning rate (default ``settings.learning_rate``).
        stopwatch: also adds the stage's wall and CPU seconds to this :class:`Stopwatch`.

    Returns:
        ``(handler or None, wall seconds of the stage)``: moving the model to the device, building the trainer
        and its optimiser, and the training run (what the stage costs; no evaluation).
    """
    loss_function = settings.loss_function if settings.loss_function is not None else nn.MSELoss()
    input_keys = settings.input_keys or getattr(model, "input_keys", (Keys.IMAGE,))
    handler = settings.handler(stage) if stage is not None else None
    handlers: list[Any] = [handler] if handler is not None else []
    if settings.progress:
        handlers.append(ProgressHandler(desc=str(stage or "train"), output_transform=_loss))
    resolve_device(settings.device, "device")
    watch = Stopwatch()
    with watch:  # the stage's own work: moving the model, building its trainer and optimiser, training
        model.to(settings.device)
        trainer = SupervisedTrainer(
            device=torch.device(settings.device),
            max_epochs=epochs,
            train_data_loader=loader,
            network=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=learning_rate or settings.learning_rate),
            loss_function=loss_function,
            prepare_batch=PrepareBatchKeys(input_keys, settings.target_key),
            train_handlers=handlers,
            decollate=False,
        )
        trainer.run()
    if stopwatch is not None:
        stopwatch.add(watch)
    logger.debug("stage %s: %d epochs in %.1f s (%.1f s CPU)", stage or "train", epochs, watch.wall, watch.cpu)
    return handler, watch.wall


def _loss(output: Mapping[str, Any]) -> dict[str, float]:
    """The iteration's loss, for the progress display."""
    return {"loss": float(torch.as_tensor(output["loss"]).detach())}


def _unlearning_method(method: ReconMethod | str) -> ReconMethod:
    """``method`` as a key of :data:`METHOD_STAGES`.

    Raises:
        ConfigError: an unknown method, or one that is not unlearning (the original, ``retrain_subset``).
    """
    method = ReconMethod(check_option("method", method, ReconMethod))
    if method not in METHOD_STAGES:
        raise ConfigError(
            f"Argument 'method': '{method}' is not an unlearning method; choose one of "
            f"{[str(m) for m in METHOD_STAGES]} (the original is trained, not unlearned; retrain_subset is "
            "an oracle run on a retain subset)."
        )
    return method


def _stage_plan(
    method: ReconMethod, stage: ReconMethod, retain_loader: Iterable | None, forget_loader: Iterable | None,
    settings: MachineUnlearningSettings,
) -> tuple[Iterable, int, float | None]:
    """``(loader, epochs, learning rate)`` of one stage of ``method``.

    Raises:
        ConfigError: the loader the stage needs is ``None``.
    """
    if stage == ReconMethod.FT:
        epochs = settings.oracle_epochs if method == ReconMethod.ORACLE else settings.ft_epochs
        loader, lr = retain_loader, None
    elif stage == ReconMethod.NL:
        loader, epochs, lr = forget_loader, settings.nl_epochs, None
    else:
        loader, epochs, lr = forget_loader, settings.ga_epochs, settings.ga_learning_rate
    if loader is None:
        which = "retain_loader" if stage == ReconMethod.FT else "forget_loader"
        raise ConfigError(f"Method {method} needs {which} for its {stage} stage; got None.")
    return loader, epochs, lr


def method_iterations(
    method: ReconMethod | str,
    retain_loader: Sized | None,
    forget_loader: Sized | None,
    settings: MachineUnlearningSettings,
) -> int:
    """Training iterations (batches) that :func:`run_unlearning` runs for ``method`` with these loaders.

    A machine-independent measure of a method's cost, e.g. against the oracle's (``stop_forget_loss`` can end a
    GA stage earlier: then this is an upper bound). A loader the method does not use may be ``None``.

    Raises:
        ConfigError: ``method`` is not an unlearning method, or a loader it needs is ``None``.
    """
    method = _unlearning_method(method)
    total = 0
    for stage in METHOD_STAGES[method]:
        loader, epochs, _ = _stage_plan(method, stage, retain_loader, forget_loader, settings)
        total += epochs * len(loader)
    return total


def run_unlearning(
    method: ReconMethod | str,
    model_ckpt: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike,
    retain_loader: Iterable | None,
    forget_loader: Iterable | None,
    settings: MachineUnlearningSettings | None = None,
    stopwatch: Stopwatch | None = None,
) -> tuple[nn.Module, float]:
    """Run one unlearning method from the original model and time it.

    Args:
        method: ``ft``, ``ga``, ``ga_l1``, ``ga_l1_ft``, ``nl``, ``nl_ft`` or ``oracle``.
        model_ckpt: the original model (a module, left unchanged), a state dict or a checkpoint path.
        retain_loader: batches of retain samples (FT stages and the oracle); may be ``None`` for GA/NL alone.
        forget_loader: batches of forget samples (GA and NL stages); may be ``None`` for FT and the oracle.
        settings: stage settings.
        stopwatch: also adds the stages' wall and CPU seconds to this :class:`Stopwatch`.

    Returns:
        ``(unlearned model, wall seconds of all its stages)``: each stage as :func:`train_stage` times it, the same
        for the oracle and every method (copying or initialising the model and building the loaders are not
        counted, for any of them).

    Raises:
        ConfigError: unknown method, or a loader the method needs is missing.
    """
    settings = settings or MachineUnlearningSettings()
    settings.check()
    method = _unlearning_method(method)
    model = load_model(model_ckpt, settings.network_factory)
    if method == ReconMethod.ORACLE:
        model = settings.network_factory() if settings.network_factory is not None else model
        model = reinitialised_copy(model, settings.seed)
    watch = Stopwatch()
    for stage in METHOD_STAGES[method]:
        loader, epochs, lr = _stage_plan(method, stage, retain_loader, forget_loader, settings)
        train_stage(model, loader, epochs, settings, stage=stage, learning_rate=lr, stopwatch=watch)
    if stopwatch is not None:
        stopwatch.add(watch)
    logger.info("%s: %.1f s (%.1f s CPU)", method, watch.wall, watch.cpu)
    return model, watch.wall
