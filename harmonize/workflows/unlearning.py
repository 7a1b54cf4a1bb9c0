"""Settings of scanner unlearning, and the one builder from settings to a configured handler.

:class:`UnlearningSettings` says *what* to unlearn (confounds, bins, the overlap mask, weights) and *how* (a named
recipe: :meth:`~UnlearningSettings.paper`, :meth:`~UnlearningSettings.refit_adversary`,
:meth:`~UnlearningSettings.dann`). :func:`plan_unlearning` reads what the training rows decide (classes, bin edges,
class weights, the site prior's data, the mask's ranges) into a plain :class:`UnlearningPlan`;
:func:`handler_from_plan` builds the :class:`~harmonize.handlers.DomainUnlearningHandler` from settings and plan.
Training (:func:`build_unlearning_handler`), bundles and model reload all go through these two functions, and a model
file saves the settings and the plan, so a reloaded handler equals the trained one in every setting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from harmonize import defaults
from harmonize.audit.feature_probes import evidence_beyond
from harmonize.data.manifest import CONFOUNDS_ATTR, overlap_range
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, integer_problem, number_problem, option_value, raise_problems
from harmonize.handlers import (
    AlternatingConfusion,
    ConditionalPrior,
    Confound,
    ConfusionObjective,
    DomainUnlearningHandler,
    EvidenceGate,
    GradientReversalObjective,
    HeadSteps,
    HeadWarmup,
    LabelRangeMask,
    RefitHeads,
    SharedRangeMask,
    quantile_bin_edges,
)
from harmonize.keys import (
    ConfoundKind,
    Keys,
    Method,
    OverlapMode,
    Split,
    UnlearningMode,
)
from harmonize.losses import DomainLoss
from harmonize.networks import DomainHead

__all__ = [
    "UnlearningPlan",
    "UnlearningSettings",
    "build_unlearning_handler",
    "confound_classes",
    "handler_from_plan",
    "plan_unlearning",
]

logger = logging.getLogger(__name__)

#: The fields of :class:`UnlearningSettings` that say what to unlearn (the others say how).
WHAT_FIELDS = ("confounds", "betas", "alpha", "age_bins", "balanced_heads", "overlap_only", "overlap_mode",
               "overlap_range", "overlap_key", "site_prior_on")


@dataclass
class UnlearningSettings:
    """What to unlearn and how (what a bundle config, the CLI or a comparison run passes).

    What (:data:`WHAT_FIELDS`):
        confounds: manifest columns to unlearn: ``site``, ``sex``, ``age`` or a declared extra confound.
        betas: per-confound weights overriding ``beta`` (confusion) or 1 (reversal), e.g. ``{"sex": 1.0}``.
        alpha: weight of the domain loss.
        age_bins: quantile bins of a continuous confound's head.
        balanced_heads: weight the site head's loss by inverse class frequency (unbalanced sites).
        overlap_only: unlearn only on subjects whose ``overlap_key`` lies where training sites overlap
            (the biased-dataset variant); the task still trains on every subject.
        overlap_mode: ``all`` (the range every training site covers) or ``pairs`` (the ranges each site shares
            with another, :class:`~harmonize.handlers.SharedRangeMask`).
        overlap_range: the range to use instead of computing it from the training rows.
        overlap_key: the label whose overlap defines the range.
        site_prior_on: a continuous column (e.g. ``age``): the site head's confusion target becomes the training
            data's ``p(site | value)`` (:class:`~harmonize.handlers.ConditionalPrior`); ``None``: uniform.

    How:
        method: ``none`` (plain training), ``unlearning`` (Dinsdale et al.) or ``dann`` (gradient reversal).
        mode: ``fused`` or ``alternating`` confusion (``unlearning`` only).
        beta: confusion weight (``unlearning`` only).
        reversal_weight: gradient-reversal strength (``dann`` only).
        head_lr: learning rate of the heads' per-batch steps.
        head_steps: head steps per batch.
        head_hidden: hidden widths of each domain head (empty: linear).
        head_dropout: dropout of each domain head.
        head_standardize: standardise the features at each head's input (see :class:`DomainHead`).
        warmup_epochs: epochs during which only the heads learn.
        warmup_until_loss: go on with the warm-up while the epoch's task loss is at or above this (up to half the
            epochs; :class:`~harmonize.handlers.DomainUnlearningHandler`); ``None``: exactly ``warmup_epochs``.
        head_refit_steps: if > 0, re-fit every head from scratch on all training features at the start of each
            unlearning epoch, with this many full-batch Adam steps (:class:`~harmonize.handlers.RefitHeads`).
        head_refit_lr: learning rate of that re-fit.
        evidence_margin: unlearn a confound only if, at the first unlearning epoch, a cross-validated probe reads it
            from the training features at least this far (balanced accuracy) beyond age and sex
            (:class:`~harmonize.handlers.EvidenceGate`); ``None``: always unlearn, as the paper does.

    Raises:
        ConfigError: every invalid or contradictory field, listed in its ``problems``.
    """

    method: str = Method.UNLEARNING
    mode: str = UnlearningMode.FUSED
    confounds: Sequence[str] = (Keys.SITE,)
    beta: float = defaults.BETA
    betas: dict[str, float] = field(default_factory=dict)
    reversal_weight: float = defaults.DANN_REVERSAL_WEIGHT
    alpha: float = defaults.ALPHA
    head_lr: float = defaults.HEAD_LR
    head_steps: int = defaults.HEAD_STEPS
    head_hidden: int | Sequence[int] = defaults.DOMAIN_HIDDEN
    head_dropout: float = defaults.DOMAIN_DROPOUT
    head_standardize: bool = True
    warmup_epochs: int = defaults.WARMUP_EPOCHS
    warmup_until_loss: float | None = None
    head_refit_steps: int = 0
    head_refit_lr: float = defaults.HEAD_REFIT_LR
    evidence_margin: float | None = None
    age_bins: int = defaults.AGE_BINS
    balanced_heads: bool = False
    overlap_only: bool = False
    overlap_mode: str = OverlapMode.ALL
    overlap_range: tuple[float, float] | None = None
    overlap_key: str = Keys.AGE
    site_prior_on: str | None = None

    def __post_init__(self) -> None:
        problems = []
        for name, choices in (("method", Method), ("mode", UnlearningMode), ("overlap_mode", OverlapMode)):
            option, problem = option_value(name, getattr(self, name), choices)
            setattr(self, name, option or getattr(self, name))
            problems.append(problem)
        self.confounds = tuple(str(c) for c in self.confounds)
        self.head_hidden = (self.head_hidden,) if isinstance(self.head_hidden, int) else tuple(self.head_hidden)
        if self.overlap_range is not None:
            self.overlap_range = tuple(float(v) for v in self.overlap_range)
        if self.method == Method.COMBAT:
            problems.append("method 'combat' harmonises features after training (harmonize.audit.combat), it is not "
                            "a training method: train with method 'none' and apply ComBat to the features")
        unknown = set(self.betas) - set(self.confounds)
        if unknown:
            problems.append(f"betas names {sorted(unknown)}, which are not among the confounds {list(self.confounds)}")
        weights = {name: getattr(self, name) for name in ("beta", "reversal_weight", "alpha")}
        weights.update({f"betas[{k!r}]": v for k, v in self.betas.items()})
        problems += [number_problem(name, value, strict=False) for name, value in weights.items()]
        problems += [number_problem(name, getattr(self, name)) for name in ("head_lr", "head_refit_lr")]
        if self.warmup_until_loss is not None:
            problems.append(number_problem("warmup_until_loss", self.warmup_until_loss))
        if self.evidence_margin is not None:
            problems += EvidenceGate.problems(self.evidence_margin)
        problems += [integer_problem(name, getattr(self, name), low) for name, low in
                     (("head_steps", 1), ("head_refit_steps", 0), ("warmup_epochs", 0), ("age_bins", 2))]
        problems = [p for p in problems if p]
        if self.method == Method.DANN:
            if self.mode == UnlearningMode.ALTERNATING:
                problems.append("mode 'alternating' is a confusion loop; method 'dann' has no mode (use 'fused')")
            if self.head_refit_steps:
                problems.append("head_refit_steps: a re-fit would reset the heads that gradient reversal trains; "
                                "set it to 0 for method 'dann'")
            if self.beta != defaults.BETA:
                problems.append(f"beta is the confusion weight, unused by method 'dann': set its strength with "
                                f"reversal_weight (got beta={self.beta})")
        raise_problems("UnlearningSettings", problems)

    @classmethod
    def paper(cls, **changes: Any) -> UnlearningSettings:
        """Dinsdale et al.'s recipe: confusion (``beta``) against an MLP head stepped once per batch."""
        return cls(**{"method": Method.UNLEARNING, **changes})

    @classmethod
    def refit_adversary(cls, **changes: Any) -> UnlearningSettings:
        """Site unlearning against a linear head re-fitted from scratch on all training scans every epoch.

        ``beta=1``, a linear head re-fitted with 300 full-batch Adam steps (lr ``1e-2``) at the start of each
        unlearning epoch and nearly frozen in between (``head_lr=1e-4``), after 4 warm-up epochs (more while the
        epoch's age loss is at least 0.7, ``warmup_until_loss``); the confusion target is ``p(site | age)``; a
        confound the training features do not carry at least 0.05 beyond age and sex after the warm-up is not
        unlearned (``evidence_margin``). Its measurements: docs/unlearning.md ("Does it work?").

        Args:
            changes: any other field, or one of these to override.
        """
        recipe: dict[str, object] = {
            "method": Method.UNLEARNING, "beta": defaults.REFIT_BETA, "head_hidden": (),
            "head_lr": defaults.REFIT_HEAD_LR, "head_steps": 1, "head_refit_steps": defaults.REFIT_STEPS,
            "head_refit_lr": defaults.HEAD_REFIT_LR, "warmup_epochs": defaults.REFIT_WARMUP_EPOCHS,
            "warmup_until_loss": defaults.REFIT_WARMUP_UNTIL_LOSS,
            "evidence_margin": defaults.REFIT_EVIDENCE_MARGIN, "site_prior_on": Keys.AGE,
        }
        return cls(**{**recipe, **changes})

    refit = refit_adversary

    @classmethod
    def dann(cls, **changes: Any) -> UnlearningSettings:
        """The DANN baseline (Ganin & Lempitsky 2015): gradient reversal of strength ``reversal_weight``."""
        return cls(**{"method": Method.DANN, "reversal_weight": defaults.DANN_REVERSAL_WEIGHT, **changes})

    def what(self) -> dict[str, Any]:
        """The fields that say what to unlearn (:data:`WHAT_FIELDS`), to pass to another recipe."""
        return {name: getattr(self, name) for name in WHAT_FIELDS}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UnlearningPlan:
    """What the training rows decide for the handler, as plain values (saved with a model, see module docstring).

    Args:
        confounds: per confound, ``name``, ``kind``, ``num_classes``, ``bin_edges``, ``class_weights`` and ``prior``
            (the training ``values``, ``classes`` and ``key`` of a :class:`~harmonize.handlers.ConditionalPrior`).
        mask: the sample mask: ``{"key", "range": [low, high]}`` or ``{"key", "ranges": {site: [[low, high]]}}``.
    """

    confounds: list[dict[str, Any]]
    mask: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
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


def _mask_plan(settings: UnlearningSettings, train: pd.DataFrame, site_index: CategoryIndex) -> dict | None:
    key = settings.overlap_key
    if not settings.overlap_only:
        return None
    if settings.overlap_mode == OverlapMode.PAIRS and settings.overlap_range is None:
        values = train[[Keys.SITE, key]].dropna()
        extents = {site_index[site]: (float(group.min()), float(group.max()))
                   for site, group in values.groupby(Keys.SITE, observed=True)[key]}
        shared = SharedRangeMask.shared_ranges(extents)
        if not any(shared.values()):
            raise ConfigError(
                f"overlap_only: no training site shares a '{key}' range with another site, so no subject can be "
                "unlearned on. Give overlap_range or turn overlap_only off.")
        logger.info("Unlearning only on %s ranges shared with another site: %s", key, shared)
        return {"key": key, "ranges": {int(s): [list(r) for r in pairs] for s, pairs in shared.items()}}
    low_high = settings.overlap_range or overlap_range(train, key=key)
    if low_high is None:
        raise ConfigError(
            f"overlap_only: the training sites share no '{key}' range (each site's range is disjoint from "
            "another's), so no subject can be unlearned on. Use overlap_mode 'pairs' (the ranges each site shares "
            "with another), give overlap_range, or turn overlap_only off.")
    logger.info("Unlearning only on %s in [%.1f, %.1f]", key, *low_high)
    return {"key": key, "range": [float(low_high[0]), float(low_high[1])]}


def plan_unlearning(settings: UnlearningSettings, frame: pd.DataFrame, site_index: CategoryIndex) -> UnlearningPlan:
    """What a manifest's training rows decide for the handler that ``settings`` describe.

    Raises:
        ConfigError: only one site (nothing to unlearn), an empty overlap range, or an unknown confound.
    """
    train = frame[frame[Keys.SPLIT] == Split.TRAIN]
    if Keys.SITE in settings.confounds and len(site_index) < 2:
        raise ConfigError(
            f"The training data hold a single site ({list(site_index)}): there is no scanner information to "
            "unlearn. Add sites, or train with method 'none'.")
    confounds = []
    for name in settings.confounds:
        kind, n, edges = confound_classes(name, train, site_index, settings.age_bins)
        sites = [site_index[s] for s in train[Keys.SITE]] if name == Keys.SITE else None
        weights = prior = None
        if settings.balanced_heads and name == Keys.SITE:
            weights = DomainLoss.from_counts(np.bincount(sites, minlength=n)).weight.tolist()
        if settings.site_prior_on is not None and name == Keys.SITE:
            if settings.site_prior_on not in train.columns:
                raise ConfigError(f"site_prior_on: the manifest has no column '{settings.site_prior_on}' to "
                                  "condition on.")
            prior = {"values": train[settings.site_prior_on].to_numpy(float).tolist(), "classes": sites,
                     "key": settings.site_prior_on}
        confounds.append({"name": name, "kind": str(kind), "num_classes": n, "bin_edges": edges,
                          "class_weights": weights, "prior": prior})
    return UnlearningPlan(confounds, _mask_plan(settings, train, site_index))


def handler_from_plan(network: nn.Module, taps: str | Sequence[str], feature_dim: int,
                      settings: UnlearningSettings, plan: UnlearningPlan | Mapping[str, Any]) -> DomainUnlearningHandler:
    """The handler of ``settings`` and ``plan`` (heads freshly initialised, in the confounds' order)."""
    plan = plan if isinstance(plan, UnlearningPlan) else UnlearningPlan(**plan)
    dann = settings.method == Method.DANN
    confounds = []
    for spec in plan.confounds:
        name, n = spec["name"], int(spec["num_classes"])
        head = DomainHead(feature_dim, n, hidden=settings.head_hidden, dropout=settings.head_dropout,
                          standardize_input=settings.head_standardize)
        prior = spec.get("prior")
        confounds.append(Confound(
            head, n, key=name, kind=spec["kind"], bin_edges=spec["bin_edges"],
            beta=settings.betas.get(name, 1.0 if dann else settings.beta), alpha=settings.alpha,
            class_weights=spec["class_weights"],
            prior=None if prior is None else ConditionalPrior(prior["values"], np.asarray(prior["classes"], dtype=int),
                                                              n, key=prior["key"])))
    mask = None
    if plan.mask is not None and "ranges" in plan.mask:
        mask = SharedRangeMask({int(s): r for s, r in plan.mask["ranges"].items()}, key=plan.mask["key"])
    elif plan.mask is not None:
        mask = LabelRangeMask(*plan.mask["range"], key=plan.mask["key"])
    if dann:
        objective = GradientReversalObjective(settings.reversal_weight)
    else:
        objective = AlternatingConfusion() if settings.mode == UnlearningMode.ALTERNATING else ConfusionObjective()
    if settings.head_refit_steps:
        adversary = RefitHeads(settings.head_refit_steps, settings.head_refit_lr, settings.head_lr, settings.head_steps)
    else:
        adversary = HeadSteps(settings.head_lr, settings.head_steps)
    gate = None if settings.evidence_margin is None else EvidenceGate(evidence_beyond, settings.evidence_margin)
    handler = DomainUnlearningHandler(network, taps, confounds, objective=objective, adversary=adversary,
                                      warmup=HeadWarmup(settings.warmup_epochs, settings.warmup_until_loss),
                                      sample_mask=mask, gate=gate)
    handler.plan = plan  # what a model file saves beside the settings
    return handler


def build_unlearning_handler(network: nn.Module, taps: str | Sequence[str], feature_dim: int,
                             settings: UnlearningSettings, frame: pd.DataFrame,
                             site_index: CategoryIndex) -> DomainUnlearningHandler | None:
    """The handler that ``settings`` describe for a manifest's training rows (``None`` for ``method='none'``).

    Args:
        network: the network to unlearn.
        taps: layer name(s) whose features the heads read.
        feature_dim: size of the (pooled, concatenated) tapped features.
        settings: the experiment's unlearning settings.
        frame: the manifest (its ``train`` rows set the bins, the class counts, the prior and the overlap range).
        site_index: the site index of the training data.

    Raises:
        ConfigError: only one site (nothing to unlearn), an empty overlap range, or an unknown confound.
    """
    if settings.method == Method.NONE:
        return None
    return handler_from_plan(network, taps, feature_dim, settings, plan_unlearning(settings, frame, site_index))
