"""Evaluation of a trained brain-age network on held-out scans: its age error and feature probes, and the
post-hoc baselines that harmonise its features after training (ComBat, LEACE erasure).

:func:`evaluate_brain_age` measures the age error and probes the features for site, age and sex
(:func:`~harmonize.audit.age_audit.audit_feature_set`); :func:`evaluate_combat` and :func:`fit_site_eraser` give the
baselines ``harmonize compare`` runs beside training-time unlearning. Training is
:func:`~harmonize.workflows.brain_age.train_brain_age`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonize import defaults
from harmonize.audit.age_audit import audit_feature_set
from harmonize.audit.erasure import SiteEraser
from harmonize.audit.features import FeatureSet, collect_features
from harmonize.audit.held_out import ALL_SPLITS
from harmonize.data.dataset import make_dataloader, make_dataset
from harmonize.data.manifest import read_manifest
from harmonize.errors import HarmonizeError
from harmonize.handlers import ConditionalPrior
from harmonize.keys import Keys, Split, StateKeys
from harmonize.networks import BrainAgeRegressor
from harmonize.workflows.models import BrainAgeModel

__all__ = [
    "COMBAT_AGE_PROBE_NOTE",
    "COMBAT_UNMEASURED",
    "TAP",
    "brain_age_features",
    "combat_unseen_site",
    "evaluate_brain_age",
    "evaluate_combat",
    "fit_site_eraser",
]

#: The layer whose output is the brain-age network's feature vector.
TAP = BrainAgeRegressor.TAPS["encoder"]
#: Figures of the ComBat baseline that are not measured, and why.
COMBAT_UNMEASURED = ("age_probe_r2", "age_probe_mae")
COMBAT_AGE_PROBE_NOTE = (
    "not measured: ComBat writes the protected age effect back into the harmonised features from each scan's true "
    "age, so a probe would read age from them almost perfectly whatever the network kept"
)


def brain_age_features(
    model: BrainAgeModel,
    manifest: str | Path | pd.DataFrame,
    splits: tuple[str, ...] = (Split.VAL, Split.TEST),
    taps: tuple[str, ...] | None = None,
) -> FeatureSet:
    """Predicted ages and features of a manifest's scans in ``splits`` (unseen sites get site index -1).

    Args:
        taps: layers to read the features from; default: the model's unlearned taps.
    """
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    rows = frame[frame[Keys.SPLIT].isin([str(s) for s in splits])]
    if rows.empty:
        raise HarmonizeError(f"No row of the manifest is in splits {list(map(str, splits))}: nothing to evaluate.")
    dataset = make_dataset(rows, site_index=model.site_index, transform=model.transform, allow_unknown_sites=True)
    loader = make_dataloader(dataset, batch_size=model.settings.batch_size, shuffle=False,
                             num_workers=model.settings.num_workers)
    return collect_features(model.network, taps or model.settings.taps, loader, device=model.settings.device)


def evaluate_brain_age(
    model: BrainAgeModel,
    manifest: str | Path | pd.DataFrame,
    splits: tuple[str, ...] = (Split.VAL, Split.TEST),
    permutations: int = 0,
    seed: int = defaults.SEED,
    features: FeatureSet | None = None,
    bias_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """Age error and feature probes on held-out scans (see :func:`audit_feature_set` for the keys).

    Args:
        features: the model's :func:`brain_age_features` of those scans, if already computed.
        bias_mask: the scans of the site-bias figures (see :func:`audit_feature_set`).

    Returns:
        :func:`audit_feature_set`'s figures, ``seconds`` (training time) and, from the last epoch of an unlearned
        model's history, ``final_task_loss`` (its standardised age loss, 1 = predicting the mean age),
        ``domain_head_acc`` (the site head's accuracy) and ``refit_head_acc`` (the training accuracy of the head
        re-fitted on all training scans, with ``head_refit_steps``); with an evidence gate, ``site_evidence`` (how
        far the training features told the site beyond age and sex when unlearning began; below the margin the
        site was not unlearned, :class:`~harmonize.handlers.EvidenceGate`) and ``site_unlearned``; with
        :class:`~harmonize.losses.SiteAgreementLoss`, ``site_agreement`` (its weight).
    """
    fs = features if features is not None else brain_age_features(model, manifest, splits)
    metrics = audit_feature_set(fs, list(model.site_index), permutations=permutations, seed=seed,
                                bias_mask=bias_mask)
    metrics["seconds"] = model.seconds
    if model.settings.site_agreement is not None:
        metrics["site_agreement"] = model.settings.site_agreement
    last = model.history[-1] if model.history else {}
    for key, name in ((StateKeys.TASK_LOSS, "final_task_loss"),
                      (f"{StateKeys.DOMAIN_ACC}_{Keys.SITE}", "domain_head_acc"),
                      (f"{StateKeys.REFIT_ACC}_{Keys.SITE}", "refit_head_acc")):
        if key in last:
            metrics[name] = last[key]
    evidence = [epoch[key] for epoch in model.history if (key := f"{StateKeys.EVIDENCE}_{Keys.SITE}") in epoch]
    if evidence:
        metrics["site_evidence"] = evidence[0]
        metrics["site_unlearned"] = any(c.weight_scale > 0 for c in model.handler.confounds if c.key == Keys.SITE)
    return metrics


def combat_unseen_site(baseline: BrainAgeModel, training: pd.DataFrame, unseen: pd.DataFrame, site: str,
                       handling: str) -> dict[str, Any]:
    """ComBat (fitted on the baseline's training features) on an unseen site's scans: ``unseen_site_mae``, or its
    refusal (``unseen_site_error``); ``handling`` (:class:`~harmonize.keys.UnseenSite`): what it does with them."""
    from harmonize.audit.combat_features import combat_feature_set

    train = brain_age_features(baseline, training, (Split.TRAIN,), taps=(TAP,))
    scans = brain_age_features(baseline, unseen, ALL_SPLITS, taps=(TAP,))
    result: dict[str, Any] = {"unseen_site_handling": str(handling)}
    try:
        harmonised = combat_feature_set(train, scans, eb=defaults.COMBAT_FEATURES_EB, unseen=handling)
    except HarmonizeError as err:
        result["unseen_site_mae"] = None
        result["unseen_site_error"] = f"unseen site {site!r}: {err}"
        return result
    with torch.no_grad():
        features = torch.as_tensor(harmonised.features, dtype=torch.float32, device=baseline.settings.device)
        ages = baseline.network.eval().predict_from_features(features).cpu().numpy().reshape(-1)
    result["unseen_site_mae"] = float(np.nanmean(np.abs(ages - scans.meta[Keys.AGE].astype(float))))
    return result


def evaluate_combat(
    model: BrainAgeModel,
    manifest: str | Path | pd.DataFrame,
    splits: tuple[str, ...] = (Split.VAL, Split.TEST),
    permutations: int = 0,
    seed: int = defaults.SEED,
) -> dict[str, Any]:
    """The ComBat baseline on a trained network's features: fit on the training scans, harmonise held-out ones.

    ComBat (neuroHarmonize, with age and sex protected, without empirical Bayes:
    :data:`~harmonize.defaults.COMBAT_FEATURES_EB`) is fitted on the features of the ``train`` rows and applied to
    the held-out scans' features; the network's own regressor then predicts age from the harmonised features.
    Scans of a site ComBat never saw are left unharmonised (ComBat cannot take a new site). The age probes
    (``age_probe_r2``, ``age_probe_mae``) are ``None``: ComBat writes the protected age effect back into the
    features from each scan's true age, so a probe fitted on them would read the answer it was given
    (``age_probe_note`` says so).
    """
    from harmonize.audit.combat_features import combat_feature_set

    start = time.perf_counter()

    def harmonised(taps: tuple[str, ...]) -> FeatureSet:
        train = brain_age_features(model, manifest, (Split.TRAIN,), taps=taps)
        scans = brain_age_features(model, manifest, splits, taps=taps)
        return combat_feature_set(train, scans, eb=defaults.COMBAT_FEATURES_EB, unseen="passthrough")

    audited = harmonised(model.settings.taps)
    encoder = audited if model.settings.taps == (TAP,) else harmonised((TAP,))
    with torch.no_grad():
        features = torch.as_tensor(encoder.features, dtype=torch.float32, device=model.settings.device)
        audited.predictions = model.network.eval().predict_from_features(features).cpu().numpy()
    metrics = audit_feature_set(audited, list(model.site_index), permutations=permutations, seed=seed)
    metrics.update({key: None for key in COMBAT_UNMEASURED if key in metrics})
    metrics["age_probe_note"] = COMBAT_AGE_PROBE_NOTE
    metrics["seconds"] = model.seconds + time.perf_counter() - start
    return metrics


def fit_site_eraser(
    model: BrainAgeModel, manifest: str | Path | pd.DataFrame, condition_on: str | None = Keys.AGE
) -> SiteEraser:
    """LEACE erasure of the site from a trained network's features, fitted on its training scans.

    :class:`~harmonize.audit.erasure.SiteEraser` is fitted on the ``train`` rows' features of the model's taps,
    with the site one-hot less ``p(site | condition_on)`` (:class:`~harmonize.handlers.ConditionalPrior`), so that
    the features keep what age tells of the site; a ridge regression of age is re-fitted on the erased training
    features. Training rows of sites the model was not trained on are left out. Apply the result to held-out
    features, e.g. ``audit_held_out(model, manifest, harmonise=eraser)``.

    Args:
        condition_on: the training column the erasure is conditional on (``None``: erase the plain site).
    """
    train = brain_age_features(model, manifest, (Split.TRAIN,))
    train = train.subset(train.meta[Keys.SITE] >= 0)
    sites = train.meta[Keys.SITE].astype(int)
    prior = None
    if condition_on is not None:
        values = train.meta[condition_on].astype(float)
        fitted = ConditionalPrior(values, sites, len(model.site_index), key=condition_on)
        prior = fitted({condition_on: torch.as_tensor(values)}).numpy()
    return SiteEraser(len(model.site_index)).fit(train, prior)
