"""Build the unlearning handler of an experiment from its settings and its training data.

One place turns "unlearn site and sex, beta 10, overlap range only" into a configured
:class:`~harmonize.handlers.DomainUnlearningHandler`: the brain-age workflow (and so the demo) calls
:func:`build_unlearning_handler`, so an experiment variant is a setting, not a copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from harmonize import defaults
from harmonize.data.manifest import CONFOUNDS_ATTR, overlap_range
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, check_option
from harmonize.handlers import (
    ConditionalPrior,
    Confound,
    DomainUnlearningHandler,
    LabelRangeMask,
    SharedRangeMask,
    quantile_bin_edges,
)
from harmonize.keys import ConfoundKind, Keys, Method, OverlapMode, Split, UnlearningMode
from harmonize.losses import DomainLoss
from harmonize.networks import DomainHead

__all__ = ["UnlearningSettings", "build_unlearning_handler", "confound_classes"]

logger = logging.getLogger(__name__)


@dataclass
class UnlearningSettings:
    """What to unlearn and how (the settings a bundle config or a comparison run passes; see the demo).

    Args:
        method: ``none`` (plain training), ``unlearning`` (Dinsdale et al.) or ``dann`` (gradient reversal).
        mode: ``fused`` or ``alternating`` (for ``unlearning``; see :class:`~harmonize.keys.UnlearningMode`).
        confounds: manifest columns to unlearn: ``site``, ``sex``, ``age`` or a declared extra confound.
        beta: confusion weight (or gradient-reversal strength for DANN), the same for every confound unless
            ``betas`` names one.
        betas: per-confound weights overriding ``beta``, e.g. ``{"sex": 1.0}``.
        alpha: weight of the domain loss.
        head_lr: learning rate of the domain heads.
        head_steps: head updates per batch.
        head_hidden: hidden width of each domain head.
        head_dropout: dropout of each domain head.
        head_standardize: standardise the features at each head's input (see :class:`DomainHead`).
        warmup_epochs: epochs during which only the heads learn.
        moment_weight: weight of the moment-matching penalty (per-site feature means and variances made equal,
            :class:`~harmonize.losses.MomentMatchingLoss`) added to each confound's confusion loss; 0 turns it off.
        moment_momentum: weight of the running statistics in that penalty's per-site estimates.
        moment_variance_weight: weight of its variance term (0: means only).
        moment_whiten: measure the mean differences in the metric of the features' correlation matrix (what a
            linear discriminant reads) instead of feature by feature.
        moment_ridge: ridge added to that correlation matrix.
        head_refit_steps: if > 0, re-fit every head from scratch on all training scans' features at the start
            of each unlearning epoch, with this many full-batch Adam steps (a stronger adversary).
        head_refit_lr: learning rate of that re-fit.
        head_memory: if > 0, the heads train at every iteration on the features of the last this many training
            samples instead of the batch alone (see :class:`~harmonize.handlers.DomainUnlearningHandler`).
        age_bins: quantile bins of a continuous confound's head.
        balanced_heads: weight the domain loss by inverse class frequency (unbalanced sites).
        overlap_only: unlearn only on subjects whose ``overlap_key`` lies where training sites overlap
            (the biased-dataset variant); the task still trains on every subject.
        overlap_mode: where the sites overlap (:class:`~harmonize.keys.OverlapMode`): ``all``, the range every
            training site covers; ``pairs``, the ranges each site shares with at least one other site
            (:class:`~harmonize.handlers.SharedRangeMask`; for sites whose ranges overlap only pairwise).
        overlap_range: the range to use instead of computing it from the training rows.
        overlap_key: the label whose overlap defines the range (default ``age``).
        site_prior_on: a continuous column (e.g. ``age``): the site head's confusion target becomes the training
            data's ``p(site | that value)`` (:class:`~harmonize.handlers.ConditionalPrior`) instead of the uniform
            distribution, so the features keep the site information that the value itself carries; ``None``: uniform.
    """

    method: str = Method.UNLEARNING
    mode: str = UnlearningMode.FUSED
    confounds: Sequence[str] = (Keys.SITE,)
    beta: float = defaults.BETA
    betas: dict[str, float] = field(default_factory=dict)
    alpha: float = defaults.ALPHA
    head_lr: float = defaults.HEAD_LR
    head_steps: int = defaults.HEAD_STEPS
    head_hidden: int = defaults.DOMAIN_HIDDEN
    head_dropout: float = defaults.DOMAIN_DROPOUT
    head_standardize: bool = True
    warmup_epochs: int = defaults.WARMUP_EPOCHS
    moment_weight: float = 0.0
    moment_momentum: float = defaults.MOMENT_MOMENTUM
    moment_variance_weight: float = defaults.MOMENT_VARIANCE_WEIGHT
    moment_whiten: bool = False
    moment_ridge: float = defaults.MOMENT_RIDGE
    head_refit_steps: int = 0
    head_refit_lr: float = defaults.HEAD_REFIT_LR
    head_memory: int = 0
    age_bins: int = defaults.AGE_BINS
    balanced_heads: bool = False
    overlap_only: bool = False
    overlap_mode: str = OverlapMode.ALL
    overlap_range: tuple[float, float] | None = None
    overlap_key: str = Keys.AGE
    site_prior_on: str | None = None

    def __post_init__(self) -> None:
        self.method = check_option("method", self.method, Method)
        if self.method == Method.COMBAT:
            raise ConfigError(
                "method 'combat' harmonises features after training (harmonize.audit.combat), it is not a training "
                "method: train with method 'none' and apply ComBat to the features."
            )
        self.mode = check_option("mode", self.mode, UnlearningMode)
        self.overlap_mode = check_option("overlap_mode", self.overlap_mode, OverlapMode)
        self.confounds = tuple(str(c) for c in self.confounds)
        unknown = set(self.betas) - set(self.confounds)
        if unknown:
            raise ConfigError(f"betas names {sorted(unknown)}, which are not among the confounds {list(self.confounds)}.")

    @classmethod
    def refit_adversary(cls, **changes) -> UnlearningSettings:
        """Site unlearning against a linear head re-fitted from scratch on all training scans every epoch.

        ``beta=1``, a linear head (``head_hidden=()``) re-fitted with ``head_refit_steps=300`` full-batch Adam steps
        (lr ``1e-2``) at the start of each unlearning epoch and nearly frozen in between (``head_lr=1e-4``), after
        ``warmup_epochs=4``; the confusion target is ``p(site | age)`` of the training data
        (``site_prior_on="age"``), so sites of different ages keep what their ages tell. The measurements behind
        these choices are in docs/unlearning.md ("Does it work?").

        Args:
            changes: any other field, or one of these to override.
        """
        recipe: dict[str, object] = {
            "method": Method.UNLEARNING,
            "beta": defaults.REFIT_BETA,
            "head_hidden": (),
            "head_lr": defaults.REFIT_HEAD_LR,
            "head_steps": 1,
            "head_refit_steps": defaults.REFIT_STEPS,
            "head_refit_lr": defaults.HEAD_REFIT_LR,
            "warmup_epochs": defaults.REFIT_WARMUP_EPOCHS,
            "site_prior_on": Keys.AGE,
        }
        recipe.update(changes)
        return cls(**recipe)

    def to_dict(self) -> dict:
        return asdict(self)


def confound_classes(
    name: str, train: pd.DataFrame, site_index: CategoryIndex, age_bins: int
) -> tuple[ConfoundKind, int, list[float] | None]:
    """Kind, number of head classes and bin edges of one confound, from the training rows.

    Raises:
        ConfigError: a confound column the manifest does not declare, or with too few distinct values.
    """
    declared = train.attrs.get(CONFOUNDS_ATTR, {})
    if name == Keys.SITE:
        return ConfoundKind.CATEGORICAL, len(site_index), None
    if name == Keys.SEX:
        return ConfoundKind.CATEGORICAL, 2, None
    if name == Keys.AGE or declared.get(name) == ConfoundKind.CONTINUOUS:
        return ConfoundKind.CONTINUOUS, age_bins, quantile_bin_edges(train[name].to_numpy(float), age_bins)
    if name in declared:
        values = train[name].dropna().astype(str).unique()
        if len(values) < 2:
            raise ConfigError(f"Confound '{name}' has fewer than 2 values in the training rows: nothing to unlearn.")
        return ConfoundKind.CATEGORICAL, len(values), None
    raise ConfigError(
        f"Cannot unlearn '{name}': it is not site, sex, age or a confound declared for the manifest "
        f"(declared: {sorted(declared)}). Declare it with the manifest's confounds."
    )


def _site_prior(settings: UnlearningSettings, name: str, train: pd.DataFrame,
                site_index: CategoryIndex) -> ConditionalPrior | None:
    if settings.site_prior_on is None or name != Keys.SITE:
        return None
    if settings.site_prior_on not in train.columns:
        raise ConfigError(f"site_prior_on: the manifest has no column '{settings.site_prior_on}' to condition on.")
    sites = np.asarray([site_index[s] for s in train[Keys.SITE]])
    return ConditionalPrior(train[settings.site_prior_on].to_numpy(float), sites, len(site_index),
                            key=settings.site_prior_on)


def build_unlearning_handler(
    network: nn.Module,
    taps: str | Sequence[str],
    feature_dim: int,
    settings: UnlearningSettings,
    frame: pd.DataFrame,
    site_index: CategoryIndex,
) -> DomainUnlearningHandler | None:
    """The handler that ``settings`` describe, for a network and a manifest's training rows.

    Args:
        network: the network to unlearn.
        taps: layer name(s) whose features the heads read.
        feature_dim: size of the (pooled, concatenated) tapped features.
        settings: the experiment's unlearning settings.
        frame: the manifest (its ``train`` rows set the bins, the class counts and the overlap range).
        site_index: the site index of the training data.

    Returns:
        The handler, or ``None`` for ``method='none'``.

    Raises:
        ConfigError: only one site (nothing to unlearn), an empty overlap range, or an unknown confound.
    """
    if settings.method == Method.NONE:
        return None
    train = frame[frame[Keys.SPLIT] == Split.TRAIN]
    if Keys.SITE in settings.confounds and len(site_index) < 2:
        raise ConfigError(
            f"The training data hold a single site ({list(site_index)}): there is no scanner information to "
            "unlearn. Add sites, or train with method 'none'."
        )
    confounds = []
    for name in settings.confounds:
        kind, n, edges = confound_classes(name, train, site_index, settings.age_bins)
        weights = None
        if settings.balanced_heads and kind == ConfoundKind.CATEGORICAL and name == Keys.SITE:
            counts = np.bincount([site_index[s] for s in train[Keys.SITE]], minlength=n)
            weights = DomainLoss.from_counts(counts).weight.tolist()
        head = DomainHead(feature_dim, n, hidden=settings.head_hidden, dropout=settings.head_dropout,
                          standardize_input=settings.head_standardize)
        confounds.append(
            Confound(
                head,
                n,
                key=name,
                kind=kind,
                bin_edges=edges,
                beta=settings.betas.get(name, settings.beta),
                alpha=settings.alpha,
                class_weights=weights,
                moment_weight=settings.moment_weight,
                prior=_site_prior(settings, name, train, site_index),
            )
        )
    mask = None
    if settings.overlap_only and settings.overlap_mode == OverlapMode.PAIRS and settings.overlap_range is None:
        values = train[[Keys.SITE, settings.overlap_key]].dropna()
        extents = {site_index[site]: (float(group.min()), float(group.max()))
                   for site, group in values.groupby(Keys.SITE, observed=True)[settings.overlap_key]}
        shared = SharedRangeMask.shared_ranges(extents)
        if not any(shared.values()):
            raise ConfigError(
                f"overlap_only: no training site shares a '{settings.overlap_key}' range with another site, so no "
                "subject can be unlearned on. Give overlap_range or turn overlap_only off.")
        mask = SharedRangeMask(shared, key=settings.overlap_key)
        logger.info("Unlearning only on %s ranges shared with another site: %s", settings.overlap_key, shared)
    elif settings.overlap_only:
        low_high = settings.overlap_range or overlap_range(train, key=settings.overlap_key)
        if low_high is None:
            raise ConfigError(
                f"overlap_only: the training sites share no '{settings.overlap_key}' range (each site's range is "
                "disjoint from another's), so no subject can be unlearned on. Use overlap_mode 'pairs' (the "
                "ranges each site shares with another), give overlap_range, or turn overlap_only off."
            )
        mask = LabelRangeMask(*low_high, key=settings.overlap_key)
        logger.info("Unlearning only on %s in [%.1f, %.1f]", settings.overlap_key, *low_high)
    mode = UnlearningMode.DANN if settings.method == Method.DANN else settings.mode
    return DomainUnlearningHandler(
        network,
        taps,
        confounds,
        mode=mode,
        head_lr=settings.head_lr,
        head_steps=settings.head_steps,
        warmup_epochs=settings.warmup_epochs,
        sample_mask=mask,
        moment_momentum=settings.moment_momentum,
        moment_variance_weight=settings.moment_variance_weight,
        moment_whiten=settings.moment_whiten,
        moment_ridge=settings.moment_ridge,
        head_refit_steps=settings.head_refit_steps,
        head_refit_lr=settings.head_refit_lr,
        head_memory=settings.head_memory,
    )
