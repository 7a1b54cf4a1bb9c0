"""Brain-age regression with (or without) scanner unlearning, from a manifest to an evaluated model.

:func:`train_brain_age` builds an ordinary MONAI ``SupervisedTrainer`` and attaches the unlearning handler that
the settings describe (:func:`~harmonize.workflows.unlearning.build_unlearning_handler`);
:func:`~harmonize.workflows.brain_age_evaluation.evaluate_brain_age` measures age error and probes the features for
site, age and sex on held-out scans (the evaluation and the post-hoc baselines live in
:mod:`~harmonize.workflows.brain_age_evaluation`, and are importable from here too). The demo, ``harmonize compare``,
the bundles and the benchmarks call the same functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonize import defaults
from harmonize.audit.age_audit import audit_feature_set
from harmonize.data.dataset import make_dataloader, make_dataset
from harmonize.data.labelled_subset import labelled_subset
from harmonize.data.manifest import MANIFEST_ATTR, read_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import (
    ConfigError,
    HarmonizeError,
    integer_problem,
    integers_problem,
    number_problem,
    option_value,
    raise_problems,
)
from harmonize.handlers import RandomRigidAugmentation, StopOnNonFiniteLoss, TrainingCheckpoint
from harmonize.keys import DatasetCache, Keys, Method, Split, StateKeys
from harmonize.losses import MaskedLoss, SiteAgreementLoss, StandardisedMSELoss
from harmonize.networks import BrainAgeRegressor, FeatureTaps, recalibrate_batchnorm, refit_output_layer
from harmonize.progress import ProgressHandler
from harmonize.workflows.brain_age_evaluation import (
    brain_age_features,
    combat_unseen_site,
    evaluate_brain_age,
    evaluate_combat,
    fit_site_eraser,
)
from harmonize.workflows.models import BrainAgeModel
from harmonize.workflows.prepare_batch import PrepareTargetBatch
from harmonize.workflows.unlearning import UnlearningSettings, build_unlearning_handler

__all__ = [
    "BrainAgeModel",
    "BrainAgeSettings",
    "audit_feature_set",
    "brain_age_features",
    "combat_unseen_site",
    "evaluate_brain_age",
    "evaluate_combat",
    "fit_site_eraser",
    "site_agreement_for",
    "train_brain_age",
]

logger = logging.getLogger(__name__)


@dataclass
class BrainAgeSettings:
    """Settings of one brain-age training run.

    Args:
        unlearning: what to unlearn and how (``method='none'`` trains the baseline).
        max_epochs: training epochs (warm-up epochs included).
        batch_size: scans per batch (a multiple of the number of sites when ``balance_sites``).
        lr: learning rate of the network's Adam optimizer (a finite number > 0).
        channels: channels of the encoder's convolution blocks.
        feature_dim: size of the feature vector the heads read.
        taps: layers whose (pooled, concatenated) outputs the domain heads read and the audit probes; the
            default (:data:`~harmonize.defaults.AGE_TAPS`) is what the age head reads: the encoder's feature vector
            (the paper's bottleneck) and the regressor's hidden layer; an earlier block (``"encoder.block3"``)
            unlearns deeper in the encoder.
        norm: normalisation of the encoder (MONAI spec, e.g. ``"batch"`` as in the paper, or
            ``("group", {"num_groups": 8})``).
        labelled_fraction: fraction of training subjects whose age the task loss sees (semi-supervised when
            below 1; the unlearning still uses every subject).
        balance_sites: every batch holds each site equally (as the paper's zipped per-site loaders).
        augment: mirror, rotate and shift every training batch at random
            (:class:`~harmonize.handlers.RandomRigidAugmentation`, seeded by ``seed``); ``False`` trains on the
            scans as they are.
        seed: seed of the network's initialisation, the loader's shuffling and the labelled subset.
        device: ``cpu`` or ``cuda``.
        amp: mixed precision (MONAI's ``amp``: float16 autocast and a gradient scaler; CUDA only); the domain heads
            and their losses stay in float32.
        cache, cache_dir, cache_limit_gb: keep the training scans in ``memory`` (True), on ``disk`` (``cache_dir``)
            or read them per item (``none``, False); cache at most ``cache_limit_gb`` GiB (``data.dataset_cache``).
        num_workers: data-loader worker processes that read (and cache) scans ahead of training and audit.
        site_agreement: ``None`` (the default): the age loss is the squared error in units of the training ages'
            SD. A weight (>= 0): the age loss is :class:`~harmonize.losses.SiteAgreementLoss` with that agreement
            weight, in units of the pooled within-site SD of the training ages: reading the scanner earns nothing,
            and a site's offset costs wherever another site has subjects of the same age. For sites whose age
            ranges only partly overlap (``harmonize compare`` uses it there for unlearning: docs/unlearning.md).
        recalibrate_batchnorm, refit_output: after training, recompute the BatchNorm statistics on the training
            scans, then re-fit the regressor's output layer on their final features (both lag behind adversarial
            training: :func:`~harmonize.networks.recalibrate_batchnorm`, :func:`~harmonize.networks.refit_output_layer`).

    Raises:
        ConfigError: on construction, every setting out of range at once (``BrainAgeSettings: invalid arguments.``).
    """

    unlearning: UnlearningSettings = field(default_factory=UnlearningSettings)
    max_epochs: int = 30
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LEARNING_RATE
    channels: tuple[int, ...] = defaults.AGE_CHANNELS
    feature_dim: int = defaults.AGE_FEATURE_DIM
    taps: tuple[str, ...] = defaults.AGE_TAPS
    norm: str | tuple = defaults.AGE_NORM
    labelled_fraction: float = 1.0
    balance_sites: bool = True
    augment: bool = True
    seed: int = defaults.SEED
    device: str = "cpu"
    amp: bool = False
    cache: bool | str = True
    recalibrate_batchnorm: bool = True
    refit_output: bool = True
    cache_dir: str | None = None
    cache_limit_gb: float | None = None
    num_workers: int = 0
    site_agreement: float | None = None

    def __post_init__(self) -> None:
        nested: list[str] = []  # the problems of an unlearning part given as a dict join ours
        if isinstance(self.unlearning, dict):
            try:
                self.unlearning = UnlearningSettings(**self.unlearning)
            except ConfigError as err:
                nested = err.problems or [err.message]
        self.taps = (self.taps,) if isinstance(self.taps, str) else self.taps
        taps = self.taps if isinstance(self.taps, (list, tuple)) and self.taps else None
        cache = None if isinstance(self.cache, bool) else option_value("cache", self.cache, DatasetCache)[1]
        taps_problem = None if taps and all(isinstance(t, str) and t for t in taps) else (
            f"'taps' must be a layer name or a sequence of one or more layer names, got {self.taps!r} "
            f"({type(self.taps).__name__})")
        raise_problems("BrainAgeSettings", [
            *nested, integer_problem("max_epochs", self.max_epochs), integer_problem("batch_size", self.batch_size),
            number_problem("lr", self.lr), integers_problem("channels", self.channels, least=1, minimum=1),
            integer_problem("feature_dim", self.feature_dim),
            taps_problem,
            number_problem("labelled_fraction", self.labelled_fraction, maximum=1),
            integer_problem("seed", self.seed, minimum=0), integer_problem("num_workers", self.num_workers, 0),
            None if cache is None else f"{cache.rstrip()} (or True: memory, False: none)",
            number_problem("cache_limit_gb", self.cache_limit_gb, strict=False, optional=True),
            number_problem("site_agreement", self.site_agreement, strict=False, optional=True),
            f"'amp' (mixed precision) needs a CUDA device, got device {self.device!r}; drop amp on the CPU"
            if self.amp and not str(self.device).startswith("cuda") else None])
        self.channels, self.taps = tuple(self.channels), tuple(self.taps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_brain_age(
    manifest: str | Path | pd.DataFrame,
    settings: BrainAgeSettings | None = None,
    site_index: CategoryIndex | str | Path | None = None,
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    handlers: Sequence[Any] = (),
) -> BrainAgeModel:
    """Train a brain-age network on a manifest's ``train`` rows, unlearning what ``settings`` say.

    A NaN or Inf task loss stops training with a :class:`~harmonize.errors.HarmonizeError`
    (:class:`~harmonize.handlers.StopOnNonFiniteLoss`). With ``checkpoint_dir``, the whole training state is
    saved atomically at every epoch end (:class:`~harmonize.handlers.TrainingCheckpoint`, last
    :data:`~harmonize.defaults.CHECKPOINT_KEEP` kept); a run killed at any point and called again with
    ``resume=True`` continues from its last checkpoint and ends, on CPU, with the weights an uninterrupted run
    would have.

    Args:
        manifest: a (preprocessed) manifest CSV or a frame from :func:`~harmonize.data.manifest.read_manifest`.
        settings: the run's settings (defaults: fused site unlearning).
        site_index: site index or its JSON path (default: ``site_index.json`` beside the manifest).
        progress: show progress (a bar on a terminal, else one log line per epoch: :mod:`harmonize.progress`).
        checkpoint_dir: folder of the training checkpoints; it must be absent or empty unless ``resume``.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (start from scratch if the folder is
            absent or holds none, so that a job script can always pass it).
            The manifest and settings must be those of the run that wrote it.
        checkpoint_every: also save every this many iterations (mid-epoch), besides every epoch end.
        handlers: further handlers to attach to the trainer (objects with ``attach(engine)``), e.g. MONAI's
            ``StatsHandler``; they are attached before the checkpoint handler.

    Returns:
        The trained model; ``model.history`` holds the handler's per-epoch domain accuracy and losses.

    Raises:
        HarmonizeError: no training age, a non-empty ``checkpoint_dir`` without ``resume``, a checkpoint that
            does not fit this run (naming the file and its first mismatching keys), or a non-finite loss.
        ConfigError: ``resume`` without ``checkpoint_dir``.
    """
    from monai.engines import SupervisedTrainer

    from harmonize.devices import resolve_device
    from harmonize.workflows.input_check import describe_inputs

    settings = settings or BrainAgeSettings()
    resolve_device(settings.device, "device")
    checkpoint_dir = _checked_checkpoint_dir(checkpoint_dir, resume)
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    inputs = describe_inputs(frame)
    train = frame[frame[Keys.SPLIT] == Split.TRAIN]
    ages = train[Keys.AGE].to_numpy(float)
    if not np.isfinite(ages).any():
        source = frame.attrs.get(MANIFEST_ATTR, "the manifest")
        raise HarmonizeError(
            f"No '{Split.TRAIN}' row of {source} has an age ({len(train)} training rows): brain-age training needs "
            f"the '{Keys.AGE}' column filled in (years) for at least its training rows. Fill it in, or train a task "
            "that needs no age."
        )
    torch.manual_seed(settings.seed)
    dataset = make_dataset(frame, split=Split.TRAIN, site_index=site_index, cache=settings.cache,
                           cache_dir=settings.cache_dir, cache_limit_gb=settings.cache_limit_gb)
    index = dataset.site_index
    loader = make_dataloader(dataset, batch_size=settings.batch_size, shuffle=True,
                             balance_sites=settings.balance_sites, seed=settings.seed, num_workers=settings.num_workers)
    mean, std = float(np.nanmean(ages)), float(np.nanstd(ages)) or 1.0

    def build() -> BrainAgeRegressor:
        return BrainAgeRegressor(channels=settings.channels, feature_dim=settings.feature_dim, norm=settings.norm,
                                 age_offset=mean, age_scale=std)

    check_network_size(build, tuple(torch.as_tensor(dataset[0][Keys.IMAGE]).shape), settings.batch_size,
                       settings.channels, frame.attrs.get(MANIFEST_ATTR, "the manifest"))
    network = build().to(settings.device)
    sizer = FeatureTaps(network, settings.taps)
    try:
        feature_dim = sizer.feature_dim(network, _example_input(dataset).to(settings.device))
    finally:
        sizer.remove()
    handler = build_unlearning_handler(network, settings.taps, feature_dim, settings.unlearning, frame, index)
    task_loss = _age_loss(settings, train, index, std)
    trainer = SupervisedTrainer(
        device=torch.device(settings.device),
        amp=settings.amp,
        max_epochs=settings.max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=settings.lr),
        loss_function=task_loss,
        prepare_batch=PrepareTargetBatch(Keys.AGE, labelled_ids=labelled_subset(train, settings.labelled_fraction, settings.seed)),
        decollate=False,
    )
    if isinstance(task_loss, SiteAgreementLoss):
        task_loss.attach(trainer)
    if settings.augment:
        RandomRigidAugmentation(seed=settings.seed).attach(trainer)
    StopOnNonFiniteLoss(what="task loss (age)").attach(trainer)  # before the handler adds its confusion loss
    if handler is not None:
        handler.attach(trainer)
    for extra in handlers:
        extra.attach(trainer)
    if progress:
        ProgressHandler(desc=f"brain age ({settings.unlearning.method})").attach(trainer)
    if checkpoint_dir is not None:
        objects = {"unlearning": handler} if handler is not None else {}
        if isinstance(task_loss, SiteAgreementLoss):
            objects["age_loss"] = task_loss  # its running means
        checkpoint = TrainingCheckpoint(checkpoint_dir, objects=objects, keep_last=defaults.CHECKPOINT_KEEP,
                                        every_n_iterations=checkpoint_every)
        checkpoint.attach(trainer)  # last: an epoch's checkpoint holds the other handlers' end-of-epoch state
        if resume and checkpoint_dir.is_dir():
            checkpoint.resume(checkpoint_dir)  # an empty folder: nothing to resume, training starts from scratch
        elif resume:
            logger.info("No checkpoint folder %s yet: training starts from scratch.", checkpoint_dir)
    start = time.perf_counter()
    if trainer.state.epoch < settings.max_epochs:
        trainer.run()
    else:
        logger.info("The checkpoint in %s is of the last epoch (%d): nothing left to train.", checkpoint_dir,
                    trainer.state.epoch)
    if settings.recalibrate_batchnorm:
        # the batches of the epoch after the last, whether this call trained or found the run finished
        sampler = loader.batch_sampler if settings.balance_sites else loader.sampler
        sampler.set_epoch(trainer.state.epoch)
        recalibrate_batchnorm(network, loader, settings.device)
    if settings.refit_output:
        refit_output_layer(network, loader, lambda b: trainer.prepare_batch(b, settings.device)[:2], settings.device)
    seconds = time.perf_counter() - start
    _check_finite(network)
    history = handler.history if handler is not None else []
    if (loss := final_task_loss(history)) is not None and loss >= defaults.TASK_NOT_LEARNT_LOSS:
        logger.warning("The age loss of the last epoch is %.2f (1 = predicting the mean age): the network learnt "
                       "little age. With unlearning, the adversary may have won before the task was learnt: train "
                       "with more warm-up epochs (warmup_epochs) or a smaller beta, or another seed.", loss)
    return BrainAgeModel(network, handler, settings, index, seconds, history, inputs=inputs)


def _age_loss(settings: BrainAgeSettings, train: pd.DataFrame, index: CategoryIndex, std: float) -> torch.nn.Module:
    """The age loss: squared error in units of the ages' SD, or :class:`SiteAgreementLoss` with ``site_agreement``."""
    if settings.site_agreement is None:
        return MaskedLoss(StandardisedMSELoss(std, reduction="none"))
    if settings.unlearning.method != Method.NONE:
        logger.warning("The age loss with site agreement (site_agreement=%g) was measured without an adversary; with "
                       "unlearning method %r beside it, one biased run in three lost the task (docs/unlearning.md, "
                       "session 13). harmonize compare trains it with unlearning method 'none'.",
                       settings.site_agreement, str(settings.unlearning.method))
    return site_agreement_for(train, len(index), settings.site_agreement)


def site_agreement_for(train: pd.DataFrame, num_sites: int, agreement: float) -> SiteAgreementLoss:
    """:class:`SiteAgreementLoss` for a manifest's ``train`` rows (their ages and sites), with ``num_sites`` running
    offsets (the training site index's); ``train_brain_age`` and the brain-age bundle build it so.

    Raises:
        ConfigError: no training row has an age, or an argument out of range.
    """
    return SiteAgreementLoss.for_training_ages(train[Keys.AGE].to_numpy(float), train[Keys.SITE].astype(str).to_numpy(),
                                               num_sites, agreement=agreement)


def final_task_loss(history: Sequence[dict[str, float]]) -> float | None:
    """The task loss of the last epoch in an unlearning handler's history (``None`` without one)."""
    return history[-1].get(StateKeys.TASK_LOSS) if history else None


def check_network_size(build: Callable[[], torch.nn.Module], image_shape: Sequence[int], batch_size: int,
                       channels: Sequence[int], source: Any) -> None:
    """Refuse an encoder with too many blocks for the scans, or whose training step cannot fit in memory.

    Args:
        build: makes the network (it is built on the ``meta`` device, allocating nothing).
        image_shape: one scan's shape ``(channels, *spatial)``.
        batch_size: scans per batch.
        channels: the encoder's channels per block (``--channels``), for the message.
        source: the manifest, for the message.

    Raises:
        ConfigError: every axis must be at least ``2 ** (blocks - 1)`` voxels; names the largest number of blocks.
        ResourceError: the estimated memory of one training step exceeds what is available.
    """
    from harmonize.memory import check_memory, training_bytes

    spatial = tuple(int(n) for n in image_shape[1:])
    needed = 2 ** (len(channels) - 1)
    if min(spatial) < needed:
        most = int(np.floor(np.log2(min(spatial)))) + 1
        raise ConfigError(
            f"Argument 'channels' ({','.join(map(str, channels))}): {len(channels)} blocks halve the scan "
            f"{len(channels) - 1} times, so every axis must be at least {needed} voxels, but the scans of {source} "
            f"are {spatial}. Give at most {most} block(s) (e.g. --channels {','.join(map(str, channels[:most]))}), "
            "or preprocess the scans to a larger --shape."
        )
    check_memory(
        training_bytes(build, (batch_size, *image_shape)),
        f"Training the brain-age network (channels {','.join(map(str, channels))}) on batches of {batch_size} scans "
        f"of {spatial} voxels",
        "give fewer or smaller --channels, a smaller batch size, or scans preprocessed to a smaller --shape or a "
        "coarser --spacing",
    )


def _checked_checkpoint_dir(checkpoint_dir: str | Path | None, resume: bool) -> Path | None:
    """The checkpoint folder, refused when it already holds files and ``resume`` was not asked for."""
    if checkpoint_dir is None:
        if resume:
            raise ConfigError("resume=True needs checkpoint_dir: the folder whose newest checkpoint to continue from.")
        return None
    folder = Path(checkpoint_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise HarmonizeError(f"checkpoint_dir {folder} is a file, not a folder: give a folder for the checkpoints.")
    if not resume and folder.is_dir() and any(folder.iterdir()):
        raise HarmonizeError(
            f"checkpoint_dir {folder} is not empty: it may hold the checkpoints of another run, which would be "
            "overwritten. Pass resume=True to continue that run, or choose a new (or empty) folder."
        )
    return folder


def _example_input(dataset) -> torch.Tensor:
    """A batch of two copies of the first scan, to size the tapped features."""
    image = torch.as_tensor(dataset[0][Keys.IMAGE])
    return torch.stack([image, image])


def _check_finite(network: torch.nn.Module) -> None:
    bad = [n for n, p in network.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise HarmonizeError(
            f"Training diverged: parameters {bad[:5]} hold NaN or Inf. Lower the learning rate or beta and retrain."
        )
