"""Audit a trained tissue-segmentation model: can the scanner be read from its features, and how good is its Dice?

:class:`SegmentationAudit` is the segmentation adapter of :func:`~harmonize.workflows.audit.audit_held_out` (the
brain-age one is :class:`~harmonize.workflows.audit.BrainAgeAudit`), run by
:func:`~harmonize.workflows.audit.audit_model` (``harmonize audit --bundle``) when the model is a
:class:`~harmonize.networks.TissueSegmenter` (Dinsdale et al. 2021 unlearn the scanner from a U-Net's bottleneck
and last decoder block). On the scans the model did not train on it measures:

- the **held-out scans** of its training sites (``val`` and ``test`` rows): the same site probe as the brain-age
  audit (cross-validated logistic regression on the tapped, pooled features; balanced accuracy against chance,
  permutation p-value), age and sex read from the features when the manifest has them, and the network's Dice per
  tissue (the label classes, background excluded: CSF, GM, WM), overall and per site;
- every scan of a site the model never saw: its Dice there (``unseen_site_dice``), the test of a new scanner.

Each scan is segmented once: a forward hook on the network scores the prediction of the batch that
:func:`~harmonize.audit.features.collect_features` is evaluating (argmax of the logits against the label map,
MONAI's :class:`~monai.metrics.DiceMetric`), so the features and the Dice come from the same pass and no
full-size prediction is kept. Means over scans are MONAI's reductions (``do_metric_reduction``): a tissue absent
from a scan's label map is left out of that scan's mean rather than counted as 0 or 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonize.audit.feature_probes import feature_probes
from harmonize.audit.features import FeatureSet, collect_features
from harmonize.audit.held_out import ALL_SPLITS, UNSEEN_SUFFIX
from harmonize.data.templates import TISSUE_NAMES
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys, Task
from harmonize.metrics.dice_per_scan import DicePerScan
from harmonize.workflows.models import SegmentationModel

__all__ = [
    "MEAN_KEY",
    "TASK",
    "SegmentationAudit",
    "SegmentationModel",
    "dice_summary",
    "scored_scans",
    "segmentation_columns",
    "segmentation_features",
    "tissue_names",
]

logger = logging.getLogger(__name__)

#: Value of ``task`` in a segmentation audit's metrics.
TASK = str(Task.SEGMENTATION)
#: Key of the mean over tissues in each entry of ``dice_per_site``.
MEAN_KEY = "mean"
#: Prefix of the name of a label class when the network's classes are not the cohort's tissues.
CLASS_PREFIX = "class"
#: Probe columns of the report's table shared with the brain-age audit (their definitions in
#: :data:`~harmonize.audit.report.METRIC_COLUMNS`), before and after the Dice columns.
PROBE_COLUMN_KEYS = ("site_probe_bacc", "site_probe_p")
OTHER_COLUMN_KEYS = ("age_probe_r2", "sex_probe_bacc", "domain_head_acc", "seconds")
#: Decimals of a Dice in the report's table.
DICE_DIGITS = 3


def tissue_names(num_classes: int) -> tuple[str, ...]:
    """Names of the foreground classes of a ``num_classes``-class segmenter (class 0, the background, excluded).

    The cohort's tissues (:data:`~harmonize.data.templates.TISSUE_NAMES`: ``csf``, ``gm``, ``wm``, labels 1-3) when
    the network has that many foreground classes, else ``class1``, ``class2``, ...
    """
    if num_classes - 1 == len(TISSUE_NAMES):
        return tuple(TISSUE_NAMES)
    return tuple(f"{CLASS_PREFIX}{i}" for i in range(1, num_classes))


def scored_scans(model: SegmentationModel, rows: pd.DataFrame) -> tuple[Any, int]:
    """A loader over the manifest rows ``rows`` in their order, as the model reads them, and the network's classes.

    Raises:
        HarmonizeError: no label column, or a network without ``out_channels`` (at least 2).
    """
    from harmonize.data.dataset import make_dataloader, make_dataset

    if Keys.LABEL not in rows or rows[Keys.LABEL].isna().all():
        raise HarmonizeError(
            f"The manifest's audited rows have no '{Keys.LABEL}' (label map) paths: the Dice of a segmentation model "
            f"needs them. Add a '{Keys.LABEL}' column (0 background, 1..n the classes) to the manifest."
        )
    num_classes = int(getattr(model.network, "out_channels", 0))
    if num_classes < 2:
        raise HarmonizeError(
            f"The segmentation audit needs the network's number of classes (its out_channels); "
            f"{type(model.network).__name__} has {num_classes or 'none'}."
        )
    dataset = make_dataset(rows, site_index=model.site_index, transform=model.transform, allow_unknown_sites=True)
    loader = make_dataloader(dataset, batch_size=model.batch_size, shuffle=False, num_workers=model.num_workers)
    return loader, num_classes


def segmentation_features(
    model: SegmentationModel, rows: pd.DataFrame
) -> tuple[FeatureSet, np.ndarray]:
    """Tapped features and per-scan Dice of the manifest rows ``rows`` (sites unknown to the model get index -1).

    Args:
        model: the model.
        rows: manifest rows with a ``label`` column (a row without a label map is probed but not scored).

    Returns:
        ``(features, dice)``: the :class:`FeatureSet` (no predictions kept) and ``dice``, ``(n, classes - 1)``
        Dice of each scan and foreground class, NaN where the scan has no label map or lacks that class.

    Raises:
        HarmonizeError: no label column, a label value outside the network's classes, or a network whose output is
            not one logit map per class.
    """
    loader, num_classes = scored_scans(model, rows)
    dice = DicePerScan(num_classes)
    hook = model.network.register_forward_hook(dice)
    try:
        features = collect_features(model.network, model.taps, dice.batches(loader), device=model.device,
                                    keep_predictions=False)
    finally:
        hook.remove()
    return features, torch.cat(dice.scores).numpy()


def _reduce(scores: np.ndarray, reduction: str) -> Any:
    """MONAI's reduction of per-scan Dice (NaN left out); ``None`` where nothing was measured."""
    from monai.metrics.utils import do_metric_reduction

    value, not_nans = do_metric_reduction(torch.as_tensor(scores, dtype=torch.float32).clone(), reduction)
    value, not_nans = torch.broadcast_tensors(value.reshape(-1), not_nans.reshape(-1))  # "mean": one value
    reduced = [float(v) if n > 0 else None for v, n in zip(value.tolist(), not_nans.tolist())]
    return reduced[0] if reduction == "mean" else reduced


def dice_summary(scores: np.ndarray, tissues: Sequence[str]) -> tuple[float | None, dict[str, float | None]]:
    """Mean Dice and Dice per tissue of a set of scans.

    Args:
        scores: ``(n_scans, n_tissues)`` Dice, NaN where not measured.
        tissues: the tissues' names, in column order.

    Returns:
        ``(mean, per_tissue)``: MONAI's ``mean`` reduction (each scan's mean over its measured tissues, then the
        mean over scans) and its ``mean_batch`` reduction (per tissue, over the scans that have it); ``None`` where
        no scan was measured.
    """
    if scores.shape[0] == 0:
        return None, {t: None for t in tissues}
    return _reduce(scores, "mean"), dict(zip(tissues, _reduce(scores, "mean_batch")))


def _per_site(scores: np.ndarray, names: np.ndarray, tissues: Sequence[str], suffix: str = "") -> dict[str, Any]:
    """``{site + suffix: {tissue: dice, ..., "mean": dice}}`` for each site of ``names``."""
    out = {}
    for name in sorted(set(names.tolist())):
        mean, per_tissue = dice_summary(scores[names == name], tissues)
        out[f"{name}{suffix}"] = {**per_tissue, MEAN_KEY: mean}
    return out


class SegmentationAudit:
    """The segmentation part of an audit (a :class:`~harmonize.audit.held_out.TaskAudit`): Dice per tissue and site.

    Its metrics hold ``task`` (``"segmentation"``), ``tissues``, ``mean_dice``, ``dice_per_tissue``
    (``{tissue: dice}``), ``dice_per_site`` (``{site: {tissue: dice, "mean": dice}}``), ``n_labelled``, the probes
    of :func:`~harmonize.audit.feature_probes.feature_probes` (``site_probe_bacc``, ``site_probe_p``, ``chance``,
    ``n_subjects``, and ``age_probe_r2`` / ``age_probe_mae`` / ``sex_probe_bacc`` when the manifest has ages and
    sexes), ``domain_head_acc`` when the history has it and ``seconds``; when the manifest holds unseen sites with
    label maps, also ``unseen_site_dice`` and ``unseen_site_dice_per_tissue`` (each unseen site appears in
    ``dice_per_site`` as ``"<site> (unseen)"``).
    """

    def held_out(self, model: SegmentationModel, frame: pd.DataFrame, rows: pd.DataFrame, splits: Sequence[str],
                 permutations: int, seed: int) -> tuple[dict[str, Any], FeatureSet]:
        """Dice and probes of the held-out scans of the training sites.

        Raises:
            HarmonizeError: no label maps, or labels outside the classes.
        """
        tissues = tissue_names(int(model.network.out_channels))
        features, scores = segmentation_features(model, rows)
        site_names = list(model.site_index)
        names = np.array([site_names[i] for i in features.meta[Keys.SITE]])
        mean, per_tissue = dice_summary(scores, tissues)
        metrics: dict[str, Any] = {
            "task": TASK,
            "tissues": list(tissues),
            "mean_dice": mean,
            "dice_per_tissue": per_tissue,
            "dice_per_site": _per_site(scores, names, tissues),
            "n_labelled": int(np.isfinite(scores).any(axis=1).sum()),
            **feature_probes(features, permutations=permutations, seed=seed),
            "seconds": None if not math.isfinite(model.seconds) else float(model.seconds),
        }
        acc_key = "domain_acc_site"
        if model.history and acc_key in model.history[-1]:
            metrics["domain_head_acc"] = model.history[-1][acc_key]
        return metrics, features

    def unseen_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The unseen sites' rows when they have label maps (a warning, and none, when they have not)."""
        rows = rows[rows[Keys.SPLIT].isin([str(s) for s in ALL_SPLITS])]
        if not rows.empty and (Keys.LABEL not in rows or rows[Keys.LABEL].isna().all()):
            logger.warning("The scans of sites unseen in training (%s) have no label maps: their Dice is not measured.",
                           sorted(rows[Keys.SITE].astype(str).unique()))
            return rows.iloc[:0]
        return rows

    def unseen(self, model: SegmentationModel, rows: pd.DataFrame) -> tuple[FeatureSet, np.ndarray]:
        """The features and per-scan Dice of unseen-site scans."""
        return segmentation_features(model, rows)

    def add_unseen(self, metrics: dict[str, Any], scores: np.ndarray, sites: np.ndarray) -> None:
        """``unseen_site_dice``, ``unseen_site_dice_per_tissue`` and each unseen site's Dice in ``dice_per_site``."""
        tissues = metrics["tissues"]
        metrics["unseen_site_dice"], metrics["unseen_site_dice_per_tissue"] = dice_summary(scores, tissues)
        metrics["dice_per_site"].update(_per_site(scores, sites, tissues, UNSEEN_SUFFIX))


def segmentation_columns(metrics: Mapping[str, Any]) -> list[Any]:
    """Columns of the report's table for a segmentation audit: the probes, mean Dice, Dice per tissue, unseen-site
    Dice, age and sex probes, the domain head and the training time, those that ``metrics`` measured.

    Returns:
        :class:`~harmonize.audit.report.Column` s; the Dice per tissue reads ``dice_per_tissue.<tissue>``.
    """
    from harmonize.audit.report import METRIC_COLUMNS, Column, present_columns

    shared = {c.key: c for c in METRIC_COLUMNS}
    columns = [
        *(shared[k] for k in PROBE_COLUMN_KEYS),
        Column("mean_dice", "Mean Dice", DICE_DIGITS, "high"),
        *(Column(f"dice_per_tissue.{t}", f"{t.upper()} Dice", DICE_DIGITS, "high") for t in metrics.get("tissues", ())),
        Column("unseen_site_dice", "Unseen-site Dice", DICE_DIGITS, "high"),
        *(shared[k] for k in OTHER_COLUMN_KEYS),
    ]
    return present_columns({"": metrics}, columns)
